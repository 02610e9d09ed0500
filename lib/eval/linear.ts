/**
 * Linear probe: a linear classifier trained on frozen backbone features (MoCo v3's and MAE's
 * protocol).
 *
 * A parameter-free BatchNorm standardises each feature with the train set's mean and std (no
 * affine; MAE's trick that makes the probe far less sensitive to the lr), then a linear layer
 * (weight `[C, D]` normal(0, 0.01), bias 0) is trained with SGD momentum 0.9, no weight decay,
 * a per-iteration cosine lr and cross-entropy on shuffled mini-batches. With cached features one
 * epoch over 60,000 x 64 is a few hundred small steps.
 *
 * The `augment` mode instead runs the images through the frozen backbone every epoch with a
 * random resized crop and a flip, as the paper's ImageNet probe does. It costs a full backbone
 * forward pass of the train set per epoch (on wasm about 3 minutes per epoch for Fashion-MNIST
 * with vit_micro, patch 7), so it is for final numbers, not for sweeps. The standardisation still uses the
 * statistics of `train` (un-augmented features), and the test set is never augmented.
 *
 * @example
 * ```ts
 * import { linearProbe } from "./linear.ts";
 * const res = await linearProbe(trainFeatures, testFeatures, { epochs: 90, lr: 0.1 });
 * console.log(res.top1, res.trainLoss.at(-1));
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { augmentView } from "../data/augment.ts";
import { type Dataset, getBatch, toFloatTensor } from "../data/dataset.ts";
import { cropFlipConfig, type FeatureSet, type Readout, readoutFeatures } from "./features.ts";
import { type ChannelStats, datasetStats } from "../data/stats.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
} from "../optim/optim.ts";
import { lrAt } from "../optim/schedule.ts";
import { createRng } from "../core/rng.ts";
import { stopPoint, type StopSignal } from "../core/stop.ts";
import { trainEpochs } from "./epochs.ts";
import { initNormal, linear } from "../model/layers.ts";
import type { ViT } from "../model/vit.ts";
import { type Accuracy, inferNumClasses, topkAccuracy } from "./metrics.ts";

/** Augmented-probe inputs: the frozen backbone and the images behind `train`'s rows. */
export interface LinearProbeAugment {
  /** The frozen backbone (run in eval mode; never updated). */
  model: ViT;
  /** The train images, in the same order as the rows of `train`. */
  dataset: Dataset;
  /** Normalisation; default {@link datasetStats}(dataset). */
  stats?: ChannelStats;
  /** Crop area range of the random resized crop. Default [0.08, 1] (torchvision's). */
  scale?: [number, number];
  /** The features `train` was extracted with (`extractFeatures`'s readout). Default `pooled`. */
  readout?: Readout;
}

/** Options of {@link linearProbe}. */
export interface LinearProbeOptions {
  /** Passes over the train set. Default 90 (the paper's). */
  epochs?: number;
  /** Rows per SGD step; the last batch of an epoch may be smaller. Default 256. */
  batchSize?: number;
  /** Peak learning rate of the cosine schedule. Default 0.1. */
  lr?: number;
  /** SGD momentum. Default 0.9. */
  momentum?: number;
  /** L2 weight decay (SGD's, in the gradient). Default 0. */
  weightDecay?: number;
  /** Epochs of linear warmup before the cosine. Default 0. */
  warmupEpochs?: number;
  /** Std of the normal weight init. Default 0.01. */
  initStd?: number;
  /** Added to the variance in the standardisation. Default 1e-6 (MAE's BatchNorm eps). */
  bnEps?: number;
  /** Number of classes. Default 1 + the largest label. */
  numClasses?: number;
  /** Seed of the init, the shuffles and the augmentation. Default 0. */
  seed?: number;
  /** Called after each epoch with its index (0-based) and mean train loss. */
  onEpoch?: (epoch: number, loss: number) => void;
  /** Train on augmented views through the backbone instead of on `train.features`. */
  augment?: LinearProbeAugment;
  /** Checked between steps: once `stop` is set, a `StoppedError` is thrown (tensors freed). */
  signal?: StopSignal;
}

/** What {@link linearProbe} returns: test accuracy (fractions) and the training curve. */
export interface LinearProbeResult extends Accuracy {
  /** Mean train cross-entropy of each epoch. */
  trainLoss: number[];
  /** Wall-clock seconds of training and evaluation. */
  seconds: number;
}

/**
 * Mean cross-entropy of `logits [B, C]` against int32 `labels [B]`, with label smoothing `eps`
 * (target (1 - eps) on the label plus eps / C on every class, as PyTorch's `label_smoothing`).
 * Returns a scalar `[]`.
 */
export function crossEntropy(
  logits: tf.Tensor2D,
  labels: tf.Tensor1D,
  eps = 0,
): tf.Scalar {
  return tf.tidy(() => {
    const c = logits.shape[1];
    const logp = tf.logSoftmax(logits);
    const target = tf.add(tf.mul(tf.oneHot(labels, c), 1 - eps), eps / c);
    return tf.neg(tf.mean(tf.sum(tf.mul(target, logp), 1))) as tf.Scalar;
  });
}

function positiveInt(name: string, v: number): number {
  if (!(Number.isInteger(v) && v > 0)) {
    throw new RangeError(`linearProbe: ${name} must be a positive integer, got ${v}`);
  }
  return v;
}

/**
 * Trains a linear classifier on standardised `train` features and reports top-1/top-5 on `test`
 * (fractions in [0, 1]) with the per-epoch train loss. Frees every tensor it makes.
 *
 * @example
 * ```ts
 * const { top1, top5 } = await linearProbe(train, test, { epochs: 30, batchSize: 256, lr: 0.1 });
 * ```
 */
export async function linearProbe(
  train: FeatureSet,
  test: FeatureSet,
  opts: LinearProbeOptions = {},
): Promise<LinearProbeResult> {
  const t0 = performance.now();
  const epochs = positiveInt("epochs", opts.epochs ?? 90);
  const batchSize = positiveInt("batchSize", opts.batchSize ?? 256);
  const lr = opts.lr ?? 0.1;
  const D = train.dim, n = train.labels.length, m = test.labels.length;
  if (test.dim !== D) throw new RangeError(`linearProbe: train dim ${D} != test dim ${test.dim}`);
  for (const [name, s] of [["train", train], ["test", test]] as const) {
    if (s.features.length !== s.labels.length * s.dim) {
      throw new RangeError(
        `linearProbe: ${name} has ${s.features.length} feature values for ${s.labels.length} ` +
          `labels x dim ${s.dim}`,
      );
    }
  }
  if (n === 0) throw new RangeError("linearProbe: the train set is empty");
  const C = opts.numClasses ?? inferNumClasses(train.labels, test.labels);
  const aug = opts.augment;
  if (aug && aug.dataset.length !== n) {
    throw new RangeError(
      `linearProbe: augment.dataset has ${aug.dataset.length} images but train has ${n} rows; ` +
        "pass the dataset the train features were extracted from",
    );
  }
  const rng = createRng(opts.seed ?? 0);
  const initRng = rng.fork(), shuffleRng = rng.fork(), augRng = rng.fork();
  const eps = opts.bnEps ?? 1e-6;
  const itersPerEpoch = Math.ceil(n / batchSize);
  const sched = {
    peakLr: lr,
    warmupSteps: Math.min((opts.warmupEpochs ?? 0) * itersPerEpoch, epochs * itersPerEpoch - 1),
    totalSteps: epochs * itersPerEpoch,
  };
  const cfg: OptimizerConfig = {
    name: "sgd",
    momentum: opts.momentum ?? 0.9,
    weightDecay: opts.weightDecay ?? 0,
  };
  const augCfg = aug
    ? cropFlipConfig(
      aug.model.config.imageSize,
      aug.dataset.channels,
      aug.stats ?? datasetStats(aug.dataset),
      aug.scale,
    )
    : undefined;

  // Parameter-free BatchNorm: the train mean / std, fixed (the backbone is frozen).
  const trainX = tf.tensor2d(train.features, [n, D]);
  const { mean, variance } = tf.moments(trainX, 0);
  const invStd = tf.tidy(() => tf.rsqrt(tf.add(variance, eps)));
  variance.dispose();
  const standardize = (x: tf.Tensor2D) => tf.mul(tf.sub(x, mean), invStd) as tf.Tensor2D;
  const xs = aug ? undefined : tf.tidy(() => standardize(trainX));
  trainX.dispose();
  const ys = tf.tensor1d(train.labels, "int32");
  const params = {
    weight: tf.tidy(() => tf.variable(initNormal([C, D], opts.initStd ?? 0.01, initRng))),
    bias: tf.tidy(() => tf.variable(tf.zeros([C]))),
  };
  const state = createOptimizerState(cfg, params);
  try {
    const epochOpts = {
      n,
      batchSize,
      epochs,
      rng: shuffleRng,
      onEpoch: opts.onEpoch,
      signal: opts.signal,
      phase: "the linear probe",
    };
    const trainLoss = await trainEpochs(epochOpts, (idxArr, step) => {
      const idx = tf.tensor1d(idxArr, "int32");
      const x = aug
        ? tf.tidy(() => {
          const { images } = getBatch(aug.dataset, idxArr);
          const ds = aug.dataset;
          const raw = toFloatTensor(images, idxArr.length, ds.height, ds.width, ds.channels);
          const view = augmentView(raw, 1, augRng, augCfg!);
          return standardize(readoutFeatures(aug.model, view, aug.readout ?? "pooled"));
        })
        : tf.gather(xs!, idx);
      const y = tf.gather(ys, idx);
      const { value, grads } = tf.valueAndGrads((w: tf.Tensor, b: tf.Tensor) =>
        crossEntropy(linear(x, w, b), y as tf.Tensor1D)
      )([params.weight, params.bias]);
      applyGradients(
        params,
        { weight: grads[0], bias: grads[1] },
        state,
        cfg,
        lrAt(step, sched),
      );
      tf.dispose([...grads, idx, x, y]);
      return value;
    });
    // Test: logits of standardised features, a chunk of rows at a time.
    const logits = new Float32Array(m * C);
    const chunk = 4096;
    for (let s = 0; s < m; s += chunk) {
      await stopPoint(opts.signal, "the linear probe's test pass");
      const rows = Math.min(chunk, m - s);
      const out = tf.tidy(() => {
        const x = tf.tensor2d(test.features.subarray(s * D, (s + rows) * D), [rows, D]);
        return linear(standardize(x), params.weight, params.bias);
      });
      logits.set(await out.data() as Float32Array, s * C);
      out.dispose();
    }
    const acc = topkAccuracy(logits, test.labels, C);
    return { ...acc, trainLoss, seconds: (performance.now() - t0) / 1000 };
  } finally {
    disposeOptimizerState(state);
    tf.dispose([mean, invStd, ys, params.weight, params.bias]);
    if (xs) xs.dispose();
  }
}
