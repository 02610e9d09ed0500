/**
 * BYOL (Grill et al. 2020) on the shared ViT backbone. Its networks are exactly MoCo v3's
 * (online backbone + projector + predictor; target = EMA of backbone + projector): MoCo v3 is
 * BYOL's architecture with a contrastive loss. So this file reuses `createMoCo`, `mocoState`,
 * `mocoTrainable` and `emaUpdate`, and only brings BYOL's loss: each online prediction regresses
 * the other view's target projection, with no negatives. Names are MoCo's
 * (`base_encoder.*`, `base_encoder.head.*`, `predictor.*`, `momentum_encoder.*`); the config's
 * `temperature` is unused.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { byolStep, createBYOL } from "./byol.ts";
 * const model = createBYOL({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = byolStep(model, x1, x2, { momentum: 0.99 });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  createMoCo,
  l2normalize,
  type MoCo,
  type StepOptions,
  type StepResult,
  symmetricMomentumStep,
} from "./mocov3.ts";

/** A BYOL model: the same networks as MoCo v3 (see the module doc). */
export type BYOL = MoCo;

/** Builds BYOL around a new backbone; the target starts as an exact copy of the online net. */
export const createBYOL: typeof createMoCo = createMoCo;

/**
 * BYOL's normalised MSE between predictions `p [B, C]` and targets `z [B, C]`:
 * mean over the batch of ||p/|p| - z/|z|||^2 = 2 - 2 cos(p, z). 0 when aligned, 2 when
 * orthogonal, 4 when opposite.
 */
export function byolLoss(p: tf.Tensor2D, z: tf.Tensor2D): tf.Scalar {
  return tf.tidy(() => {
    const cos = tf.sum(tf.mul(l2normalize(p), l2normalize(z)), 1);
    return tf.mean(tf.sub(2, tf.mul(cos, 2))) as tf.Scalar;
  });
}

/**
 * One BYOL step on two views `x1, x2 [B, H, W, C]`:
 * p1, p2 = predictor(projector(backbone(x1|x2)));
 * EMA update of the target, then z1, z2 = target(x1|x2) without gradient;
 * loss = byol(p1, z2) + byol(p2, z1).
 * Returns the loss and the gradients of `mocoTrainable`; does not apply them.
 */
export function byolStep(
  model: BYOL,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
): StepResult {
  return symmetricMomentumStep(model, x1, x2, opts, byolLoss);
}
