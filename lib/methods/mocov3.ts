/**
 * MoCo v3: an online encoder (backbone + projector + predictor) learns to match a momentum
 * encoder (backbone + projector, an EMA of the online weights) across two views, with in-batch
 * negatives. This file reads like the paper's pseudocode; see {@link mocoStep}.
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
import { buildMlp, type Mlp, mlpForward } from "../model/heads.ts";
import { createRng } from "../core/rng.ts";
import { fusedEma } from "../wasm_kernels.ts";
import {
  createViT,
  trainableParams,
  updateBnBuffers,
  type ViT,
  type ViTConfig,
  vitForward,
} from "../model/vit.ts";

/** MoCo v3 hyper-parameters of the heads and loss. */
export interface MocoConfig {
  /** Hidden width of projector and predictor (4096 in the paper). */
  hidden: number;
  /** Output width of projector and predictor (256 in the paper). */
  outDim: number;
  /** Softmax temperature T (0.2 for ViT). */
  temperature: number;
}

/** The paper's MoCo v3 head and loss settings. */
export const MOCO_DEFAULTS: MocoConfig = { hidden: 4096, outDim: 256, temperature: 0.2 };

/** A MoCo v3 model: online backbone, projector and predictor, and the momentum copies. */
export interface MoCo {
  config: MocoConfig;
  backbone: ViT;
  projector: Mlp;
  predictor: Mlp;
  momentumBackbone: ViT;
  momentumProjector: Mlp;
}

/** Copies variables into new non-trainable variables with the same values. */
export function cloneVariables(vars: Record<string, tf.Variable>): Record<string, tf.Variable> {
  return Object.fromEntries(
    // Under tidy, so that the clone is freed (the variable keeps its own reference to the data).
    Object.entries(vars).map(([k, v]) => [k, tf.tidy(() => tf.variable(v.clone(), false))]),
  );
}

/** A frozen copy of a backbone (same config and values), for momentum encoders. */
export function cloneViT(model: ViT): ViT {
  return {
    config: model.config,
    params: cloneVariables(model.params),
    frozen: new Set(Object.keys(model.params)),
    buffers: cloneVariables(model.buffers),
  };
}

/** Builds MoCo v3 around a new backbone; the momentum encoder starts as an exact copy. */
export function createMoCo(
  vit: Partial<ViTConfig> & { name: string },
  config: Partial<MocoConfig> = {},
  seed = 0,
): MoCo {
  const cfg = { ...MOCO_DEFAULTS, ...config };
  const backbone = createViT(vit, seed);
  const rng = createRng(seed + 1);
  const D = backbone.config.dim;
  const projector = buildMlp(
    { numLayers: 3, inDim: D, hidden: cfg.hidden, outDim: cfg.outDim },
    rng,
    "base_encoder.head.",
  );
  const predictor = buildMlp(
    { numLayers: 2, inDim: cfg.outDim, hidden: cfg.hidden, outDim: cfg.outDim },
    rng,
    "predictor.",
  );
  return {
    config: cfg,
    backbone,
    projector,
    predictor,
    momentumBackbone: cloneViT(backbone),
    momentumProjector: { ...projector, params: cloneVariables(projector.params) },
  };
}

/** Every tensor of the model by checkpoint name (online, predictor, momentum, BN buffers). */
export function mocoState(model: MoCo): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  const add = (prefix: string, vars: Record<string, tf.Variable>) => {
    for (const [k, v] of Object.entries(vars)) out[prefix + k] = v;
  };
  add("base_encoder.", { ...model.backbone.params, ...model.backbone.buffers });
  add("", model.projector.params);
  add("", model.predictor.params);
  add("momentum_encoder.", {
    ...model.momentumBackbone.params,
    ...model.momentumBackbone.buffers,
  });
  for (const [k, v] of Object.entries(model.momentumProjector.params)) {
    out[k.replace(/^base_encoder\./, "momentum_encoder.")] = v;
  }
  return out;
}

/** The parameters the optimiser updates, by checkpoint name. */
export function mocoTrainable(model: MoCo): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries(trainableParams(model.backbone))) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params, ...model.predictor.params };
}

/** Frees every variable of the model. */
export function disposeMoCo(model: MoCo): void {
  tf.dispose(Object.values(mocoState(model)));
}

/**
 * The MoCo v3 contrastive loss of queries `q [B, C]` against keys `k [K, C]`:
 * CrossEntropy(normalize(q) normalize(k)^T / T, labels) * 2T, where the positive of query i is
 * key `labelOffset + i` (the diagonal when `labelOffset` is 0 and K = B). The 2T factor makes
 * the gradient scale independent of T; at chance the value is about 2T ln(K).
 *
 * With keys gathered from every data-parallel shard (`K = N * B`), shard w passes
 * `labelOffset = w * B`, as the official code does with `concat_all_gather`.
 */
export function contrastiveLoss(
  q: tf.Tensor2D,
  k: tf.Tensor2D,
  temperature: number,
  labelOffset = 0,
): tf.Scalar {
  const B = q.shape[0], K = k.shape[0];
  if (!(Number.isInteger(labelOffset) && labelOffset >= 0 && labelOffset + B <= K)) {
    throw new Error(
      `moco.contrastiveLoss: positives ${labelOffset}..${labelOffset + B - 1} of ${B} queries ` +
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

/** L2-normalises the rows of `[B, C]` (as F.normalize, eps 1e-12). */
export function l2normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.maximum(tf.norm(x, 2, 1, true), 1e-12));
}

/** EMA update of a target from a source with the same keys: t = m t + (1 - m) s. */
export function emaUpdate(
  target: Record<string, tf.Variable>,
  source: Record<string, tf.Tensor>,
  m: number,
  rename: (k: string) => string = (k) => k,
): void {
  tf.tidy(() => {
    for (const [k, t] of Object.entries(target)) {
      const s = source[rename(k)];
      t.assign(fusedEma(t, s, m) ?? tf.add(tf.mul(t, m), tf.mul(s, 1 - m)));
    }
  });
}

/** Options of one training step. */
export interface StepOptions {
  /** Momentum coefficient m of this iteration (see optim.ts `momentumAt`). */
  momentum: number;
}

/** Loss and gradients of one step; the caller applies and disposes them. */
export interface StepResult {
  loss: tf.Scalar;
  /** Gradients by checkpoint name (see {@link mocoTrainable}). */
  grads: Record<string, tf.Tensor>;
}

/**
 * EMA-updates a momentum encoder (backbone + projector) from the online one, then embeds both
 * views with it, without gradient: the keys of MoCo v3 and the targets of BYOL, `[B, C]` each.
 * The caller disposes them.
 */
export function momentumTargets(
  model: MoCo,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  momentum: number,
): [tf.Tensor2D, tf.Tensor2D] {
  // The momentum encoder is updated before the keys are computed, as in the official code.
  emaUpdate(model.momentumBackbone.params, model.backbone.params, momentum);
  emaUpdate(model.momentumProjector.params, model.projector.params, momentum);
  return tf.tidy(() =>
    [x1, x2].map((x) =>
      mlpForward(
        model.momentumProjector,
        vitForward(model.momentumBackbone, x, { training: true }).features,
      )
    )
  ) as [tf.Tensor2D, tf.Tensor2D];
}

/**
 * Gradients of `loss(h1, h2)` with respect to `trainable`, where `h1, h2 [B, D]` are the
 * backbone features of the two views (training mode). Shared by every framework: it maps the
 * gradients back to the names of `trainable` and updates ViT-BN running statistics with the
 * mean of the two views' batch statistics.
 */
export function twoViewGrads(
  backbone: ViT,
  trainable: Record<string, tf.Variable>,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  loss: (h1: tf.Tensor2D, h2: tf.Tensor2D) => tf.Scalar,
): StepResult {
  const names = new Map(Object.entries(trainable).map(([k, v]) => [v.name, k]));
  const bn: NonNullable<ReturnType<typeof vitForward>["bnStats"]> = [];
  const { value, grads } = tf.variableGrads(() => {
    const [h1, h2] = [x1, x2].map((x) => {
      const out = vitForward(backbone, x, { training: true });
      for (const s of out.bnStats ?? []) {
        bn.push({ name: s.name, mean: tf.keep(s.mean), variance: tf.keep(s.variance) });
      }
      return out.features;
    });
    return loss(h1, h2);
  }, Object.values(trainable));
  if (bn.length) {
    const half = bn.length / 2;
    const tokens = x1.shape[0] * ((backbone.config.imageSize / backbone.config.patchSize) ** 2 + 1);
    tf.tidy(() => {
      const stats = bn.slice(0, half).map((s, i) => ({
        name: s.name,
        mean: tf.div(tf.add(s.mean, bn[half + i].mean), 2) as tf.Tensor1D,
        variance: tf.div(tf.add(s.variance, bn[half + i].variance), 2) as tf.Tensor1D,
      }));
      updateBnBuffers(backbone, stats, tokens);
    });
    tf.dispose(bn.flatMap((s) => [s.mean, s.variance]));
  }
  const named: Record<string, tf.Tensor> = {};
  for (const [vname, g] of Object.entries(grads)) named[names.get(vname)!] = g;
  return { loss: value, grads: named };
}

/**
 * One step of a framework with a momentum target (MoCo v3, BYOL) on two views `x1, x2
 * [B, H, W, C]`: momentum update, then t1, t2 = momentum encoder(x1|x2) without gradient;
 * p1, p2 = predictor(projector(backbone(x1|x2))); loss = pair(p1, t2) + pair(p2, t1).
 * Returns the loss and the gradients of {@link mocoTrainable}; does not apply them.
 */
export function symmetricMomentumStep(
  model: MoCo,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
  pair: (p: tf.Tensor2D, target: tf.Tensor2D) => tf.Scalar,
): StepResult {
  const [t1, t2] = momentumTargets(model, x1, x2, opts.momentum);
  const result = onlineGrads(model, x1, x2, t1, t2, pair);
  tf.dispose([t1, t2]);
  return result;
}

/**
 * The online half of {@link symmetricMomentumStep}: p1, p2 = predictor(projector(backbone(x1|x2)))
 * on views `x1, x2 [B, H, W, C]`, loss = pair(p1, t2) + pair(p2, t1) against given targets
 * `t1, t2` (no gradient; `[B, C]`, or `[K, C]` keys gathered from several shards). Returns the loss
 * and the gradients of {@link mocoTrainable}; does not touch the momentum encoder.
 */
export function onlineGrads(
  model: MoCo,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  t1: tf.Tensor2D,
  t2: tf.Tensor2D,
  pair: (p: tf.Tensor2D, target: tf.Tensor2D) => tf.Scalar,
): StepResult {
  const predict = (h: tf.Tensor2D) => mlpForward(model.predictor, mlpForward(model.projector, h));
  return twoViewGrads(
    model.backbone,
    mocoTrainable(model),
    x1,
    x2,
    (h1, h2) => tf.add(pair(predict(h1), t2), pair(predict(h2), t1)) as tf.Scalar,
  );
}

/** One MoCo v3 step: {@link symmetricMomentumStep} with loss = ctr(q1, k2) + ctr(q2, k1). */
export function mocoStep(
  model: MoCo,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  opts: StepOptions,
): StepResult {
  const T = model.config.temperature;
  return symmetricMomentumStep(model, x1, x2, opts, (q, k) => contrastiveLoss(q, k, T));
}
