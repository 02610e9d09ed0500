/**
 * The layer primitives every model is built from: linear, LayerNorm, BatchNorm, GELU,
 * multi-head attention, the EMA of a momentum encoder, and weight init.
 *
 * Where the active backend registered a fused kernel for one of them (`lib/backends/fused.ts`),
 * the primitive runs it; otherwise, or where it declines, the plain tfjs ops written here, which
 * the fused kernels match. This is the only place that makes that choice.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { gelu, layerNorm, linear } from "./layers.ts";
 * const x = tf.ones([4, 3]) as tf.Tensor2D;
 * const y = gelu(linear(layerNorm(x, tf.ones([3]), tf.zeros([3]), 1e-6) as tf.Tensor2D, tf.ones([2, 3]))); // [4, 2]
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  fastPath,
  type ResidualAttentionParams,
  type ResidualMlpParams,
} from "../backends/fused.ts";
import type { Rng } from "../core/rng.ts";

/**
 * `x [M, in] @ W^T + b` with W in PyTorch's `[out, in]` layout and `b [out]` -> `[M, out]`; with
 * `residual [M, out]`, `residual + (x @ W^T + b)` (a residual connection's add, which a fused
 * kernel does in the product's output pass).
 *
 * @example
 * ```ts
 * const y = linear(tf.ones([4, 3]) as tf.Tensor2D, tf.ones([2, 3]), tf.zeros([2])); // [4, 2]
 * const z = linear(tf.ones([4, 3]) as tf.Tensor2D, tf.ones([2, 3]), tf.zeros([2]), y); // y + y
 * ```
 */
export function linear(
  x: tf.Tensor2D,
  w: tf.Tensor,
  b?: tf.Tensor,
  residual?: tf.Tensor2D,
): tf.Tensor2D {
  const fused = fastPath("linear")?.(x, w, b, residual);
  if (fused) return fused;
  const y: tf.Tensor2D = tf.matMul(x, w as tf.Tensor2D, false, true);
  const withBias: tf.Tensor2D = b ? tf.add(y, b) : y;
  return residual ? tf.add(residual, withBias) : withBias;
}

/**
 * `gelu(linear(x, w, b))`: a ViT MLP's fc1 and its GELU (one fused kernel where the backend has
 * it, GELU in the product's output pass).
 *
 * @example
 * ```ts
 * const y = linearGelu(tf.ones([4, 3]) as tf.Tensor2D, tf.ones([2, 3]), tf.zeros([2])); // [4, 2]
 * ```
 */
export function linearGelu(x: tf.Tensor2D, w: tf.Tensor, b?: tf.Tensor): tf.Tensor2D {
  return fastPath("linearGelu")?.(x, w, b) ?? gelu(linear(x, w, b)) as tf.Tensor2D;
}

/**
 * A ViT block's MLP with its residual: `res + fc2(gelu(fc1(x)))`, `w1 [H, D]`, `w2 [D, H]` (one
 * custom gradient where the backend has it: GELU's gradient in fc2's input-gradient product).
 * The same values as {@link linearGelu} then {@link linear}.
 *
 * @example
 * ```ts
 * const x = tf.ones([4, 3]) as tf.Tensor2D;
 * const y = mlp(x, tf.ones([8, 3]), tf.zeros([8]), tf.ones([3, 8]), tf.zeros([3]), x); // [4, 3]
 * ```
 */
export function mlp(
  x: tf.Tensor2D,
  w1: tf.Tensor,
  b1: tf.Tensor | undefined,
  w2: tf.Tensor,
  b2: tf.Tensor | undefined,
  residual?: tf.Tensor2D,
): tf.Tensor2D {
  return fastPath("mlp")?.(x, w1, b1, w2, b2, residual) ??
    linear(linearGelu(x, w1, b1), w2, b2, residual);
}

/**
 * A pre-norm ViT block's attention half for `x [B, T, D]`: `x + proj(attention(qkv(layerNorm(x))))`
 * as `[B * T, D]`, and the attention probabilities `[B, heads, T, T]` with `withProbs` (else
 * possibly `undefined`). Without them, one custom gradient where the backend has the kernels: its
 * backward adds the residual's gradient to LayerNorm's, with no tape node per kernel.
 *
 * @example
 * ```ts
 * const D = 32, p = { normW: tf.ones([D]), normB: tf.zeros([D]), eps: 1e-6,
 *   qkvW: tf.randomNormal([3 * D, D]), projW: tf.randomNormal([D, D]) };
 * const [h] = residualAttention(tf.randomNormal([2, 17, D]) as tf.Tensor3D, p, 4, 1 / Math.sqrt(8), false); // [34, 32]
 * ```
 */
export function residualAttention(
  x: tf.Tensor3D,
  p: ResidualAttentionParams,
  heads: number,
  scale: number,
  withProbs: boolean,
): [tf.Tensor2D, tf.Tensor4D | undefined] {
  const fused = withProbs ? undefined : fastPath("residualAttention")?.(x, p, heads, scale);
  if (fused) return [fused, undefined];
  const [B, T, D] = x.shape;
  const y = tf.reshape(layerNorm(x, p.normW, p.normB, p.eps), [B * T, D]) as tf.Tensor2D;
  const [ctx, probs] = multiHeadAttention(linear(y, p.qkvW, p.qkvB), B, heads, scale, withProbs);
  // x + proj(ctx), the residual added in the projection's output pass where fused.
  return [linear(ctx, p.projW, p.projB, tf.reshape(x, [B * T, D]) as tf.Tensor2D), probs];
}

/**
 * A pre-norm ViT block's MLP half for `x [M, D]`: `x + fc2(gelu(fc1(layerNorm(x))))`, in one
 * custom gradient where the backend has the kernels (see {@link residualAttention}, {@link mlp}).
 *
 * @example
 * ```ts
 * const D = 8, p = { normW: tf.ones([D]), normB: tf.zeros([D]), eps: 1e-6,
 *   w1: tf.randomNormal([4 * D, D]), w2: tf.randomNormal([D, 4 * D]) };
 * const y = residualMlp(tf.randomNormal([5, D]) as tf.Tensor2D, p); // [5, 8]
 * ```
 */
export function residualMlp(x: tf.Tensor2D, p: ResidualMlpParams): tf.Tensor2D {
  const fused = fastPath("residualMlp")?.(x, p);
  if (fused) return fused;
  // LayerNorm reads x through a reshape of its own, so that its gradients reach x summed first,
  // as one term beside the residual's (the order of the float32 sums of the unfused ops' graph:
  // the same bits on every backend).
  const z = layerNorm(tf.reshape(x, x.shape), p.normW, p.normB, p.eps) as tf.Tensor2D;
  return mlp(z, p.w1, p.b1, p.w2, p.b2, x);
}

/**
 * LayerNorm over the last axis: `x [..., D]` with `w, b [D]` -> `[..., D]` (biased variance, as
 * PyTorch; the ViT passes timm's eps 1e-6).
 *
 * @example
 * ```ts
 * const y = layerNorm(tf.randomNormal([2, 17, 64]), tf.ones([64]), tf.zeros([64]), 1e-6); // [2, 17, 64]
 * ```
 */
export function layerNorm(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, eps: number): tf.Tensor {
  const fused = fastPath("layerNorm")?.(x, w, b, eps);
  if (fused) return fused;
  const { mean, variance } = tf.moments(x, -1, true);
  return tf.add(tf.mul(tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps))), w), b);
}

/** BatchNorm epsilon of PyTorch's BatchNorm1d, used by the MLP heads and by ViT-BN. */
export const BN_EPS = 1e-5;

/** Options of {@link batchNorm}. */
export interface BatchNormOptions {
  /** Affine scale `[D]` (with `bias`); without both, no affine transform (MoCo v3's last BN). */
  weight?: tf.Tensor;
  /** Affine shift `[D]`. */
  bias?: tf.Tensor;
  /** Statistics `[D]` to normalise with (running statistics at eval); default: this batch's. */
  stats?: { mean: tf.Tensor; variance: tf.Tensor };
  /** Added to the variance. Default {@link BN_EPS}. */
  eps?: number;
}

/**
 * BatchNorm over the rows of `x [M, D]` -> `y [M, D]`, with the statistics `mean, variance [D]`
 * it used: this batch's (biased variance, training mode) unless `stats` are given.
 *
 * @example
 * ```ts
 * const { y, mean, variance } = batchNorm(tf.randomNormal([8, 16]) as tf.Tensor2D,
 *   { weight: tf.ones([16]), bias: tf.zeros([16]) }); // [8, 16], [16], [16]
 * ```
 */
export function batchNorm(
  x: tf.Tensor2D,
  opts: BatchNormOptions = {},
): { y: tf.Tensor2D; mean: tf.Tensor1D; variance: tf.Tensor1D } {
  const eps = opts.eps ?? BN_EPS;
  const affine = opts.weight && opts.bias;
  const fused = opts.stats ? undefined : fastPath("batchNorm")?.(
    x,
    affine ? opts.weight : undefined,
    affine ? opts.bias : undefined,
    eps,
  );
  if (fused) return fused;
  const { mean, variance } = opts.stats ?? tf.moments(x, 0);
  let y: tf.Tensor2D = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, eps)));
  if (opts.weight && opts.bias) y = tf.add(tf.mul(y, opts.weight), opts.bias);
  return { y, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D };
}

/**
 * Exact (erf) GELU, as PyTorch's nn.GELU; same shape as `x`.
 *
 * @example
 * ```ts
 * gelu(tf.tensor1d([-1, 0, 1])).print(); // [-0.1587, 0, 0.8413]
 * ```
 */
export function gelu(x: tf.Tensor): tf.Tensor {
  return fastPath("gelu")?.(x) ??
    tf.mul(tf.mul(x, 0.5), tf.add(tf.erf(tf.mul(x, Math.SQRT1_2)), 1));
}

/**
 * Multi-head self-attention of `qkv [B * T, 3D]` (the qkv projection; head h in columns
 * `h * hd ..` of q, k and v): the heads' `softmax(q k^T * scale) v` side by side `[B * T, D]`, and
 * the probabilities `[B, heads, T, T]`. Without a fused kernel, all heads as batched matmuls.
 * With `withProbs` false a fused kernel may leave the probabilities out (`undefined`): a
 * training step that does not read them then allocates no zero gradient for them.
 *
 * @example
 * ```ts
 * const [ctx, probs] = multiHeadAttention(tf.randomNormal([2 * 17, 96]) as tf.Tensor2D, 2, 4, 1 / Math.sqrt(8));
 * // ctx [34, 32], probs [2, 4, 17, 17]
 * ```
 */
export function multiHeadAttention(
  qkv: tf.Tensor2D,
  B: number,
  heads: number,
  scale: number,
  withProbs?: true,
): [tf.Tensor2D, tf.Tensor4D];
export function multiHeadAttention(
  qkv: tf.Tensor2D,
  B: number,
  heads: number,
  scale: number,
  withProbs: boolean,
): [tf.Tensor2D, tf.Tensor4D | undefined];
export function multiHeadAttention(
  qkv: tf.Tensor2D,
  B: number,
  heads: number,
  scale: number,
  withProbs = true,
): [tf.Tensor2D, tf.Tensor4D | undefined] {
  const fused = fastPath("attention")?.(qkv, B, heads, scale, withProbs);
  if (fused) return fused;
  const [rows, d3] = qkv.shape, T = rows / B, D = d3 / 3, hd = D / heads;
  const [q, k, v] = tf.split(qkv, 3, 1).map((t) =>
    tf.transpose(tf.reshape(t, [B, T, heads, hd]), [0, 2, 1, 3])
  );
  const probs = tf.softmax(tf.mul(tf.matMul(q, k, false, true), scale)) as tf.Tensor4D;
  const ctx = tf.reshape(tf.transpose(tf.matMul(probs, v), [0, 2, 1, 3]), [rows, D]);
  return [ctx as tf.Tensor2D, probs];
}

/**
 * `x [1, ...]` repeated `batch` times along axis 0 (PyTorch's `expand`: the class token of every
 * image). Its gradient sums the batch rows in order, in float32, as `tf.tile`'s does; where a fused
 * kernel is registered, in one kernel instead of a slice and an add per row.
 *
 * @example
 * ```ts
 * expandBatch(tf.zeros([1, 1, 8]), 4).shape; // [4, 1, 8]
 * ```
 */
export function expandBatch(x: tf.Tensor, batch: number): tf.Tensor {
  return fastPath("expandBatch")?.(x, batch) ??
    tf.tile(x, [batch, ...x.shape.slice(1).map(() => 1)]);
}

/**
 * The momentum (EMA) update of one tensor: `m * target + (1 - m) * source` as a new tensor of
 * their shape (the caller assigns it).
 *
 * @example
 * ```ts
 * ema(tf.ones([3]), tf.zeros([3]), 0.99).print(); // [0.99, 0.99, 0.99]
 * ```
 */
export function ema(target: tf.Tensor, source: tf.Tensor, m: number): tf.Tensor {
  return fastPath("ema")?.(target, source, m) ?? tf.add(tf.mul(target, m), tf.mul(source, 1 - m));
}

/**
 * The momentum (EMA) update of every pair, assigned: `t = m * t + (1 - m) * s` for each, in one
 * in-place kernel where the backend has one (`FastPaths.emaInPlace`), else {@link ema} each.
 *
 * @example
 * ```ts
 * const t = tf.variable(tf.ones([3]));
 * emaAssign([{ t, s: tf.zeros([3]) }], 0.99); // t is [0.99, 0.99, 0.99]
 * ```
 */
export function emaAssign(pairs: { t: tf.Variable; s: tf.Tensor }[], m: number): void {
  if (fastPath("emaInPlace")?.(pairs, m)) return;
  tf.tidy(() => {
    for (const { t, s } of pairs) t.assign(ema(t, s, m));
  });
}

/**
 * A tensor of `shape` drawn uniform(-bound, bound) from `rng`, in row-major order.
 *
 * @example
 * ```ts
 * const w = initUniform([64, 32], 1 / Math.sqrt(32), createRng(0)); // PyTorch's Linear init, [64, 32]
 * ```
 */
export function initUniform(shape: number[], bound: number, rng: Rng): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) v[i] = (2 * rng.uniform() - 1) * bound;
  return tf.tensor(v, shape);
}

/**
 * A tensor of `shape` drawn normal(0, std) from `rng`, redrawing values beyond `truncate` std.
 *
 * @example
 * ```ts
 * const pos = initNormal([1, 17, 64], 0.02, createRng(0), 2); // [1, 17, 64]
 * ```
 */
export function initNormal(shape: number[], std: number, rng: Rng, truncate = Infinity): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let z = rng.normal();
    while (Math.abs(z) > truncate) z = rng.normal();
    v[i] = z * std;
  }
  return tf.tensor(v, shape);
}

/**
 * Xavier-uniform weight `[out, in]`: bound sqrt(6 / (in + out)).
 *
 * @example
 * ```ts
 * const w = xavierUniform(128, 64, createRng(0)); // [128, 64]
 * ```
 */
export function xavierUniform(out: number, inp: number, rng: Rng): tf.Tensor {
  return initUniform([out, inp], Math.sqrt(6 / (inp + out)), rng);
}
