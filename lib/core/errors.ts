/**
 * The error every folder throws for a config it cannot run: an unknown preset, sizes that do not
 * divide, a batch too large for the data. The task runner prints its message as one line.
 *
 * @example
 * ```ts
 * import { ConfigError } from "./errors.ts";
 * throw new ConfigError("patch size 5 does not divide 28: choose 4, 7 or 14");
 * ```
 * @module
 */

/** A config error (unknown preset, indivisible sizes); the message says what to change. */
export class ConfigError extends Error {
  override name = "ConfigError";
}
