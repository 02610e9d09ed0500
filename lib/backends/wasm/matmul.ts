/**
 * Routes more of the wasm backend's matmuls to XNNPACK.
 *
 * tfjs-backend-wasm 4.22's `BatchMatMul` uses XNNPACK's fully-connected operator (SIMD, thread
 * pool) only when neither side is transposed and both batch sizes are 1; every other case
 * (`transposeA`, `transposeB`, `[B, N, D] @ [D, E]`, true batches) runs a scalar blocked loop on one
 * thread, ~10x slower. Backprop of `y = x @ w` needs `dy @ w^T` and `x^T @ dy`, so training
 * hits the slow loop for most of its matmul FLOPs.
 *
 * {@link installWasmMatMulFastPath} re-registers the wasm `BatchMatMul` kernel so that, when `b`
 * has batch size 1, transposes are materialised (the SIMD transpose; `w^T` of `x @ w^T` is cached
 * per weight) and `a`'s batch dims are folded into its rows, then XNNPACK runs. Products with a
 * batched `b` go to the SIMD kernel of `lib/backends/wasm/kernels.c` (see `lib/backends/wasm/kernels.ts`); ViT
 * attention itself is one fused kernel there where its head width allows.
 *
 * @example
 * ```ts
 * import { initBackend } from "../mod.ts";
 * import { installWasmMatMulFastPath } from "./matmul.ts";
 * await initBackend({ backend: "wasm" });
 * installWasmMatMulFastPath();
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  replaceWasmKernel,
  transposeInto,
  type WasmBackendLike,
  wasmKernelsFor,
} from "./kernels.ts";

type KernelFunc = tf.KernelConfig["kernelFunc"];
interface Args {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: tf.KernelBackend & { disposeData(id: tf.DataId): boolean };
  attrs: { transposeA: boolean; transposeB: boolean };
}

let installed = false;

/** Calls of the replaced `BatchMatMul`, by the route each took (see {@link wasmMatMulRoutes}). */
const routes = { xnnpack: 0, simd: 0, unchanged: 0 };

/**
 * How many `BatchMatMul` calls on wasm took each route since {@link installWasmMatMulFastPath}:
 * `xnnpack` (transposes materialised or batch dims folded, then XNNPACK), `simd` (batched
 * products by the kernel of `kernels.c`), `unchanged` (tfjs-backend-wasm's own kernel: plain
 * `[M, K] @ [K, N]`, which it already sends to XNNPACK, and what no fast path covers). Tests
 * read it before and after a product to see which route it took.
 *
 * @example
 * ```ts
 * const before = wasmMatMulRoutes().xnnpack;
 * tf.matMul(x, w, false, true);
 * const rerouted = wasmMatMulRoutes().xnnpack === before + 1;
 * ```
 */
export function wasmMatMulRoutes(): Readonly<typeof routes> {
  return { ...routes };
}

type Cache = Map<tf.DataId, { key: string; t: tf.TensorInfo }[]>;
const caches = new WeakMap<object, Cache>();

/**
 * The per-backend cache of transposed `b`s of `x @ b^T` products, keyed by `b`'s data (tensor
 * data never changes in place). A forward `linear` multiplies by `w^T` four times a step (two
 * views, online and momentum weights); each fresh transposed copy also made XNNPACK re-pack its
 * weights (it caches packed weights per tensor), which cost as much as the product for the
 * projector's 1024x1024 layer. Entries are freed with the data they were made from: the
 * backend's `disposeData` is wrapped once.
 */
function transposeCache(backend: WasmBackendLike): Cache {
  let cache = caches.get(backend);
  if (cache) return cache;
  const c: Cache = cache = new Map();
  caches.set(backend, c);
  const be = backend as unknown as {
    disposeData(id: tf.DataId, force?: boolean): boolean;
    dataIdMap: { has(id: tf.DataId): boolean };
  };
  const dispose = be.disposeData.bind(be);
  be.disposeData = (id: tf.DataId, force?: boolean) => {
    const done = dispose(id, force);
    if (c.size && !be.dataIdMap.has(id)) {
      const entries = c.get(id);
      if (entries) {
        c.delete(id);
        for (const e of entries) dispose(e.t.dataId, true);
      }
    }
    return done;
  };
  return cache;
}

/**
 * A batched product (both sides batched, or `a` batched with `transposeA`) by the SIMD kernel of
 * lib/backends/wasm/kernels.c, or `undefined` where it does not apply (batch shapes that broadcast in
 * other ways, no kernels for this backend).
 */
function batchedMatMul({ inputs: { a, b }, backend, attrs }: Args): tf.TensorInfo | undefined {
  const k = wasmKernelsFor(backend);
  if (!k) return undefined;
  const ra = a.shape.length, rb = b.shape.length;
  const shapeA = a.shape.slice(0, -2), shapeB = b.shape.slice(0, -2);
  const batchA = shapeA.reduce((p, q) => p * q, 1), batchB = shapeB.reduce((p, q) => p * q, 1);
  const same = shapeA.length === shapeB.length && shapeA.every((d, i) => d === shapeB[i]);
  if (!same && batchA !== 1 && batchB !== 1) return undefined;
  const { transposeA: ta, transposeB: tb } = attrs;
  const m = ta ? a.shape[ra - 1] : a.shape[ra - 2];
  const kk = ta ? a.shape[ra - 2] : a.shape[ra - 1];
  const n = tb ? b.shape[rb - 2] : b.shape[rb - 1];
  if (kk !== (tb ? b.shape[rb - 1] : b.shape[rb - 2])) return undefined; // origFn reports it
  const batchShape = batchA === 1 ? shapeB : shapeA;
  const batch = Math.max(batchA, batchB);
  const w = backend as unknown as WasmBackendLike;
  const out = w.makeOutput([...batchShape, m, n], "float32");
  const at = (t: tf.TensorInfo) => w.dataIdMap.get(t.dataId).memoryOffset;
  k.bmm(
    at(a),
    at(b),
    at(out),
    batch,
    m,
    kk,
    n,
    ta ? 1 : 0,
    tb ? 1 : 0,
    batchA === 1 ? 0 : m * kk,
    batchB === 1 ? 0 : kk * n,
  );
  return out;
}

/**
 * Replaces the wasm `BatchMatMul` kernel with one that sends transposed and rank-3-by-rank-2
 * matmuls to XNNPACK (see the module doc). Idempotent. Call after tfjs-backend-wasm is imported
 * (e.g. after `initBackend({ backend: "wasm" })`); it works for any later wasm backend instance.
 */
export function installWasmMatMulFastPath(): void {
  if (installed) return;
  const reshapeK = tf.getKernel("Reshape", "wasm");
  const transposeK = tf.getKernel("Transpose", "wasm");
  if (!reshapeK || !transposeK) {
    throw new Error(
      "backends/wasm/matmul.ts: the wasm kernels Reshape/Transpose are not registered: " +
        'import "@tensorflow/tfjs-backend-wasm" (or initBackend({ backend: "wasm" })) first',
    );
  }
  const reshape = (x: tf.TensorInfo, shape: number[], backend: Args["backend"]) =>
    reshapeK.kernelFunc({ inputs: { x }, backend, attrs: { shape } }) as tf.TensorInfo;
  const transpose2d = (x: tf.TensorInfo, backend: Args["backend"]): tf.TensorInfo => {
    const k = wasmKernelsFor(backend);
    if (!k) {
      return transposeK.kernelFunc({
        inputs: { x },
        backend,
        attrs: { perm: [1, 0] },
      }) as tf.TensorInfo;
    }
    const [r, c] = x.shape;
    return transposeInto(backend as unknown as WasmBackendLike, k, x, [c, r], [1, r, c, 1]);
  };
  const cachedTranspose = (
    b: tf.TensorInfo,
    shape2d: [number, number],
    backend: Args["backend"],
  ) => {
    const k = wasmKernelsFor(backend);
    if (!k) return undefined;
    const cache = transposeCache(backend as unknown as WasmBackendLike);
    const key = shape2d.join("x");
    let entries = cache.get(b.dataId);
    const hit = entries?.find((e) => e.key === key);
    if (hit) return hit.t;
    const [r, c] = shape2d;
    const t = transposeInto(backend as unknown as WasmBackendLike, k, b, [c, r], [1, r, c, 1]);
    if (!entries) cache.set(b.dataId, entries = []);
    entries.push({ key, t });
    return t;
  };

  const fast = (origFn: KernelFunc) => (args: Args): tf.TensorInfo => {
    const { inputs: { a, b }, backend, attrs: { transposeA, transposeB } } = args;
    const ra = a.shape.length, rb = b.shape.length;
    const batchA = a.shape.slice(0, -2).reduce((p, q) => p * q, 1);
    const batchB = b.shape.slice(0, -2).reduce((p, q) => p * q, 1);
    const f32 = a.dtype === "float32" && b.dtype === "float32";
    if (f32 && (batchB !== 1 || (transposeA && batchA !== 1))) {
      const out = batchedMatMul(args);
      if (out) {
        routes.simd++;
        return out;
      }
    }
    const slow = batchB !== 1 || (transposeA && batchA !== 1) || !f32;
    if (slow || (!transposeA && !transposeB && batchA === 1)) {
      routes.unchanged++;
      return origFn(args as unknown as Parameters<KernelFunc>[0]) as tf.TensorInfo; // XNNPACK or batched
    }
    const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
    const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
    const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
    if (k !== kb) {
      throw new Error(
        `matMul: inner dimensions differ: a ${a.shape} (transposeA=${transposeA}) and ` +
          `b ${b.shape} (transposeB=${transposeB})`,
      );
    }
    routes.xnnpack++;
    const temps: tf.TensorInfo[] = [];
    const keep = (t: tf.TensorInfo) => (temps.push(t), t);
    const batchShape = tf.backend_util.assertAndGetBroadcastShape(
      a.shape.slice(0, -2),
      b.shape.slice(0, -2),
    );
    const outShape = [...batchShape, m, n];
    if (transposeA && !transposeB && n > m) {
      // a^T b = (b^T a)^T (weight gradients x^T dy): XNNPACK packs its right operand afresh for
      // every new tensor, so let it pack the narrower a [k, m] rather than b [k, n].
      const bT = keep(transpose2d(keep(reshape(b, [k, n], backend)), backend));
      const prod = keep(
        origFn(
          {
            inputs: { a: bT, b: keep(reshape(a, [k, m], backend)) },
            backend,
            attrs: { transposeA: false, transposeB: false },
          } as unknown as Parameters<KernelFunc>[0],
        ) as tf.TensorInfo,
      );
      const t = transpose2d(prod, backend);
      const out = reshape(t, outShape, backend);
      backend.disposeData(t.dataId);
      for (const x of temps) backend.disposeData(x.dataId);
      return out;
    }
    const a2 = keep(reshape(a, transposeA ? [k, m] : [batchA * m, k], backend));
    const aN = transposeA ? keep(transpose2d(a2, backend)) : a2;
    let bN: tf.TensorInfo;
    if (transposeB) {
      // b^T is cached per b's data, so XNNPACK also keeps its packed weights (see below).
      bN = cachedTranspose(b, [n, k], backend) ??
        keep(transpose2d(keep(reshape(b, [n, k], backend)), backend));
    } else bN = keep(reshape(b, [k, n], backend));
    const out2 = origFn(
      {
        inputs: { a: aN, b: bN },
        backend,
        attrs: { transposeA: false, transposeB: false },
      } as unknown as Parameters<KernelFunc>[0],
    ) as tf.TensorInfo;
    const out = reshape(out2, outShape, backend);
    backend.disposeData(out2.dataId);
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
  replaceWasmKernel("BatchMatMul", fast);
  installed = true;
}
