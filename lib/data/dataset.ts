/**
 * The one in-memory dataset type that every loader returns, and the two helpers that turn it into
 * batches and tensors.
 *
 * Images are kept as raw bytes (`Uint8Array`, NHWC, 0..255) so that a whole split stays compact
 * (Fashion-MNIST train is 47 MB); they become float tensors only a batch at a time.
 *
 * @example
 * ```ts
 * import { getBatch, toFloatTensor } from "./dataset.ts";
 * import { loadDataset } from "./mod.ts";
 * const ds = await loadDataset({ name: "synthetic", split: "train", n: 64, seed: 1 });
 * const { images, labels } = getBatch(ds, [0, 1, 2, 3]);
 * const x = toFloatTensor(images, 4, ds.height, ds.width, ds.channels); // [4, 28, 28, 1]
 * x.dispose();
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import * as tf from "@tensorflow/tfjs-core";
import { createRng, permutation } from "../core/rng.ts";

/** Which part of a dataset: the one to learn from, or the held-out one. */
export type Split = "train" | "test";

/** A labelled image dataset held in memory: `length` images of `height x width x channels` bytes. */
export interface Dataset {
  /** Loader name (`fmnist`, `cifar10`, `imagefolder`, `synthetic`). */
  name: string;
  /** Which split this is. */
  split: Split;
  /**
   * How the split was made, where the dataset has no fixed split files: ImageFolder's `folders`
   * (`train/`, `test/`), `held-out 20% per class (seed 0)` (an unsplit tree) or `none` (every
   * image). Absent for datasets with their own split files (Fashion-MNIST, CIFAR-10) and synthetic.
   */
  splitRule?: string;
  /** Number of images. */
  length: number;
  /** Image height in pixels. */
  height: number;
  /** Image width in pixels. */
  width: number;
  /** Channels per pixel: 1 (gray) or 3 (RGB). */
  channels: number;
  /** Class names; label `k` means `classes[k]`. */
  classes: string[];
  /** Pixels, NHWC, 0..255: image `i` is `images.subarray(i * H*W*C, (i + 1) * H*W*C)`. */
  images: Uint8Array;
  /** Labels, one per image, each in `[0, classes.length)`. */
  labels: Int32Array;
}

/**
 * The project's error for data that is missing or malformed. The message says which file is at
 * fault, what was expected and what was found, and what to do; `file` repeats the path.
 */
export class DataError extends UserError {
  override name = "DataError";
  /** The file or directory at fault, when there is one. */
  file?: string;
  /** @param message the whole explanation; @param file the path at fault, if any. */
  constructor(message: string, file?: string) {
    super(message);
    this.file = file;
  }
}

/**
 * Gathers the images and labels at `indices` into new arrays (in the order given).
 *
 * @example
 * ```ts
 * import { syntheticDataset } from "./synthetic.ts";
 * const ds = syntheticDataset({ n: 8, seed: 0 });
 * const { images, labels } = getBatch(ds, [5, 2]); // images.length == 2 * 28 * 28 * 1
 * ```
 */
export function getBatch(
  ds: Dataset,
  indices: ArrayLike<number>,
): { images: Uint8Array; labels: Int32Array } {
  const size = ds.height * ds.width * ds.channels;
  const k = indices.length;
  const images = new Uint8Array(k * size);
  const labels = new Int32Array(k);
  for (let j = 0; j < k; j++) {
    const i = indices[j];
    if (!Number.isInteger(i) || i < 0 || i >= ds.length) {
      throw new RangeError(
        `getBatch: index ${i} (position ${j}) is not an integer in [0, ${ds.length}) ` +
          `for ${ds.name}/${ds.split}`,
      );
    }
    images.set(ds.images.subarray(i * size, (i + 1) * size), j * size);
    labels[j] = ds.labels[i];
  }
  return { images, labels };
}

/**
 * Converts `n` NHWC byte images to a float32 tensor `[n, h, w, c]` with values `byte / 255` in
 * [0, 1]. The caller owns (and disposes) the tensor.
 *
 * @example
 * ```ts
 * const x = toFloatTensor(new Uint8Array([0, 255]), 1, 1, 2, 1); // [[[[0], [1]]]]
 * x.dispose();
 * ```
 */
export function toFloatTensor(
  images: Uint8Array,
  n: number,
  h: number,
  w: number,
  c: number,
): tf.Tensor4D {
  const len = n * h * w * c;
  if (images.length !== len) {
    throw new RangeError(
      `toFloatTensor: expected ${n}x${h}x${w}x${c} = ${len} bytes, got ${images.length}`,
    );
  }
  const data = new Float32Array(len);
  for (let i = 0; i < len; i++) data[i] = images[i] / 255;
  return tf.tensor4d(data, [n, h, w, c], "float32");
}

/** Counts how many images of each class a dataset holds (`counts[k]` for `classes[k]`). */
export function classCounts(ds: Dataset): number[] {
  const counts = new Array<number>(ds.classes.length).fill(0);
  for (let i = 0; i < ds.length; i++) counts[ds.labels[i]]++;
  return counts;
}

/**
 * A fixed subset of a split: its first `n` images in one fixed permutation (seed 12345), the
 * same for every caller, so that the kNN monitor of training and of the experiments use the same
 * images; `n <= 0` or `n >= length` gives the whole split.
 *
 * @example
 * ```ts
 * const bank = fixedSubset(train, 10_000); // the same 10,000 images every time
 * ```
 */
export function fixedSubset(ds: Dataset, n: number): Dataset {
  if (n <= 0 || n >= ds.length) return ds;
  const idx = permutation(ds.length, createRng(12345)).subarray(0, n);
  const { images, labels } = getBatch(ds, idx);
  return { ...ds, length: n, images, labels };
}

/**
 * Indices of a stratified random sample of `n` rows: each class gets its share of `n` in
 * proportion to its count (largest remainders round, so the shares sum to `n`), drawn by a seeded
 * shuffle within the class; returned in ascending order. `n >= labels.length` gives every row.
 *
 * @example
 * ```ts
 * stratifiedIndices(new Int32Array([0, 0, 1, 1, 1, 1]), 3, 0); // one row of class 0, two of class 1
 * ```
 */
export function stratifiedIndices(labels: ArrayLike<number>, n: number, seed = 0): Int32Array {
  const total = labels.length;
  if (n >= total) return Int32Array.from({ length: total }, (_, i) => i);
  if (!(Number.isInteger(n) && n >= 0)) {
    throw new RangeError(`stratifiedIndices: n must be a whole number >= 0, got ${n}`);
  }
  const byClass = new Map<number, number[]>();
  for (let i = 0; i < total; i++) {
    const rows = byClass.get(labels[i]) ?? [];
    rows.push(i);
    byClass.set(labels[i], rows);
  }
  const classes = [...byClass.keys()].sort((a, b) => a - b);
  const quota = classes.map((c) => (n * byClass.get(c)!.length) / total);
  const take = quota.map(Math.floor);
  const order = classes.map((_, j) => j).sort((a, b) =>
    (quota[b] - take[b]) - (quota[a] - take[a]) || a - b
  );
  for (let r = n - take.reduce((s, t) => s + t, 0), j = 0; r > 0; r--, j++) take[order[j]]++;
  const rng = createRng(seed);
  const out: number[] = [];
  classes.forEach((c, j) => {
    const rows = byClass.get(c)!;
    const p = permutation(rows.length, rng);
    for (let t = 0; t < take[j]; t++) out.push(rows[p[t]]);
  });
  return Int32Array.from(out.sort((a, b) => a - b));
}

/**
 * A stratified random subset of `n` images (see {@link stratifiedIndices}), in their split's
 * order; `n >= length` gives the whole split.
 *
 * @example
 * ```ts
 * const sample = stratifiedSubset(test, 5_000, 0); // 500 of each Fashion-MNIST class
 * ```
 */
export function stratifiedSubset(ds: Dataset, n: number, seed = 0): Dataset {
  if (n >= ds.length) return ds;
  const { images, labels } = getBatch(
    ds,
    stratifiedIndices(ds.labels.subarray(0, ds.length), n, seed),
  );
  return { ...ds, length: labels.length, images, labels };
}
