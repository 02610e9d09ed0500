/**
 * libvitssl_native through Deno's FFI: finding and opening the shared library, and typed
 * wrappers of its kernels (TypedArrays are passed without copies).
 *
 * The library is `libvitssl_native.linux-x86_64.so` beside this file (built by `build.sh` from
 * `src/`); `VITSSL_NATIVE_LIB` names another file. {@link openNative} throws a
 * {@link NativeLoadError} that says why it cannot load (another platform, no `--allow-ffi`, a
 * missing or incompatible file), so callers can fall back to wasm.
 *
 * @example
 * ```ts
 * import { openNative } from "./ffi.ts";
 * const lib = openNative();
 * lib.setThreads(2);
 * const c = new Float32Array(4);
 * lib.bmm(new Float32Array([1, 2, 3, 4]), new Float32Array([1, 0, 0, 1]), c, 1, 2, 2, 2, false, false, 0, 0);
 * console.log(c); // Float32Array [1, 2, 3, 4]
 * ```
 * @module
 */
import type { AdamWCoefficients } from "../fused.ts";

/** The library cannot be opened here; the message says why and what to do. */
export class NativeLoadError extends Error {
  override name = "NativeLoadError";
}

/** The API version this module speaks (`vn_version()` of the library). */
export const NATIVE_API_VERSION = 10;

/** Instruction sets of the kernels, by the number `vn_isa` returns. */
export const ISA_NAMES = ["base", "avx2", "avx512"] as const;
/** An instruction set: `base` (SSE2), `avx2` (AVX2 + FMA) or `avx512`. */
export type IsaName = typeof ISA_NAMES[number];

/**
 * GEMM precision modes, by the number `vn_precision` returns: `fp32`, or bf16 (inputs rounded to
 * bf16, round to nearest even; float32 accumulation) emulated in float32 arithmetic (any CPU), on
 * AVX512-BF16 dot products, or on AMX-BF16 tiles (only with `VITSSL_NATIVE_AMX=1`: that kernel is
 * untested on hardware).
 *
 * @example
 * ```ts
 * openNative().setPrecision("bf16"); // "bf16-avx512bf16" on a CPU with AVX512-BF16
 * ```
 */
export const GEMM_MODES = ["fp32", "bf16-emulated", "bf16-avx512bf16", "bf16-amx"] as const;
/** A GEMM precision mode (see {@link GEMM_MODES}). */
export type GemmMode = typeof GEMM_MODES[number];

/** Binary ops of {@link NativeLib.binary}, by code. */
export const BINARY_OPS = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  max: 4,
  min: 5,
  sqdiff: 6,
  pow: 7,
} as const;
/** Unary ops of {@link NativeLib.unary}, by code. */
export const UNARY_OPS = {
  neg: 0,
  square: 1,
  sqrt: 2,
  rsqrt: 3,
  relu: 4,
  exp: 5,
  abs: 6,
  scale: 7,
  step: 8,
  reciprocal: 9,
  floor: 10,
} as const;

const B = "buffer", I = "i32", F = "f32", L = "i64";
const SYMBOLS = {
  vn_version: { parameters: [], result: I },
  vn_isa_supported: { parameters: [], result: I },
  vn_isa: { parameters: [], result: I },
  vn_set_isa: { parameters: [I], result: I },
  vn_set_threads: { parameters: [I], result: I },
  vn_threads: { parameters: [], result: I },
  vn_cpus: { parameters: [], result: I },
  vn_bf16_supported: { parameters: [], result: I },
  vn_set_precision: { parameters: [I], result: I },
  vn_precision: { parameters: [], result: I },
  vn_peak_gflops: { parameters: [I, "f64"], result: "f64" },
  vn_peak_check: { parameters: [I, L, F, F, B], result: I },
  vn_bmm: { parameters: [B, B, B, I, I, I, I, I, I, L, L], result: "void" },
  vn_linear: { parameters: [B, B, B, B, B, I, I, I, I], result: "void" },
  vn_linear_gelu: { parameters: [B, B, B, B, B, I, I, I, I, I], result: "void" },
  vn_linear_grad: { parameters: [B, B, B, B, B, B, B, I, I, I, I], result: "void" },
  vn_attention: { parameters: [B, B, B, I, I, I, I, F, I], result: "void" },
  vn_attention_grad: { parameters: [B, B, B, B, B, I, I, I, I, F], result: "void" },
  vn_binary: { parameters: [I, B, B, B, B], result: "void" },
  vn_unary: { parameters: [I, B, B, I, F], result: "void" },
  vn_sum_rows: { parameters: [B, B, I, I, F], result: "void" },
  vn_sum_cols: { parameters: [B, B, I, I, F], result: "void" },
  vn_sum_cols_f32: { parameters: [B, B, I, I], result: "void" },
  vn_transpose: { parameters: [B, B, I, I, I, I], result: "void" },
  vn_clip: { parameters: [B, B, I, F, F], result: "void" },
  vn_gather_idx: { parameters: [B, B, I, B, B], result: "void" },
  vn_dwconv: { parameters: [B, B, B, B], result: "void" },
  vn_crop_and_resize: { parameters: [B, B, B, B, B, F], result: "void" },
  vn_transpose_nd: { parameters: [B, B, I, B], result: "void" },
  vn_copy_rows: { parameters: [B, I, B, I, I, I, I, I], result: "void" },
  vn_layernorm: { parameters: [B, B, B, B, I, I, F, I], result: "void" },
  vn_layernorm_grad: { parameters: [B, B, B, B, B, B, B, I, I, F], result: "void" },
  vn_batchnorm: { parameters: [B, B, B, B, B, B, I, I, F], result: "void" },
  vn_batchnorm_grad: { parameters: [B, B, B, B, B, B, B, B, B, B, I, I, F], result: "void" },
  vn_gelu: { parameters: [B, B, I], result: "void" },
  vn_gelu_grad: { parameters: [B, B, B, I], result: "void" },
  vn_adamw: {
    parameters: [B, B, B, B, B, B, B, I, F, F, F, F, F, F, F, I],
    result: "void",
  },
  vn_ema: { parameters: [B, B, B, I, F, F], result: "void" },
  vn_adamw_many: { parameters: [I, B, B, B, F, F, F, F, F, F, F], result: "void" },
  vn_ema_many: { parameters: [I, B, B, F, F], result: "void" },
  vn_topk: { parameters: [B, B, B, I, I, I], result: I },
} as const;

/** A 4-byte TypedArray that the kernels read or write. */
export type Buf = Float32Array | Int32Array;

/** The kernels of the library (see `src/api.c`; sizes in elements). */
export interface NativeLib {
  /** Where the library was loaded from. */
  path: string;
  /** The instruction set in use, and the best one this CPU supports. */
  isa(): IsaName;
  isaSupported(): IsaName;
  /** Uses `isa` (at most {@link NativeLib.isaSupported}); throws if the CPU lacks it. */
  setIsa(isa: IsaName): void;
  /** Runs kernels on `n` threads (the calling thread is one of them); returns the count. */
  setThreads(n: number): number;
  threads(): number;
  /** Online processors. */
  cpus(): number;
  /** The best bf16 GEMM mode of this CPU (`bf16-amx` if enabled, `bf16-avx512bf16`, else emulated). */
  bf16Supported(): GemmMode;
  /**
   * The precision of every later {@link NativeLib.bmm}, process-wide: `fp32`, a bf16 mode, or
   * `bf16` for the best bf16 mode of this CPU; returns the mode now in use. Throws if the CPU lacks
   * the mode. Attention stays float32.
   */
  setPrecision(mode: GemmMode | "bf16"): GemmMode;
  /** The GEMM precision in use. */
  precision(): GemmMode;
  /**
   * This CPU's measured peak for a GEMM mode, GFLOP/s of every pool thread at once: each runs
   * independent multiply-adds on registers (float32 FMAs; `VDPBF16PS`; AMX tiles) for `seconds`
   * (the emulated bf16 path multiplies in float32: its peak is float32's). Null for a mode this
   * CPU lacks.
   *
   * @example
   * ```ts
   * const lib = openNative();
   * console.log(lib.peakGflops("fp32"), lib.peakGflops(lib.bf16Supported()));
   * ```
   */
  peakGflops(mode: GemmMode, seconds?: number): number | null;
  /**
   * The peak loop's exact work on the calling thread, for tests: `iters` steps from accumulators
   * j = 0, 1, ... in every lane; `flops` counted and the lanes' final values summed (float32: acc
   * = acc * a + b a step; bf16: acc += 2 a b a lane; AMX: 32 a b). Null for a mode this CPU lacks.
   */
  peakCheck(
    mode: GemmMode,
    iters: number,
    a: number,
    b: number,
  ): { flops: number; sum: number } | null;
  /** `c[b] = op(a[b]) @ op(b[b])` for b < batch, `a[b]` at `a + b * sa` (sa 0 broadcasts). */
  bmm(
    a: Buf,
    b: Buf,
    c: Buf,
    batch: number,
    m: number,
    k: number,
    n: number,
    ta: boolean,
    tb: boolean,
    sa: number,
    sb: number,
  ): void;
  /**
   * A linear layer with its residual: `y [m, n] = res + (x [m, k] @ w [n, k]^T + b [n])` (`b`,
   * `res` null: none), as `bmm` and two adds. `x16`: `x` holds `m * k` bf16 (as `linearGelu`'s
   * `y16` writes them) instead of float32.
   */
  linear(
    x: Buf | Uint16Array,
    w: Buf,
    b: Buf | null,
    res: Buf | null,
    y: Buf,
    m: number,
    k: number,
    n: number,
    x16?: boolean,
  ): void;
  /**
   * fc1 with its GELU: `h = x @ w^T + b` (`b` null: none) and `y = gelu(h)`, as `linear` + `gelu`.
   * `y16`: `y` gets `m * n` bf16 (each value rounded to nearest even, in a `Uint16Array`'s layout):
   * in the bf16 precisions exactly what the next product reads of `y`, in half the bytes. `x16`:
   * `x` holds bf16, as in `linear`.
   */
  linearGelu(
    x: Buf | Uint16Array,
    w: Buf,
    b: Buf | null,
    h: Buf,
    y: Buf | Uint16Array,
    m: number,
    k: number,
    n: number,
    x16?: boolean,
    y16?: boolean,
  ): void;
  /**
   * Its backward from `dy [m, n]`: `dx = dy @ w`, `dw = dy^T @ x`, `db` the column sums of `dy`
   * (null: not wanted), summed as `dw`'s product packs `dy`. With `pre [m, k]` (fc2 after a GELU:
   * `x = gelu(pre)`; null: none), `dx = (dy @ w) * gelu'(pre)`, the gradient at `pre`, GELU's
   * gradient in the product's output pass. `x16`: `x` holds bf16, as in `linear`.
   */
  linearGrad(
    dy: Buf,
    x: Buf | Uint16Array,
    w: Buf,
    pre: Buf | null,
    dx: Buf,
    dw: Buf,
    db: Buf | null,
    m: number,
    k: number,
    n: number,
    x16?: boolean,
  ): void;
  /** `out16`: `out` gets the values rounded to bf16 (as `linearGelu`'s `y16`). */
  attention(
    qkv: Buf,
    out: Buf | Uint16Array,
    probs: Buf,
    batch: number,
    T: number,
    heads: number,
    hd: number,
    scale: number,
    out16?: boolean,
  ): void;
  /** `dprobs` null: a zero gradient of the probabilities (they had no consumer). */
  attentionGrad(
    dout: Buf,
    dprobs: Buf | null,
    qkv: Buf,
    probs: Buf,
    dqkv: Buf,
    batch: number,
    T: number,
    heads: number,
    hd: number,
    scale: number,
  ): void;
  /** `out = a op b`; `meta` holds shape[4], a's strides[4], b's strides[4] (0 broadcasts). */
  binary(op: number, a: Buf, b: Buf, out: Buf, meta: Int32Array): void;
  unary(op: number, x: Buf, y: Buf, n: number, alpha: number): void;
  /** `out[r] = sum_c x[r, c] / div` (a double accumulator). */
  sumRows(x: Buf, out: Buf, rows: number, cols: number, div: number): void;
  /** `out[c] = sum_r x[r, c] / div` (a double accumulator). */
  sumCols(x: Buf, out: Buf, rows: number, cols: number, div: number): void;
  /** `out[c] = x[0, c] + x[1, c] + ...` in float32, rows in order from +0 (the Tile gradient). */
  sumColsF32(x: Buf, out: Buf, rows: number, cols: number): void;
  /** `[batch, rows, cols, inner]` to `[batch, cols, rows, inner]`. */
  transpose(src: Buf, dst: Buf, batch: number, rows: number, cols: number, inner: number): void;
  /** `y = min(max(x, lo), hi)`, NaN kept. */
  clip(x: Buf, y: Buf, n: number, lo: number, hi: number): void;
  /** `out[i..] = src[sum_a idx_a[i_a]]`; `meta` = out shape, `idx` the per-axis offsets. */
  gatherIdx(src: Buf, dst: Buf, rank: number, meta: Int32Array, idx: Int32Array): void;
  /**
   * Depthwise conv, NHWC, filter `[fh, fw, C, mult]`; `meta`: B, H, W, C, mult, fh, fw, oh, ow,
   * strides h w, dilations h w, pad top left.
   */
  dwconv(x: Buf, f: Buf, y: Buf, meta: Int32Array): void;
  /** Bilinear crop-and-resize; `meta`: B, H, W, C, boxes, crop h, crop w. */
  cropAndResize(
    img: Buf,
    boxes: Buf,
    ind: Int32Array,
    out: Buf,
    meta: Int32Array,
    extrapolation: number,
  ): void;
  /** Any permutation: `meta` = out shape[rank], then the source stride of each out axis. */
  transposeNd(src: Buf, dst: Buf, rank: number, meta: Int32Array): void;
  /** For r < rows: `len` elements from `src[so + r * ss]` to `dst[dof + r * ds]`. */
  copyRows(
    src: Buf,
    so: number,
    dst: Buf,
    dof: number,
    rows: number,
    len: number,
    ss: number,
    ds: number,
  ): void;
  /** `y16`: `y` gets the values rounded to bf16 (as `linearGelu`'s `y16`). */
  layernorm(
    x: Buf,
    g: Buf,
    b: Buf,
    y: Buf | Uint16Array,
    rows: number,
    d: number,
    eps: number,
    y16?: boolean,
  ): void;
  /** LayerNorm's gradient; with `dres` (null: none), `dx` = `dres` + LayerNorm's gradient. */
  layernormGrad(
    dy: Buf,
    x: Buf,
    g: Buf,
    dres: Buf | null,
    dx: Buf,
    dg: Buf,
    db: Buf,
    rows: number,
    d: number,
    eps: number,
  ): void;
  /**
   * BatchNorm of `x [rows, d]` over its rows (training mode): `y`, and the batch's `mean` and
   * biased `variance [d]` (`g`, `b` null: none).
   */
  batchnorm(
    x: Buf,
    g: Buf | null,
    b: Buf | null,
    y: Buf,
    mean: Buf,
    variance: Buf,
    rows: number,
    d: number,
    eps: number,
  ): void;
  /** Its gradient `dx`, and `dg`, `db` (null: not wanted); `dmean`, `dvar` null for zero. */
  batchnormGrad(
    dy: Buf,
    x: Buf,
    g: Buf | null,
    mean: Buf,
    variance: Buf,
    dmean: Buf | null,
    dvar: Buf | null,
    dx: Buf,
    dg: Buf | null,
    db: Buf | null,
    rows: number,
    d: number,
    eps: number,
  ): void;
  gelu(x: Buf, y: Buf, n: number): void;
  geluGrad(dy: Buf, x: Buf, dx: Buf, n: number): void;
  adamw(
    p: Buf,
    g: Buf,
    m: Buf,
    v: Buf,
    p1: Buf,
    m1: Buf,
    v1: Buf,
    n: number,
    c1m: number,
    b2: number,
    c2: number,
    sbc2: number,
    eps: number,
    decay: number,
    step: number,
    hasDecay: boolean,
  ): void;
  ema(t: Buf, s: Buf, t1: Buf, n: number, mom: number, oneMinus: number): void;
  /**
   * `adamw` on many tensors at once, in place (`p[i]`, `m[i]`, `v[i]` overwritten; no array may
   * overlap another), `hasDecay[i]` per tensor, the coefficients shared: the same bits as `adamw`
   * per tensor, in one call and one job of the thread pool.
   *
   * @example
   * ```ts
   * const c = { c1m: 0.1, b2: 0.999, c2: 0.001, sbc2: 0.0447, eps: 1e-8, decay: 0.9999, step: 1e-3 };
   * lib.adamwInPlace([p], [g], [m], [v], [true], c);
   * ```
   */
  adamwInPlace(
    p: Float32Array[],
    g: Float32Array[],
    m: Float32Array[],
    v: Float32Array[],
    hasDecay: boolean[],
    c: Omit<AdamWCoefficients, "hasDecay">,
  ): void;
  /** `ema` on many tensors at once, in place (`t[i] = t[i] * mom + s[i] * oneMinus`). */
  emaInPlace(t: Float32Array[], s: Float32Array[], mom: number, oneMinus: number): void;
  /**
   * `vals`, `idx` `[rows, k]`: the `k` largest of each row of `x` `[rows, n]` (0 <= k <= n), by
   * value descending, equal values (-0 and +0 too) by ascending index, as tfjs's sorted TopK.
   * Returns false, with the outputs unspecified, if `x` holds a NaN or an infinity.
   */
  topk(x: Buf, vals: Buf, idx: Int32Array, rows: number, n: number, k: number): boolean;
}

/**
 * The addresses of the arrays of each group, interleaved per tensor (`groups[0][i]`,
 * `groups[1][i]`, ...), for the library's many-tensor calls; every group's `i`-th array must hold
 * `n[i]` floats. Reading `.buffer` first moves a small array's data off V8's heap, where the
 * garbage collector could move it before the call.
 */
function addresses(groups: Float32Array[][], n: Int32Array): BigUint64Array {
  const out = new BigUint64Array(groups.length * n.length);
  for (let i = 0; i < n.length; i++) {
    groups.forEach((g, j) => {
      if (g[i].length !== n[i]) throw new Error(`tensor ${i}: ${g[i].length} floats, not ${n[i]}`);
      void g[i].buffer;
      out[i * groups.length + j] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(g[i])));
    });
  }
  return out;
}

/** The file name of the committed library for this platform, or why there is none. */
export function libraryName(
  os: string = Deno.build.os,
  arch: string = Deno.build.arch,
): { name?: string; reason?: string } {
  if (os === "linux" && arch === "x86_64") return { name: "libvitssl_native.linux-x86_64.so" };
  return {
    reason: `no native library for ${os}-${arch} (only linux-x86_64 is built; ` +
      "build one with lib/backends/native/build.sh and set VITSSL_NATIVE_LIB)",
  };
}

/** Where the library is looked for: `VITSSL_NATIVE_LIB`, else the committed file. */
export function libraryPath(): string {
  const env = Deno.env.get("VITSSL_NATIVE_LIB");
  if (env) return env;
  const { name, reason } = libraryName();
  if (!name) throw new NativeLoadError(reason);
  return new URL(`./${name}`, import.meta.url).pathname;
}

let opened: NativeLib | undefined;
let openedPath: string | undefined;

/**
 * Opens the library (once per path; later calls return the same object). Throws
 * {@link NativeLoadError} with the reason when it cannot.
 */
export function openNative(path?: string): NativeLib {
  let where: string;
  try {
    where = path ?? libraryPath();
  } catch (e) {
    if (e instanceof NativeLoadError) throw e;
    throw new NativeLoadError(`cannot read VITSSL_NATIVE_LIB: ${(e as Error).message}`);
  }
  if (opened && openedPath === where) return opened;
  try {
    Deno.statSync(where);
  } catch (e) {
    throw new NativeLoadError(
      `the native library ${where} is missing (${(e as Error).message.split("\n")[0]}): ` +
        "build it with `bash lib/backends/native/build.sh` (needs gcc)",
    );
  }
  let dl: Deno.DynamicLibrary<typeof SYMBOLS>;
  try {
    dl = Deno.dlopen(where, SYMBOLS);
  } catch (e) {
    const msg = (e as Error).message.split("\n")[0];
    const hint = e instanceof Deno.errors.NotCapable || /--allow-ffi|permission/i.test(msg)
      ? "run Deno with --allow-ffi (or -A)"
      : "rebuild it with `bash lib/backends/native/build.sh`";
    throw new NativeLoadError(`cannot open the native library ${where} (${msg}): ${hint}`);
  }
  const s = dl.symbols;
  const version = s.vn_version();
  if (version !== NATIVE_API_VERSION) {
    dl.close();
    throw new NativeLoadError(
      `the native library ${where} speaks API version ${version}, this vitssl needs ` +
        `${NATIVE_API_VERSION}: rebuild it with \`bash lib/backends/native/build.sh\``,
    );
  }
  const isaName = (i: number): IsaName => ISA_NAMES[i] ?? "base";
  const lib: NativeLib = {
    path: where,
    isa: () => isaName(s.vn_isa()),
    isaSupported: () => isaName(s.vn_isa_supported()),
    setIsa(isa) {
      if (s.vn_set_isa(ISA_NAMES.indexOf(isa)) < 0) {
        throw new NativeLoadError(`this CPU has no ${isa} (best: ${lib.isaSupported()})`);
      }
    },
    setThreads: (n) => s.vn_set_threads(n),
    threads: () => s.vn_threads(),
    cpus: () => s.vn_cpus(),
    bf16Supported: () => GEMM_MODES[s.vn_bf16_supported()] ?? "bf16-emulated",
    setPrecision(mode) {
      const code = mode === "bf16" ? -1 : GEMM_MODES.indexOf(mode);
      const r = code < 0 && mode !== "bf16" ? -1 : s.vn_set_precision(code);
      if (r < 0) {
        throw new NativeLoadError(
          `this CPU has no ${mode} GEMM (best bf16: ${lib.bf16Supported()})`,
        );
      }
      return GEMM_MODES[r];
    },
    precision: () => GEMM_MODES[s.vn_precision()],
    peakGflops(mode, seconds = 0.25) {
      const r = s.vn_peak_gflops(GEMM_MODES.indexOf(mode), seconds);
      return r < 0 ? null : r;
    },
    peakCheck(mode, iters, a, b) {
      const out = new Float64Array(2);
      if (s.vn_peak_check(GEMM_MODES.indexOf(mode), BigInt(iters), a, b, out) < 0) return null;
      return { flops: out[0], sum: out[1] };
    },
    bmm: (a, b, c, batch, m, k, n, ta, tb, sa, sb) =>
      s.vn_bmm(a, b, c, batch, m, k, n, ta ? 1 : 0, tb ? 1 : 0, BigInt(sa), BigInt(sb)),
    linear: (x, w, b, res, y, m, k, n, x16) => s.vn_linear(x, w, b, res, y, m, k, n, x16 ? 1 : 0),
    linearGelu: (x, w, b, h, y, m, k, n, x16, y16) =>
      s.vn_linear_gelu(x, w, b, h, y, m, k, n, x16 ? 1 : 0, y16 ? 1 : 0),
    linearGrad: (dy, x, w, pre, dx, dw, db, m, k, n, x16) =>
      s.vn_linear_grad(dy, x, w, pre, dx, dw, db, m, k, n, x16 ? 1 : 0),
    attention: (qkv, out, probs, batch, T, heads, hd, scale, out16) =>
      s.vn_attention(qkv, out, probs, batch, T, heads, hd, scale, out16 ? 1 : 0),
    attentionGrad: (dout, dprobs, qkv, probs, dqkv, batch, T, heads, hd, scale) =>
      s.vn_attention_grad(dout, dprobs, qkv, probs, dqkv, batch, T, heads, hd, scale),
    binary: (op, a, b, out, meta) => s.vn_binary(op, a, b, out, meta),
    unary: (op, x, y, n, alpha) => s.vn_unary(op, x, y, n, alpha),
    sumRows: (x, out, rows, cols, div) => s.vn_sum_rows(x, out, rows, cols, div),
    sumCols: (x, out, rows, cols, div) => s.vn_sum_cols(x, out, rows, cols, div),
    sumColsF32: (x, out, rows, cols) => s.vn_sum_cols_f32(x, out, rows, cols),
    transpose: (src, dst, batch, rows, cols, inner) =>
      s.vn_transpose(src, dst, batch, rows, cols, inner),
    clip: (x, y, n, lo, hi) => s.vn_clip(x, y, n, lo, hi),
    gatherIdx: (src, dst, rank, meta, idx) => s.vn_gather_idx(src, dst, rank, meta, idx),
    dwconv: (x, f, y, meta) => s.vn_dwconv(x, f, y, meta),
    cropAndResize: (img, boxes, ind, out, meta, ex) =>
      s.vn_crop_and_resize(img, boxes, ind, out, meta, ex),
    transposeNd: (src, dst, rank, meta) => s.vn_transpose_nd(src, dst, rank, meta),
    copyRows: (src, so, dst, dof, rows, len, ss, ds) =>
      s.vn_copy_rows(src, so, dst, dof, rows, len, ss, ds),
    layernorm: (x, g, b, y, rows, d, eps, y16) =>
      s.vn_layernorm(x, g, b, y, rows, d, eps, y16 ? 1 : 0),
    layernormGrad: (dy, x, g, dres, dx, dg, db, rows, d, eps) =>
      s.vn_layernorm_grad(dy, x, g, dres, dx, dg, db, rows, d, eps),
    batchnorm: (x, g, b, y, mean, variance, rows, d, eps) =>
      s.vn_batchnorm(x, g, b, y, mean, variance, rows, d, eps),
    batchnormGrad: (dy, x, g, mean, variance, dmean, dvar, dx, dg, db, rows, d, eps) =>
      s.vn_batchnorm_grad(dy, x, g, mean, variance, dmean, dvar, dx, dg, db, rows, d, eps),
    gelu: (x, y, n) => s.vn_gelu(x, y, n),
    geluGrad: (dy, x, dx, n) => s.vn_gelu_grad(dy, x, dx, n),
    adamw: (p, g, m, v, p1, m1, v1, n, c1m, b2, c2, sbc2, eps, decay, step, hasDecay) =>
      s.vn_adamw(p, g, m, v, p1, m1, v1, n, c1m, b2, c2, sbc2, eps, decay, step, hasDecay ? 1 : 0),
    ema: (t, src, t1, n, mom, oneMinus) => s.vn_ema(t, src, t1, n, mom, oneMinus),
    adamwInPlace(p, g, m, v, hasDecay, c) {
      const n = Int32Array.from(p, (a) => a.length);
      const ptrs = addresses([p, g, m, v], n);
      const flags = Int32Array.from(hasDecay, (d) => d ? 1 : 0);
      const { c1m, b2, c2, sbc2, eps, decay, step } = c;
      s.vn_adamw_many(p.length, ptrs, n, flags, c1m, b2, c2, sbc2, eps, decay, step);
    },
    emaInPlace(t, src, mom, oneMinus) {
      const n = Int32Array.from(t, (a) => a.length);
      s.vn_ema_many(t.length, addresses([t, src], n), n, mom, oneMinus);
    },
    topk: (x, vals, idx, rows, n, k) => s.vn_topk(x, vals, idx, rows, n, k) === 0,
  };
  opened = lib;
  openedPath = where;
  return lib;
}
