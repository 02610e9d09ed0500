/**
 * Runs a task's `main` and turns the project's errors into one readable line and an exit code:
 * every error meant for a user extends `UserError` (lib/core/errors.ts) and is printed as its one
 * line with its own exit code, no stack: 2 for bad input (flags, config, data, checkpoints,
 * backends, a run directory in use or one that cannot be written: read-only, no permission, a file
 * in the way), 1 for a diverged run or a full disk, and 130 for a phase stopped by Ctrl-C or
 * SIGTERM (`StoppedError`: its message, no `error:`). Anything else is unexpected: printed with its
 * stack, exit 1.
 *
 * @example
 * ```ts
 * import { runMain } from "./main.ts";
 * runMain(async (args) => { console.log(args); return 0; });
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";

/**
 * Calls `main(Deno.args)` and exits with its code; a {@link UserError} prints its line and exits
 * with its code, any other error prints with its stack and exits 1.
 *
 * @example
 * ```ts
 * if (import.meta.main) runMain(main);
 * ```
 */
export function runMain(main: (args: string[]) => Promise<number>): void {
  main(Deno.args).then(
    (code) => Deno.exit(code),
    (e) => {
      if (e instanceof UserError) {
        console.error(e.line());
        Deno.exit(e.exitCode);
      }
      console.error(e);
      Deno.exit(1);
    },
  );
}
