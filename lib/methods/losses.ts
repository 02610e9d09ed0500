/**
 * The losses of the self-supervised methods, as pure functions of embeddings: MoCo v3's
 * contrastive loss {@link ctr}, SimCLR's {@link ntXentLoss}, BYOL's {@link byolLoss}, and SwAV's
 * codes ({@link sinkhorn}) and swapped prediction ({@link swappedPrediction}).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { ctr } from "./losses.ts";
 * const q = tf.randomNormal([8, 16]) as tf.Tensor2D, k = tf.randomNormal([8, 16]) as tf.Tensor2D;
 * ctr(q, k, 0.2).print(); // about 2T ln(8) for unrelated q and k
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/**
 * L2-normalises the rows of `[B, C]` (as F.normalize, eps 1e-12; zero rows stay zero).
 *
 * @example
 * ```ts
 * l2normalize(tf.tensor2d([[3, 4]])).print(); // [[0.6, 0.8]]
 * ```
 */
export function l2normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.maximum(tf.norm(x, 2, 1, true), 1e-12));
}

/**
 * MoCo v3's contrastive loss `ctr(q, k)` of queries `q [B, C]` against keys `k [K, C]`:
 * CrossEntropy(normalize(q) normalize(k)^T / T, labels) * 2T, where the positive of query i is
 * key `labelOffset + i` (the diagonal when `labelOffset` is 0 and K = B). The 2T factor makes
 * the gradient scale independent of T; at chance the value is about 2T ln(K).
 *
 * With keys gathered from every data-parallel shard (`K = N * B`), shard w passes
 * `labelOffset = w * B`, as the official code does with `concat_all_gather`.
 *
 * @example
 * ```ts
 * const loss = ctr(q1, k2, 0.2); // q1 [B, C] online predictions, k2 [B, C] momentum keys
 * ```
 */
export function ctr(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  temperature: number,
  labelOffset = 0,
): tf.Scalar {
  const B = q.shape[0], K = k.shape[0];
  if (!(Number.isInteger(labelOffset) && labelOffset >= 0 && labelOffset + B <= K)) {
    throw new Error(
      `ctr: positives ${labelOffset}..${labelOffset + B - 1} of ${B} queries ` +
        `must index the ${K} keys; pass keys [K >= labelOffset + B, C]`,
    );
  }
  return tf.tidy(() => {
    const logits = tf.div(
      tf.matMul(l2normalize(q), l2normalize(k), false, true),
      temperature,
    ) as tf.Tensor2D;
    const labels = tf.oneHot(tf.range(labelOffset, labelOffset + B, 1, "int32"), K);
    const ce = tf.neg(tf.mean(tf.sum(tf.mul(labels, tf.logSoftmax(logits)), 1)));
    return tf.mul(ce, 2 * temperature) as tf.Scalar;
  });
}

/**
 * NT-Xent of two views' embeddings `z1, z2 [B, C]`. With z = normalize([z1; z2]) `[2B, C]` and
 * s = z z^T / T, row i's positive is its pair (i + B mod 2B), its negatives the other 2B - 2
 * rows; self-similarity is masked out. Loss = mean over the 2B rows of
 * -log(exp(s_ip) / sum_{j != i} exp(s_ij)). At chance it is about ln(2B - 1). No 2T factor
 * (unlike MoCo v3's {@link ctr}), as in SimCLR.
 *
 * @example
 * ```ts
 * const loss = ntXentLoss(z1, z2, 0.2); // z1, z2 [B, C] projections of the two views
 * ```
 */
export function ntXentLoss(z1: tf.Tensor2D, z2: tf.Tensor2D, temperature: number): tf.Scalar {
  return tf.tidy(() => {
    const n = 2 * z1.shape[0];
    const z = l2normalize(tf.concat([z1, z2], 0));
    // A large negative on the diagonal: exp() of it is 0, so i never counts as its own negative.
    const logits = tf.sub(
      tf.div(tf.matMul(z, z, false, true), temperature),
      tf.mul(tf.eye(n), 1e9),
    );
    const pair = Int32Array.from({ length: n }, (_, i) => (i + n / 2) % n);
    const labels = tf.oneHot(tf.tensor1d(pair, "int32"), n);
    return tf.neg(tf.mean(tf.sum(tf.mul(labels, tf.logSoftmax(logits)), 1))) as tf.Scalar;
  });
}

/**
 * BYOL's normalised MSE between predictions `p [B, C]` and targets `z [B, C]`:
 * mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z). 0 when aligned, 2 when
 * orthogonal, 4 when opposite.
 *
 * @example
 * ```ts
 * const loss = byolLoss(p1, z2); // p1 [B, C] online prediction, z2 [B, C] target projection
 * ```
 */
export function byolLoss(p: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const cos = tf.sum(tf.mul(l2normalize(p), l2normalize(z)), 1);
    return tf.mean(tf.sub(2, tf.mul(cos, 2))) as tf.Scalar;
  });
}

/**
 * The identity whose gradient is zero: what passes through it is a constant to `tf.grads`
 * (PyTorch's `detach`, or computing under `torch.no_grad()`).
 *
 * @example
 * ```ts
 * const q = sinkhorn(stopGradient(scores)); // codes as targets, no gradient through them
 * ```
 */
export const stopGradient: <T extends tf.Tensor>(x: T) => T = tf.customGrad(
  (...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.clone(args[0] as tf.Tensor),
    gradFunc: (dy: tf.Tensor) => tf.zerosLike(dy),
  }),
) as <T extends tf.Tensor>(x: T) => T;

/**
 * SwAV's codes: Sinkhorn-Knopp on the prototype scores `scores [B, K]` of a batch, as the official
 * `distributed_sinkhorn`. With Q = exp(scores / epsilon) / sum (the max is subtracted first,
 * which changes nothing after that normalisation), each of `iterations` rounds makes every
 * prototype's column sum 1/K, then every image's row sum 1/B; the result is Q * B: every row sums
 * to 1 (a distribution over the prototypes) and every column to about B/K (the batch split
 * equally among the prototypes). Pass the scores of the whole batch (every data-parallel shard's,
 * gathered) and take a shard's rows after. Differentiable as written: wrap the scores in
 * {@link stopGradient} for codes without gradient.
 *
 * @example
 * ```ts
 * const q = sinkhorn(scores, 0.05, 3); // [B, K], rows sum to 1
 * ```
 */
export function sinkhorn(scores: tf.Tensor2D, epsilon = 0.05, iterations = 3): tf.Tensor2D {
  const [B, K] = scores.shape;
  return tf.tidy(() => {
    let q: tf.Tensor2D = tf.exp(tf.div(tf.sub(scores, tf.max(scores)), epsilon));
    q = tf.div(q, tf.sum(q));
    for (let it = 0; it < iterations; it++) {
      q = tf.div(tf.div(q, tf.sum(q, 0, true)), K);
      q = tf.div(tf.div(q, tf.sum(q, 1, true)), B);
    }
    return tf.mul(q, B);
  });
}

/**
 * SwAV's swapped prediction: each view predicts the other view's codes from its own prototype
 * scores. With scores `s1, s2 [B, K]` and codes `q1, q2 [B, K]` (rows summing to 1),
 * loss = -1/2 mean_b [ sum_k q2 log softmax(s1 / T) + sum_k q1 log softmax(s2 / T) ].
 * The codes are targets: give them no gradient ({@link stopGradient}). At chance (uniform
 * scores) the value is ln K.
 *
 * @example
 * ```ts
 * const loss = swappedPrediction(s1, s2, q1, q2, 0.1);
 * ```
 */
export function swappedPrediction(
  s1: tf.Tensor2D,
  s2: tf.Tensor2D,
  q1: tf.Tensor2D,
  q2: tf.Tensor2D,
  temperature: number,
): tf.Scalar {
  return tf.tidy(() => {
    const ce = (q: tf.Tensor2D, s: tf.Tensor2D) =>
      tf.mean(tf.sum(tf.mul(q, tf.logSoftmax(tf.div(s, temperature))), 1));
    return tf.mul(tf.add(ce(q2, s1), ce(q1, s2)), -0.5) as tf.Scalar;
  });
}
