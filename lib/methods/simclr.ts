/**
 * SimCLR (Chen et al. 2020) on the shared ViT backbone: backbone + projector, no predictor, no
 * momentum encoder. Both views pass through the same network and every view must pick out its
 * pair among the other 2B - 1 embeddings of the batch (NT-Xent).
 *
 * The projector is MoCo v3's (3 layers, Linear -> BN -> ReLU, last BN without affine), as in the
 * MoCo v3 paper's framework comparison, so the frameworks differ only in loss and target.
 * Names: `base_encoder.<timm name>` for the backbone, `base_encoder.head.*` for the projector.
 *
 * Temperature: the head config's `temperature` (0.2 by default, MoCo v3's ViT value). SimCLR
 * used 0.1 to 0.5 (0.5 at small batch, 0.1 at large); lower sharpens the softmax over negatives.
 *
 * Data-parallel shards (`--workers N`) take their negatives within the shard (2B/N - 2 per row),
 * where one process takes them from the whole batch: the two are different objectives.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createSimCLR, simclrStep } from "./simclr.ts";
 * const model = createSimCLR({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16 }, 0);
 * const x1 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const x2 = tf.randomNormal([8, 8, 8, 1]) as tf.Tensor4D;
 * const { loss, grads } = simclrStep(model, x1, x2);
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type Mlp, mlpForward } from "../model/heads.ts";
import { ntXentLoss } from "./losses.ts";
import {
  buildProjector,
  HEAD_DEFAULTS,
  type HeadConfig,
  type StepOptions,
  type StepResult,
  twoViewGradsThenBnUpdate,
} from "./two_view.ts";
import { createRng } from "../core/rng.ts";
import { createViT, trainableParams, type ViT, type ViTConfig } from "../model/vit.ts";

export { ntXentLoss };

/** SimCLR head and loss settings: projector widths and the NT-Xent temperature. */
export type SimclrConfig = HeadConfig;

/** A SimCLR model: backbone and projector, nothing else. */
export interface SimCLR {
  config: SimclrConfig;
  backbone: ViT;
  projector: Mlp;
}

/**
 * Builds SimCLR around a new backbone. Same seeds as `createMomentumNetworks` (backbone from
 * `seed`, heads from `seed + 1`), so both start from the same backbone.
 */
export function createSimCLR(
  vit: Partial<ViTConfig> & { name: string },
  config: Partial<SimclrConfig> = {},
  seed = 0,
): SimCLR {
  const cfg = { ...HEAD_DEFAULTS, ...config };
  const backbone = createViT(vit, seed);
  const projector = buildProjector(backbone.config.dim, cfg, createRng(seed + 1));
  return { config: cfg, backbone, projector };
}

/** Every tensor of the model by checkpoint name (backbone, its BN buffers, projector). */
export function simclrState(model: SimCLR): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries({ ...model.backbone.params, ...model.backbone.buffers })) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params };
}

/** The parameters the optimiser updates, by checkpoint name. */
export function simclrTrainable(model: SimCLR): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries(trainableParams(model.backbone))) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params };
}

/**
 * One SimCLR step on two views `x1, x2 [B, H, W, C]`:
 * z1, z2 = projector(backbone(x1|x2)); loss = NT-Xent(z1, z2). No target network, so the
 * step's momentum is unused, and negatives come from this batch (or shard) only.
 * Returns the loss and the gradients of {@link simclrTrainable}; does not apply them. Its one
 * change of the model's state, after the gradients and with a ViT-BN backbone only: the
 * backbone's BatchNorm running statistics ({@link twoViewGradsThenBnUpdate}).
 */
export function simclrStep(
  model: SimCLR,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions = { momentum: 0 },
): StepResult {
  return twoViewGradsThenBnUpdate(
    model.backbone,
    simclrTrainable(model),
    x1,
    x2,
    (h1, h2) =>
      ntXentLoss(
        mlpForward(model.projector, h1),
        mlpForward(model.projector, h2),
        model.config.temperature,
      ),
    opts,
  );
}

/** Frees every variable of the model. */
export function disposeSimCLR(model: SimCLR): void {
  tf.dispose(Object.values(simclrState(model)));
}
