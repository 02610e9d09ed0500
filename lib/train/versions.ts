/**
 * The versions a run records in its `config.json`: Deno, tfjs, the backend and the git commit
 * of the code that runs.
 *
 * @example
 * ```ts
 * import { versions } from "./versions.ts";
 * await versions("wasm (SIMD, 1 thread)"); // { deno: "2.9.6", tfjs: "4.22.0", backend: "wasm ...", commit: "263351c..." }
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * Library versions and the git commit, recorded with every run ("unknown" commit outside a git
 * checkout).
 *
 * @example
 * ```ts
 * (await versions("cpu")).tfjs; // "4.22.0"
 * ```
 */
export async function versions(backend: string): Promise<Record<string, string>> {
  let commit = "unknown";
  try {
    // The commit of the code that runs, not of the working directory's repository.
    const cwd = new URL(".", import.meta.url);
    const out = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], cwd, stderr: "null" })
      .output();
    if (out.success) commit = new TextDecoder().decode(out.stdout).trim();
  } catch { /* not a git checkout */ }
  return { deno: Deno.version.deno, tfjs: tf.version_core, backend, commit };
}
