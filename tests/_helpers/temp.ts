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
