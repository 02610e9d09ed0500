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
import { buildMlp, type Mlp, mlpForward } from "../model/heads.ts";
import {
  l2normalize,
  MOCO_DEFAULTS,
  type MocoConfig,
  type StepResult,
  twoViewGrads,
} from "./mocov3.ts";
import { createRng } from "../core/rng.ts";
import { createViT, trainableParams, type ViT, type ViTConfig } from "../model/vit.ts";

/** SimCLR head and loss settings: projector widths and the NT-Xent temperature. */
export type SimclrConfig = MocoConfig;

/** A SimCLR model: backbone and projector, nothing else. */
export interface SimCLR {
  config: SimclrConfig;
  backbone: ViT;
  projector: Mlp;
}

/**
 * Builds SimCLR around a new backbone. Same seeds as `createMoCo` (backbone from `seed`, heads
 * from `seed + 1`), so both start from the same backbone.
 */
export function createSimCLR(
  vit: Partial<ViTConfig> & { name: string },
  config: Partial<SimclrConfig> = {},
  seed = 0,
): SimCLR {
  const cfg = { ...MOCO_DEFAULTS, ...config };
  const backbone = createViT(vit, seed);
  const projector = buildMlp(
    { numLayers: 3, inDim: backbone.config.dim, hidden: cfg.hidden, outDim: cfg.outDim },
    createRng(seed + 1),
    "base_encoder.head.",
  );
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
 * NT-Xent of two views' embeddings `z1, z2 [B, C]`. With z = normalize([z1; z2]) `[2B, C]` and
 * s = z z^T / T, row i's positive is its pair (i + B mod 2B), its negatives the other 2B - 2
 * rows; self-similarity is masked out. Loss = mean over the 2B rows of
 * -log(exp(s_ip) / sum_{j != i} exp(s_ij)). At chance it is about ln(2B - 1). No 2T factor
 * (unlike MoCo v3's `contrastiveLoss`), as in SimCLR.
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
 * One SimCLR step on two views `x1, x2 [B, H, W, C]`:
 * z1, z2 = projector(backbone(x1|x2)); loss = NT-Xent(z1, z2).
 * Returns the loss and the gradients of {@link simclrTrainable}; does not apply them.
 */
export function simclrStep(model: SimCLR, x1: tf.Tensor4D, x2: tf.Tensor4D): StepResult {
  return twoViewGrads(
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
  );
}

/** Frees every variable of the model. */
export function disposeSimCLR(model: SimCLR): void {
  tf.dispose(Object.values(simclrState(model)));
}
