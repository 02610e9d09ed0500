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
 * has batch size 1, transposes are materialised (wasm `Transpose` kernel) and `a`'s batch dims
 * are folded into its rows, then XNNPACK runs. Batched `b` (attention's `q @ k^T`) still takes
 * the slow loop.
 *
 * @example
 * ```ts
 * import { initBackend } from "./backend.ts";
 * import { installWasmMatMulFastPath } from "./wasm_matmul.ts";
 * await initBackend({ backend: "wasm" });
 * installWasmMatMulFastPath();
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

type KernelFunc = tf.KernelConfig["kernelFunc"];
interface Args {
  inputs: { a: tf.TensorInfo; b: tf.TensorInfo };
  backend: tf.KernelBackend & { disposeData(id: tf.DataId): boolean };
  attrs: { transposeA: boolean; transposeB: boolean };
}

let installed = false;

/**
 * Replaces the wasm `BatchMatMul` kernel with one that sends transposed and rank-3-by-rank-2
 * matmuls to XNNPACK (see the module doc). Idempotent. Call after tfjs-backend-wasm is imported
 * (e.g. after `initBackend({ backend: "wasm" })`); it works for any later wasm backend instance.
 */
export function installWasmMatMulFastPath(): void {
  if (installed) return;
  const orig = tf.getKernel("BatchMatMul", "wasm");
  const reshapeK = tf.getKernel("Reshape", "wasm");
  const transposeK = tf.getKernel("Transpose", "wasm");
  if (!orig || !reshapeK || !transposeK) {
    throw new Error(
      "wasm_matmul.ts: the wasm kernels BatchMatMul/Reshape/Transpose are not registered: " +
        'import "@tensorflow/tfjs-backend-wasm" (or initBackend({ backend: "wasm" })) first',
    );
  }
  const origFn = orig.kernelFunc as KernelFunc;
  const reshape = (x: tf.TensorInfo, shape: number[], backend: Args["backend"]) =>
    reshapeK.kernelFunc({ inputs: { x }, backend, attrs: { shape } }) as tf.TensorInfo;
  const transpose2d = (x: tf.TensorInfo, backend: Args["backend"]) =>
    transposeK.kernelFunc({ inputs: { x }, backend, attrs: { perm: [1, 0] } }) as tf.TensorInfo;

  const fast = (args: Args): tf.TensorInfo => {
    const { inputs: { a, b }, backend, attrs: { transposeA, transposeB } } = args;
    const ra = a.shape.length, rb = b.shape.length;
    const batchA = a.shape.slice(0, -2).reduce((p, q) => p * q, 1);
    const batchB = b.shape.slice(0, -2).reduce((p, q) => p * q, 1);
    const slow = batchB !== 1 || (transposeA && batchA !== 1) || a.dtype !== "float32" ||
      b.dtype !== "float32";
    if (slow || (!transposeA && !transposeB && batchA === 1)) {
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
    const temps: tf.TensorInfo[] = [];
    const keep = (t: tf.TensorInfo) => (temps.push(t), t);
    const a2 = keep(reshape(a, transposeA ? [k, m] : [batchA * m, k], backend));
    const b2 = keep(reshape(b, transposeB ? [n, k] : [k, n], backend));
    const aN = transposeA ? keep(transpose2d(a2, backend)) : a2;
    const bN = transposeB ? keep(transpose2d(b2, backend)) : b2;
    const out2 = origFn(
      {
        inputs: { a: aN, b: bN },
        backend,
        attrs: { transposeA: false, transposeB: false },
      } as unknown as Parameters<KernelFunc>[0],
    ) as tf.TensorInfo;
    const batchShape = tf.backend_util.assertAndGetBroadcastShape(
      a.shape.slice(0, -2),
      b.shape.slice(0, -2),
    );
    const outShape = [...batchShape, m, n];
    const out = reshape(out2, outShape, backend);
    backend.disposeData(out2.dataId);
    for (const t of temps) backend.disposeData(t.dataId);
    return out;
  };
  tf.unregisterKernel("BatchMatMul", "wasm");
  tf.registerKernel({ ...orig, kernelFunc: fast as unknown as KernelFunc });
  installed = true;
}
