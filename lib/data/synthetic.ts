/**
 * A seeded generator of small labelled images, for tests and quick experiments without files.
 *
 * Class `k` is a shape ({@link SYNTHETIC_CLASSES}: square, circle, cross, horizontal bars,
 * triangle, ring, vertical bars, diagonal cross) drawn at a random centre, size (a half-width of
 * 18-38% of the image, each axis stretched by up to 15%) and brightness on a random dark
 * background, with soft edges (2x2 supersampling) and Gaussian pixel noise (sigma 8% of the
 * range). With 3 channels the shape has its class colour with probability `classColorProb`
 * (default 0.5) and a random palette colour otherwise, so colour helps but shape must be learned.
 * Labels cycle `i % numClasses`, so classes are balanced (counts differ by at most one).
 *
 * The same options give the same bytes; `train` and `test` with the same seed are different
 * draws (two forks of `createRng(seed)`).
 *
 * @example
 * ```ts
 * import { syntheticDataset } from "./synthetic.ts";
 * const ds = syntheticDataset({ n: 256, channels: 3, seed: 7 }); // [256, 28, 28, 3]
 * ds.classes; // ["square", "circle", "cross", "hbars"]
 * ```
 * @module
 */
import { createRng } from "../core/rng.ts";
import { DataError, type Dataset, type Split } from "./dataset.ts";

/** Shape names of the synthetic classes, in label order (the first `numClasses` are used). */
export const SYNTHETIC_CLASSES = [
  "square",
  "circle",
  "cross",
  "hbars",
  "triangle",
  "ring",
  "vbars",
  "xcross",
];

/** Whether the point (u, v) of the shape's unit box [-1, 1]^2 is inside each shape (v points down). */
const INSIDE: ((u: number, v: number) => boolean)[] = [
  (u, v) => Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8,
  (u, v) => u * u + v * v <= 0.81,
  (u, v) => (Math.abs(u) <= 0.28 && Math.abs(v) <= 1) || (Math.abs(v) <= 0.28 && Math.abs(u) <= 1),
  (u, v) => Math.abs(u) <= 0.95 && Math.abs(v) < 1 && Math.floor((v + 1) * 2.5) % 2 === 0,
  (u, v) => v >= -0.9 && v <= 0.9 && Math.abs(u) <= (v + 0.9) / 1.8,
  (u, v) => {
    const r2 = u * u + v * v;
    return r2 >= 0.25 && r2 <= 0.9025;
  },
  (u, v) => Math.abs(v) <= 0.95 && Math.abs(u) < 1 && Math.floor((u + 1) * 2.5) % 2 === 0,
  (u, v) =>
    Math.abs(u) <= 1 && Math.abs(v) <= 1 && (Math.abs(u - v) <= 0.35 || Math.abs(u + v) <= 0.35),
];

/** Class colours (RGB in [0, 1]) for 3-channel images, in label order. */
const PALETTE: [number, number, number][] = [
  [0.9, 0.2, 0.2],
  [0.2, 0.8, 0.2],
  [0.25, 0.35, 0.95],
  [0.9, 0.85, 0.2],
  [0.85, 0.2, 0.85],
  [0.2, 0.85, 0.85],
  [0.95, 0.55, 0.1],
  [0.92, 0.92, 0.92],
];

/** Options of {@link syntheticDataset}. */
export interface SyntheticOptions {
  /** Number of images. */
  n: number;
  /** Image side in pixels (default 28). */
  imageSize?: number;
  /** 1 (gray, default) or 3 (RGB). */
  channels?: 1 | 3;
  /** Number of classes, 2..8 (default 4). */
  numClasses?: number;
  /** Seed (default 0). */
  seed?: number;
  /** Which split (default `train`); splits of one seed are independent draws. */
  split?: Split;
  /** Probability that a 3-channel shape has its class colour (default 0.5). */
  classColorProb?: number;
}

/**
 * Generates a labelled dataset of shapes, `[n, imageSize, imageSize, channels]` bytes.
 *
 * @example
 * ```ts
 * const train = syntheticDataset({ n: 1000, seed: 1 });
 * const test = syntheticDataset({ n: 200, seed: 1, split: "test" });
 * ```
 */
export function syntheticDataset(opts: SyntheticOptions): Dataset {
  const n = opts.n;
  const size = opts.imageSize ?? 28;
  const channels = opts.channels ?? 1;
  const numClasses = opts.numClasses ?? 4;
  const split = opts.split ?? "train";
  const colorProb = opts.classColorProb ?? 0.5;
  if (!(Number.isInteger(n) && n >= 0)) {
    throw new DataError(`synthetic: n must be a non-negative integer, got ${n}`);
  }
  if (!(Number.isInteger(size) && size >= 4)) {
    throw new DataError(`synthetic: imageSize must be an integer >= 4, got ${size}`);
  }
  if (channels !== 1 && channels !== 3) {
    throw new DataError(`synthetic: channels must be 1 or 3, got ${channels}`);
  }
  if (!(Number.isInteger(numClasses) && numClasses >= 2 && numClasses <= INSIDE.length)) {
    throw new DataError(
      `synthetic: numClasses must be an integer in 2..${INSIDE.length}, got ${numClasses}`,
    );
  }
  if (split !== "train" && split !== "test") {
    throw new DataError(`unknown split "${split}": expected "train" or "test"`);
  }
  const base = createRng(opts.seed ?? 0);
  const trainRng = base.fork();
  const rng = split === "train" ? trainRng : base.fork();

  const plane = size * size;
  const images = new Uint8Array(n * plane * channels);
  const labels = new Int32Array(n);
  const cover = new Float32Array(plane);
  const sub = [0.25, 0.75]; // 2x2 supersampling offsets within a pixel
  for (let i = 0; i < n; i++) {
    const label = i % numClasses;
    labels[i] = label;
    const inside = INSIDE[label];
    const r = rng.range(0.18, 0.38) * size;
    const rx = r * rng.range(0.85, 1.15);
    const ry = r * rng.range(0.85, 1.15);
    const cx = rng.range(rx, size - rx);
    const cy = rng.range(ry, size - ry);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        let hits = 0;
        for (const oy of sub) {
          for (const ox of sub) {
            if (inside((x + ox - cx) / rx, (y + oy - cy) / ry)) hits++;
          }
        }
        cover[y * size + x] = hits / 4;
      }
    }
    const bg = rng.range(0, 0.35);
    const fg = rng.range(0.6, 1);
    let color: number[] = [1];
    if (channels === 3) {
      const k = rng.uniform() < colorProb ? label : rng.int(PALETTE.length);
      color = PALETTE[k].map((v) => Math.min(1, Math.max(0, v + rng.range(-0.1, 0.1))));
    }
    const out = i * plane * channels;
    for (let p = 0; p < plane; p++) {
      for (let k = 0; k < channels; k++) {
        const v = bg + cover[p] * (fg * color[k] - bg) + 0.08 * rng.normal();
        images[out + p * channels + k] = Math.min(255, Math.max(0, Math.round(v * 255)));
      }
    }
  }
  return {
    name: "synthetic",
    split,
    length: n,
    height: size,
    width: size,
    channels,
    classes: SYNTHETIC_CLASSES.slice(0, numClasses),
    images,
    labels,
  };
}
