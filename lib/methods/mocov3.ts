/**
 * MoCo v3 (Chen, Xie, He 2021): an online encoder (backbone + projector + predictor) learns to
 * match a momentum encoder (backbone + projector, an EMA of the online weights) across two views,
 * with the other images of the batch as negatives. {@link mocoStep} is the paper's Algorithm 1.
 *
 * Checkpoint names follow the official code (without its `module.` prefix):
 * `base_encoder.<timm name>`, `base_encoder.head.*` (projector), `predictor.*`,
 * `momentum_encoder.*`.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createMoCo, mocoStep } from "./mocov3.ts";
 * const moco = createMoCo({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D, x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = mocoStep(moco, x1, x2, { momentum: 0.99 });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ctr } from "./losses.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  HEAD_DEFAULTS,
  type HeadConfig,
  localGather,
  momentumEmbed,
  type MomentumNetworks,
  momentumState,
  momentumTrainable,
  momentumUpdate,
  predict,
  type StepOptions,
  type StepResult,
  twoViewGrads,
} from "./two_view.ts";

/** MoCo v3 hyper-parameters of the heads and loss. */
export type MocoConfig = HeadConfig;

/** The paper's MoCo v3 head and loss settings. */
export const MOCO_DEFAULTS: MocoConfig = HEAD_DEFAULTS;

/** A MoCo v3 model: online backbone, projector and predictor, and the momentum copies. */
export type MoCo = MomentumNetworks;

/** Builds MoCo v3 around a new backbone; the momentum encoder starts as an exact copy. */
export const createMoCo: (
  vit: Parameters<typeof createMomentumNetworks>[0],
  config?: Partial<MocoConfig>,
  seed?: number,
) => MoCo = createMomentumNetworks;

/** Every tensor of the model by checkpoint name (online, predictor, momentum, BN buffers). */
export const mocoState: (model: MoCo) => Record<string, tf.Variable> = momentumState;

/** The parameters the optimiser updates, by checkpoint name. */
export const mocoTrainable: (model: MoCo) => Record<string, tf.Variable> = momentumTrainable;

/** Frees every variable of the model. */
export const disposeMoCo: (model: MoCo) => void = disposeMomentumNetworks;

/**
 * One MoCo v3 step on two views `x1, x2 [B, H, W, C]` (Algorithm 1 of the paper). Returns the
 * loss and the gradients of {@link mocoTrainable}; does not apply them.
 */
export function mocoStep(
  model: MoCo,
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
  const result = twoViewGrads(
    model.backbone,
    mocoTrainable(model),
    x1,
    x2,
    (h1, h2) =>
      tf.add(ctr(predict(model, h1), k2, T, offset), ctr(predict(model, h2), k1, T, offset)),
    opts,
  );
  tf.dispose([...keys, k1, k2]);
  return result;
}
