/**
 * The two-view augmentation of BYOL that MoCo v3 uses, as batched tfjs ops.
 *
 * Per view: random resized crop (+ horizontal flip) -> colour jitter (p 0.8) -> grayscale (p 0.2)
 * -> Gaussian blur (p 1.0 on view 1, 0.1 on view 2) -> solarize (p 0 on view 1, 0.2 on view 2)
 * -> clip to [0, 1] -> per-channel normalisation. Every random number is drawn in JS from the
 * library's seeded {@link Rng}, one image at a time, before any tensor op runs; the ops then act
 * on the whole batch at once (no per-image loop of ops), so a seed gives the same views on a given
 * backend, and the same recipe runs on cpu, wasm and webgpu (tfjs-core ops only).
 *
 * Choices, where torchvision leaves room:
 * - Crop: torchvision's `RandomResizedCrop` box sampling (10 tries of area x log-uniform ratio,
 *   then a centre crop), resized by one bilinear `tf.image.cropAndResize` for the batch with
 *   half-pixel centres like torchvision's `resize`, endpoints clamped to the image, and no
 *   antialiasing. The flip swaps the box's x1 and x2 (the flip commutes with the later ops).
 * - Colour jitter: torchvision's factor ranges and its random order of the 4 ops per image
 *   (`jitterOrder: "random"`; `"fixed"` applies brightness, contrast, saturation, hue, at about
 *   half the cost on wasm). At each of the 4 stages every op runs on the whole batch with the
 *   identity factor for the images whose turn it is not (exactly the identity). Hue is an exact
 *   RGB -> HSV -> RGB shift (no YIQ approximation). torchvision clamps after each op; so do we.
 * - Blur: torchvision's kernel (size {@link AugmentConfig.blurKernelSize}, about 10% of the image,
 *   odd, as BYOL's 23 for 224) with reflect padding, each image with its own sigma (no binning):
 *   every (channel, image) pair becomes a channel of one image and one depthwise conv per axis
 *   applies the per-image kernels; images not blurred get a delta kernel, which is exact. The
 *   sigma range stays the paper's [0.1, 2] pixels at every image size (at 28 px with a 3-tap
 *   kernel, sigma above ~1 is close to a 3-tap box filter).
 * - Speed on wasm: colour ops run on [B, H, W, 1] colour planes with equal-shape or per-image
 *   [B, 1, 1, 1] operands, and choices are `m a + (1 - m) b` with 0/1 `m` (exact), because
 *   tfjs-backend-wasm's `where`, `maximum`, `equal` and channel-axis broadcasts are 20-40x slower
 *   than an `add`.
 * - One-channel images: saturation, hue and grayscale are no-ops; brightness and contrast act on
 *   the single channel.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { defaultAugmentConfig, twoViews } from "./augment.ts";
 * import { createRng } from "../core/rng.ts";
 * const cfg = defaultAugmentConfig({ outSize: 28, channels: 1, mean: [0.286], std: [0.353] });
 * const x = tf.randomUniform([8, 28, 28, 1]) as tf.Tensor4D; // [B, H, W, C] in [0, 1]
 * const [v1, v2] = twoViews(x, createRng(0), cfg); // each [8, 28, 28, 1], normalised
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { createRng, permutation, type Rng } from "../core/rng.ts";

/** Recipe of {@link augmentView}; {@link defaultAugmentConfig} gives the paper's values. */
export interface AugmentConfig {
  /** Side of the square output crop, in pixels. */
  outSize: number;
  /** Crop area as a fraction of the image area, [min, max]. Paper: (0.08, 1). */
  scale: [number, number];
  /** Crop aspect ratio (width / height) range, sampled log-uniformly. Paper: (3/4, 4/3). */
  ratio: [number, number];
  /** Probability of a horizontal flip. Paper: 0.5. */
  flipP: number;
  /** Probability of applying colour jitter to an image. Paper: 0.8. */
  jitterP: number;
  /** Brightness factor drawn from [max(0, 1 - b), 1 + b]. Paper: 0.4. */
  brightness: number;
  /** Contrast factor drawn from [max(0, 1 - c), 1 + c]. Paper: 0.4. */
  contrast: number;
  /** Saturation factor drawn from [max(0, 1 - s), 1 + s]. Paper: 0.2. */
  saturation: number;
  /** Hue shift drawn from [-h, h] (a fraction of the colour wheel). Paper: 0.1. */
  hue: number;
  /** `"random"`: a random order of the 4 jitter ops per image (torchvision); `"fixed"`: b, c, s, h. */
  jitterOrder: "random" | "fixed";
  /** Probability of converting an image to grayscale. Paper: 0.2. */
  grayscaleP: number;
  /** Probability of a Gaussian blur for view 1 and view 2. Paper: [1.0, 0.1]. */
  blurP: [number, number];
  /** Blur sigma range in pixels, sampled uniformly. Paper: [0.1, 2.0]. */
  blurSigma: [number, number];
  /** Blur kernel size (odd): about 10% of outSize, at least 3 (BYOL: 23 for 224). */
  blurKernelSize: number;
  /** Probability of solarizing (x >= 0.5 becomes 1 - x) for view 1 and view 2. Paper: [0, 0.2]. */
  solarizeP: [number, number];
  /** Per-channel mean subtracted at the end (length C). */
  mean: number[];
  /** Per-channel std divided by at the end (length C). */
  std: number[];
}

/** ImageNet statistics, the paper's normalisation for RGB. */
const IMAGENET_MEAN = [0.485, 0.456, 0.406];
const IMAGENET_STD = [0.229, 0.224, 0.225];

/** Odd blur kernel size of about 10% of the image side, at least 3 (224 -> 23, 28 -> 3). */
export function blurKernelSizeFor(size: number): number {
  return Math.max(3, 2 * Math.floor(size / 20) + 1);
}

/**
 * The paper's (BYOL's) augmentation for square outputs of side `outSize`.
 *
 * `mean`/`std` default to ImageNet's for 3 channels and to 0.5 / 0.5 otherwise; pass the
 * dataset's own statistics when known.
 *
 * @example
 * ```ts
 * const cfg = defaultAugmentConfig({ outSize: 32, channels: 3 });
 * cfg.blurKernelSize; // 3
 * ```
 */
export function defaultAugmentConfig(
  opts: {
    outSize: number;
    channels: number;
    mean?: number[];
    std?: number[];
    /** Smallest crop area of the random resized crop (default 0.08, the paper's). */
    cropMin?: number;
  },
): AugmentConfig {
  const { outSize, channels } = opts;
  const rgb = channels === 3;
  const mean = opts.mean ?? (rgb ? IMAGENET_MEAN.slice() : new Array(channels).fill(0.5));
  const std = opts.std ?? (rgb ? IMAGENET_STD.slice() : new Array(channels).fill(0.5));
  const cfg: AugmentConfig = {
    outSize,
    scale: [opts.cropMin ?? 0.08, 1],
    ratio: [3 / 4, 4 / 3],
    flipP: 0.5,
    jitterP: 0.8,
    brightness: 0.4,
    contrast: 0.4,
    saturation: 0.2,
    hue: 0.1,
    jitterOrder: "random",
    grayscaleP: 0.2,
    blurP: [1.0, 0.1],
    blurSigma: [0.1, 2.0],
    blurKernelSize: blurKernelSizeFor(outSize),
    solarizeP: [0, 0.2],
    mean,
    std,
  };
  checkConfig(cfg, channels);
  return cfg;
}

function checkConfig(cfg: AugmentConfig, channels: number): void {
  const bad = (what: string, found: unknown) => {
    throw new Error(`augment config: expected ${what}, found ${JSON.stringify(found)}`);
  };
  if (!Number.isInteger(cfg.outSize) || cfg.outSize < 1) {
    bad("outSize a positive integer", cfg.outSize);
  }
  if (!(cfg.scale[0] > 0 && cfg.scale[0] <= cfg.scale[1])) {
    bad("0 < scale[0] <= scale[1]", cfg.scale);
  }
  if (!(cfg.ratio[0] > 0 && cfg.ratio[0] <= cfg.ratio[1])) {
    bad("0 < ratio[0] <= ratio[1]", cfg.ratio);
  }
  if (!(cfg.blurKernelSize >= 1 && cfg.blurKernelSize % 2 === 1)) {
    bad("blurKernelSize an odd positive integer", cfg.blurKernelSize);
  }
  if (!(cfg.blurSigma[0] > 0 && cfg.blurSigma[0] <= cfg.blurSigma[1])) {
    bad("0 < blurSigma[0] <= blurSigma[1]", cfg.blurSigma);
  }
  if (cfg.jitterOrder !== "random" && cfg.jitterOrder !== "fixed") {
    bad('jitterOrder "random" or "fixed"', cfg.jitterOrder);
  }
  if (cfg.mean.length !== channels || cfg.std.length !== channels) {
    bad(`mean and std of length ${channels} (one per channel)`, { mean: cfg.mean, std: cfg.std });
  }
  if (cfg.std.some((s) => !(s > 0))) bad("std > 0", cfg.std);
}

/** Everything random about one view of a batch, drawn in JS; {@link applyViewParams} uses it. */
export interface ViewParams {
  /** [B, 4] crop boxes `y1, x1, y2, x2` in cropAndResize's normalised coordinates (flip folded in). */
  boxes: Float32Array;
  /** [B] 1 where the image is flipped horizontally (already in `boxes`; kept for inspection). */
  flip: Uint8Array;
  /** [B] 1 where colour jitter applies. */
  jitter: Uint8Array;
  /** [B, 4] jitter op at each of the 4 stages: 0 brightness, 1 contrast, 2 saturation, 3 hue. */
  order: Uint8Array;
  /** [B] brightness factors (1 = none). */
  brightness: Float32Array;
  /** [B] contrast factors (1 = none). */
  contrast: Float32Array;
  /** [B] saturation factors (1 = none). */
  saturation: Float32Array;
  /** [B] hue shifts (0 = none). */
  hue: Float32Array;
  /** [B] 1 where the image becomes grayscale. */
  grayscale: Uint8Array;
  /** [B] blur sigma in pixels, 0 = no blur. */
  blurSigma: Float32Array;
  /** [B] 1 where the image is solarized. */
  solarize: Uint8Array;
}

/**
 * torchvision's `RandomResizedCrop.get_params`: a crop `[top, left, height, width]` in pixels of
 * an `height x width` image.
 */
export function sampleCrop(
  height: number,
  width: number,
  scale: [number, number],
  ratio: [number, number],
  rng: Rng,
): [number, number, number, number] {
  const area = height * width;
  const logLo = Math.log(ratio[0]);
  const logHi = Math.log(ratio[1]);
  for (let t = 0; t < 10; t++) {
    const target = area * rng.range(scale[0], scale[1]);
    const aspect = Math.exp(rng.range(logLo, logHi));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      return [rng.int(height - h + 1), rng.int(width - w + 1), h, w];
    }
  }
  // Fallback: the central crop with the ratio clamped into range.
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < ratio[0]) h = Math.round(w / ratio[0]);
  else if (inRatio > ratio[1]) w = Math.round(h * ratio[1]);
  return [Math.floor((height - h) / 2), Math.floor((width - w) / 2), h, w];
}

/**
 * Maps pixel span [start, start + len) of an axis of `n` pixels, resized to `out` samples, to
 * cropAndResize's normalised endpoints, with half-pixel centres (as torchvision's resize).
 */
function spanToBox(start: number, len: number, n: number, out: number): [number, number] {
  if (n === 1) return [0, 0];
  const half = 0.5 * len / out;
  const lo = Math.min(Math.max(start + half - 0.5, 0), n - 1);
  const hi = Math.min(Math.max(start + len - half - 0.5, 0), n - 1);
  return [lo / (n - 1), hi / (n - 1)];
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** The float32 next to `v` (in [0, 1]) towards `up` or down. */
function stepFloat32(v: number, up: boolean): number {
  f32[0] = v;
  if (up) u32[0]++;
  else if (u32[0] > 0) u32[0]--;
  return f32[0];
}

/**
 * The box ends `a` (first sample) and `b` (last sample) of one axis as float32, with `b` moved
 * by a few ulps where needed so that the last sample position, `a (n - 1) + (out - 1) s` with
 * `s = (b - a) (n - 1) / (out - 1)`, stays inside `[0, n - 1]` as both the wasm kernel (float32)
 * and the cpu kernel (float64) round it. A position that rounds past the border is filled with
 * 0 instead of the border pixel: without this, about 1% of the wasm views of crops that touch
 * the right or bottom edge got a black last column or row. Exact boxes (the identity) are kept.
 */
function insideEnds(a: number, b: number, n: number, out: number): [number, number] {
  const m = n - 1;
  const f = Math.fround;
  a = f(a);
  b = f(b);
  if (out < 2 || n < 2) return [a, b];
  for (let t = 0; t < 64; t++) {
    const s32 = f(f(f(b - a) * m) / (out - 1));
    const p32 = f(f(a * m) + f((out - 1) * s32));
    const p64 = a * m + (out - 1) * ((b - a) * m / (out - 1));
    if (b >= a && (p32 > m || p64 > m)) b = stepFloat32(b, false);
    else if (b < a && (p32 < 0 || p64 < 0)) b = stepFloat32(b, true);
    else break;
  }
  return [a, b];
}

/**
 * Draws the random choices of one view for a batch of `batch` images of `height x width`.
 * Per image, in this order: crop, flip, jitter (apply, order, 4 factors), grayscale, blur
 * (apply, sigma), solarize. Numbers are drawn even for ops that end up off, so one op's
 * probability does not shift the others' streams (only the crop's tries vary in count).
 */
export function sampleViewParams(
  batch: number,
  height: number,
  width: number,
  view: 1 | 2,
  rng: Rng,
  cfg: AugmentConfig,
): ViewParams {
  if (view !== 1 && view !== 2) throw new Error(`augment: expected view 1 or 2, found ${view}`);
  const v = view - 1;
  const p: ViewParams = {
    boxes: new Float32Array(batch * 4),
    flip: new Uint8Array(batch),
    jitter: new Uint8Array(batch),
    order: new Uint8Array(batch * 4),
    brightness: new Float32Array(batch),
    contrast: new Float32Array(batch),
    saturation: new Float32Array(batch),
    hue: new Float32Array(batch),
    grayscale: new Uint8Array(batch),
    blurSigma: new Float32Array(batch),
    solarize: new Uint8Array(batch),
  };
  const factor = (m: number) => rng.range(Math.max(0, 1 - m), 1 + m);
  for (let i = 0; i < batch; i++) {
    const [top, left, h, w] = sampleCrop(height, width, cfg.scale, cfg.ratio, rng);
    const flip = rng.uniform() < cfg.flipP;
    const [top1, top2] = spanToBox(top, h, height, cfg.outSize);
    const [y1, y2] = insideEnds(top1, top2, height, cfg.outSize);
    const [left1, left2] = spanToBox(left, w, width, cfg.outSize);
    // A flip is the box read right to left.
    const [x1, x2] = flip
      ? insideEnds(left2, left1, width, cfg.outSize)
      : insideEnds(left1, left2, width, cfg.outSize);
    p.boxes.set([y1, x1, y2, x2], 4 * i);
    p.flip[i] = flip ? 1 : 0;

    p.jitter[i] = rng.uniform() < cfg.jitterP ? 1 : 0;
    const perm = permutation(4, rng);
    p.order.set(cfg.jitterOrder === "random" ? perm : [0, 1, 2, 3], 4 * i);
    const b = factor(cfg.brightness);
    const c = factor(cfg.contrast);
    const s = factor(cfg.saturation);
    const hu = rng.range(-cfg.hue, cfg.hue);
    p.brightness[i] = p.jitter[i] ? b : 1;
    p.contrast[i] = p.jitter[i] ? c : 1;
    p.saturation[i] = p.jitter[i] ? s : 1;
    p.hue[i] = p.jitter[i] ? hu : 0;

    p.grayscale[i] = rng.uniform() < cfg.grayscaleP ? 1 : 0;
    const blur = rng.uniform() < cfg.blurP[v];
    const sigma = rng.range(cfg.blurSigma[0], cfg.blurSigma[1]);
    p.blurSigma[i] = blur ? sigma : 0;
    p.solarize[i] = rng.uniform() < cfg.solarizeP[v] ? 1 : 0;
  }
  return p;
}

/** [B] numbers -> [B, 1, 1, 1] float tensor, to broadcast over an image batch. */
function perImage(values: ArrayLike<number>): tf.Tensor4D {
  return tf.tensor4d(Float32Array.from(values), [values.length, 1, 1, 1]);
}

/**
 * A batch as its colour planes: C tensors of [B, H, W, 1]. The ops below work on planes, where
 * every op is elementwise on equal shapes or broadcasts a per-image [B, 1, 1, 1] factor or a
 * scalar: the fast cases of tfjs-backend-wasm, whose channel-axis reductions, splits, `where`s
 * with a broadcast condition and [C]-broadcasts are several times slower.
 */
type Planes = tf.Tensor4D[];

/** [B, H, W, C] -> C planes [B, H, W, 1]. */
function toPlanes(x: tf.Tensor4D): Planes {
  const [b, h, w, c] = x.shape;
  if (c === 1) return [x];
  return tf.unstack(tf.transpose(x, [3, 0, 1, 2])).map((q) => tf.reshape(q, [b, h, w, 1]));
}

/** C planes [B, H, W, 1] -> [B, H, W, C]. */
function fromPlanes(p: Planes): tf.Tensor4D {
  if (p.length === 1) return p[0];
  const [b, h, w] = p[0].shape;
  return tf.transpose(tf.reshape(tf.stack(p), [p.length, b, h, w]), [1, 2, 3, 0]);
}

/** Runs a plane op on an NHWC batch, in a tidy; always returns a new tensor. */
function onPlanes(x: tf.Tensor4D, fn: (p: Planes) => Planes): tf.Tensor4D {
  return tf.tidy(() => {
    const y = fromPlanes(fn(toPlanes(x)));
    return y === x ? y.clone() : y;
  });
}

/**
 * Per image, `a` where `mask` [B] is 1 and `b` where it is 0, as `m a + (1 - m) b`: exact for
 * 0/1 masks, and fast on wasm (unlike a `where` with a broadcast condition).
 */
function selectImages(mask: ArrayLike<number>, a: tf.Tensor4D, b: tf.Tensor4D): tf.Tensor4D {
  const m = perImage(mask);
  return tf.add(tf.mul(m, a), tf.mul(tf.sub(1, m), b));
}

const LUMA = [0.299, 0.587, 0.114];

function lumaPlane(p: Planes): tf.Tensor4D {
  if (p.length !== 3) return p[0];
  const [r, g, b] = p;
  return tf.add(tf.add(tf.mul(r, LUMA[0]), tf.mul(g, LUMA[1])), tf.mul(b, LUMA[2]));
}

// The identity factor (1, or a hue shift of 0) leaves a plane exactly as it was: x * 1 + 0.

function brightnessPlanes(p: Planes, f: ArrayLike<number>): Planes {
  const fm = perImage(f);
  return p.map((c) => tf.clipByValue(tf.mul(c, fm), 0, 1));
}

function contrastPlanes(p: Planes, f: ArrayLike<number>): Planes {
  const fm = perImage(f);
  const offset = tf.mul(tf.sub(1, fm), tf.mean(lumaPlane(p), [1, 2, 3], true));
  return p.map((c) => tf.clipByValue(tf.add(tf.mul(c, fm), offset), 0, 1));
}

function saturationPlanes(p: Planes, f: ArrayLike<number>): Planes {
  if (p.length !== 3) return p;
  const fm = perImage(f);
  const offset = tf.mul(tf.sub(1, fm), lumaPlane(p));
  return p.map((c) => tf.clipByValue(tf.add(tf.mul(c, fm), offset), 0, 1));
}

/** `s a + (1 - s) b` for a 0/1 tensor `s`: an exact elementwise choice from fast ops. */
function choose(s: tf.Tensor, a: tf.Tensor, b: tf.Tensor): tf.Tensor4D {
  return tf.add(tf.mul(s, a), tf.mul(tf.sub(1, s), b)) as tf.Tensor4D;
}

function huePlanes(p: Planes, shift: ArrayLike<number>): Planes {
  if (p.length !== 3) return p;
  const [r, g, b] = p;
  // Comparisons as 0/1 planes from `step` (fast on wasm, where maximum/equal/where are ~20-40x
  // slower than an add). Ties go to R, then G, as torchvision's rgb -> hsv.
  const geq = (x: tf.Tensor, y: tf.Tensor) => tf.sub(1, tf.step(tf.sub(y, x))); // x >= y
  const isR = tf.mul(geq(r, g), geq(r, b));
  const isG = tf.mul(tf.sub(1, isR), geq(g, b));
  const isB = tf.sub(tf.sub(1, isR), isG);
  const v = tf.add(tf.add(tf.mul(isR, r), tf.mul(isG, g)), tf.mul(isB, b));
  const rg = choose(geq(r, g), g, r); // min(r, g)
  const d = tf.sub(v, choose(geq(rg, b), b, rg));
  const dd = tf.add(d, 1e-20); // d = 0: the numerators are 0 and gray stays gray
  const hR = tf.div(tf.sub(g, b), dd);
  const hG = tf.add(2, tf.div(tf.sub(b, r), dd));
  const hB = tf.add(4, tf.div(tf.sub(r, g), dd));
  const h6 = tf.add(tf.add(tf.mul(isR, hR), tf.mul(isG, hG)), tf.mul(isB, hB));
  const base = tf.add(h6, perImage(Array.from(shift, (s) => 6 * s)));
  return [5, 3, 1].map((n) => {
    const k0 = tf.add(base, n);
    const k = tf.sub(k0, tf.mul(6, tf.floor(tf.mul(k0, 1 / 6)))); // mod 6
    // clamp(min(k, 4 - k), 0, 1) on [0, 6), without the elementwise minimum
    const w = tf.sub(tf.add(tf.clipByValue(k, 0, 1), tf.clipByValue(tf.sub(4, k), 0, 1)), 1);
    return tf.sub(v, tf.mul(d, w));
  });
}

function grayscalePlanes(p: Planes, mask: ArrayLike<number>): Planes {
  if (p.length !== 3) return p;
  const l = lumaPlane(p);
  return p.map((c) => selectImages(mask, l, c));
}

function solarizePlanes(p: Planes, mask: ArrayLike<number>): Planes {
  const m = perImage(mask);
  return p.map((c) => {
    // t = 1 where c >= 0.5 (floor(2c) is 1 or 2 there, 0 below) and the image is solarized
    const t = tf.mul(tf.clipByValue(tf.floor(tf.mul(c, 2)), 0, 1), m);
    return tf.add(tf.mul(t, tf.sub(1, c)), tf.mul(tf.sub(1, t), c));
  });
}

function blurPlanes(p: Planes, sigmas: ArrayLike<number>, k: number): Planes {
  const [batch, h, w] = p[0].shape;
  const c = p.length;
  const size = Math.min(k, 2 * Math.min(h, w) - 1); // reflect padding needs r < side
  const r = (size - 1) / 2;
  if (r < 1 || !Array.from(sigmas).some((s) => s > 0)) return p;
  // Every (plane, image) pair becomes a channel of one [1, H, W, C B] image, channel i B + b.
  const f = new Float32Array(size * c * batch);
  for (let b = 0; b < batch; b++) {
    const taps = sigmas[b] > 0 ? gaussianKernel1d(size, sigmas[b]) : null;
    for (let t = 0; t < size; t++) {
      const v = taps ? taps[t] : t === r ? 1 : 0;
      for (let i = 0; i < c; i++) f[(t * c + i) * batch + b] = v;
    }
  }
  const stacked = tf.reshape(tf.stack(p), [c, batch, h, w]);
  const x = tf.reshape(tf.transpose(stacked, [2, 3, 0, 1]), [1, h, w, c * batch]);
  const padded = tf.mirrorPad(x, [[0, 0], [r, r], [r, r], [0, 0]], "reflect") as tf.Tensor4D;
  const fh = tf.tensor4d(f, [size, 1, c * batch, 1]);
  const fw = tf.tensor4d(f, [1, size, c * batch, 1]);
  const y = tf.depthwiseConv2d(tf.depthwiseConv2d(padded, fh, 1, "valid"), fw, 1, "valid");
  const back = tf.transpose(tf.reshape(y, [h, w, c, batch]), [2, 3, 0, 1]);
  return tf.unstack(back).map((q) => tf.reshape(q, [batch, h, w, 1]));
}

/** Luma `0.299 R + 0.587 G + 0.114 B` of [B, H, W, 3] -> [B, H, W, 1]; 1 channel: a copy. */
export function luminance(x: tf.Tensor4D): tf.Tensor4D {
  return onPlanes(x, (p) => [lumaPlane(p)]);
}

/** Brightness: `clip(f x)` with per-image factors `f` [B]. [B, H, W, C] -> same. */
export function adjustBrightness(x: tf.Tensor4D, f: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => brightnessPlanes(p, f));
}

/** Contrast: `clip(f x + (1 - f) mean(gray(x)))` per image, factors `f` [B]. [B, H, W, C]. */
export function adjustContrast(x: tf.Tensor4D, f: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => contrastPlanes(p, f));
}

/** Saturation: `clip(f x + (1 - f) gray(x))` per image, factors `f` [B]; 1 channel: no-op. */
export function adjustSaturation(x: tf.Tensor4D, f: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => saturationPlanes(p, f));
}

/**
 * Hue: rotates the HSV hue of each image by `shift` [B] (a fraction of a turn), exactly, via
 * RGB -> HSV -> RGB in closed form: with `v = max`, `d = max - min` and `h6 = 6 h`, each channel
 * n in (R 5, G 3, B 1) is `v - d clamp(min(k, 4 - k), 0, 1)` with `k = (n + h6) mod 6`.
 * [B, H, W, 3] -> same; 1 channel: no-op.
 */
export function adjustHue(x: tf.Tensor4D, shift: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => huePlanes(p, shift));
}

/** Grayscale where `mask` [B] is 1: every channel becomes the luma. 1 channel: no-op. */
export function randomGrayscale(x: tf.Tensor4D, mask: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => grayscalePlanes(p, mask));
}

/**
 * Solarize where `mask` [B] is 1: pixels `>= 0.5` become `1 - x` (exactly, for x in [0, 1]).
 * [B, H, W, C] -> same.
 */
export function solarize(x: tf.Tensor4D, mask: ArrayLike<number>): tf.Tensor4D {
  return onPlanes(x, (p) => solarizePlanes(p, mask));
}

/** torchvision's normalised 1-D Gaussian of odd size `k`: taps at -(k-1)/2 .. (k-1)/2. */
export function gaussianKernel1d(k: number, sigma: number): Float64Array {
  const half = (k - 1) / 2;
  const w = new Float64Array(k);
  let sum = 0;
  for (let t = 0; t < k; t++) {
    w[t] = Math.exp(-0.5 * ((t - half) / sigma) ** 2);
    sum += w[t];
  }
  for (let t = 0; t < k; t++) w[t] /= sum;
  return w;
}

/**
 * Separable Gaussian blur with a per-image sigma (`sigmas` [B], 0 = untouched), kernel size `k`
 * (odd; clamped to 2 min(H, W) - 1 so that reflect padding fits), reflect padding, as
 * torchvision's `gaussian_blur`. Every (channel, image) pair becomes a channel of one image, so
 * one depthwise conv per axis applies each image's own kernel; untouched images get the kernel
 * (0, .., 1, .., 0), which is exact. [B, H, W, C] -> same.
 */
export function gaussianBlur(x: tf.Tensor4D, sigmas: ArrayLike<number>, k: number): tf.Tensor4D {
  return onPlanes(x, (p) => blurPlanes(p, sigmas, k));
}

/** `(x - mean) / std` per channel. [B, H, W, C] -> same; also for evaluation inputs. */
export function normalize(images: tf.Tensor4D, mean: number[], std: number[]): tf.Tensor4D {
  const c = images.shape[3];
  if (mean.length !== c || std.length !== c) {
    throw new Error(
      `normalize: expected mean and std of length ${c} (the channels of images ` +
        `[${images.shape}]), found ${mean.length} and ${std.length}`,
    );
  }
  return onPlanes(images, (p) => p.map((q, i) => tf.div(tf.sub(q, mean[i]), std[i])));
}

/**
 * Colour jitter with per-image factors and order from `p`, on planes.
 *
 * Stage by stage, each op runs on the whole batch with the identity factor for the images whose
 * op at this stage is another one (exact for brightness, contrast and saturation; hue is blended
 * in per image). A random order thus costs up to 4 passes of each op, a fixed order one.
 */
function jitterPlanes(planes: Planes, p: ViewParams): Planes {
  const batch = p.jitter.length;
  const rgb = planes.length === 3;
  const factors = [p.brightness, p.contrast, p.saturation, p.hue];
  let y = planes;
  for (let stage = 0; stage < 4; stage++) {
    for (let o = 0; o < 4; o++) {
      if (!rgb && o >= 2) continue; // saturation and hue need colour
      const identity = o === 3 ? 0 : 1;
      const f = new Float32Array(batch).fill(identity);
      const sel = new Uint8Array(batch);
      let any = false;
      for (let i = 0; i < batch; i++) {
        if (p.jitter[i] && p.order[4 * i + stage] === o && factors[o][i] !== identity) {
          f[i] = factors[o][i];
          sel[i] = 1;
          any = true;
        }
      }
      if (!any) continue;
      if (o === 0) y = brightnessPlanes(y, f);
      else if (o === 1) y = contrastPlanes(y, f);
      else if (o === 2) y = saturationPlanes(y, f);
      else {
        const before = y;
        y = huePlanes(y, f).map((q, i) => selectImages(sel, q, before[i]));
      }
    }
  }
  return y;
}

/**
 * Applies drawn view parameters to a batch: crop + flip, jitter, grayscale, blur, solarize, clip,
 * normalise. `images` [B, H, W, C] float32 in [0, 1] -> [B, outSize, outSize, C].
 */
export function applyViewParams(
  images: tf.Tensor4D,
  p: ViewParams,
  cfg: AugmentConfig,
): tf.Tensor4D {
  const [batch, , , channels] = images.shape;
  if (p.jitter.length !== batch || p.boxes.length !== 4 * batch) {
    throw new Error(
      `augment: view params are for ${p.jitter.length} images, the batch has ${batch}: draw them ` +
        "with sampleViewParams for this batch",
    );
  }
  if (batch === 0) return tf.zeros([0, cfg.outSize, cfg.outSize, channels]);
  return tf.tidy(() => {
    const boxInd = tf.tensor1d(Int32Array.from({ length: batch }, (_, i) => i), "int32");
    const cropped = tf.image.cropAndResize(
      images,
      tf.tensor2d(p.boxes, [batch, 4]),
      boxInd,
      [cfg.outSize, cfg.outSize],
      "bilinear",
    );
    let x = jitterPlanes(toPlanes(cropped), p);
    if (p.grayscale.some((g) => g)) x = grayscalePlanes(x, p.grayscale);
    x = blurPlanes(x, p.blurSigma, cfg.blurKernelSize);
    if (p.solarize.some((s) => s)) x = solarizePlanes(x, p.solarize);
    const out = x.map((q, i) => tf.div(tf.sub(tf.clipByValue(q, 0, 1), cfg.mean[i]), cfg.std[i]));
    return fromPlanes(out as Planes);
  });
}

function checkImages(images: tf.Tensor4D, cfg: AugmentConfig): void {
  if (images.rank !== 4 || images.dtype !== "float32") {
    throw new Error(
      `augment: expected images as a float32 [B, H, W, C] tensor in [0, 1], found ` +
        `${images.dtype} [${images.shape}]; divide uint8 pixels by 255 first`,
    );
  }
  checkConfig(cfg, images.shape[3]);
}

/**
 * One augmented view of a batch (view 1 or view 2 of the paper's asymmetric recipe).
 * `images` [B, H, W, C] float32 in [0, 1] -> [B, outSize, outSize, C], clipped then normalised.
 * Draws from `rng`; everything else is disposed.
 *
 * @example
 * ```ts
 * const v1 = augmentView(x, 1, createRng(1), defaultAugmentConfig({ outSize: 28, channels: 1 }));
 * ```
 */
export function augmentView(
  images: tf.Tensor4D,
  view: 1 | 2,
  rng: Rng,
  cfg: AugmentConfig,
): tf.Tensor4D {
  checkImages(images, cfg);
  const [batch, h, w] = images.shape;
  return applyViewParams(images, sampleViewParams(batch, h, w, view, rng, cfg), cfg);
}

/**
 * The two views MoCo v3 trains on: view 1 then view 2, drawn in that order from `rng`.
 * `images` [B, H, W, C] float32 in [0, 1] -> two [B, outSize, outSize, C] tensors (caller disposes).
 *
 * @example
 * ```ts
 * const [x1, x2] = twoViews(batch, rng, cfg);
 * // ... loss ...
 * tf.dispose([x1, x2]);
 * ```
 */
export function twoViews(
  images: tf.Tensor4D,
  rng: Rng,
  cfg: AugmentConfig,
): [tf.Tensor4D, tf.Tensor4D] {
  const v1 = augmentView(images, 1, rng, cfg);
  try {
    return [v1, augmentView(images, 2, rng, cfg)];
  } catch (e) {
    v1.dispose();
    throw e;
  }
}

/** Un-normalised views for display: uint8 NHWC arrays, `size` the output side. */
export interface PreviewViews {
  /** The input, [n, h, w, c] uint8 (a copy). */
  original: Uint8Array;
  /** View 1, [n, size, size, c] uint8. */
  view1: Uint8Array;
  /** View 2, [n, size, size, c] uint8. */
  view2: Uint8Array;
  /** Side of the views. */
  size: number;
}

/**
 * Both views of `n` uint8 images ([n, h, w, c] NHWC, 0..255) as uint8 arrays, for notebooks.
 * Uses the default recipe with `outSize = h` unless `overrides` says otherwise; normalisation is
 * skipped. Needs a started backend.
 *
 * @example
 * ```ts
 * const { view1, view2, size } = previewViews(pixels, 8, 28, 28, 1, 0);
 * ```
 */
export function previewViews(
  images: Uint8Array,
  n: number,
  h: number,
  w: number,
  c: number,
  seed: number,
  overrides: Partial<AugmentConfig> = {},
): PreviewViews {
  if (images.length !== n * h * w * c) {
    throw new Error(
      `previewViews: expected ${n}*${h}*${w}*${c} = ${n * h * w * c} bytes, found ${images.length}`,
    );
  }
  const cfg = {
    ...defaultAugmentConfig({ outSize: overrides.outSize ?? h, channels: c }),
    ...overrides,
    mean: new Array(c).fill(0),
    std: new Array(c).fill(1),
  };
  const rng = createRng(seed);
  const toBytes = (t: tf.Tensor) =>
    Uint8Array.from(t.dataSync() as Float32Array, (v) => Math.round(v * 255));
  const [v1, v2] = tf.tidy(() => {
    const x = tf.div(tf.tensor4d(images, [n, h, w, c], "float32"), 255) as tf.Tensor4D;
    return twoViews(x, rng, cfg);
  });
  try {
    return { original: images.slice(), view1: toBytes(v1), view2: toBytes(v2), size: cfg.outSize };
  } finally {
    tf.dispose([v1, v2]);
  }
}
