/**
 * Numbers about a ViT that the notebooks show: its parameter count from the config alone, the
 * class token's attention over the patches, and the entropy of attention maps.
 *
 * @example
 * ```ts
 * import { classTokenAttention, vitParams } from "./inspect.ts";
 * vitParams(model.config); // countParams(model.params, { includeFrozen: true })
 * const maps = classTokenAttention(model, x); // [B, N]
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { numPatches, type ViT, type ViTConfig, vitForward } from "../model/vit.ts";

/**
 * Parameters of a ViT, counted from its config (what
 * `countParams(createViT(cfg).params, { includeFrozen: true })` gives, without building it):
 * patch projection, class token, position table (also the fixed sin-cos one, as timm counts it),
 * 12 D^2 + 13 D per block (for mlpRatio 4), final norm.
 */
export function vitParams(cfg: ViTConfig): number {
  const D = cfg.dim, N = numPatches(cfg);
  const hidden = Math.round(D * cfg.mlpRatio);
  const patch = cfg.channels * cfg.patchSize ** 2 * D + D;
  const pos = cfg.posEmb === "none" ? 0 : (N + 1) * D;
  const block = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (D * hidden + hidden) +
    (hidden * D + D);
  return patch + D + pos + cfg.depth * block + (cfg.pool === "cls" ? 2 * D : 0);
}

/**
 * Attention of the class token to every patch in one block (default the last), averaged over
 * heads: `x [B, H, W, C]` (normalised images) -> `[B, N]` (rows sum to at most 1; the rest
 * went to the class token itself), as a Float32Array.
 *
 * @example
 * ```ts
 * const maps = classTokenAttention(model, x); // B * (28 / 7) ** 2 values
 * ```
 */
export function classTokenAttention(model: ViT, x: tf.Tensor4D, block = -1): Float32Array {
  const depth = model.config.depth;
  const b = block < 0 ? depth + block : block;
  if (b < 0 || b >= depth) {
    throw new Error(`classTokenAttention: block ${block} is outside 0..${depth - 1}`);
  }
  const maps = tf.tidy(() => {
    const { attention } = vitForward(model, x, { returnAttention: true });
    const a = attention![b]; // [B, heads, T, T]
    const [B, , T] = a.shape;
    const cls = tf.slice(a, [0, 0, 0, 1], [B, a.shape[1], 1, T - 1]); // [B, heads, 1, N]
    return tf.reshape(tf.mean(cls, 1), [B, T - 1]);
  });
  try {
    return maps.dataSync() as Float32Array;
  } finally {
    maps.dispose();
  }
}

/**
 * Mean entropy, in bits, of `n` attention maps stored one after another (each normalised to sum
 * to 1 first): log2(N) for uniform maps of N values, 0 for maps on a single patch.
 *
 * @example
 * ```ts
 * attentionEntropy(new Float32Array([0.25, 0.25, 0.25, 0.25]), 1); // 2
 * ```
 */
export function attentionEntropy(maps: Float32Array, n: number): number {
  const N = maps.length / n;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const m = maps.subarray(i * N, (i + 1) * N);
    const total = m.reduce((a, v) => a + v, 0);
    for (const v of m) if (v > 0) sum -= (v / total) * Math.log2(v / total);
  }
  return sum / n;
}
