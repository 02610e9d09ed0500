/**
 * SwAV (Caron et al. 2020) on the shared ViT backbone: backbone + projector (MoCo v3's, as in the
 * MoCo v3 paper's framework comparison, so the frameworks differ only in loss and target), then
 * L2-normalised projections scored against K prototypes (a bias-free linear layer whose rows are
 * L2-normalised before every step, under no gradient, as the official code does). Each view's
 * codes come from Sinkhorn-Knopp on the batch's scores (3 iterations, epsilon 0.05, no gradient),
 * and each view predicts the other view's codes (swapped prediction, temperature 0.1). The
 * prototypes are frozen (gradient zeroed) while `StepOptions.freezePrototypes` is set: the
 * training loop sets it for the first epoch, as the official code's `freeze_prototypes_niters`.
 *
 * Two views only, no multi-crop, as in the MoCo v3 paper's comparison; and no queue, so the batch
 * must hold at least as many images as there are prototypes (`--batch >= --prototypes`, checked by
 * the config): Sinkhorn splits each batch equally among the prototypes, and SwAV itself adds a
 * queue of past features when its batch is smaller than K.
 *
 * K is the head config's `prototypes` (the config field `--prototypes`, default 100 for
 * 10-class data; SwAV's 3000 on ImageNet); the temperature, epsilon and iterations are
 * {@link SWAV_LOSS}. With data-parallel shards (`--workers N`) the scores of every shard are
 * gathered before Sinkhorn, as the official `distributed_sinkhorn` sums over all GPUs, so a shard's
 * codes are those of the whole batch. Names: `base_encoder.<timm name>`, `base_encoder.head.*`
 * (projector), `prototypes.weight` `[K, outDim]` (the official name).
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createSwAV, swavStep } from "./swav.ts";
 * const model = createSwAV({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16, prototypes: 8 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = swavStep(model, x1, x2, { momentum: 0, freezePrototypes: true });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type Mlp, mlpForward } from "../model/heads.ts";
import { initUniform, linear } from "../model/layers.ts";
import { l2normalize, sinkhorn, stopGradient, swappedPrediction } from "./losses.ts";
import {
  buildProjector,
  HEAD_DEFAULTS,
  type HeadConfig,
  localGather,
  type StepOptions,
  type StepResult,
  twoViewGradsThenBnUpdate,
} from "./two_view.ts";
import { createRng } from "../core/rng.ts";
import { createViT, trainableParams, type ViT, type ViTConfig } from "../model/vit.ts";

export { sinkhorn, swappedPrediction };

/** SwAV's loss settings (the SwAV paper's): swapped-prediction temperature, Sinkhorn's. */
export const SWAV_LOSS = { temperature: 0.1, epsilon: 0.05, sinkhornIterations: 3 } as const;

/** The checkpoint name of the prototypes `[K, outDim]`. */
export const PROTOTYPES = "prototypes.weight";

/** SwAV head settings: projector widths and the number of prototypes (temperature unused). */
export type SwavConfig = HeadConfig;

/** A SwAV model: backbone, projector and prototypes. */
export interface SwAV {
  config: SwavConfig;
  backbone: ViT;
  projector: Mlp;
  /** The prototypes `[K, outDim]`, one per row. */
  prototypes: tf.Variable;
}

/**
 * Builds SwAV around a new backbone. Backbone from `seed`, projector then prototypes from
 * `seed + 1` (PyTorch's Linear init), so backbone and projector start as SimCLR's.
 */
export function createSwAV(
  vit: Partial<ViTConfig> & { name: string },
  config: Partial<SwavConfig> = {},
  seed = 0,
): SwAV {
  const cfg = { ...HEAD_DEFAULTS, ...config };
  const backbone = createViT(vit, seed);
  const rng = createRng(seed + 1);
  const projector = buildProjector(backbone.config.dim, cfg, rng);
  const prototypes = tf.tidy(() =>
    tf.variable(initUniform([cfg.prototypes, cfg.outDim], 1 / Math.sqrt(cfg.outDim), rng))
  );
  return { config: cfg, backbone, projector, prototypes };
}

/** The parameters the optimiser updates, by checkpoint name. */
export function swavTrainable(model: SwAV): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries(trainableParams(model.backbone))) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params, [PROTOTYPES]: model.prototypes };
}

/** Every tensor of the model by checkpoint name (backbone, its BN buffers, projector, prototypes). */
export function swavState(model: SwAV): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries({ ...model.backbone.params, ...model.backbone.buffers })) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params, [PROTOTYPES]: model.prototypes };
}

/** Frees every variable of the model. */
export function disposeSwAV(model: SwAV): void {
  tf.dispose(Object.values(swavState(model)));
}

/** Scores of backbone features `h [B, D]` against the prototypes: `[B, K]` cosine similarities. */
export function prototypeScores(model: SwAV, h: tf.Tensor2D): tf.Tensor2D {
  return linear(l2normalize(mlpForward(model.projector, h)), model.prototypes);
}

/**
 * One SwAV step on two views `x1, x2 [B, H, W, C]`: s1, s2 = scores of each view `[B, K]`;
 * q1, q2 = Sinkhorn codes of the whole batch's scores (gathered over data-parallel shards; no
 * gradient), this shard's rows; loss = swapped prediction of (s1, s2, q1, q2). The step's momentum
 * is unused. With `opts.freezePrototypes` the prototypes' gradient is zero. Returns the loss and
 * the gradients of {@link swavTrainable}; does not apply them. It changes the model's state, in
 * this order (as the official SwAV training loop):
 * 1. first, the prototypes are L2-normalised in place (no gradient);
 * 2. after the gradients, with a ViT-BN backbone only, the backbone's BatchNorm running
 *    statistics ({@link twoViewGradsThenBnUpdate}).
 */
export function swavStep(
  model: SwAV,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
): StepResult {
  tf.tidy(() => model.prototypes.assign(l2normalize(model.prototypes as tf.Tensor2D)));
  const { temperature, epsilon, sinkhornIterations } = SWAV_LOSS;
  const gather = opts.gather ?? localGather;
  const result = twoViewGradsThenBnUpdate(
    model.backbone,
    swavTrainable(model),
    x1,
    x2,
    (h1, h2) => {
      const s1 = prototypeScores(model, h1), s2 = prototypeScores(model, h2);
      const [b, K] = s1.shape;
      const { all, offset } = gather([stopGradient(s1), stopGradient(s2)]);
      const [q1, q2] = all.map((s) =>
        tf.slice(sinkhorn(s, epsilon, sinkhornIterations), [offset, 0], [b, K])
      );
      return swappedPrediction(s1, s2, q1, q2, temperature);
    },
    opts,
  );
  if (opts.freezePrototypes) {
    const g = result.grads[PROTOTYPES];
    result.grads[PROTOTYPES] = tf.zerosLike(g);
    g.dispose();
  }
  return result;
}
