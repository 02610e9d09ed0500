/**
 * Pixel operations on byte images (HWC, 0..255) that loaders share: channel conversion and
 * bilinear resizing, one image or a whole {@link Dataset} at a time.
 *
 * @example
 * ```ts
 * import { convertChannels, resizeBilinear } from "./image.ts";
 * const rgba = new Uint8Array([255, 0, 0, 255]); // one red pixel, RGBA
 * const gray = convertChannels(rgba, 1, 1, 4, 1); // [76]  (0.299 * 255)
 * const big = resizeBilinear(gray, 1, 1, 1, 2, 2); // [76, 76, 76, 76]
 * ```
 * @module
 */
import type { Dataset } from "./dataset.ts";

/** Luminance weights (ITU-R BT.601, as PIL's `convert("L")`) for RGB to gray. */
export const LUMA = [0.299, 0.587, 0.114] as const;

function clampByte(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}

/**
 * Converts an `h x w` image from `cIn` channels (1 gray, 3 RGB, 4 RGBA) to `cOut` (1 or 3).
 * RGBA to RGB drops alpha; RGB(A) to gray is `round(0.299 R + 0.587 G + 0.114 B)`; gray to RGB
 * repeats the value. Returns a new array `[h, w, cOut]` (a copy even when `cIn == cOut`).
 */
export function convertChannels(
  src: Uint8Array,
  h: number,
  w: number,
  cIn: number,
  cOut: number,
): Uint8Array {
  if (![1, 3, 4].includes(cIn) || ![1, 3].includes(cOut)) {
    throw new RangeError(
      `convertChannels: expected cIn in {1, 3, 4} and cOut in {1, 3}, got ${cIn} -> ${cOut}`,
    );
  }
  const n = h * w;
  if (src.length !== n * cIn) {
    throw new RangeError(`convertChannels: expected ${n * cIn} bytes, got ${src.length}`);
  }
  const out = new Uint8Array(n * cOut);
  if (cIn === cOut) {
    out.set(src);
  } else if (cOut === 3) {
    // 1 -> 3 repeats gray, 4 -> 3 drops alpha
    for (let p = 0; p < n; p++) {
      for (let k = 0; k < 3; k++) out[p * 3 + k] = src[p * cIn + (cIn === 1 ? 0 : k)];
    }
  } else {
    for (let p = 0; p < n; p++) {
      const q = p * cIn;
      out[p] = clampByte(LUMA[0] * src[q] + LUMA[1] * src[q + 1] + LUMA[2] * src[q + 2]);
    }
  }
  return out;
}

/**
 * For each output coordinate, the source indices and normalised weights of a triangle filter.
 * Source pixel `i` has its centre at `i + 0.5`; output pixel `o` samples `(o + 0.5) * scale`.
 * The triangle's radius is `max(1, scale)` source pixels, so upscaling is plain bilinear
 * interpolation and downscaling averages every source pixel it covers instead of aliasing
 * (PIL's BILINEAR). Weights falling outside the image are dropped and the rest renormalised,
 * which at the borders equals clamping when upscaling.
 */
function filterTaps(inN: number, outN: number): { start: Int32Array; w: Float64Array[] } {
  const scale = inN / outN;
  const support = Math.max(1, scale);
  const start = new Int32Array(outN);
  const w: Float64Array[] = [];
  for (let o = 0; o < outN; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.floor(center - support - 0.5));
    const hi = Math.min(inN - 1, Math.ceil(center + support - 0.5));
    const ws = new Float64Array(hi - lo + 1);
    let sum = 0;
    for (let i = lo; i <= hi; i++) {
      const v = Math.max(0, 1 - Math.abs(i + 0.5 - center) / support);
      ws[i - lo] = v;
      sum += v;
    }
    for (let k = 0; k < ws.length; k++) ws[k] /= sum;
    start[o] = lo;
    w.push(ws);
  }
  return { start, w };
}

/**
 * Resizes an image `[h, w, c]` to `[outH, outW, c]` with a separable bilinear (triangle) filter,
 * pixel centres aligned (`align_corners = false`), antialiased when shrinking (see the module
 * docs). A constant image stays constant; a 2x upscale of `[0, 255]` is `[0, 64, 191, 255]`.
 */
export function resizeBilinear(
  src: Uint8Array,
  h: number,
  w: number,
  c: number,
  outH: number,
  outW: number,
): Uint8Array {
  if (src.length !== h * w * c) {
    throw new RangeError(`resizeBilinear: expected ${h}x${w}x${c} bytes, got ${src.length}`);
  }
  if (!(outH >= 1 && outW >= 1 && Number.isInteger(outH) && Number.isInteger(outW))) {
    throw new RangeError(
      `resizeBilinear: output size must be positive integers, got ${outH}x${outW}`,
    );
  }
  if (outH === h && outW === w) return src.slice();
  // Horizontal pass: [h, w, c] -> [h, outW, c] (floats), then vertical: -> [outH, outW, c].
  const tx = filterTaps(w, outW);
  const mid = new Float64Array(h * outW * c);
  for (let y = 0; y < h; y++) {
    for (let o = 0; o < outW; o++) {
      const ws = tx.w[o];
      const base = (y * w + tx.start[o]) * c;
      for (let k = 0; k < c; k++) {
        let acc = 0;
        for (let t = 0; t < ws.length; t++) acc += ws[t] * src[base + t * c + k];
        mid[(y * outW + o) * c + k] = acc;
      }
    }
  }
  const ty = filterTaps(h, outH);
  const out = new Uint8Array(outH * outW * c);
  const row = outW * c;
  for (let o = 0; o < outH; o++) {
    const ws = ty.w[o];
    const base = ty.start[o] * row;
    for (let j = 0; j < row; j++) {
      let acc = 0;
      for (let t = 0; t < ws.length; t++) acc += ws[t] * mid[base + t * row + j];
      out[o * row + j] = clampByte(acc);
    }
  }
  return out;
}

/**
 * Returns `ds` with every image resized to `imageSize x imageSize` and/or converted to
 * `channels` (1 or 3); the same object when nothing changes. Labels and classes are shared.
 */
export function convertDataset(
  ds: Dataset,
  opts: { imageSize?: number; channels?: number },
): Dataset {
  const outH = opts.imageSize ?? ds.height;
  const outW = opts.imageSize ?? ds.width;
  const outC = opts.channels ?? ds.channels;
  if (outH === ds.height && outW === ds.width && outC === ds.channels) return ds;
  const inSize = ds.height * ds.width * ds.channels;
  const outSize = outH * outW * outC;
  const images = new Uint8Array(ds.length * outSize);
  for (let i = 0; i < ds.length; i++) {
    let img = ds.images.subarray(i * inSize, (i + 1) * inSize);
    img = convertChannels(img, ds.height, ds.width, ds.channels, outC);
    img = resizeBilinear(img, ds.height, ds.width, outC, outH, outW);
    images.set(img, i * outSize);
  }
  return { ...ds, height: outH, width: outW, channels: outC, images };
}
