/**
 * The errors meant for a user: {@link UserError} is the base of every error whose message is the
 * whole story (bad flags, a config that cannot run, missing data, a checkpoint that does not fit,
 * a run directory in use ...). A task's `main` lets them through, and `runMain` (lib/cli/main.ts)
 * prints {@link UserError.line} and exits with {@link UserError.exitCode}, with no stack; any
 * other error is a bug and keeps its stack. {@link ConfigError} is the one every folder throws for
 * a config it cannot run.
 *
 * @example
 * ```ts
 * import { ConfigError, UserError } from "./errors.ts";
 * class QuotaError extends UserError {
 *   override name = "QuotaError";
 *   override exitCode = 3;
 * }
 * new QuotaError("no quota left").line(); // "error: no quota left"
 * throw new ConfigError("patch size 5 does not divide 28: choose 4, 7 or 14");
 * ```
 * @module
 */

/**
 * An error meant for a user: its message says what is wrong and what to do, so a task prints it
 * as one line (no stack) and exits with {@link exitCode} (2, bad input, unless a subclass says
 * otherwise).
 *
 * @example
 * ```ts
 * class BadInputError extends UserError {
 *   override name = "BadInputError";
 * }
 * const e = new BadInputError("--batch must be >= 1");
 * [e.line(), e.exitCode]; // ["error: --batch must be >= 1", 2]
 * ```
 */
export class UserError extends Error {
  override name = "UserError";
  /** The exit code of a task that ends with this error: 2 (bad input) unless overridden. */
  exitCode = 2;
  /** The one line a task prints for it: `error: <message>`. */
  line(): string {
    return `error: ${this.message}`;
  }
}

/**
 * A config error (unknown preset, indivisible sizes); the message says what to change.
 *
 * @example
 * ```ts
 * throw new ConfigError("batch size 512 is larger than the training set (100 images): lower --batch");
 * ```
 */
export class ConfigError extends UserError {
  override name = "ConfigError";
}
