/**
 * End-to-end fine-tuning: backbone + a linear head trained together on labels (the paper's
 * fine-tuning protocol, in the DeiT/BEiT/MAE form).
 *
 * AdamW with decoupled weight decay that skips biases, norms, the class token and the position
 * embedding; linear warmup then cosine (`lrAt`, per iteration); optional layer-wise lr decay
 * (BEiT: the head and final norm get lr x 1, block i gets lr x decay^(depth - i), the patch
 * projection, class token and position embedding lr x decay^(depth + 1)), implemented as one
 * optimiser state per lr group; label-smoothing cross-entropy; a light augmentation (random
 * resized crop with a large area + flip). Parameters in `model.frozen` are not trained.
 *
 * The model is updated in place: fine-tune a copy if the pretrained weights are still needed.
 *
 * @example
 * ```ts
 * import { finetune } from "./finetune.ts";
 * const res = await finetune(model, trainDs, testDs, { epochs: 20, lr: 1e-3, layerDecay: 0.75 });
 * console.log(res.top1, res.trainLoss);
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { augmentView } from "../data/augment.ts";
import { type Dataset, getBatch, toFloatTensor } from "../data/dataset.ts";
import { cropFlipConfig, extractFeatures, prepareImages } from "./features.ts";
import { datasetStats } from "../data/stats.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
  type OptimizerState,
} from "../optim/optim.ts";
import { lrAt, type LrScheduleOptions } from "../optim/schedule.ts";
import { initNormal, linear } from "../model/layers.ts";
import { createRng } from "../core/rng.ts";
import type { StopSignal } from "../core/stop.ts";
import { trainEpochs } from "./epochs.ts";
import {
  type ForwardResult,
  numPatches,
  trainableParams,
  updateBnBuffers,
  type ViT,
  vitForward,
} from "../model/vit.ts";
import { crossEntropy } from "./linear.ts";
import { type Accuracy, inferNumClasses, topkAccuracy } from "./metrics.ts";

/** Options of {@link finetune}. */
export interface FinetuneOptions {
  /** Passes over the train set. Default 50. */
  epochs?: number;
  /** Images per step (the last batch of an epoch may be smaller). Default 64. */
  batchSize?: number;
  /** Peak learning rate (already batch-scaled). Default 1e-3. */
  lr?: number;
  /** Floor of the cosine. Default 1e-6. */
  minLr?: number;
  /**
   * Epochs of linear warmup from 0. Default 5 (DeiT's), but at most a tenth of the run, so that a
   * short fine-tune still has its cosine decay; an explicit value is clamped below the total.
   */
  warmupEpochs?: number;
  /** AdamW's decoupled weight decay (skipping biases, norms, tokens). Default 0.05. */
  weightDecay?: number;
  /** AdamW betas. Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Layer-wise lr decay factor in (0, 1]; 1 turns it off. Default 1 (BEiT/MAE use 0.65-0.75). */
  layerDecay?: number;
  /** Label smoothing of the cross-entropy. Default 0.1. */
  labelSmoothing?: number;
  /** Random resized crop + flip on the train images. Default true. */
  augment?: boolean;
  /** Crop area range of the augmentation. Default [0.35, 1] (light). */
  cropScale?: [number, number];
  /** Normalisation; default {@link datasetStats}(train). */
  mean?: number[];
  /** Per-channel std; default {@link datasetStats}(train). */
  std?: number[];
  /** Number of classes. Default `train.classes.length`, or 1 + the largest label. */
  numClasses?: number;
  /** Std of the head's normal init. Default 0.01. */
  headInitStd?: number;
  /** Seed of the head init, the shuffles and the augmentation. Default 0. */
  seed?: number;
  /** Images per forward pass when evaluating. Default 256. */
  evalBatchSize?: number;
  /** Called after each epoch with its index (0-based) and mean train loss. */
  onEpoch?: (epoch: number, loss: number) => void;
  /** Checked between steps: once `stop` is set, a `StoppedError` is thrown (the model is half-tuned). */
  signal?: StopSignal;
}

/** Fine-tuning warmup epochs by default: DeiT's 5, but at most a tenth of `epochs`. */
export function defaultWarmupEpochs(epochs: number): number {
  return Math.min(5, epochs / 10);
}

/**
 * The per-iteration lr schedule of a fine-tune ({@link lrAt}'s options): `lr` (default 1e-3) after
 * `warmupEpochs` of linear warmup (default 5, DeiT's, but at most a tenth of the run so that a short
 * fine-tune still decays; clamped below the total), then a cosine to `minLr` (default 1e-6).
 *
 * @example
 * ```ts
 * finetuneSchedule(5, 100, {}); // { peakLr: 1e-3, minLr: 1e-6, warmupSteps: 50, totalSteps: 500 }
 * ```
 */
export function finetuneSchedule(
  epochs: number,
  itersPerEpoch: number,
  opts: Pick<FinetuneOptions, "lr" | "minLr" | "warmupEpochs">,
): LrScheduleOptions {
  const warmup = opts.warmupEpochs ?? defaultWarmupEpochs(epochs);
  if (!(Number.isFinite(warmup) && warmup >= 0)) {
    throw new RangeError(`finetune: warmupEpochs must be a number >= 0, got ${warmup}`);
  }
  const totalSteps = epochs * itersPerEpoch;
  return {
    peakLr: opts.lr ?? 1e-3,
    minLr: opts.minLr ?? 1e-6,
    warmupSteps: Math.min(Math.round(warmup * itersPerEpoch), totalSteps - 1),
    totalSteps,
  };
}

/** What {@link finetune} returns: test accuracy (fractions) and the training curve. */
export interface FinetuneResult extends Accuracy {
  /** Mean train loss (label-smoothed cross-entropy) of each epoch. */
  trainLoss: number[];
  /** Wall-clock seconds of training and evaluation. */
  seconds: number;
}

/**
 * The layer index of a parameter for layer-wise lr decay (BEiT's `get_layer_id_for_vit`):
 * `cls_token`, `pos_embed`, `patch_embed.*` -> 0; `blocks.i.*` -> i + 1; anything else (final
 * norm, head) -> depth + 1.
 */
export function layerId(name: string, depth: number): number {
  if (name === "cls_token" || name === "pos_embed" || name.startsWith("patch_embed.")) return 0;
  const m = /^blocks\.(\d+)\./.exec(name);
  if (m) return Number(m[1]) + 1;
  return depth + 1;
}

/**
 * The lr multiplier of each named parameter: `decay^(depth + 1 - layerId)`, so the head gets 1,
 * the last block `decay`, block i `decay^(depth - i)` and the embeddings `decay^(depth + 1)`.
 *
 * @example
 * ```ts
 * layerDecayScales(["blocks.1.mlp.fc1.weight", "head.weight"], 2, 0.5);
 * // { "blocks.1.mlp.fc1.weight": 0.5, "head.weight": 1 }
 * ```
 */
export function layerDecayScales(
  names: string[],
  depth: number,
  decay: number,
): Record<string, number> {
  if (!(decay > 0 && decay <= 1)) {
    throw new RangeError(`layerDecay must be in (0, 1], got ${decay}`);
  }
  return Object.fromEntries(names.map((n) => [n, Math.pow(decay, depth + 1 - layerId(n, depth))]));
}

/**
 * Fine-tunes `model` (in place) with a new linear head on `train` and reports top-1/top-5 on
 * `test` (fractions in [0, 1]) in eval mode, with the per-epoch train loss. The head is discarded
 * and every temporary tensor freed; the model's variables keep their count.
 *
 * @example
 * ```ts
 * const { top1 } = await finetune(model, trainDs, testDs, { epochs: 10, batchSize: 128 });
 * ```
 */
export async function finetune(
  model: ViT,
  train: Dataset,
  test: Dataset,
  opts: FinetuneOptions = {},
): Promise<FinetuneResult> {
  const t0 = performance.now();
  const epochs = opts.epochs ?? 50;
  const batchSize = opts.batchSize ?? 64;
  for (const [k, v] of [["epochs", epochs], ["batchSize", batchSize]] as const) {
    if (!(Number.isInteger(v) && v > 0)) {
      throw new RangeError(`finetune: ${k} must be a positive integer, got ${v}`);
    }
  }
  const n = train.length;
  if (n === 0) throw new RangeError("finetune: the train set is empty");
  const C = opts.numClasses ??
    Math.max(train.classes.length, inferNumClasses(train.labels, test.labels));
  const defaults = opts.mean && opts.std ? undefined : datasetStats(train);
  const stats = { mean: opts.mean ?? defaults!.mean, std: opts.std ?? defaults!.std };
  const S = model.config.imageSize;
  const smoothing = opts.labelSmoothing ?? 0.1;
  const augCfg = (opts.augment ?? true)
    ? cropFlipConfig(S, train.channels, stats, opts.cropScale ?? [0.35, 1])
    : undefined;
  const rng = createRng(opts.seed ?? 0);
  const initRng = rng.fork(), shuffleRng = rng.fork(), augRng = rng.fork();
  const sched = finetuneSchedule(epochs, Math.ceil(n / batchSize), opts);
  const cfg: OptimizerConfig = {
    name: "adamw",
    weightDecay: opts.weightDecay ?? 0.05,
    betas: opts.betas,
    skipDecay: true,
  };

  const head = {
    "head.weight": tf.tidy(() =>
      tf.variable(initNormal([C, model.config.dim], opts.headInitStd ?? 0.01, initRng))
    ),
    "head.bias": tf.tidy(() => tf.variable(tf.zeros([C]))),
  };
  const params: Record<string, tf.Variable> = { ...trainableParams(model), ...head };
  // One optimiser state per lr multiplier, so each group's AdamW step count stays exact.
  const scales = layerDecayScales(Object.keys(params), model.config.depth, opts.layerDecay ?? 1);
  const groups = new Map<number, Record<string, tf.Variable>>();
  for (const [name, p] of Object.entries(params)) {
    const g = groups.get(scales[name]) ?? {};
    g[name] = p;
    groups.set(scales[name], g);
  }
  const states: [number, Record<string, tf.Variable>, OptimizerState][] = [];
  const tokens = numPatches(model.config) + 1;
  try {
    for (const [scale, g] of groups) states.push([scale, g, createOptimizerState(cfg, g)]);
    const epochOpts = {
      n,
      batchSize,
      epochs,
      rng: shuffleRng,
      onEpoch: opts.onEpoch,
      signal: opts.signal,
      phase: "fine-tuning",
    };
    const trainLoss = await trainEpochs(epochOpts, (idx, step) => {
      const b = idx.length;
      const { images, labels } = getBatch(train, idx);
      const x = tf.tidy(() => {
        if (augCfg) {
          const raw = toFloatTensor(images, b, train.height, train.width, train.channels);
          return augmentView(raw, 1, augRng, augCfg);
        }
        const sub = { ...train, length: b, images, labels };
        return prepareImages(sub, 0, b, S, stats);
      });
      const y = tf.tensor1d(labels, "int32");
      let bnStats: ForwardResult["bnStats"];
      const { value, grads } = tf.variableGrads(() => {
        const out = vitForward(model, x, { training: true });
        bnStats = out.bnStats?.map((st) => ({
          name: st.name,
          mean: tf.keep(st.mean),
          variance: tf.keep(st.variance),
        }));
        const logits = linear(out.features, head["head.weight"], head["head.bias"]);
        return crossEntropy(logits, y, smoothing);
      }, Object.values(params));
      const lr = lrAt(step, sched);
      for (const [scale, g, state] of states) {
        const gg: Record<string, tf.Tensor> = {};
        // variableGrads keys gradients by tfjs variable name; the optimiser wants ours.
        for (const [name, v] of Object.entries(g)) if (grads[v.name]) gg[name] = grads[v.name];
        applyGradients(g, gg, state, cfg, lr * scale);
      }
      if (bnStats) {
        updateBnBuffers(model, bnStats, b * tokens);
        tf.dispose(bnStats.flatMap((st) => [st.mean, st.variance]));
      }
      tf.dispose([...Object.values(grads), x, y]);
      return value;
    });
    const acc = await evaluateHead(model, head["head.weight"], head["head.bias"], test, {
      ...stats,
      batchSize: opts.evalBatchSize ?? 256,
      numClasses: C,
      signal: opts.signal,
    });
    return { ...acc, trainLoss, seconds: (performance.now() - t0) / 1000 };
  } finally {
    for (const [, , state] of states) disposeOptimizerState(state);
    tf.dispose(Object.values(head));
  }
}

/**
 * Top-1/top-5 of backbone + linear head (`weight [C, D]`, `bias [C]`) on `ds`, eval mode.
 */
export async function evaluateHead(
  model: ViT,
  weight: tf.Tensor,
  bias: tf.Tensor,
  ds: Dataset,
  opts: {
    mean: number[];
    std: number[];
    batchSize?: number;
    numClasses: number;
    signal?: StopSignal;
  },
): Promise<Accuracy> {
  const f = await extractFeatures(model, ds, {
    batchSize: opts.batchSize,
    mean: opts.mean,
    std: opts.std,
    signal: opts.signal,
  });
  const logits = tf.tidy(() => linear(tf.tensor2d(f.features, [ds.length, f.dim]), weight, bias));
  try {
    return topkAccuracy(await logits.data(), f.labels, opts.numClasses);
  } finally {
    logits.dispose();
  }
}
