/**
 * Runs a task's `main` and turns the project's errors into one readable line and an exit
 * code: 2 for bad input (flags, config, data, checkpoints, backends, a run directory in use or
 * one that cannot be written: read-only, no permission, a file in the way), 1 for a diverged run
 * or a full disk (one line each), or anything unexpected (with its stack), and 130 for a phase
 * stopped by Ctrl-C or SIGTERM (`StoppedError`: its line, no `error:`).
 *
 * @example
 * ```ts
 * import { runMain } from "./main.ts";
 * runMain(async (args) => { console.log(args); return 0; });
 * ```
 * @module
 */

/** Error classes whose message is the whole story (no stack needed). */
const USER_ERRORS = new Set([
  "UsageError",
  "ConfigError",
  "DataError",
  "BackendError",
  "CheckpointError",
  "SafetensorsError",
  "PthError",
  "ResultsError",
  "RunLockedError",
  "FileSystemError",
]);

/** Calls `main(Deno.args)` and exits with its code, printing errors as `error: ...`. */
export function runMain(main: (args: string[]) => Promise<number>): void {
  main(Deno.args).then(
    (code) => Deno.exit(code),
    (e) => {
      const name = e instanceof Error ? e.name : "";
      if (USER_ERRORS.has(name)) {
        console.error(`error: ${e.message}`);
        Deno.exit(2);
      }
      if (name === "StoppedError") {
        console.error(e.message);
        Deno.exit(130);
      }
      if (name === "DivergenceError" || name === "DiskFullError") {
        console.error(`error: ${e.message}`);
        Deno.exit(1);
      }
      console.error(e);
      Deno.exit(1);
    },
  );
}
