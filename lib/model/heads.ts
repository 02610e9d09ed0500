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
import { batchNorm, initUniform, linear } from "./layers.ts";
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

/**
 * Builds an MLP head. Linear weights `[out, in]` get PyTorch's default init,
 * uniform(+-1/sqrt(in)); BN weights 1, biases 0.
 *
 * @example
 * ```ts
 * const projector = buildMlp({ numLayers: 3, inDim: 64, hidden: 256, outDim: 32 }, createRng(1), "base_encoder.head.");
 * ```
 */
export function buildMlp(config: MlpConfig, rng: Rng, prefix = ""): Mlp {
  const cfg = { lastBn: true, ...config };
  const params: Record<string, tf.Variable> = {};
  for (let l = 0; l < cfg.numLayers; l++) {
    const dIn = l === 0 ? cfg.inDim : cfg.hidden;
    const dOut = l === cfg.numLayers - 1 ? cfg.outDim : cfg.hidden;
    // Under tidy, so that the initial tensors are freed (a variable keeps its own reference).
    tf.tidy(() => {
      const w = initUniform([dOut, dIn], 1 / Math.sqrt(dIn), rng);
      params[`${prefix}${3 * l}.weight`] = tf.variable(w);
      if (l < cfg.numLayers - 1) {
        params[`${prefix}${3 * l + 1}.weight`] = tf.variable(tf.ones([dOut]));
        params[`${prefix}${3 * l + 1}.bias`] = tf.variable(tf.zeros([dOut]));
      }
    });
  }
  return { config: cfg, prefix, params };
}

/**
 * Runs a head on `x [B, inDim]` and returns `[B, outDim]`. BN ({@link batchNorm}, eps 1e-5)
 * always uses the statistics of this batch: each view is its own BN batch, as in the paper (the heads are never used at eval).
 *
 * @example
 * ```ts
 * const z = mlpForward(projector, features); // [B, 64] -> [B, 32]
 * ```
 */
export function mlpForward(mlp: Mlp, x: tf.Tensor2D): tf.Tensor2D {
  const { numLayers, lastBn } = mlp.config;
  const P = mlp.params, p = mlp.prefix;
  let h = x;
  for (let l = 0; l < numLayers; l++) {
    h = linear(h, P[`${p}${3 * l}.weight`]);
    if (l < numLayers - 1) {
      const bn = { weight: P[`${p}${3 * l + 1}.weight`], bias: P[`${p}${3 * l + 1}.bias`] };
      h = tf.relu(batchNorm(h, bn).y);
    } else if (lastBn) {
      h = batchNorm(h).y;
    }
  }
  return h;
}
