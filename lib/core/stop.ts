/**
 * Stopping long phases at a safe point: a {@link StopSignal} that the CLI sets on SIGINT/SIGTERM,
 * and {@link stopPoint}, which a phase made of synchronous tfjs batches (feature extraction, kNN,
 * linear probe, fine-tuning) awaits between batches.
 *
 * Why the yield: Deno runs a signal listener only when its event loop turns. A loop whose only
 * awaits are `tensor.data()` on the wasm, cpu or native backend never turns it (those promises
 * resolve as microtasks), so without a macrotask yield a Ctrl-C is not even seen until the phase
 * ends. `stopPoint` turns the loop with `setTimeout(0)` at most every {@link YIELD_MS}: 1 to 4 ms
 * each (nested timers are clamped to 4 ms), about 1% of a phase on a loaded 2-core machine. (A
 * `MessageChannel` message would be cheaper, but once an npm package is loaded `MessageChannel` is
 * Node's, whose messages do not let signal listeners run.)
 *
 * @example
 * ```ts
 * import { stopPoint, StoppedError } from "./stop.ts";
 * const signal = { stop: false };
 * for (let b = 0; b < batches; b++) {
 *   await stopPoint(signal, "feature extraction"); // throws StoppedError once signal.stop is set
 *   runBatch(b);
 * }
 * ```
 * @module
 */
import { UserError } from "./errors.ts";

/** A stop request: `stop` turns true on the first SIGINT/SIGTERM (`withStopSignal` in the CLI). */
export interface StopSignal {
  stop: boolean;
}

/**
 * A long phase saw its {@link StopSignal} between batches and stopped; nothing it was computing
 * was written. The message says where it stopped; the CLI prints it and exits 130.
 */
export class StoppedError extends UserError {
  override name = "StoppedError";
  /** Exit code 130, as for a process ended by Ctrl-C. */
  override exitCode = 130;
  /** Where it stopped, e.g. "feature extraction (train split, 2560/60000 images)". */
  readonly phase: string;
  constructor(phase: string, message = `stopped during ${phase}`, options?: ErrorOptions) {
    super(message, options);
    this.phase = phase;
  }
  /** Its message alone (no `error:`): stopping is what the user asked for. */
  override line(): string {
    return this.message;
  }
}

/** Longest stretch of work between two event-loop turns in {@link stopPoint}, in ms. */
export const YIELD_MS = 200;

let lastYield = 0;

/**
 * A safe point between batches of a long phase: with a `signal`, lets the event loop turn (at most
 * every {@link YIELD_MS}, so signal listeners run) and throws a {@link StoppedError} naming
 * `phase` if `signal.stop` is set. Without a signal it does nothing.
 *
 * @example
 * ```ts
 * await stopPoint(opts.signal, "the linear probe"); // "stopped during the linear probe"
 * ```
 */
export async function stopPoint(signal: StopSignal | undefined, phase: string): Promise<void> {
  if (!signal) return;
  if (performance.now() - lastYield >= YIELD_MS) {
    await new Promise((resolve) => setTimeout(resolve, 0));
    lastYield = performance.now();
  }
  if (signal.stop) throw new StoppedError(phase);
}
