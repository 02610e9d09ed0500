/**
 * Images in notebooks: uint8 image batches laid out as one grid, encoded as PNG (pngjs) and
 * shown, plus the viridis colour map and attention overlays drawn on images.
 *
 * @example
 * ```ts
 * import { showImages } from "./images.ts";
 * await showImages([{ pixels: new Uint8Array(4 * 28 * 28), n: 4, height: 28, width: 28, channels: 1 }]);
 * ```
 * @module
 */
import { PNG } from "pngjs";
import { Buffer } from "node:buffer";
import { display, showMarkdown } from "./display.ts";

/** `n` images of `height x width x channels` bytes (NHWC, 0..255), channels 1 or 3. */
export interface ImageBatch {
  pixels: Uint8Array;
  n: number;
  height: number;
  width: number;
  channels: number;
}

/** An RGB image (bytes, row-major, 3 per pixel). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Options of {@link imageGrid}. */
export interface GridOptions {
  /** Integer upscaling (nearest neighbour). Default 3. */
  scale?: number;
  /** Pixels between cells (before scaling... after: in output pixels). Default 4. */
  pad?: number;
  /** Gray level of the padding. Default 255 (white). */
  background?: number;
}

/**
 * Lays out batches as a grid, one batch per row, image `i` of each batch in column `i`.
 * Cells are as large as the largest image; every image is upscaled by `scale`.
 *
 * @example
 * ```ts
 * const grid = imageGrid([{ pixels, n: 8, height: 28, width: 28, channels: 1 }]);
 * ```
 */
export function imageGrid(rows: ImageBatch[], opts: GridOptions = {}): RgbImage {
  const scale = opts.scale ?? 3, pad = opts.pad ?? 4, bg = opts.background ?? 255;
  if (rows.length === 0) throw new Error("imageGrid: expected at least one batch, got none");
  for (const b of rows) {
    if (b.channels !== 1 && b.channels !== 3) {
      throw new Error(`imageGrid: channels must be 1 or 3, got ${b.channels}`);
    }
    if (b.pixels.length !== b.n * b.height * b.width * b.channels) {
      throw new Error(
        `imageGrid: a batch of ${b.n} x ${b.height} x ${b.width} x ${b.channels} needs ` +
          `${b.n * b.height * b.width * b.channels} bytes, got ${b.pixels.length}`,
      );
    }
  }
  const cellH = Math.max(...rows.map((b) => b.height)) * scale;
  const cellW = Math.max(...rows.map((b) => b.width)) * scale;
  const cols = Math.max(...rows.map((b) => b.n));
  const width = cols * cellW + (cols + 1) * pad;
  const height = rows.length * cellH + (rows.length + 1) * pad;
  const data = new Uint8Array(width * height * 3).fill(bg);
  rows.forEach((b, r) => {
    const size = b.height * b.width * b.channels;
    for (let i = 0; i < b.n; i++) {
      const x0 = pad + i * (cellW + pad), y0 = pad + r * (cellH + pad);
      for (let y = 0; y < b.height * scale; y++) {
        for (let x = 0; x < b.width * scale; x++) {
          const src = i * size + (Math.floor(y / scale) * b.width + Math.floor(x / scale)) *
              b.channels;
          const dst = ((y0 + y) * width + x0 + x) * 3;
          for (let k = 0; k < 3; k++) data[dst + k] = b.pixels[src + (b.channels === 3 ? k : 0)];
        }
      }
    }
  });
  return { data, width, height };
}

/** Encodes an RGB image as PNG bytes (pngjs). */
export function encodePng(img: RgbImage): Uint8Array {
  const png = new PNG({ width: img.width, height: img.height });
  for (let i = 0, n = img.width * img.height; i < n; i++) {
    png.data[4 * i] = img.data[3 * i];
    png.data[4 * i + 1] = img.data[3 * i + 1];
    png.data[4 * i + 2] = img.data[3 * i + 2];
    png.data[4 * i + 3] = 255;
  }
  return new Uint8Array(PNG.sync.write(png));
}

/**
 * Shows image batches as one PNG grid (one batch per row), with an optional caption line.
 *
 * @example
 * ```ts
 * const v = previewViews(pixels, 8, 28, 28, 1, 0);
 * await showImages([{ pixels: v.original, n: 8, height: 28, width: 28, channels: 1 }],
 *   { caption: "originals" });
 * ```
 */
export async function showImages(
  rows: ImageBatch[],
  opts: GridOptions & { caption?: string } = {},
): Promise<void> {
  const grid = imageGrid(rows, opts);
  await display({
    "image/png": Buffer.from(encodePng(grid)).toString("base64"),
    "text/plain": `[image grid ${grid.width}x${grid.height}${
      opts.caption ? `: ${opts.caption}` : ""
    }]`,
  });
  if (opts.caption) await showMarkdown(`*${opts.caption}*`);
}

/** Maps values in [0, 1] to RGB bytes with the viridis colour map (linear between 5 stops). */
export function colormap(values: ArrayLike<number>): Uint8Array {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const out = new Uint8Array(values.length * 3);
  for (let i = 0; i < values.length; i++) {
    const v = Math.min(1, Math.max(0, Number.isFinite(values[i]) ? values[i] : 0)) * 4;
    const j = Math.min(3, Math.floor(v)), f = v - j;
    for (let k = 0; k < 3; k++) {
      out[3 * i + k] = Math.round(stops[j][k] * (1 - f) + stops[j + 1][k] * f);
    }
  }
  return out;
}

/**
 * Overlays attention maps on images: each map `[grid, grid]` is mapped to colours over `range`
 * (default: min-max of each map; pass one range to compare models on one scale), upsampled to
 * the image (nearest) and blended with the gray image. Returns an RGB batch `[n, H, W, 3]` for
 * {@link showImages}.
 */
export function attentionOverlay(
  images: ImageBatch,
  maps: Float32Array,
  grid: number,
  opts: { alpha?: number; range?: [number, number] } = {},
): ImageBatch {
  const alpha = opts.alpha ?? 0.6;
  const { n, height: H, width: W, channels: C } = images;
  if (maps.length !== n * grid * grid) {
    throw new Error(
      `attentionOverlay: expected ${n} maps of ${grid}x${grid} = ${n * grid * grid} values, ` +
        `got ${maps.length}`,
    );
  }
  const out = new Uint8Array(n * H * W * 3);
  for (let i = 0; i < n; i++) {
    const m = maps.subarray(i * grid * grid, (i + 1) * grid * grid);
    let [lo, hi] = opts.range ?? [Infinity, -Infinity];
    if (!opts.range) { for (const v of m) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)]; }
    const norm = Float32Array.from(m, (v) => (v - lo) / (hi - lo || 1));
    const colors = colormap(norm);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const cell = Math.floor((y * grid) / H) * grid + Math.floor((x * grid) / W);
        const p = i * H * W + y * W + x;
        let gray = 0;
        for (let k = 0; k < C; k++) gray += images.pixels[p * C + k] / C;
        for (let k = 0; k < 3; k++) {
          out[p * 3 + k] = Math.round((1 - alpha) * gray + alpha * colors[cell * 3 + k]);
        }
      }
    }
  }
  return { pixels: out, n, height: H, width: W, channels: 3 };
}
