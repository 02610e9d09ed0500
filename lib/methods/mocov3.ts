/**
 * MoCo v3 (Chen, Xie, He 2021, arXiv:2104.02057): an online encoder (backbone + projector +
 * predictor) learns to match a momentum encoder (backbone + projector, an EMA of the online
 * weights) across two views, with the other images of the batch as negatives.
 * {@link momentumUpdateThenMocoGrads} is the paper's Algorithm 1 (Sec. 3), in the official code's
 * order: the momentum update first.
 *
 * The networks are the online/momentum networks that MoCo v3 shares with BYOL, under their
 * shared names in `two_view.ts`: `createMomentumNetworks`, `momentumState`, `momentumTrainable`,
 * `disposeMomentumNetworks`, `HEAD_DEFAULTS` (the paper's head settings); this file adds only
 * MoCo v3's step. Checkpoint names follow the official code (without its `module.` prefix):
 * `base_encoder.<timm name>`, `base_encoder.head.*` (projector), `predictor.*`,
 * `momentum_encoder.*`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createMomentumNetworks } from "./two_view.ts";
 * import { momentumUpdateThenMocoGrads } from "./mocov3.ts";
 * const vit = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 };
 * const moco = createMomentumNetworks(vit, { hidden: 64, outDim: 16 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = momentumUpdateThenMocoGrads(moco, x1, x2, { momentum: 0.99 });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ctr } from "./losses.ts";
import {
  localGather,
  momentumEmbed,
  type MomentumNetworks,
  momentumTrainable,
  momentumUpdate,
  predict,
  type StepOptions,
  type StepResult,
  twoViewGradsThenBnUpdate,
} from "./two_view.ts";

/**
 * One MoCo v3 step on two views `x1, x2 [B, H, W, C]` (Algorithm 1 of the paper): returns the
 * loss ctr(q1, k2) + ctr(q2, k1) and its gradients with respect to `momentumTrainable(model)`;
 * does not apply them. It changes the model's state, in this order:
 * 1. first, the momentum update of the momentum backbone and projector with `opts.momentum`
 *    ({@link momentumUpdate}; as the official code, before the keys are computed);
 * 2. after the gradients, with a ViT-BN backbone only, the online backbone's BatchNorm running
 *    statistics ({@link twoViewGradsThenBnUpdate}).
 *
 * @example
 * ```ts
 * const { loss, grads } = momentumUpdateThenMocoGrads(moco, x1, x2, { momentum: 0.99 });
 * applyGradients(momentumTrainable(moco), grads, opt, optCfg, lr);
 * ```
 */
export function momentumUpdateThenMocoGrads(
  model: MomentumNetworks,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
): StepResult {
  const T = model.config.temperature;
  // The momentum update comes first, then the keys, as in the official code.
  momentumUpdate(model, opts.momentum);
  const keys = [momentumEmbed(model, x1), momentumEmbed(model, x2)];
  // concat_all_gather: with data-parallel shards, every shard's keys are negatives too.
  const { all: [k1, k2], offset } = (opts.gather ?? localGather)(keys);
  // Queries with gradient; each view's prediction against the other view's keys.
  const result = twoViewGradsThenBnUpdate(
    model.backbone,
    momentumTrainable(model),
    x1,
    x2,
    (h1, h2) =>
      tf.add(ctr(predict(model, h1), k2, T, offset), ctr(predict(model, h2), k1, T, offset)),
    opts,
  );
  tf.dispose([...keys, k1, k2]);
  return result;
}
