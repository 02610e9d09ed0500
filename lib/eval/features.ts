/**
 * Backbone features of a whole dataset, for the kNN monitor and the linear probe, with an on-disk
 * cache so that both read the same features instead of running the backbone twice.
 *
 * Also the evaluation-time image pipeline shared by the probes: batches of images normalised by
 * the dataset's statistics (`datasetStats`, lib/data/stats.ts) at the model's size
 * ({@link prepareImages}), and the crop + flip augmentation of the augmented linear probe and of
 * fine-tuning ({@link cropFlipConfig}).
 *
 * @example
 * ```ts
 * import { extractFeatures, checkpointCacheKey } from "./features.ts";
 * const train = await extractFeatures(model, trainDs, {
 *   batchSize: 256,
 *   cacheDir: "data/cache/features",
 *   cacheKey: await checkpointCacheKey("data/runs/r1/ckpt.safetensors"),
 *   onProgress: (done, total) => console.log(`${done}/${total}`),
 * });
 * train.features; // Float32Array [N * D], row-major
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { type AugmentConfig, defaultAugmentConfig, normalize } from "../data/augment.ts";
import { type Dataset, toFloatTensor } from "../data/dataset.ts";
import { type ChannelStats, datasetStats } from "../data/stats.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { stopPoint, type StopSignal } from "../core/stop.ts";
import { type ViT, vitForward } from "../model/vit.ts";

/** Row-major features `[N, D]` with one label per row: what kNN and the linear probe consume. */
export interface FeatureSet {
  /** `[N, D]` row-major. */
  features: Float32Array;
  /** `[N]`. */
  labels: Int32Array;
  /** D, the feature width. */
  dim: number;
}

/**
 * Images `indices` of `ds` as a normalised float tensor `[B, S, S, C]`, S = the model's image
 * size: bytes / 255, bilinearly resized (half-pixel centres) when the dataset's size differs from
 * S, then `(x - mean) / std`. The caller disposes the result.
 */
export function prepareImages(
  ds: Dataset,
  start: number,
  count: number,
  imageSize: number,
  stats: ChannelStats,
): tf.Tensor4D {
  const size = ds.height * ds.width * ds.channels;
  const bytes = ds.images.subarray(start * size, (start + count) * size);
  return tf.tidy(() => {
    let x = toFloatTensor(bytes, count, ds.height, ds.width, ds.channels);
    if (ds.height !== imageSize || ds.width !== imageSize) {
      x = tf.image.resizeBilinear(x, [imageSize, imageSize], false, true);
    }
    return normalize(x, stats.mean, stats.std);
  });
}

/**
 * The augmentation of the augmented linear probe and of fine-tuning: torchvision's random resized
 * crop (area fraction `scale`, ratio 3/4..4/3) to `outSize` plus a horizontal flip (p 0.5), then
 * normalisation; no colour jitter, grayscale, blur or solarize. Use with `augmentView(x, 1, ...)`.
 */
export function cropFlipConfig(
  outSize: number,
  channels: number,
  stats: ChannelStats,
  scale: [number, number] = [0.08, 1],
): AugmentConfig {
  return {
    ...defaultAugmentConfig({ outSize, channels, mean: stats.mean, std: stats.std }),
    scale,
    jitterP: 0,
    grayscaleP: 0,
    blurP: [0, 0],
    solarizeP: [0, 0],
  };
}

/** Options of {@link extractFeatures}. */
export interface ExtractOptions {
  /** Images per forward pass. Default 256. */
  batchSize?: number;
  /** Per-channel normalisation; default {@link datasetStats}(ds). Pass the train split's. */
  mean?: number[];
  /** Per-channel std; default {@link datasetStats}(ds). */
  std?: number[];
  /** Called after each batch with the images done so far and the total. */
  onProgress?: (done: number, total: number) => void;
  /** Directory of the feature cache (created if missing). No caching without it. */
  cacheDir?: string;
  /**
   * What identifies the weights, e.g. {@link checkpointCacheKey} of the checkpoint file. Required
   * for caching: a cache without it could serve features of other weights.
   */
  cacheKey?: string;
  /** Which tokens make the features (see {@link Readout}). Default `pooled`. */
  readout?: Readout;
  /** Checked between batches: once `stop` is set, a `StoppedError` is thrown (nothing cached). */
  signal?: StopSignal;
}

/** The feature readouts {@link extractFeatures} offers. */
export const READOUTS = ["pooled", "cls+mean"] as const;

/**
 * Which tokens make a backbone's features:
 * - `pooled`: what the backbone outputs, the class token after the final LayerNorm (MoCo v3's
 *   protocol), or the mean patch token for `pool: "mean"` backbones; D features.
 * - `cls+mean`: the class token concatenated with the mean of the patch tokens, both after the
 *   final LayerNorm (DINO's linear-probe variant for small models); 2D features, `pool: "cls"`
 *   backbones only.
 */
export type Readout = typeof READOUTS[number];

/**
 * The features of images `x [B, H, W, C]` under a readout, `[B, D]` or `[B, 2D]`.
 *
 * @example
 * ```ts
 * const f = readoutFeatures(model, x, "cls+mean"); // [B, 2 * model.config.dim]
 * ```
 */
export function readoutFeatures(model: ViT, x: tf.Tensor4D, readout: Readout): tf.Tensor2D {
  readoutDim(model, readout); // validates the readout
  return tf.tidy(() => {
    if (readout === "pooled") return vitForward(model, x, { training: false }).features;
    const { features, tokens } = vitForward(model, x, { training: false, returnTokens: true });
    const [B, T, D] = tokens!.shape;
    const mean = tf.mean(tf.slice(tokens!, [0, 1, 0], [B, T - 1, D]), 1) as tf.Tensor2D;
    return tf.concat([features, mean], 1);
  });
}

/** The feature width of a readout; throws a clear error for a readout the backbone lacks. */
export function readoutDim(model: ViT, readout: Readout): number {
  if (!(READOUTS as readonly string[]).includes(readout)) {
    throw new RangeError(`unknown readout "${readout}": expected ${READOUTS.join(" or ")}`);
  }
  if (readout === "pooled") return model.config.dim;
  if (model.config.pool !== "cls") {
    throw new RangeError(
      `readout "${readout}" needs a backbone with a class token (pool "cls"); this one has pool ` +
        `"${model.config.pool}": use the pooled readout`,
    );
  }
  return 2 * model.config.dim;
}

/** What {@link extractFeatures} returns. */
export interface ExtractedFeatures extends FeatureSet {
  /** True when read from the cache. */
  fromCache: boolean;
  /** The cache file used or written, if any. */
  cacheFile?: string;
}

/**
 * Runs the backbone in eval mode over every image of `ds` and returns its features `[N, D]`
 * (the {@link Readout}: by default the class token after the final LN, or the mean patch token)
 * with the labels.
 *
 * Batches run under `tf.tidy`; images are normalised by `mean`/`std` and resized to the model's
 * size when they differ. With `cacheDir` and `cacheKey`, the result is stored as a small binary
 * file named from a hash of (cacheKey, dataset, split, length, mean, std) and read back on the
 * next call instead of recomputing.
 *
 * @example
 * ```ts
 * const { features, labels, dim } = await extractFeatures(model, testDs, { batchSize: 512 });
 * ```
 */
export async function extractFeatures(
  model: ViT,
  ds: Dataset,
  opts: ExtractOptions = {},
): Promise<ExtractedFeatures> {
  const batchSize = opts.batchSize ?? 256;
  if (!(Number.isInteger(batchSize) && batchSize > 0)) {
    throw new RangeError(`extractFeatures: batchSize must be a positive integer, got ${batchSize}`);
  }
  const defaults = opts.mean && opts.std ? undefined : datasetStats(ds);
  const stats = { mean: opts.mean ?? defaults!.mean, std: opts.std ?? defaults!.std };
  const readout = opts.readout ?? "pooled";
  const dim = readoutDim(model, readout);
  const n = ds.length;

  let cacheFile: string | undefined;
  let keyText = "";
  if (opts.cacheDir) {
    if (!opts.cacheKey) {
      throw new Error(
        "extractFeatures: cacheDir was given without cacheKey; pass a key that identifies the " +
          "weights (checkpointCacheKey(path)) or leave cacheDir out",
      );
    }
    keyText = JSON.stringify({
      key: opts.cacheKey,
      dataset: ds.name,
      split: ds.split,
      length: n,
      size: [ds.height, ds.width, ds.channels],
      imageSize: model.config.imageSize,
      mean: stats.mean,
      std: stats.std,
      dim,
      // The pooled readout's key is unchanged, so older caches stay valid.
      ...(readout === "pooled" ? {} : { readout }),
    });
    const hash = (await sha256Hex(keyText)).slice(0, 16);
    cacheFile = `${opts.cacheDir}/${ds.name.replace(/[^\w.-]/g, "_")}-${ds.split}-${hash}.feat`;
    const hit = await readFeatureCache(cacheFile, keyText, n, dim);
    if (hit) {
      opts.onProgress?.(n, n);
      return { ...hit, fromCache: true, cacheFile };
    }
  }

  const features = new Float32Array(n * dim);
  for (let start = 0; start < n; start += batchSize) {
    await stopPoint(opts.signal, `feature extraction (${ds.split} split, ${start}/${n} images)`);
    const count = Math.min(batchSize, n - start);
    const f = tf.tidy(() => {
      const x = prepareImages(ds, start, count, model.config.imageSize, stats);
      return readoutFeatures(model, x, readout);
    });
    try {
      features.set(await f.data() as Float32Array, start * dim);
    } finally {
      f.dispose();
    }
    opts.onProgress?.(start + count, n);
  }
  const labels = ds.labels.slice(0, n);
  if (cacheFile) {
    await Deno.mkdir(opts.cacheDir!, { recursive: true });
    await writeFileAtomic(cacheFile, encodeFeatureCache(keyText, { features, labels, dim }));
  }
  return { features, labels, dim, fromCache: false, cacheFile };
}

/**
 * Raw pixels as features, the baseline every backbone must beat: `[N, H * W * C]` in [0, 1]
 * (bytes / 255, NHWC order), with the labels.
 */
export function rawPixelFeatures(ds: Dataset): FeatureSet {
  const dim = ds.height * ds.width * ds.channels;
  const features = new Float32Array(ds.length * dim);
  for (let i = 0; i < features.length; i++) features[i] = ds.images[i] / 255;
  return { features, labels: ds.labels.slice(0, ds.length), dim };
}

/**
 * A cache key for the weights in a checkpoint file: its absolute path, modification time and
 * size, so a rewritten checkpoint gets new features.
 */
export async function checkpointCacheKey(path: string): Promise<string> {
  const st = await Deno.stat(path);
  return `${await Deno.realPath(path)}@${st.mtime?.getTime() ?? 0}:${st.size}`;
}

/**
 * The SHA-256 of a text, as hex: the cache files' names.
 *
 * @example
 * ```ts
 * (await sha256Hex("abc")).slice(0, 8); // "ba7816bf"
 * ```
 */
export async function sha256Hex(text: string): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

const MAGIC = "VSSLFEAT";
const VERSION = 1;

/**
 * Cache layout, little-endian: `"VSSLFEAT"`, u32 version, u32 N, u32 D, u32 key length L, the key
 * (UTF-8 JSON, L bytes), zero padding to a multiple of 4, N * D float32 features, N int32 labels.
 */
export function encodeFeatureCache(key: string, set: FeatureSet): Uint8Array {
  const keyBytes = new TextEncoder().encode(key);
  const n = set.labels.length;
  const head = 8 + 16 + keyBytes.length;
  const pad = (4 - (head % 4)) % 4;
  const out = new Uint8Array(head + pad + 4 * n * set.dim + 4 * n);
  out.set(new TextEncoder().encode(MAGIC), 0);
  const view = new DataView(out.buffer);
  view.setUint32(8, VERSION, true);
  view.setUint32(12, n, true);
  view.setUint32(16, set.dim, true);
  view.setUint32(20, keyBytes.length, true);
  out.set(keyBytes, 24);
  let off = head + pad;
  const f = new DataView(out.buffer, off, 4 * n * set.dim);
  for (let i = 0; i < n * set.dim; i++) f.setFloat32(4 * i, set.features[i], true);
  off += 4 * n * set.dim;
  const l = new DataView(out.buffer, off, 4 * n);
  for (let i = 0; i < n; i++) l.setInt32(4 * i, set.labels[i], true);
  return out;
}

/**
 * Reads a cache file written by {@link encodeFeatureCache}. Returns undefined (a miss, to be
 * recomputed and overwritten) when the file is absent, from another version, truncated, or holds
 * another key or shape.
 */
export async function readFeatureCache(
  file: string,
  key: string,
  n: number,
  dim: number,
): Promise<FeatureSet | undefined> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw new Error(`extractFeatures: cannot read feature cache ${file}: ${(e as Error).message}`);
  }
  if (bytes.length < 24 || new TextDecoder().decode(bytes.subarray(0, 8)) !== MAGIC) return;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(8, true) !== VERSION) return;
  if (view.getUint32(12, true) !== n || view.getUint32(16, true) !== dim) return;
  const keyLen = view.getUint32(20, true);
  const head = 24 + keyLen;
  const pad = (4 - (head % 4)) % 4;
  if (bytes.length !== head + pad + 4 * n * dim + 4 * n) return;
  if (new TextDecoder().decode(bytes.subarray(24, head)) !== key) return;
  const features = new Float32Array(n * dim);
  let off = head + pad;
  for (let i = 0; i < n * dim; i++) features[i] = view.getFloat32(off + 4 * i, true);
  off += 4 * n * dim;
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) labels[i] = view.getInt32(off + 4 * i, true);
  return { features, labels, dim };
}
