/**
 * A private copy of the native library for a test file: the library's precision, instruction set
 * and thread count are settings of the loaded instance, and `deno test --parallel` runs other
 * files in the same process, so a file that changes them loads its own copy (another file name
 * is another instance). The copy is removed when the module unloads.
 *
 * @example
 * ```ts
 * const { lib, isas } = await privateNative("vitssl-native-test-");
 * for (const isa of isas) lib.setIsa(isa);
 * ```
 */
import {
  ISA_NAMES,
  type IsaName,
  libraryPath,
  type NativeLib,
  openNative,
} from "../../lib/backends/native/ffi.ts";

/** Copies the library to a temp file (removed at unload) and returns its path. */
export async function privateLibraryCopy(prefix: string): Promise<string> {
  const copy = await Deno.makeTempFile({ prefix, suffix: ".so" });
  await Deno.copyFile(libraryPath(), copy);
  globalThis.addEventListener("unload", () => Deno.removeSync(copy));
  return copy;
}

/** The library opened from a private copy, and the instruction sets this CPU runs (best last). */
export async function privateNative(prefix: string): Promise<{ lib: NativeLib; isas: IsaName[] }> {
  const lib = openNative(await privateLibraryCopy(prefix));
  const best = ISA_NAMES.indexOf(lib.isaSupported());
  return { lib, isas: ISA_NAMES.filter((_, i) => i <= best) };
}
