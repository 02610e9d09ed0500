/**
 * Shell words: quoting a word for a POSIX shell command line (the export command, the Slurm
 * batch script).
 *
 * @example
 * ```ts
 * import { quote } from "./shell.ts";
 * `deno task pretrain --out ${quote("data/runs/a b")}`; // "deno task pretrain --out 'data/runs/a b'"
 * ```
 * @module
 */

/**
 * Shell-quotes a word when it needs it (single quotes), else returns it as is.
 *
 * @example
 * ```ts
 * quote("data/runs/a b"); // "'data/runs/a b'"
 * ```
 */
export function quote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}
