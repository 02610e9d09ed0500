/**
 * The `native` backend: tfjs tensors in TypedArrays, hot kernels in this project's C library
 * (`src/`, built by `build.sh`) through Deno's FFI, on a thread pool whose results are
 * bit-identical for any thread count. `initBackend({ backend: "native" })` starts it; this
 * module is for direct use of the library and the backend class.
 *
 * @example
 * ```ts
 * import { openNative, startNative } from "./mod.ts";
 * await startNative({ threads: 2 });
 * console.log(openNative().isa()); // "avx512" on this machine
 * ```
 * @module
 */
export {
  NATIVE_BACKEND,
  NativeBackend,
  type NativeInfo,
  type NativeOptions,
  selfCheck,
  startNative,
} from "./backend.ts";
export {
  GEMM_MODES,
  type GemmMode,
  ISA_NAMES,
  type IsaName,
  libraryName,
  libraryPath,
  NATIVE_API_VERSION,
  type NativeLib,
  NativeLoadError,
  openNative,
} from "./ffi.ts";
