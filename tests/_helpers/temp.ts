/**
 * Teardown that is not a test: temp directories made by a test module are removed when the
 * module unloads, after its last test, whichever tests ran (filters included).
 *
 * @example
 * ```ts
 * const dirs: string[] = [];
 * removeOnUnload(dirs);
 * dirs.push(await Deno.makeTempDir());
 * ```
 */
export function removeOnUnload(dirs: string[]): void {
  globalThis.addEventListener("unload", () => {
    for (const d of dirs) {
      try {
        Deno.removeSync(d, { recursive: true });
      } catch { /* already gone */ }
    }
  });
}

/**
 * The names in a directory, sorted.
 *
 * @example
 * ```ts
 * assertEquals(await listDir(dir), ["checkpoint.safetensors"]); // no temp file left
 * ```
 */
export async function listDir(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  return names.sort();
}
