/**
 * Whether a path exists, without hiding why it could not be looked at.
 *
 * @example
 * ```ts
 * import { pathExists } from "./exists.ts";
 * if (await pathExists("data/runs/demo/checkpoint.safetensors")) console.log("resuming");
 * ```
 * @module
 */

/**
 * True when `path` exists, false when it does not. Any other failure to look (a permission
 * error, a file where a directory was expected) is thrown: a run must not start over, and
 * overwrite a checkpoint, because its checkpoint could not be read.
 */
export async function pathExists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
