/**
 * BYOL (Grill et al. 2020) on the shared ViT backbone. Its networks are MoCo v3's (online
 * backbone + projector + predictor; target = EMA of backbone + projector: MoCo v3 is BYOL's
 * architecture with a contrastive loss), built by the shared `createMomentumNetworks`; only the
 * loss differs: each online prediction regresses the other view's target projection, with no
 * negatives. Names are MoCo's (`base_encoder.*`, `base_encoder.head.*`, `predictor.*`,
 * `momentum_encoder.*`).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createBYOL, momentumUpdateThenByolGrads } from "./byol.ts";
 * const model = createBYOL({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = momentumUpdateThenByolGrads(model, x1, x2, { momentum: 0.99 });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { byolLoss } from "./losses.ts";
import {
  createMomentumNetworks,
  type HeadConfig,
  momentumEmbed,
  type MomentumNetworks,
  momentumTrainable,
  momentumUpdate,
  predict,
  type StepOptions,
  type StepResult,
  twoViewGradsThenBnUpdate,
} from "./two_view.ts";

export { byolLoss };

/** BYOL's head settings: projector and predictor widths (no temperature: no negatives). */
export type ByolConfig = Pick<HeadConfig, "hidden" | "outDim">;

/** A BYOL model: online networks and their target (momentum) copies. */
export type BYOL = MomentumNetworks;

/** Builds BYOL around a new backbone; the target starts as an exact copy of the online net. */
export const createBYOL: (
  vit: Parameters<typeof createMomentumNetworks>[0],
  config?: Partial<ByolConfig>,
  seed?: number,
) => BYOL = createMomentumNetworks;

/**
 * One BYOL step on two views `x1, x2 [B, H, W, C]`: z1, z2 = target(x1|x2) without gradient;
 * p1, p2 = predictor(projector(backbone(x1|x2))); loss = byol(p1, z2) + byol(p2, z1). Each
 * data-parallel shard regresses its own targets (no negatives: nothing to gather). Returns the
 * loss and the gradients of `momentumTrainable(model)`; does not apply them. It changes the
 * model's state, in this order:
 * 1. first, the momentum update of the target (momentum backbone and projector) with
 *    `opts.momentum` ({@link momentumUpdate}), before the targets are computed;
 * 2. after the gradients, with a ViT-BN backbone only, the online backbone's BatchNorm running
 *    statistics ({@link twoViewGradsThenBnUpdate}).
 *
 * @example
 * ```ts
 * const { loss, grads } = momentumUpdateThenByolGrads(model, x1, x2, { momentum: 0.99 });
 * ```
 */
export function momentumUpdateThenByolGrads(
  model: BYOL,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
): StepResult {
  momentumUpdate(model, opts.momentum);
  const [z1, z2] = [momentumEmbed(model, x1), momentumEmbed(model, x2)];
  const result = twoViewGradsThenBnUpdate(
    model.backbone,
    momentumTrainable(model),
    x1,
    x2,
    (h1, h2) => tf.add(byolLoss(predict(model, h1), z2), byolLoss(predict(model, h2), z1)),
    opts,
  );
  tf.dispose([z1, z2]);
  return result;
}
