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
import type { ImageBatch } from "./images.ts";

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

/** Where the class token's attention falls, over a batch ({@link objectAttention}). */
export interface ObjectAttention {
  /** Mean over images of the attention's share (normalised over the patches) on object patches. */
  onObject: number;
  /** Mean over images of the share of patches that are object patches. */
  objectPatches: number;
  /** Images whose most-attended patch is an object patch. */
  topOnObject: number;
  images: number;
}

/**
 * How much of the class token's attention falls on the object: a patch is an object patch when
 * its mean pixel is above `threshold` (default 0.1) of its image's brightest pixel (the
 * background of Fashion-MNIST is black), and the maps (`n` maps of `grid x grid` patches, one
 * after another, as {@link classTokenAttention} returns them) are normalised over the patches.
 *
 * @example
 * ```ts
 * const o = objectAttention(classTokenAttention(model, x), batch, 4);
 * o.onObject; // 0.62: 62% of the attention on object patches, which are o.objectPatches of all
 * ```
 */
export function objectAttention(
  maps: Float32Array,
  batch: ImageBatch,
  grid: number,
  threshold = 0.1,
): ObjectAttention {
  const { pixels, n, height: H, width: W, channels: C } = batch;
  const P = grid * grid, ph = H / grid, pw = W / grid;
  if (maps.length !== n * P || !Number.isInteger(ph) || !Number.isInteger(pw)) {
    throw new Error(
      `objectAttention: ${maps.length} values for ${n} maps of ${grid}x${grid} patches of ` +
        `${H}x${W} images`,
    );
  }
  let onObject = 0, objectPatches = 0, topOnObject = 0;
  for (let i = 0; i < n; i++) {
    const img = pixels.subarray(i * H * W * C, (i + 1) * H * W * C);
    const brightest = img.reduce((a, v) => Math.max(a, v), 0);
    const object = Array.from({ length: P }, (_, p) => {
      const [r, c] = [Math.floor(p / grid), p % grid];
      let sum = 0;
      for (let y = r * ph; y < (r + 1) * ph; y++) {
        for (let x = c * pw; x < (c + 1) * pw; x++) {
          for (let k = 0; k < C; k++) sum += img[(y * W + x) * C + k];
        }
      }
      return brightest > 0 && sum / (ph * pw * C) > threshold * brightest;
    });
    const m = maps.subarray(i * P, (i + 1) * P);
    const total = m.reduce((a, v) => a + v, 0) || 1;
    onObject += m.reduce((a, v, p) => a + (object[p] ? v : 0), 0) / total;
    objectPatches += object.filter(Boolean).length / P;
    let top = 0;
    for (let p = 1; p < P; p++) if (m[p] > m[top]) top = p;
    if (object[top]) topOnObject++;
  }
  return { onObject: onObject / n, objectPatches: objectPatches / n, topOnObject, images: n };
}

/** The numbers {@link attentionSentences} reads: last-block entropies, and object shares. */
export interface AttentionNumbers {
  /** Entropy (bits) of the last block's maps, per model. */
  entropy: { pretrained: number; random: number };
  /** Patches per map (a uniform spread has log2 of it bits). */
  patches: number;
  /** {@link objectAttention} of each model, when measured. */
  object?: { pretrained: ObjectAttention; random: ObjectAttention };
}

/**
 * Sentences that say, from the numbers only, how far the last block's class-token attention is
 * from a uniform spread (bits and percent below log2 of the patches), and, given the object
 * shares, how much of it falls on object patches against their share of the patches.
 *
 * @example
 * ```ts
 * attentionSentences({ entropy: { pretrained: 3.7, random: 3.97 }, patches: 16 });
 * // "In the last block the pretrained backbone's attention has 3.70 bits of entropy: 0.30
 * // bits (7.5%) below a uniform spread over 16 patches (4.00 bits); ..."
 * ```
 */
export function attentionSentences(a: AttentionNumbers): string {
  const uniform = Math.log2(a.patches);
  const below = (h: number) =>
    `${h.toFixed(2)} bits of entropy: ${(uniform - h).toFixed(2)} bits (${
      (100 * (uniform - h) / uniform).toFixed(1)
    }%) below`;
  const out = [
    `In the last block the pretrained backbone's attention has ${below(a.entropy.pretrained)} ` +
    `a uniform spread over ${a.patches} patches (${uniform.toFixed(2)} bits); the random ` +
    `backbone's has ${below(a.entropy.random)}.`,
  ];
  if (a.object) {
    const { pretrained: p, random: r } = a.object;
    const pct = (v: number) => `${(100 * v).toFixed(0)}%`;
    out.push(
      `On these ${p.images} images, ${pct(p.onObject)} of the pretrained backbone's attention ` +
        `falls on object patches (mean pixel above a tenth of the image's brightest), which ` +
        `make up ${pct(p.objectPatches)} of the patches (the random backbone: ` +
        `${pct(r.onObject)}); its most-attended patch is on the object in ${p.topOnObject} of ` +
        `${p.images} images (random: ${r.topOnObject} of ${r.images}).`,
    );
  }
  return out.join(" ");
}
