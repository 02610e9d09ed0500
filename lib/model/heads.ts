/**
 * The MLP heads of self-supervised frameworks (projector, predictor), built by one helper as in
 * the official MoCo v3 `_build_mlp`: every Linear has no bias, hidden layers are
 * Linear -> BN -> ReLU, and the last layer is Linear -> BN without affine parameters.
 *
 * Parameter names follow PyTorch's `nn.Sequential` indices (`0.weight` is the first Linear,
 * `1.weight`/`1.bias` its BN, `3.weight` the second Linear ...), under a prefix such as
 * `base_encoder.head.` or `predictor.`, so official checkpoints map name for name.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { buildMlp, mlpForward } from "./heads.ts";
 * import { createRng } from "../core/rng.ts";
 * const head = buildMlp({ numLayers: 3, inDim: 64, hidden: 256, outDim: 32 }, createRng(0), "head.");
 * const z = mlpForward(head, tf.randomNormal([8, 64])); // [8, 32]
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { linear } from "./layers.ts";
import type { Rng } from "../core/rng.ts";

/** Shape of an MLP head. */
export interface MlpConfig {
  numLayers: number;
  inDim: number;
  hidden: number;
  outDim: number;
  /** BN without affine after the last Linear (MoCo v3: true for projector and predictor). */
  lastBn?: boolean;
}

/** An MLP head: its config, prefix and parameters by full name. */
export interface Mlp {
  config: Required<MlpConfig>;
  prefix: string;
  params: Record<string, tf.Variable>;
}

/** BN epsilon of PyTorch's BatchNorm1d. */
const BN_EPS = 1e-5;

/**
 * Builds an MLP head. Linear weights `[out, in]` get PyTorch's default init,
 * uniform(+-1/sqrt(in)); BN weights 1, biases 0.
 */
export function buildMlp(config: MlpConfig, rng: Rng, prefix = ""): Mlp {
  const cfg = { lastBn: true, ...config };
  const params: Record<string, tf.Variable> = {};
  for (let l = 0; l < cfg.numLayers; l++) {
    const dIn = l === 0 ? cfg.inDim : cfg.hidden;
    const dOut = l === cfg.numLayers - 1 ? cfg.outDim : cfg.hidden;
    const bound = 1 / Math.sqrt(dIn);
    const w = new Float32Array(dIn * dOut);
    for (let i = 0; i < w.length; i++) w[i] = (2 * rng.uniform() - 1) * bound;
    // Under tidy, so that the initial tensors are freed (a variable keeps its own reference).
    tf.tidy(() => {
      params[`${prefix}${3 * l}.weight`] = tf.variable(tf.tensor2d(w, [dOut, dIn]));
      if (l < cfg.numLayers - 1) {
        params[`${prefix}${3 * l + 1}.weight`] = tf.variable(tf.ones([dOut]));
        params[`${prefix}${3 * l + 1}.bias`] = tf.variable(tf.zeros([dOut]));
      }
    });
  }
  return { config: cfg, prefix, params };
}

/** BatchNorm over the batch axis of `[B, D]` with batch statistics (training mode). */
function batchNorm(x: tf.Tensor2D, w?: tf.Tensor, b?: tf.Tensor): tf.Tensor2D {
  const { mean, variance } = tf.moments(x, 0);
  let y: tf.Tensor2D = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, BN_EPS)));
  if (w && b) y = tf.add(tf.mul(y, w), b);
  return y;
}

/**
 * Runs a head on `x [B, inDim]` and returns `[B, outDim]`. BN always uses the statistics of
 * this batch: each view is its own BN batch, as in the paper (the heads are never used at eval).
 */
export function mlpForward(mlp: Mlp, x: tf.Tensor2D): tf.Tensor2D {
  const { numLayers, lastBn } = mlp.config;
  const P = mlp.params, p = mlp.prefix;
  let h = x;
  for (let l = 0; l < numLayers; l++) {
    h = linear(h, P[`${p}${3 * l}.weight`]);
    if (l < numLayers - 1) {
      h = tf.relu(batchNorm(h, P[`${p}${3 * l + 1}.weight`], P[`${p}${3 * l + 1}.bias`]));
    } else if (lastBn) {
      h = batchNorm(h);
    }
  }
  return h;
}
