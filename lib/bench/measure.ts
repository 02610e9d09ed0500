/**
 * Timing and memory probes of the benchmark: a loop that runs a unit of work until both a minimum
 * time and a minimum count are reached, the process's peak resident memory, and the load average
 * (the machine is shared; every number is reported with the load it was measured under).
 *
 * @example
 * ```ts
 * import { timeLoop } from "./measure.ts";
 * const t = await timeLoop(async () => { await work(); }, { warmup: 2, minSeconds: 10, minIters: 3 });
 * console.log(t.iters / t.seconds, "iterations/s");
 * ```
 * @module
 */

/** Options of {@link timeLoop}. */
export interface LoopOptions {
  /** Untimed iterations first (compilation, allocation, caches). */
  warmup: number;
  /** Keep timing until at least this many seconds have passed... */
  minSeconds: number;
  /** ...and at least this many iterations ran. */
  minIters: number;
  /** Stop after this many timed iterations even if `minSeconds` is not reached. */
  maxIters?: number;
  /** Called after every timed iteration with its index and duration (ms). */
  onIter?: (i: number, ms: number) => void;
}

/** What {@link timeLoop} measured. */
export interface LoopTiming {
  /** Timed iterations. */
  iters: number;
  /** Their total wall time, seconds. */
  seconds: number;
  /** Each iteration's wall time, ms. */
  iterMs: number[];
}

/** Runs `fn` `warmup` times untimed, then times it until `minSeconds` and `minIters` are met. */
export async function timeLoop(fn: () => Promise<void>, opts: LoopOptions): Promise<LoopTiming> {
  for (let i = 0; i < opts.warmup; i++) await fn();
  const iterMs: number[] = [];
  const t0 = performance.now();
  let total = 0;
  while (
    (total < opts.minSeconds * 1000 || iterMs.length < opts.minIters) &&
    iterMs.length < (opts.maxIters ?? Infinity)
  ) {
    const s = performance.now();
    await fn();
    const ms = performance.now() - s;
    iterMs.push(ms);
    opts.onIter?.(iterMs.length - 1, ms);
    total = performance.now() - t0;
  }
  return { iters: iterMs.length, seconds: total / 1000, iterMs };
}

/** The median of a non-empty list. */
export function median(xs: number[]): number {
  return quantile(xs, 0.5);
}

/**
 * The q-quantile (0 <= q <= 1) of a non-empty list, linear between order statistics (numpy's
 * default): position q (n - 1) in the sorted list.
 *
 * @example
 * ```ts
 * quantile([40, 10, 30, 20], 0.9); // 37: 30 + 0.7 (40 - 30)
 * ```
 */
export function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const at = q * (s.length - 1), lo = Math.floor(at), hi = Math.ceil(at);
  return s[lo] + (at - lo) * (s[hi] - s[lo]);
}

/**
 * One line when a run's step times were uneven, else null: when its slow tenth took at least
 * `ratio` times its fast tenth (`p90` and `p10` of the step times, as {@link quantile} gives
 * them). On a shared machine a run can change speed midway (here, 2026-12-06: steps of 200 ms,
 * then of 257 ms for a stretch, while a loop on registers kept its speed: memory shared with
 * another tenant), and its images/s then says as much about the moment as about the code.
 *
 * @example
 * ```ts
 * spreadNote(200, 260); // "step times uneven: p10 200 ms, p90 260 ms (x1.30): ..."
 * spreadNote(200, 212); // null
 * ```
 */
export function spreadNote(p10: number, p90: number, ratio = 1.15): string | null {
  if (!(p90 >= ratio * p10)) return null;
  return `step times uneven: p10 ${p10.toFixed(0)} ms, p90 ${p90.toFixed(0)} ms ` +
    `(x${(p90 / p10).toFixed(2)}): part of the run was slower (another process, or memory ` +
    "shared with a neighbour on a cloud machine); compare alternated runs (--pytorch --rounds N)";
}

/**
 * Resets the kernel's peak-RSS counter of this process (Linux: `5` into
 * `/proc/self/clear_refs`); returns false where that is not possible.
 */
export function resetPeakRss(): boolean {
  try {
    Deno.writeTextFileSync("/proc/self/clear_refs", "5");
    return true;
  } catch {
    return false;
  }
}

/**
 * Peak resident memory of this process in bytes since the last {@link resetPeakRss} (Linux's
 * `VmHWM`), or the current RSS where `/proc` is missing.
 */
export function peakRss(): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"));
    if (m) return Number(m[1]) * 1024;
  } catch { /* not Linux */ }
  return Deno.memoryUsage().rss;
}

/** The 1-minute load average (`/proc/loadavg`), or null where it cannot be read. */
export function loadAverage(): number | null {
  try {
    return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
  } catch {
    return null;
  }
}
