/**
 * The online linear probe: a linear classifier on the detached pooled backbone features (the
 * class token after the final norm, what the kNN monitor reads) trained beside pretraining on the
 * labels of each training batch, as solo-learn, lightly and stable-pretraining monitor a run.
 *
 * - Input: the online backbone's features of view 1 from the method's own forward pass
 *   (`StepOptions.features`: no second forward, no gradient into the backbone; training mode, so
 *   augmented views, as solo-learn's online classifier).
 * - Model: `logits = h W^T + b`, W `[C, D]` normal(0, 0.01) from its own seed stream, b 0; no
 *   BatchNorm or other standardisation.
 * - Optimiser: its own SGD, momentum 0.9, no weight decay, a constant lr of 0.1
 *   ({@link ONLINE_PROBE}): the features drift while the backbone trains, so the probe keeps
 *   tracking them at a fixed rate rather than annealing.
 * - Evaluation: top-1 of the monitor's test subset, on the eval-mode features the kNN monitor
 *   extracts anyway.
 *
 * Learning from augmented views, it reads below the kNN monitor of clean test images (README.md,
 * "Online linear probe", has the numbers of the default recipe); it is a monitor of the trend.
 *
 * Its weights and optimiser slots are checkpointed under `online_probe.*` ({@link probeTensors})
 * so that a resumed run continues bit-exactly.
 *
 * @example
 * ```ts
 * import { createOnlineProbe, probeAccuracy, probeStep } from "./online_probe.ts";
 * const probe = createOnlineProbe(64, 10, 0);
 * probeStep(probe, features, labels); // features [B, 64] (not disposed), labels Int32Array [B]
 * const { top1 } = await probeAccuracy(probe, testFeatures); // a FeatureSet
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { createRng } from "../core/rng.ts";
import { crossEntropy } from "../eval/linear.ts";
import type { FeatureSet } from "../eval/features.ts";
import { type Accuracy, topkAccuracy } from "../eval/metrics.ts";
import { initNormal, linear } from "../model/layers.ts";
import { type SafeTensor, toFloat32 } from "../io/safetensors.ts";
import { CheckpointError } from "./checkpoint.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  loadOptimizerState,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
} from "../optim/optim.ts";

/** The probe's fixed settings: SGD lr, momentum, weight decay, the std of its weight init. */
export const ONLINE_PROBE = { lr: 0.1, momentum: 0.9, weightDecay: 0, initStd: 0.01 } as const;

/** Checkpoint prefix of the probe's tensors: `online_probe.weight`, `online_probe.optim.*`. */
export const PROBE_PREFIX = "online_probe.";

/** A linear classifier `[C, D]` with its own SGD state. */
export interface OnlineProbe {
  params: { weight: tf.Variable; bias: tf.Variable };
  opt: OptimizerState;
  optimizer: OptimizerConfig;
  numClasses: number;
}

/**
 * A new probe on `dim` features for `numClasses` classes; W from `seed` (its own stream: the
 * backbone's initialisation does not change).
 *
 * @example
 * ```ts
 * const probe = createOnlineProbe(64, 10, 0); // W [10, 64], b [10]
 * ```
 */
export function createOnlineProbe(dim: number, numClasses: number, seed: number): OnlineProbe {
  const rng = createRng(seed);
  const params = {
    weight: tf.tidy(() => tf.variable(initNormal([numClasses, dim], ONLINE_PROBE.initStd, rng))),
    bias: tf.tidy(() => tf.variable(tf.zeros([numClasses]))),
  };
  const optimizer: OptimizerConfig = {
    name: "sgd",
    momentum: ONLINE_PROBE.momentum,
    weightDecay: ONLINE_PROBE.weightDecay,
  };
  return { params, opt: createOptimizerState(optimizer, params), optimizer, numClasses };
}

/** Frees the probe's weights and optimiser slots. */
export function disposeOnlineProbe(probe: OnlineProbe): void {
  disposeOptimizerState(probe.opt);
  tf.dispose([probe.params.weight, probe.params.bias]);
}

/**
 * One SGD step of the probe on features `[B, D]` (the caller's; not disposed, no gradient flows
 * back into whatever made them) and their labels: mean softmax cross-entropy. Returns the loss
 * (a scalar the caller disposes).
 *
 * @example
 * ```ts
 * const loss = probeStep(probe, h, batch.labels); loss.dispose();
 * ```
 */
export function probeStep(
  probe: OnlineProbe,
  features: tf.Tensor2D,
  labels: Int32Array,
  lr: number = ONLINE_PROBE.lr,
): tf.Scalar {
  // Gradients with respect to W and b only: nothing flows into `features`.
  const y = tf.tensor1d(labels, "int32");
  const { weight, bias } = probe.params;
  const { value, grads } = tf.valueAndGrads((w: tf.Tensor, b: tf.Tensor) =>
    crossEntropy(linear(features, w, b), y)
  )([weight, bias]);
  applyGradients(
    probe.params,
    { weight: grads[0], bias: grads[1] },
    probe.opt,
    probe.optimizer,
    lr,
  );
  tf.dispose([...grads, y]);
  return value as tf.Scalar;
}

/**
 * Top-1 / top-5 (fractions) of the probe on a feature set (e.g. the kNN monitor's test queries).
 *
 * @example
 * ```ts
 * const { top1 } = await probeAccuracy(probe, { features, labels, dim: 64 });
 * ```
 */
export async function probeAccuracy(probe: OnlineProbe, set: FeatureSet): Promise<Accuracy> {
  const n = set.labels.length;
  const logits = tf.tidy(() =>
    linear(tf.tensor2d(set.features, [n, set.dim]), probe.params.weight, probe.params.bias)
  );
  try {
    return topkAccuracy(await logits.data(), set.labels, probe.numClasses);
  } finally {
    logits.dispose();
  }
}

/**
 * The probe's checkpoint tensors: `online_probe.weight`, `online_probe.bias` and its SGD slots
 * (`online_probe.optim.momentum_buffer.weight`, ...). The values are its own variables: read
 * them, do not dispose them. Save `probe.opt.step` beside them.
 */
export function probeTensors(probe: OnlineProbe): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  const all = { ...probe.params, ...optimizerStateTensors(probe.opt) };
  for (const [k, v] of Object.entries(all)) out[PROBE_PREFIX + k] = v;
  return out;
}

/**
 * Restores the probe from a checkpoint's `online_probe.*` tensors (other names are ignored) and
 * its optimiser step; throws a {@link CheckpointError} naming `source` when they are missing or
 * do not fit.
 */
export function loadProbeTensors(
  probe: OnlineProbe,
  tensors: Record<string, SafeTensor>,
  optimizerStep: number,
  source: string,
): void {
  const mine = Object.keys(tensors).filter((k) => k.startsWith(PROBE_PREFIX));
  if (mine.length === 0) {
    throw new CheckpointError(
      `${source} has no online probe (it was written with --no-online-probe): resume it with ` +
        "--no-online-probe",
    );
  }
  const loaded: Record<string, tf.Tensor> = {};
  for (const k of mine) {
    loaded[k.slice(PROBE_PREFIX.length)] = tf.tensor(toFloat32(tensors[k]), tensors[k].shape);
  }
  try {
    for (const [k, v] of Object.entries(probe.params)) {
      const t = loaded[k];
      if (!t || t.shape.join() !== v.shape.join()) {
        throw new CheckpointError(
          `${source}: online_probe.${k} is ${t ? `[${t.shape}]` : "missing"}, the probe ` +
            `expects [${v.shape}] (another dataset or width?)`,
        );
      }
    }
    loadOptimizerState(probe.opt, loaded, optimizerStep);
    for (const [k, v] of Object.entries(probe.params)) v.assign(loaded[k]);
  } finally {
    tf.dispose(Object.values(loaded));
  }
}
