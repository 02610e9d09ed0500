/**
 * Ctrl-C and SIGTERM for long tasks: the first asks the task to stop at the next safe point (it
 * checkpoints and can be resumed), a second quits at once with exit code 130.
 *
 * @example
 * ```ts
 * import { withStopSignal } from "./stop_signal.ts";
 * await withStopSignal("stopping after this step", (signal) => pretrain(cfg, { signal }));
 * ```
 * @module
 */

/**
 * Runs `task` with a `signal` whose `stop` turns true on the first SIGINT or SIGTERM (printing
 * `message` and that a second one quits at once); the listeners are removed when it ends.
 */
export async function withStopSignal<T>(
  message: string,
  task: (signal: { stop: boolean }) => Promise<T>,
): Promise<T> {
  const signal = { stop: false };
  const onSignal = () => {
    if (signal.stop) Deno.exit(130);
    signal.stop = true;
    console.error(`\n${message} (press Ctrl-C again to quit at once)...`);
  };
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    return await task(signal);
  } finally {
    Deno.removeSignalListener("SIGINT", onSignal);
    Deno.removeSignalListener("SIGTERM", onSignal);
  }
}
