/**
 * Ctrl-C and SIGTERM for long tasks: the first asks the task to stop at the next safe point (after
 * the training step in flight, which is checkpointed, or between two batches of an evaluation), a
 * second quits at once with exit code 130.
 *
 * @example
 * ```ts
 * import { withStopSignal } from "./stop_signal.ts";
 * await withStopSignal("stopping after this step", (signal) => pretrain(cfg, { signal }));
 * ```
 * @module
 */
import type { StopSignal } from "../core/stop.ts";

/** What the first signal prints after the task's `message`: how to quit at once. */
export function quitHint(sig: "SIGINT" | "SIGTERM"): string {
  return sig === "SIGINT"
    ? "press Ctrl-C again to quit at once"
    : "SIGTERM received; send SIGTERM again or press Ctrl-C to quit at once";
}

/**
 * Runs `task` with a `signal` whose `stop` turns true on the first SIGINT or SIGTERM (printing
 * `message` and how to quit at once, naming the signal received); a second signal of either kind
 * exits 130 at once. The listeners are removed when the task ends. The task must reach the event
 * loop between batches (`stopPoint` of `lib/core/stop.ts`) for either to be seen.
 */
export async function withStopSignal<T>(
  message: string,
  task: (signal: StopSignal) => Promise<T>,
): Promise<T> {
  const signal: StopSignal = { stop: false };
  const listeners = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const onSignal = () => {
      if (signal.stop) Deno.exit(130);
      signal.stop = true;
      console.error(`\n${message} (${quitHint(sig)})...`);
    };
    Deno.addSignalListener(sig, onSignal);
    return [sig, onSignal] as const;
  });
  try {
    return await task(signal);
  } finally {
    for (const [sig, onSignal] of listeners) Deno.removeSignalListener(sig, onSignal);
  }
}
