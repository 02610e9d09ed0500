/**
 * Fused float32 kernels for the wasm backend, from `lib/backends/wasm/kernels.c` (WebAssembly SIMD128,
 * built by `lib/backends/wasm/build.sh`; the binaries are committed).
 *
 * tfjs-backend-wasm 4.22 runs a ViT training step as thousands of small kernels, and several of
 * the hot ones on a scalar path: batched matmuls (attention) in a scalar loop at ~3 GFLOP/s,
 * reductions over a leading axis (bias gradients) behind a transpose, LayerNorm as ~10 kernels
 * each way and exact GELU as 4 (Erf alone ~4 ns per element). This module instantiates the C
 * kernels on the backend's own linear memory (they work in place on its tensors, no copies) and
 * registers:
 *
 * - `VitsslLayerNorm` / `VitsslLayerNormGrad`, `VitsslGelu` / `VitsslGeluGrad` and
 *   `VitsslAttention` / `VitsslAttentionGrad` (all heads of self-attention from the qkv projection),
 *   with gradients, and `VitsslAdamW` and `VitsslEma` (bit-identical to the unfused ops), and
 *   registers them as the `wasm` backend's fast paths ({@link KERNEL_FAST_PATHS}) in the registry
 *   of `lib/backends/fused.ts`, which the layer primitives of `lib/model/layers.ts` and
 *   `applyGradients` of `lib/optim/optim.ts` consult; nothing else calls them;
 * - a `Sum` that reduces leading axes in one pass (other reductions keep tfjs's kernel);
 * - {@link wasmKernelsFor}, which `lib/backends/wasm/matmul.ts` uses for batched matmuls.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { initBackend } from "../mod.ts";
 * import { gelu } from "../../model/layers.ts";
 * await initBackend({ backend: "wasm" }); // installs the kernels and their fast paths
 * gelu(tf.tensor1d([-1, 0, 1])).print(); // [-0.1587, 0, 0.8413], one fused kernel
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type AdamWCoefficients, type FastPaths, registerFastPaths } from "../fused.ts";

export type { AdamWCoefficients };

/** The C kernels' exports (pointers are byte offsets into the backend's memory). */
export interface WasmKernels {
  /** C[b] = op(A[b]) @ op(B[b]); strides in elements (0 broadcasts); see kernels.c. */
  bmm(
    a: number,
    b: number,
    c: number,
    batch: number,
    m: number,
    k: number,
    n: number,
    ta: number,
    tb: number,
    sa: number,
    sb: number,
  ): void;
  colsum(x: number, out: number, rows: number, cols: number): void;
  /** `[batch, rows, cols, inner]` to `[batch, cols, rows, inner]`. */
  transpose(
    src: number,
    dst: number,
    batch: number,
    rows: number,
    cols: number,
    inner: number,
  ): void;
  layernorm(x: number, g: number, b: number, y: number, rows: number, d: number, eps: number): void;
  layernorm_grad(
    dy: number,
    x: number,
    g: number,
    dx: number,
    dg: number,
    db: number,
    rows: number,
    d: number,
    eps: number,
  ): void;
  gelu(x: number, y: number, n: number): void;
  adamw(
    p: number,
    g: number,
    m: number,
    v: number,
    p1: number,
    m1: number,
    v1: number,
    n: number,
    c1m: number,
    b2: number,
    c2: number,
    sbc2: number,
    eps: number,
    decay: number,
    step: number,
    hasDecay: number,
  ): void;
  ema(t: number, s: number, t1: number, n: number, mom: number, oneMinus: number): void;
  /** For r < rows: copies `len` elements from `src + r * srcStride` to `dst + r * dstStride`. */
  copy_rows(
    src: number,
    dst: number,
    rows: number,
    len: number,
    srcStride: number,
    dstStride: number,
  ): void;
  gelu_grad(dy: number, x: number, dx: number, n: number): void;
  attention(
    qkv: number,
    out: number,
    probs: number,
    scratch: number,
    B: number,
    T: number,
    H: number,
    hd: number,
    scale: number,
  ): void;
  attention_grad(
    dout: number,
    dprobs: number,
    qkv: number,
    probs: number,
    dqkv: number,
    scratch: number,
    B: number,
    T: number,
    H: number,
    hd: number,
    scale: number,
  ): void;
}

/** The parts of tfjs-backend-wasm's `BackendWasm` the kernels use. */
export interface WasmBackendLike extends tf.KernelBackend {
  incRef(dataId: tf.DataId): void;
  wasm: Record<string, unknown>;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number } };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const BINARIES = {
  plain: new URL("./kernels.wasm", import.meta.url),
  shared: new URL("./kernels_shared.wasm", import.meta.url),
};
const compiled = new Map<keyof typeof BINARIES, WebAssembly.Module>();
const instances = new WeakMap<object, WasmKernels | null>();

/** The backend module's linear memory, wherever this build of the glue keeps it. */
function findMemory(mod: Record<string, unknown>): WebAssembly.Memory | undefined {
  if (mod.wasmMemory instanceof WebAssembly.Memory) return mod.wasmMemory;
  const asm = (mod.asm ?? mod.wasmExports) as Record<string, unknown> | undefined;
  if (asm) {
    if (asm.memory instanceof WebAssembly.Memory) return asm.memory;
    for (const v of Object.values(asm)) if (v instanceof WebAssembly.Memory) return v;
  }
  return undefined;
}

/**
 * The C kernels instantiated on `backend`'s memory (cached per backend), or `undefined` if this
 * backend is not tfjs-backend-wasm or its memory cannot be found.
 */
export function wasmKernelsFor(backend: tf.KernelBackend): WasmKernels | undefined {
  const mod = (backend as Partial<WasmBackendLike>).wasm;
  if (!mod) return undefined;
  let k = instances.get(mod);
  if (k === undefined) {
    const memory = findMemory(mod);
    k = null;
    if (memory) {
      const kind = memory.buffer instanceof SharedArrayBuffer ? "shared" : "plain";
      let m = compiled.get(kind);
      if (!m) {
        m = new WebAssembly.Module(Deno.readFileSync(BINARIES[kind]));
        compiled.set(kind, m);
      }
      k = new WebAssembly.Instance(m, { env: { memory } }).exports as unknown as WasmKernels;
    }
    instances.set(mod, k);
  }
  return k ?? undefined;
}

function ptr(backend: WasmBackendLike, t: tf.TensorInfo): number {
  return backend.dataIdMap.get(t.dataId).memoryOffset;
}

function kernelsOf(backend: WasmBackendLike): WasmKernels {
  const k = wasmKernelsFor(backend);
  if (!k) throw new Error("backends/wasm/kernels.ts: the wasm backend's memory was not found");
  return k;
}

interface KArgs {
  inputs: Record<string, tf.TensorInfo>;
  backend: WasmBackendLike;
  attrs: Record<string, number>;
}

/** Names of the custom kernels (registered for wasm here, for native by lib/backends/native). */
const LN = "VitsslLayerNorm", LN_GRAD = "VitsslLayerNormGrad";
const GELU = "VitsslGelu", GELU_GRAD = "VitsslGeluGrad";
const ADAMW = "VitsslAdamW", EMA = "VitsslEma";
const ATTN = "VitsslAttention", ATTN_GRAD = "VitsslAttentionGrad";
const LINEAR = "VitsslLinear", LINEAR_GRAD = "VitsslLinearGrad";
const LINEAR_GELU = "VitsslLinearGelu";
const ROW_SUM = "VitsslRowSum";
const ADAMW_IN_PLACE = "VitsslAdamWInPlace", EMA_IN_PLACE = "VitsslEmaInPlace";
const BN = "VitsslBatchNorm", BN_GRAD = "VitsslBatchNormGrad";

/**
 * The fused kernels' names, for another backend that implements them (its kernels take the same
 * inputs and attributes as the wasm ones above).
 *
 * @example
 * ```ts
 * tf.registerKernel({ kernelName: FUSED_KERNELS.gelu, backendName: "native", kernelFunc });
 * ```
 */
export const FUSED_KERNELS = {
  /**
   * `x, gamma, beta` -> LayerNorm over the last axis (attribute `eps`). With attribute `bf16Out`
   * 1 (native only), where the products round their operands to bf16 in hardware and the width is
   * even, the output comes back as `linearGelu`'s does with it: rows of bf16 (int32 `[rows, D /
   * 2]`), for `linear`, `linearGelu` and `linearGrad` to read as `x`.
   */
  layerNorm: LN,
  /**
   * `dy, x, gamma` -> `[dx, dgamma, dbeta]`; with an input `dres` (native only), `dx` = `dres` +
   * LayerNorm's gradient (a residual's gradient added in the same pass).
   */
  layerNormGrad: LN_GRAD,
  /**
   * `x [M, D]`, `gamma, beta [D]` -> `[y, mean, variance]`: BatchNorm over the rows with this
   * batch's statistics (attribute `eps`; native only).
   */
  batchNorm: BN,
  /** `dy, x, gamma, mean, variance, dmean, dvar` -> `[dx, dgamma, dbeta]` (native only). */
  batchNormGrad: BN_GRAD,
  gelu: GELU,
  geluGrad: GELU_GRAD,
  adamw: ADAMW,
  ema: EMA,
  /**
   * `qkv [B*T, 3D]` -> `[out [B*T, D], probs [B, H, T, T]]` (attributes `batch`, `heads`,
   * `scale`). With attribute `bf16Out` 1 (native only), `out` may come back as bf16, as
   * `layerNorm`'s does.
   */
  attention: ATTN,
  attentionGrad: ATTN_GRAD,
  /**
   * `x [M, K]`, `w [N, K]`, optional `b [N]` and `res [M, N]` -> `res + (x @ w^T + b)` (native
   * only; `x` may be the bf16 output of `linearGelu` or `layerNorm`, as may `linearGrad`'s and
   * `linearGelu`'s).
   */
  linear: LINEAR,
  /**
   * `dy, x, w` -> `[dx, dw]`, and `db` when `b` is an input (attribute `hasBias` 1); with an input
   * `pre` (native only), `dx` is the gradient at `pre` where `x = gelu(pre)`: `(dy @ w) *
   * gelu'(pre)`, GELU's gradient in the product's output pass.
   */
  linearGrad: LINEAR_GRAD,
  /**
   * `x, w`, optional `b` -> `[gelu(h), h]` with `h = x @ w^T + b` (native only). With attribute
   * `bf16Out` 1, where the products round their operands to bf16 in hardware and `h` has an even
   * number of columns, `gelu(h)` comes back rounded to bf16, two a word (dtype int32, shape
   * `[M, N / 2]`): exactly what `linear` and `linearGrad` read of it, as their input `x`, in half
   * the bytes.
   */
  linearGelu: LINEAR_GELU,
  /**
   * `x [R, C]` -> `[C]`: each column summed in float32, row after row from +0 (tfjs's `Tile`
   * gradient, one `Add` per row, in one kernel; native only).
   */
  rowSum: ROW_SUM,
  /**
   * `p0, g0, m0, v0, p1, ...` -> nothing: AdamW on every parameter in place (attributes as
   * `adamw`'s, and `hasDecay` a 0/1 per parameter; native only: `FastPaths.adamwInPlace`).
   */
  adamwInPlace: ADAMW_IN_PLACE,
  /** `t0, s0, t1, ...` -> nothing: the EMA of every pair in place (attribute `mom`; native only). */
  emaInPlace: EMA_IN_PLACE,
} as const;

/** Runs `f` with a pointer to `n` floats of scratch memory on the backend, freed afterwards. */
function withScratch(backend: WasmBackendLike, n: number, f: (pointer: number) => void): void {
  const scratch = backend.makeOutput([n], "float32");
  try {
    f(ptr(backend, scratch));
  } finally {
    backend.disposeData(scratch.dataId);
  }
}

/** Zeroes `n` floats of the backend's memory at byte offset `pointer`; returns `pointer`. */
function zeroed(backend: WasmBackendLike, pointer: number, n: number): number {
  new Float32Array(findMemory(backend.wasm)!.buffer, pointer, n).fill(0);
  return pointer;
}

function float32(name: string, ...ts: tf.TensorInfo[]): void {
  for (const t of ts) {
    if (t.dtype !== "float32") throw new Error(`${name}: expected float32 tensors, got ${t.dtype}`);
  }
}

const kernels: Array<{ name: string; fn: (args: KArgs) => tf.TensorInfo | tf.TensorInfo[] }> = [
  {
    name: LN,
    fn: ({ inputs: { x, gamma, beta }, backend, attrs: { eps } }) => {
      float32(LN, x, gamma, beta);
      const d = gamma.shape[0];
      const y = backend.makeOutput(x.shape, "float32");
      const rows = tf.util.sizeFromShape(x.shape) / d;
      kernelsOf(backend).layernorm(
        ptr(backend, x),
        ptr(backend, gamma),
        ptr(backend, beta),
        ptr(backend, y),
        rows,
        d,
        eps,
      );
      return y;
    },
  },
  {
    name: LN_GRAD,
    fn: ({ inputs: { dy, x, gamma }, backend, attrs: { eps } }) => {
      float32(LN_GRAD, dy, x, gamma);
      const d = gamma.shape[0];
      const dx = backend.makeOutput(x.shape, "float32");
      const dg = backend.makeOutput([d], "float32");
      const db = backend.makeOutput([d], "float32");
      const rows = tf.util.sizeFromShape(x.shape) / d;
      kernelsOf(backend).layernorm_grad(
        ptr(backend, dy),
        ptr(backend, x),
        ptr(backend, gamma),
        ptr(backend, dx),
        ptr(backend, dg),
        ptr(backend, db),
        rows,
        d,
        eps,
      );
      return [dx, dg, db];
    },
  },
  {
    name: GELU,
    fn: ({ inputs: { x }, backend }) => {
      float32(GELU, x);
      const y = backend.makeOutput(x.shape, "float32");
      kernelsOf(backend).gelu(ptr(backend, x), ptr(backend, y), tf.util.sizeFromShape(x.shape));
      return y;
    },
  },
  {
    name: GELU_GRAD,
    fn: ({ inputs: { dy, x }, backend }) => {
      float32(GELU_GRAD, dy, x);
      const dx = backend.makeOutput(x.shape, "float32");
      kernelsOf(backend).gelu_grad(
        ptr(backend, dy),
        ptr(backend, x),
        ptr(backend, dx),
        tf.util.sizeFromShape(x.shape),
      );
      return dx;
    },
  },
  {
    name: ADAMW,
    fn: ({ inputs: { p, g, m, v }, backend, attrs: a }) => {
      float32(ADAMW, p, g, m, v);
      const [p1, m1, v1] = [p, m, v].map(() => backend.makeOutput(p.shape, "float32"));
      kernelsOf(backend).adamw(
        ptr(backend, p),
        ptr(backend, g),
        ptr(backend, m),
        ptr(backend, v),
        ptr(backend, p1),
        ptr(backend, m1),
        ptr(backend, v1),
        tf.util.sizeFromShape(p.shape),
        a.c1m,
        a.b2,
        a.c2,
        a.sbc2,
        a.eps,
        a.decay,
        a.step,
        a.hasDecay,
      );
      return [p1, m1, v1];
    },
  },
  {
    name: EMA,
    fn: ({ inputs: { t, s }, backend, attrs: { mom } }) => {
      float32(EMA, t, s);
      const t1 = backend.makeOutput(t.shape, "float32");
      const n = tf.util.sizeFromShape(t.shape);
      kernelsOf(backend).ema(ptr(backend, t), ptr(backend, s), ptr(backend, t1), n, mom, 1 - mom);
      return t1;
    },
  },
  {
    name: ATTN,
    fn: ({ inputs: { qkv }, backend, attrs: { batch, heads, scale } }) => {
      float32(ATTN, qkv);
      const [rows, d3] = qkv.shape, T = rows / batch, D = d3 / 3;
      const out = backend.makeOutput([rows, D], "float32");
      const probs = backend.makeOutput([batch, heads, T, T], "float32");
      const hd = D / heads, Tp = Math.ceil(T / 4) * 4;
      if (rows > 0) {
        withScratch(backend, hd * Tp + Tp, (scratch) =>
          kernelsOf(backend).attention(
            ptr(backend, qkv),
            ptr(backend, out),
            ptr(backend, probs),
            scratch,
            batch,
            T,
            heads,
            hd,
            scale,
          ));
      }
      return [out, probs];
    },
  },
  {
    name: ATTN_GRAD,
    fn: ({ inputs: { dout, dprobs, qkv, probs }, backend, attrs: { batch, heads, scale } }) => {
      float32(ATTN_GRAD, dout, ...(dprobs ? [dprobs] : []), qkv, probs);
      const [rows, d3] = qkv.shape, T = rows / batch, D = d3 / 3;
      const dqkv = backend.makeOutput(qkv.shape, "float32");
      const hd = D / heads, Tp = Math.ceil(T / 4) * 4;
      // Without dprobs (the probabilities had no consumer), zeros after the kernel's scratch.
      const work = hd * Tp + T * Tp, nz = dprobs ? 0 : probs.shape.reduce((a, b) => a * b, 1);
      if (rows > 0) {
        withScratch(backend, work + nz, (scratch) =>
          kernelsOf(backend).attention_grad(
            ptr(backend, dout),
            dprobs ? ptr(backend, dprobs) : zeroed(backend, scratch + 4 * work, nz),
            ptr(backend, qkv),
            ptr(backend, probs),
            ptr(backend, dqkv),
            scratch,
            batch,
            T,
            heads,
            hd,
            scale,
          ));
      }
      return dqkv;
    },
  },
];

let installed = false;

/**
 * Registers the fused kernels (and their gradients) for the wasm backend and its leading-axis
 * `Sum`. Idempotent; call after tfjs-backend-wasm is imported. `initBackend` calls it.
 */
export function installWasmKernels(): void {
  if (installed) return;
  for (const { name, fn } of kernels) {
    tf.registerKernel({ kernelName: name, backendName: "wasm", kernelFunc: fn as never });
  }
  installFusedGradients();
  registerKernelFastPaths("wasm");
  installLeadingSum();
  installTranspose();
  installCopies();
  installed = true;
}

let gradientsInstalled = false;

/**
 * Registers the gradients of the fused LayerNorm, GELU and attention kernels (global in tfjs,
 * for every backend that has the kernels). Idempotent; `installWasmKernels` and the native
 * backend call it.
 *
 * @example
 * ```ts
 * installFusedGradients();
 * ```
 */
export function installFusedGradients(): void {
  if (gradientsInstalled) return;
  tf.registerGradient({
    kernelName: LN,
    inputsToSave: ["x", "gamma"],
    gradFunc: (dy, saved, attrs) => {
      const [x, gamma] = saved;
      const [dx, dg, db] = tf.engine().runKernel(
        LN_GRAD,
        { dy: dy as tf.Tensor, x, gamma },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
      return { x: () => dx, gamma: () => dg, beta: () => db };
    },
  });
  tf.registerGradient({
    kernelName: BN,
    inputsToSave: ["x", "gamma"],
    outputsToSave: [false, true, true],
    gradFunc: (dys, [x, gamma, mean, variance], attrs) => {
      const [dy, dmean, dvar] = dys as tf.Tensor[];
      const [dx, dg, db] = tf.engine().runKernel(
        BN_GRAD,
        { dy, x, gamma, mean, variance, dmean, dvar },
        attrs as unknown as tf.NamedAttrMap,
      ) as tf.Tensor[];
      return { x: () => dx, gamma: () => dg, beta: () => db };
    },
  });
  tf.registerGradient({
    kernelName: GELU,
    inputsToSave: ["x"],
    gradFunc: (dy, [x]) => ({
      x: () => tf.engine().runKernel(GELU_GRAD, { dy: dy as tf.Tensor, x }) as tf.Tensor,
    }),
  });
  tf.registerGradient({
    kernelName: ATTN,
    inputsToSave: ["qkv"],
    outputsToSave: [false, true],
    gradFunc: (dys, [qkv, probs], attrs) => {
      const [dout, dprobs] = dys as tf.Tensor[];
      return {
        qkv: () =>
          tf.engine().runKernel(
            ATTN_GRAD,
            { dout, dprobs, qkv, probs },
            attrs as unknown as tf.NamedAttrMap,
          ) as tf.Tensor,
      };
    },
  });
  tf.registerGradient({
    kernelName: LINEAR,
    inputsToSave: ["x", "w"],
    gradFunc: (dy, [x, w], attrs) => {
      const hasBias = Number((attrs as Record<string, unknown>).hasBias ?? 0);
      const [dx, dw, db] = tf.engine().runKernel(
        LINEAR_GRAD,
        { dy: dy as tf.Tensor, x, w },
        { hasBias },
      ) as tf.Tensor[];
      const grads: Record<string, () => tf.Tensor> = { x: () => dx, w: () => dw };
      if (hasBias) grads.b = () => db;
      // A residual's gradient is the output's (the Add's, reshaped to its own shape).
      if ((attrs as Record<string, unknown>).hasRes) grads.res = () => tf.clone(dy as tf.Tensor);
      return grads;
    },
  });
  gradientsInstalled = true;
}

/**
 * Replaces the wasm kernel `name` by `make(original)`, whose fast path falls back to the original
 * kernel function where it does not apply. Throws if tfjs-backend-wasm is not imported yet.
 */
export function replaceWasmKernel(
  name: string,
  make: (orig: tf.KernelConfig["kernelFunc"]) => (args: never) => unknown,
): void {
  const orig = tf.getKernel(name, "wasm");
  if (!orig) {
    throw new Error(
      `the wasm kernel ${name} is not registered: import "@tensorflow/tfjs-backend-wasm" (or ` +
        'initBackend({ backend: "wasm" })) first',
    );
  }
  tf.unregisterKernel(name, "wasm");
  tf.registerKernel({
    ...orig,
    kernelFunc: make(orig.kernelFunc) as tf.KernelConfig["kernelFunc"],
  });
}

/** Replaces the wasm `Sum` with one that reduces leading axes (`[0..j)`) in one pass. */
function installLeadingSum(): void {
  replaceWasmKernel(
    "Sum",
    (origFn) => (args: KArgs & { attrs: { axis: number | number[]; keepDims: boolean } }) => {
      const { inputs: { x }, backend, attrs: { axis, keepDims } } = args;
      const rank = x.shape.length;
      const axes = tf.util.parseAxisParam(axis, x.shape).sort((a, b) => a - b);
      const leading = axes.length > 0 && axes.length < rank && axes.every((a, i) => a === i);
      const k = leading && x.dtype === "float32" ? wasmKernelsFor(backend) : undefined;
      if (!k) return origFn(args as never);
      const rows = x.shape.slice(0, axes.length).reduce((p, q) => p * q, 1);
      const rest = x.shape.slice(axes.length);
      const cols = rest.reduce((p, q) => p * q, 1);
      const out = backend.makeOutput(keepDims ? [...axes.map(() => 1), ...rest] : rest, "float32");
      if (rows * cols > 0) k.colsum(ptr(backend, x), ptr(backend, out), rows, cols);
      return out;
    },
  );
}

/**
 * `[batch, rows, cols, inner]` sizes of a transpose `perm` of `shape` that swaps two adjacent
 * groups of axes (`[0..a) [b..c) [a..b) [c..r)`), or `undefined` for other permutations.
 */
export function swapGroups(
  shape: readonly number[],
  perm: readonly number[],
): [number, number, number, number] | undefined {
  const r = shape.length;
  const prod = (i: number, j: number) => shape.slice(i, j).reduce((p, q) => p * q, 1);
  for (let a = 0; a < r; a++) {
    if (perm[a] !== a) {
      const b = perm[a];
      const c = b + perm.indexOf(a) - a;
      const want = [
        ...Array.from({ length: a }, (_, i) => i),
        ...Array.from({ length: Math.max(c - b, 0) }, (_, i) => b + i),
        ...Array.from({ length: Math.max(b - a, 0) }, (_, i) => a + i),
        ...Array.from({ length: Math.max(r - c, 0) }, (_, i) => c + i),
      ];
      if (want.length !== r || want.some((v, i) => v !== perm[i])) return undefined;
      return [prod(0, a), prod(a, b), prod(b, c), prod(c, r)];
    }
  }
  return [prod(0, r), 1, 1, 1]; // identity
}

/**
 * Transposes `x` as `[batch, rows, cols, inner]` to `[batch, cols, rows, inner]` into a new
 * tensor of shape `outShape` with the SIMD kernel. The caller owns the result.
 */
export function transposeInto(
  backend: WasmBackendLike,
  k: WasmKernels,
  x: tf.TensorInfo,
  outShape: number[],
  [batch, rows, cols, inner]: [number, number, number, number],
): tf.TensorInfo {
  const out = backend.makeOutput(outShape, x.dtype);
  if (batch * rows * cols * inner > 0) {
    k.transpose(ptr(backend, x), ptr(backend, out), batch, rows, cols, inner);
  }
  return out;
}

/** Replaces the wasm `Transpose` of 4-byte tensors by the SIMD kernel where the perm allows. */
function installTranspose(): void {
  replaceWasmKernel("Transpose", (origFn) => (args: KArgs & { attrs: { perm: number[] } }) => {
    const { inputs: { x }, backend, attrs: { perm } } = args;
    const groups = x.dtype === "float32" || x.dtype === "int32"
      ? swapGroups(x.shape, perm)
      : undefined;
    const k = groups ? wasmKernelsFor(backend) : undefined;
    if (!k || !groups) return origFn(args as never);
    return transposeInto(backend, k, x, perm.map((p) => x.shape[p]), groups);
  });
}

/**
 * Replaces three wasm kernels that copy memory slowly or needlessly:
 * - `Identity` shares the input's data (tensor data is immutable; tfjs-backend-wasm copied it,
 *   and tfjs clones every tensor it saves for the backward pass through `Identity`);
 * - `SplitV` and `Concat` of 4-byte tensors become one strided block copy per part (wasm's
 *   `Concat` copied row by row from JavaScript; `SplitV` went through generic `Slice`s).
 */
function installCopies(): void {
  const fourBytes = (t: tf.TensorInfo) => t.dtype === "float32" || t.dtype === "int32";
  replaceWasmKernel("Identity", (origFn) => (args: KArgs) => {
    const { inputs: { x }, backend } = args;
    if (x.dtype === "string") return origFn(args as never);
    backend.incRef(x.dataId);
    return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
  });
  /** `[outer, axis, inner]` sizes of `shape` around `axis`. */
  const around = (shape: number[], axis: number) => [
    tf.util.sizeFromShape(shape.slice(0, axis)),
    shape[axis],
    tf.util.sizeFromShape(shape.slice(axis + 1)),
  ];
  replaceWasmKernel("SplitV", (origFn) =>
  (
    args: KArgs & { attrs: { numOrSizeSplits: number | number[]; axis: number } },
  ) => {
    const { inputs: { x }, backend, attrs: { numOrSizeSplits, axis } } = args;
    const k = fourBytes(x) ? wasmKernelsFor(backend) : undefined;
    if (!k) return origFn(args as never);
    const ax = tf.util.parseAxisParam(axis, x.shape)[0];
    const sizes = tf.backend_util.prepareSplitSize(x as tf.Tensor, numOrSizeSplits, ax);
    const [outer, len, inner] = around(x.shape, ax);
    let start = 0;
    return sizes.map((size) => {
      const shape = x.shape.slice();
      shape[ax] = size;
      const out = backend.makeOutput(shape, x.dtype);
      if (outer * size * inner > 0) {
        k.copy_rows(
          ptr(backend, x) + 4 * start * inner,
          ptr(backend, out),
          outer,
          size * inner,
          len * inner,
          size * inner,
        );
      }
      start += size;
      return out;
    });
  });
  replaceWasmKernel("Concat", (origFn) =>
  (
    args: { inputs: tf.TensorInfo[]; backend: WasmBackendLike; attrs: { axis: number } },
  ) => {
    const { inputs, backend } = args;
    const k = inputs.length > 1 && inputs.every(fourBytes) &&
        inputs.every((t) => t.dtype === inputs[0].dtype)
      ? wasmKernelsFor(backend)
      : undefined;
    if (!k) return origFn(args as never);
    const ax = tf.util.parseAxisParam(args.attrs.axis, inputs[0].shape)[0];
    tf.backend_util.assertParamsConsistent(inputs.map((t) => t.shape), ax);
    const outShape = tf.backend_util.computeOutShape(inputs.map((t) => t.shape), ax);
    const out = backend.makeOutput(outShape, inputs[0].dtype);
    const [outer, total, inner] = around(outShape, ax);
    let start = 0;
    for (const t of inputs) {
      const size = t.shape[ax];
      if (outer * size * inner > 0) {
        k.copy_rows(
          ptr(backend, t),
          ptr(backend, out) + 4 * start * inner,
          outer,
          size * inner,
          size * inner,
          total * inner,
        );
      }
      start += size;
    }
    return out;
  });
}

/** Whether the fused kernel `name` is available on the active backend. */
function active(name: string): boolean {
  const be = tf.getBackend();
  return tf.getKernel(name, be) !== undefined &&
    (be !== "wasm" || wasmKernelsFor(tf.backend()) !== undefined);
}

/** Whether the kernels of `mlp` are available for float32 tensors `ts` and weights of rank 2. */
function mlpActive(ts: tf.Tensor[], w1: tf.Tensor, w2: tf.Tensor): boolean {
  return [LINEAR, LINEAR_GELU, LINEAR_GRAD].every(active) &&
    ts.every((t) => t.dtype === "float32") && w1.rank === 2 && w2.rank === 2;
}

/**
 * The forward of a ViT MLP, `res + fc2(gelu(fc1(x)))`, as the kernels of `linearGelu` and
 * `linear`; `saved` is what {@link mlpBackward} takes.
 */
function mlpForward(
  x: tf.Tensor,
  w1: tf.Tensor,
  b1: tf.Tensor | undefined,
  w2: tf.Tensor,
  b2: tf.Tensor | undefined,
  res: tf.Tensor | undefined,
): { y: tf.Tensor; saved: tf.Tensor[] } {
  const in1: tf.NamedTensorMap = b1 ? { x, w: w1, b: b1 } : { x, w: w1 };
  // h may come back as bf16 (see FUSED_KERNELS.linearGelu): only fc2 and its gradient read it.
  const [h, pre] = tf.engine().runKernel(LINEAR_GELU, in1, {
    hasBias: b1 ? 1 : 0,
    bf16Out: 1,
  }) as tf.Tensor[];
  const in2: tf.NamedTensorMap = { x: h, w: w2 };
  if (b2) in2.b = b2;
  if (res) in2.res = res;
  const y = tf.engine().runKernel(LINEAR, in2, {
    hasBias: b2 ? 1 : 0,
    hasRes: res ? 1 : 0,
  }) as tf.Tensor;
  return { y, saved: [x, w1, h, pre, w2] };
}

/**
 * The MLP's backward from `dy`: `[dx, dw1, db1, dw2, db2]` (a bias's gradient `undefined` where
 * the layer has none): fc2's input gradient comes out at fc1's pre-activation, GELU's gradient
 * applied in that product's output pass, then fc1's.
 */
function mlpBackward(
  dy: tf.Tensor,
  [x, w1, h, pre, w2]: tf.Tensor[],
  hasB1: boolean,
  hasB2: boolean,
): (tf.Tensor | undefined)[] {
  const [dpre, dw2, db2] = tf.engine().runKernel(LINEAR_GRAD, { dy, x: h, w: w2, pre }, {
    hasBias: hasB2 ? 1 : 0,
  }) as tf.Tensor[];
  const [dx, dw1, db1] = tf.engine().runKernel(LINEAR_GRAD, { dy: dpre, x, w: w1 }, {
    hasBias: hasB1 ? 1 : 0,
  }) as tf.Tensor[];
  dpre.dispose();
  return [dx, dw1, db1, dw2, db2];
}

/**
 * LayerNorm of `x` for a block half whose only reader of it is a linear layer (and that layer's
 * weight gradient): bf16 where the products round to it (see FUSED_KERNELS.layerNorm).
 */
function normForProducts(x: tf.Tensor, gamma: tf.Tensor, beta: tf.Tensor, eps: number) {
  return tf.engine().runKernel(LN, { x, gamma, beta }, { eps, bf16Out: 1 }) as tf.Tensor;
}

/**
 * LayerNorm's backward at `x` from `dz`, with the residual's gradient `dres` added to dx in the
 * kernel's output pass (the two terms of x's gradient, one float32 add as the engine's Add):
 * `[dx, dgamma, dbeta]`.
 */
function normGrad(dz: tf.Tensor, x: tf.Tensor, gamma: tf.Tensor, eps: number, dres: tf.Tensor) {
  const grads = tf.engine().runKernel(LN_GRAD, { dy: dz, x, gamma, dres }, { eps });
  dz.dispose();
  return grads as tf.Tensor[];
}

/**
 * The fast paths of a backend that registers the fused kernels {@link FUSED_KERNELS} (the wasm
 * ones here, or another backend's with the same inputs and attributes). Each declines
 * (`undefined`) where its kernel is not available or does not apply: non-float32 inputs, or a
 * head width that is not a multiple of 4 (attention). The in-place optimiser paths are the native
 * backend's own (lib/backends/native/backend.ts adds them to these).
 *
 * @example
 * ```ts
 * registerFastPaths("wasm", KERNEL_FAST_PATHS); // what registerKernelFastPaths("wasm") does
 * ```
 */
export const KERNEL_FAST_PATHS: Required<Omit<FastPaths, "adamwInPlace" | "emaInPlace">> = {
  layerNorm(x, gamma, beta, eps) {
    if (!active(LN) || x.dtype !== "float32") return undefined;
    return tf.engine().runKernel(LN, { x, gamma, beta }, { eps }) as tf.Tensor;
  },
  batchNorm(x, weight, bias, eps) {
    if (!active(BN) || x.dtype !== "float32" || x.rank !== 2) return undefined;
    // Without an affine transform, gamma 1 and beta 0 (their gradients go nowhere).
    const d = x.shape[1];
    const gamma = weight ?? tf.ones([d]), beta = bias ?? tf.zeros([d]);
    const [y, mean, variance] = tf.engine().runKernel(BN, { x, gamma, beta }, { eps }) as [
      tf.Tensor2D,
      tf.Tensor1D,
      tf.Tensor1D,
    ];
    if (!weight) tf.dispose([gamma, beta]);
    return { y, mean, variance };
  },
  gelu(x) {
    if (!active(GELU) || x.dtype !== "float32") return undefined;
    return tf.engine().runKernel(GELU, { x }) as tf.Tensor;
  },
  attention(qkv, batch, heads, scale, withProbs) {
    const [rows, d3] = qkv.shape;
    const hd = d3 / 3 / heads;
    if (!active(ATTN) || qkv.dtype !== "float32" || hd % 4 !== 0 || rows % batch !== 0) {
      return undefined;
    }
    const attrs = { batch, heads, scale };
    if (withProbs) {
      return tf.engine().runKernel(ATTN, { qkv }, attrs) as [tf.Tensor2D, tf.Tensor4D];
    }
    // Without the probabilities as an output, a custom gradient (see linearGelu): the tape sees
    // one output, so no zero gradient of probs [B, heads, T, T] is allocated at every backward
    // (3.2 MB per call in tiny32); probs is saved for the backward, which runs without dprobs.
    const f = tf.customGrad((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const q = args[0] as tf.Tensor;
      const [out, probs] = tf.engine().runKernel(ATTN, { qkv: q }, attrs) as tf.Tensor[];
      save([q, probs]);
      return {
        value: out,
        gradFunc: (dy: tf.Tensor, [sq, sp]: tf.Tensor[]) =>
          tf.engine().runKernel(ATTN_GRAD, { dout: dy, qkv: sq, probs: sp }, attrs) as tf.Tensor,
      };
    });
    return [f(qkv) as tf.Tensor2D, undefined];
  },
  linear(x, w, b, res) {
    const ts = [x, w, ...(b ? [b] : []), ...(res ? [res] : [])];
    if (
      !active(LINEAR) || ts.some((t) => t.dtype !== "float32") || w.rank !== 2 ||
      (res && res.rank !== 2)
    ) {
      return undefined;
    }
    const inputs: tf.NamedTensorMap = { x, w };
    if (b) inputs.b = b;
    if (res) inputs.res = res;
    return tf.engine().runKernel(LINEAR, inputs, {
      hasBias: b ? 1 : 0,
      hasRes: res ? 1 : 0,
    }) as tf.Tensor2D;
  },
  linearGelu(x, w, b) {
    const ts = [x, w, ...(b ? [b] : [])];
    if (!active(LINEAR_GELU) || ts.some((t) => t.dtype !== "float32") || w.rank !== 2) {
      return undefined;
    }
    // A custom gradient, not a registered one: the tape then sees one output, y. (A kernel's
    // second output without a consumer gets a zero gradient allocated at every backward, 13 MB
    // per fc1 of tiny32: garbage enough to trigger long collections.) h is saved for the backward.
    const hasBias = b ? 1 : 0;
    const f = tf.customGrad((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const [xx, ww, bb] = args as tf.Tensor[];
      const inputs: tf.NamedTensorMap = bb ? { x: xx, w: ww, b: bb } : { x: xx, w: ww };
      const [y, h] = tf.engine().runKernel(LINEAR_GELU, inputs, { hasBias }) as tf.Tensor[];
      save([xx, ww, h]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, [sx, sw, sh]: tf.Tensor[]) => {
          // GELU's gradient, then the linear layer's: the kernels of the unfused path.
          const dh = tf.engine().runKernel(GELU_GRAD, { dy, x: sh }) as tf.Tensor;
          const grads = tf.engine().runKernel(LINEAR_GRAD, { dy: dh, x: sx, w: sw }, {
            hasBias,
          }) as tf.Tensor[];
          dh.dispose();
          return grads;
        },
      };
    });
    return (b ? f(x, w, b) : f(x, w)) as tf.Tensor2D;
  },
  mlp(x, w1, b1, w2, b2, res) {
    const ts = [x, w1, w2, ...(b1 ? [b1] : []), ...(b2 ? [b2] : []), ...(res ? [res] : [])];
    if (!mlpActive(ts, w1, w2) || (res && res.rank !== 2)) return undefined;
    // One custom gradient for fc1, GELU and fc2 (see mlpForward, mlpBackward).
    const f = tf.customGrad((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const t = args as tf.Tensor[];
      let at = 3;
      const bb1 = b1 ? t[at++] : undefined, bb2 = b2 ? t[at++] : undefined;
      const rr = res ? t[at++] : undefined;
      const { y, saved } = mlpForward(t[0], t[1], bb1, t[2], bb2, rr);
      save(saved);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, s: tf.Tensor[]) => {
          const [dx, dw1, db1, dw2, db2] = mlpBackward(dy, s, !!b1, !!b2) as tf.Tensor[];
          // In the order of the inputs; a residual's gradient is the output's.
          const biases = [...(b1 ? [db1] : []), ...(b2 ? [db2] : [])];
          return [dx, dw1, dw2, ...biases, ...(res ? [tf.clone(dy)] : [])];
        },
      };
    });
    return f(...ts) as tf.Tensor2D;
  },
  residualMlp(x, p) {
    const { normW, normB, eps, w1, b1, w2, b2 } = p;
    const ts = [x, normW, normB, w1, w2, ...(b1 ? [b1] : []), ...(b2 ? [b2] : [])];
    if (!mlpActive(ts, w1, w2) || !active(LN) || !active(LN_GRAD)) return undefined;
    // x + fc2(gelu(fc1(layerNorm(x)))) in one custom gradient: the kernels of layerNorm and mlp
    // without a tape node each, and a backward that adds the residual's gradient to LayerNorm's
    // in its kernel (x's two terms, as the engine would sum them; native, the only backend with
    // the linear kernels, takes dres).
    const f = tf.customGrad((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const t = args as tf.Tensor[];
      const [xx, nw, nb, ww1, ww2] = t;
      let at = 5;
      const bb1 = b1 ? t[at++] : undefined, bb2 = b2 ? t[at++] : undefined;
      const z = normForProducts(xx, nw, nb, eps);
      const { y, saved } = mlpForward(z, ww1, bb1, ww2, bb2, xx);
      save([xx, nw, ...saved]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, [sx, snw, ...s]: tf.Tensor[]) => {
          const [dz, dw1, db1, dw2, db2] = mlpBackward(dy, s, !!b1, !!b2) as tf.Tensor[];
          const [dx, dnw, dnb] = normGrad(dz, sx, snw, eps, dy);
          return [dx, dnw, dnb, dw1, dw2, ...(b1 ? [db1] : []), ...(b2 ? [db2] : [])];
        },
      };
    });
    return f(...ts) as tf.Tensor2D;
  },
  residualAttention(x, p, heads, scale) {
    const { normW, normB, eps, qkvW, qkvB, projW, projB } = p;
    const ts = [x, normW, normB, qkvW, projW, ...(qkvB ? [qkvB] : []), ...(projB ? [projB] : [])];
    const [batch, T, D] = x.shape;
    if (
      [LN, LN_GRAD, LINEAR, LINEAR_GRAD, ATTN, ATTN_GRAD].some((k) => !active(k)) ||
      ts.some((t) => t.dtype !== "float32") || qkvW.rank !== 2 || projW.rank !== 2 ||
      (D / heads) % 4 !== 0
    ) {
      return undefined;
    }
    // x + proj(attention(qkv(layerNorm(x)))) in one custom gradient, as residualMlp.
    const attrs = { batch, heads, scale };
    const hasQkvB = qkvB ? 1 : 0, hasProjB = projB ? 1 : 0;
    const f = tf.customGrad((...args: unknown[]) => {
      const save = args.pop() as tf.GradSaveFunc;
      const t = args as tf.Tensor[];
      const [xx, nw, nb, qw, pw] = t;
      let at = 5;
      const qb = qkvB ? t[at++] : undefined, pb = projB ? t[at++] : undefined;
      const x2 = tf.reshape(xx, [batch * T, D]);
      const y1 = normForProducts(x2, nw, nb, eps);
      const in1: tf.NamedTensorMap = qb ? { x: y1, w: qw, b: qb } : { x: y1, w: qw };
      const qkv = tf.engine().runKernel(LINEAR, in1, { hasBias: hasQkvB, hasRes: 0 }) as tf.Tensor;
      // ctx as bf16 where the products round to it (see FUSED_KERNELS.attention): proj reads it.
      const [ctx, probs] = tf.engine().runKernel(ATTN, { qkv }, {
        ...attrs,
        bf16Out: 1,
      }) as tf.Tensor[];
      const in2: tf.NamedTensorMap = { x: ctx, w: pw, res: x2 };
      if (pb) in2.b = pb;
      const y = tf.engine().runKernel(LINEAR, in2, { hasBias: hasProjB, hasRes: 1 }) as tf.Tensor;
      save([x2, nw, y1, qw, qkv, probs, ctx, pw]);
      return {
        value: y,
        gradFunc: (dy: tf.Tensor, [sx, snw, sy1, sqw, sqkv, sp, sctx, spw]: tf.Tensor[]) => {
          const [dctx, dpw, dpb] = tf.engine().runKernel(LINEAR_GRAD, { dy, x: sctx, w: spw }, {
            hasBias: hasProjB,
          }) as tf.Tensor[];
          const dqkv = tf.engine().runKernel(
            ATTN_GRAD,
            { dout: dctx, qkv: sqkv, probs: sp },
            attrs,
          ) as tf.Tensor;
          const [dy1, dqw, dqb] = tf.engine().runKernel(LINEAR_GRAD, { dy: dqkv, x: sy1, w: sqw }, {
            hasBias: hasQkvB,
          }) as tf.Tensor[];
          tf.dispose([dctx, dqkv]);
          const [dx2, dnw, dnb] = normGrad(dy1, sx, snw, eps, dy);
          const dx = tf.reshape(dx2, [batch, T, D]);
          dx2.dispose();
          return [dx, dnw, dnb, dqw, dpw, ...(qkvB ? [dqb] : []), ...(projB ? [dpb] : [])];
        },
      };
    });
    return f(...ts) as tf.Tensor2D;
  },
  expandBatch(x, batch) {
    if (!active(ROW_SUM) || x.dtype !== "float32" || x.shape[0] !== 1) return undefined;
    // The forward is tf.tile; the gradient sums dy's batch rows as Tile's gradient does (one
    // slice and one add per row: 2 x 128 kernels for small28's class token), in one kernel.
    const reps = [batch, ...x.shape.slice(1).map(() => 1)];
    const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
      value: tf.tile(args[0] as tf.Tensor, reps),
      gradFunc: (dy: tf.Tensor) => {
        const rows = tf.reshape(dy, [batch, x.size]);
        const sum = tf.engine().runKernel(ROW_SUM, { x: rows }) as tf.Tensor;
        rows.dispose();
        return tf.reshape(sum, x.shape);
      },
    }));
    return f(x);
  },
  ema(t, s, mom) {
    if (!active(EMA) || t.dtype !== "float32" || s.dtype !== "float32") return undefined;
    return tf.engine().runKernel(EMA, { t, s }, { mom }) as tf.Tensor;
  },
  adamw(p, g, m, v, c) {
    if (!active(ADAMW) || [p, g, m, v].some((t) => t.dtype !== "float32")) return undefined;
    const attrs = { ...c, hasDecay: c.hasDecay ? 1 : 0 };
    return tf.engine().runKernel(ADAMW, { p, g, m, v }, attrs) as [
      tf.Tensor,
      tf.Tensor,
      tf.Tensor,
    ];
  },
};

/**
 * Registers {@link KERNEL_FAST_PATHS} as the fast paths of the backend `backendName`, which must
 * register the kernels of {@link FUSED_KERNELS} (`installWasmKernels` does this for `wasm`).
 *
 * @example
 * ```ts
 * registerKernelFastPaths("wasm");
 * ```
 */
export function registerKernelFastPaths(backendName: string): void {
  registerFastPaths(backendName, KERNEL_FAST_PATHS);
}
