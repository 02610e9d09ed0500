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
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
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
