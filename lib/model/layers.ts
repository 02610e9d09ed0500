/**
 * Small building blocks shared by every model.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { linear } from "./layers.ts";
 * const y = linear(tf.ones([4, 3]) as tf.Tensor2D, tf.ones([2, 3])); // [4, 2]
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * `x [M, in] @ W^T + b` with W in PyTorch's `[out, in]` layout -> `[M, out]`. On wasm, the
 * transposed product (and the transposed products of its gradient) reach XNNPACK through
 * `wasm_matmul.ts`.
 */
export function linear(x: tf.Tensor2D, w: tf.Tensor, b?: tf.Tensor): tf.Tensor2D {
  const y: tf.Tensor2D = tf.matMul(x, w as tf.Tensor2D, false, true);
  return b ? tf.add(y, b) : y;
}
