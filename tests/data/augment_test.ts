import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { createRng } from "../../lib/core/rng.ts";
import { requireTool, webgpuStatus } from "../_helpers/system_tools.ts";
import {
  adjustBrightness,
  adjustContrast,
  adjustHue,
  adjustSaturation,
  applyViewParams,
  type AugmentConfig,
  augmentView,
  blurKernelSizeFor,
  defaultAugmentConfig,
  gaussianBlur,
  normalize,
  previewViews,
  randomGrayscale,
  sampleCrop,
  sampleViewParams,
  solarize,
  twoViews,
  type ViewParams,
} from "../../lib/data/augment.ts";

await initBackend({ backend: "cpu" });

/** A config with every random op off, the crop = the whole (square) image, no normalisation. */
function plainConfig(size: number, channels: number, over: Partial<AugmentConfig> = {}) {
  return {
    ...defaultAugmentConfig({ outSize: size, channels }),
    scale: [1, 1],
    ratio: [1, 1],
    flipP: 0,
    jitterP: 0,
    grayscaleP: 0,
    blurP: [0, 0],
    solarizeP: [0, 0],
    mean: new Array(channels).fill(0),
    std: new Array(channels).fill(1),
    ...over,
  } as AugmentConfig;
}

/** Deterministic pseudo-random pixels in [0, 1) (a plain LCG, independent of lib/core/rng.ts). */
function pixels(n: number, seed = 1): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 4294967296;
  }
  return out;
}

function closeArrays(actual: ArrayLike<number>, expected: ArrayLike<number>, tol: number) {
  assertEquals(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    if (!(Math.abs(actual[i] - expected[i]) <= tol)) {
      throw new Error(`index ${i}: got ${actual[i]}, expected ${expected[i]} (tol ${tol})`);
    }
  }
}

/** Reads a tensor's values and disposes it. */
function take(t: tf.Tensor): Float32Array {
  const v = t.dataSync() as Float32Array;
  t.dispose();
  return v;
}

/** Runs `f` and checks that it leaves no tensor behind (besides what it returns and disposes). */
function noLeak(f: () => void) {
  const before = tf.memory().numTensors;
  f();
  assertEquals(tf.memory().numTensors, before, "tensor leak");
}

/** Hand-made view params of `b` images: full-image boxes, everything off. */
function identityParams(b: number): ViewParams {
  const boxes = new Float32Array(4 * b);
  for (let i = 0; i < b; i++) boxes.set([0, 0, 1, 1], 4 * i);
  const order = new Uint8Array(4 * b);
  for (let i = 0; i < b; i++) order.set([0, 1, 2, 3], 4 * i);
  return {
    boxes,
    flip: new Uint8Array(b),
    jitter: new Uint8Array(b),
    order,
    brightness: new Float32Array(b).fill(1),
    contrast: new Float32Array(b).fill(1),
    saturation: new Float32Array(b).fill(1),
    hue: new Float32Array(b),
    grayscale: new Uint8Array(b),
    blurSigma: new Float32Array(b),
    solarize: new Uint8Array(b),
  };
}

Deno.test("defaultAugmentConfig: paper values, kernel about 10% and odd, bad stats rejected", () => {
  const cfg = defaultAugmentConfig({ outSize: 224, channels: 3 });
  assertEquals(cfg.blurKernelSize, 23);
  assertEquals(cfg.scale, [0.08, 1]);
  assertEquals(cfg.blurP, [1, 0.1]);
  assertEquals(cfg.solarizeP, [0, 0.2]);
  assertEquals(cfg.mean.length, 3);
  assertEquals(blurKernelSizeFor(28), 3);
  assertEquals(blurKernelSizeFor(32), 3);
  assertEquals(blurKernelSizeFor(64), 7);
  assertEquals(defaultAugmentConfig({ outSize: 28, channels: 1 }).mean, [0.5]);
  assertThrows(() => defaultAugmentConfig({ outSize: 28, channels: 1, mean: [0.1, 0.2] }));
  const x = tf.zeros([1, 4, 4, 3]) as tf.Tensor4D;
  assertThrows(() => augmentView(x, 1, createRng(0), plainConfig(4, 1)), Error, "length 3");
  x.dispose();
});

Deno.test("sampleCrop: area and ratio within range, integer box inside the image", () => {
  const rng = createRng(3);
  for (let t = 0; t < 500; t++) {
    const [top, left, h, w] = sampleCrop(40, 30, [0.08, 1], [3 / 4, 4 / 3], rng);
    assert(top >= 0 && left >= 0 && top + h <= 40 && left + w <= 30);
    assert([top, left, h, w].every(Number.isInteger));
    const area = (h * w) / (40 * 30);
    // rounding of h and w moves the area by at most about one row and one column
    assert(area > 0.08 - (h + w + 1) / 1200 && area <= 1, `area ${area}`);
    assert(w / h > 0.75 * (1 - 1 / h) - 1 / h && w / h < (4 / 3) * (1 + 1 / h) + 1 / h);
  }
  assertEquals(sampleCrop(20, 20, [1, 1], [1, 1], rng), [0, 0, 20, 20]);
  // Impossible scale (> 1): torchvision's fallback, a central crop with the ratio clamped to 4/3.
  assertEquals(sampleCrop(10, 40, [2, 2], [3 / 4, 4 / 3], rng), [0, 13, 10, 13]);
  assertEquals(sampleCrop(40, 10, [2, 2], [3 / 4, 4 / 3], rng), [13, 0, 13, 10]);
});

Deno.test("sampleViewParams: probabilities of each op per view", () => {
  const cfg = defaultAugmentConfig({ outSize: 32, channels: 3 });
  const n = 4000;
  const frac = (a: ArrayLike<number>) => Array.from(a).filter((v) => v > 0).length / n;
  const p1 = sampleViewParams(n, 32, 32, 1, createRng(5), cfg);
  const p2 = sampleViewParams(n, 32, 32, 2, createRng(6), cfg);
  for (const p of [p1, p2]) {
    assertAlmostEquals(frac(p.flip), 0.5, 0.03);
    assertAlmostEquals(frac(p.jitter), 0.8, 0.03);
    assertAlmostEquals(frac(p.grayscale), 0.2, 0.03);
    for (let i = 0; i < n; i++) {
      assertEquals(Array.from(p.order.slice(4 * i, 4 * i + 4)).sort(), [0, 1, 2, 3]);
      if (p.jitter[i]) {
        assert(p.brightness[i] >= 0.6 && p.brightness[i] <= 1.4);
        assert(p.contrast[i] >= 0.6 && p.contrast[i] <= 1.4);
        assert(p.saturation[i] >= 0.8 && p.saturation[i] <= 1.2);
        assert(Math.abs(p.hue[i]) <= 0.1);
      } else {
        assertEquals([p.brightness[i], p.contrast[i], p.saturation[i], p.hue[i]], [1, 1, 1, 0]);
      }
      if (p.blurSigma[i] > 0) assert(p.blurSigma[i] >= 0.1 && p.blurSigma[i] <= 2);
    }
  }
  assertEquals(frac(p1.blurSigma), 1);
  assertAlmostEquals(frac(p2.blurSigma), 0.1, 0.02);
  assertEquals(frac(p1.solarize), 0);
  assertAlmostEquals(frac(p2.solarize), 0.2, 0.03);
  const fixed = sampleViewParams(8, 32, 32, 1, createRng(5), { ...cfg, jitterOrder: "fixed" });
  assertEquals(Array.from(fixed.order), new Array(8).fill([0, 1, 2, 3]).flat());
  // A random order per image: not every image has brightness first.
  assert(Array.from({ length: n }, (_, i) => p1.order[4 * i]).some((o) => o !== 0));
});

Deno.test("augmentView: shapes, range in [0, 1] before normalisation, normalised after", () => {
  const data = pixels(6 * 20 * 24 * 3, 7);
  const x = tf.tensor4d(data, [6, 20, 24, 3]);
  const cfg = defaultAugmentConfig({ outSize: 16, channels: 3 });
  noLeak(() => {
    const raw = augmentView(x, 2, createRng(1), { ...cfg, mean: [0, 0, 0], std: [1, 1, 1] });
    assertEquals(raw.shape, [6, 16, 16, 3]);
    const v = raw.dataSync();
    assert(v.every((a) => a >= 0 && a <= 1));
    // The same draws, normalised: (raw - mean) / std per channel.
    const normed = augmentView(x, 2, createRng(1), cfg);
    const w = normed.dataSync();
    for (let i = 0; i < v.length; i++) {
      const c = i % 3;
      assertAlmostEquals(w[i], (v[i] - cfg.mean[c]) / cfg.std[c], 1e-5);
    }
    tf.dispose([raw, normed]);
  });
  x.dispose();
});

Deno.test("twoViews: same seed gives identical views, another seed different ones, no leak", () => {
  const x = tf.tensor4d(pixels(8 * 28 * 28, 9), [8, 28, 28, 1]);
  const cfg = defaultAugmentConfig({ outSize: 28, channels: 1 });
  noLeak(() => {
    const [a1, a2] = twoViews(x, createRng(42), cfg);
    const [b1, b2] = twoViews(x, createRng(42), cfg);
    const [c1, c2] = twoViews(x, createRng(43), cfg);
    assertEquals(Array.from(a1.dataSync()), Array.from(b1.dataSync()));
    assertEquals(Array.from(a2.dataSync()), Array.from(b2.dataSync()));
    const diff = tf.tidy(() => tf.max(tf.abs(tf.sub(a1, c1))).dataSync()[0]);
    assert(diff > 0.1, `seeds 42 and 43 gave nearly equal views (max diff ${diff})`);
    const d12 = tf.tidy(() => tf.max(tf.abs(tf.sub(a1, a2))).dataSync()[0]);
    assert(d12 > 0.1, "view 1 and view 2 are nearly equal");
    tf.dispose([a1, a2, b1, b2, c1, c2]);
  });
  x.dispose();
});

Deno.test("crop of the full image with outSize = inSize is the identity; flip p=1 flips", () => {
  const [b, s, c] = [3, 5, 3];
  const data = pixels(b * s * s * c, 11);
  const x = tf.tensor4d(data, [b, s, s, c]);
  noLeak(() => {
    const id = augmentView(x, 1, createRng(0), plainConfig(s, c));
    closeArrays(id.dataSync(), data, 1e-6);
    const flipped = augmentView(x, 1, createRng(0), plainConfig(s, c, { flipP: 1 }));
    const expected = new Float32Array(data.length);
    for (let n = 0; n < b; n++) {
      for (let i = 0; i < s; i++) {
        for (let j = 0; j < s; j++) {
          for (let k = 0; k < c; k++) {
            expected[((n * s + i) * s + j) * c + k] = data[((n * s + i) * s + (s - 1 - j)) * c + k];
          }
        }
      }
    }
    closeArrays(flipped.dataSync(), expected, 1e-6);
    tf.dispose([id, flipped]);
  });
  x.dispose();
});

Deno.test("crop resize uses half-pixel centres: 4x4 -> 2x2 averages 2x2 blocks", () => {
  const data = pixels(16, 13);
  const x = tf.tensor4d(data, [1, 4, 4, 1]);
  noLeak(() => {
    const y = augmentView(x, 1, createRng(0), plainConfig(2, 1));
    const at = (i: number, j: number) => data[i * 4 + j];
    const block = (i: number, j: number) =>
      (at(i, j) + at(i, j + 1) + at(i + 1, j) + at(i + 1, j + 1)) / 4;
    closeArrays(y.dataSync(), [block(0, 0), block(0, 2), block(2, 0), block(2, 2)], 1e-6);
    y.dispose();
  });
  x.dispose();
});

Deno.test("solarize p=1 on view 2 inverts exactly the pixels >= 0.5; view 1 untouched", () => {
  const data = Float32Array.from([0, 0.25, 0.4999, 0.5, 0.5001, 0.75, 1, 0.1, 0.9]);
  const x = tf.tensor4d(data, [1, 3, 3, 1]);
  const cfg = plainConfig(3, 1, { solarizeP: [0, 1] });
  noLeak(() => {
    const v2 = augmentView(x, 2, createRng(0), cfg);
    assertEquals(
      Array.from(v2.dataSync()),
      Array.from(data, (v) => (v >= 0.5 ? Math.fround(1 - v) : v)),
    );
    const v1 = augmentView(x, 1, createRng(0), cfg);
    assertEquals(Array.from(v1.dataSync()), Array.from(data));
    // The op alone: only the masked image changes.
    const two = tf.concat([x, x]) as tf.Tensor4D;
    const s = take(solarize(two, [0, 1]));
    assertEquals(Array.from(s.slice(0, 9)), Array.from(data));
    tf.dispose([v1, v2, two]);
  });
  x.dispose();
});

Deno.test("grayscale p=1: channels equal the luma 0.299 R + 0.587 G + 0.114 B", () => {
  const data = pixels(2 * 4 * 4 * 3, 17);
  const x = tf.tensor4d(data, [2, 4, 4, 3]);
  noLeak(() => {
    const y = augmentView(x, 1, createRng(0), plainConfig(4, 3, { grayscaleP: 1 }));
    const v = y.dataSync();
    for (let p = 0; p < 32; p++) {
      const gray = 0.299 * data[3 * p] + 0.587 * data[3 * p + 1] + 0.114 * data[3 * p + 2];
      for (let k = 0; k < 3; k++) assertAlmostEquals(v[3 * p + k], gray, 1e-6);
    }
    // Only masked images change; 1 channel is a no-op.
    const g = take(randomGrayscale(x, [1, 0]));
    closeArrays(g.slice(48), data.slice(48), 0);
    const one = tf.tensor4d(data.slice(0, 16), [1, 4, 4, 1]);
    closeArrays(take(randomGrayscale(one, [1])), data.slice(0, 16), 0);
    tf.dispose([y, one]);
  });
  x.dispose();
});

Deno.test("brightness scales each image by its factor, clipped at 1", () => {
  const data = Float32Array.from([0, 0.2, 0.5, 0.9, 0, 0.2, 0.5, 0.9]);
  const x = tf.tensor4d(data, [2, 2, 2, 1]);
  noLeak(() => {
    const y = adjustBrightness(x, [0.5, 1.5]);
    closeArrays(y.dataSync(), [0, 0.1, 0.25, 0.45, 0, 0.3, 0.75, 1], 1e-6);
    y.dispose();
  });
  // Through augmentView with only brightness on: output / input is one factor in [0.6, 1.4].
  const img = tf.tensor4d(pixels(4 * 6 * 6, 19).map((v) => 0.1 + 0.5 * v), [4, 6, 6, 1]);
  const cfg = plainConfig(6, 1, { jitterP: 1, contrast: 0, saturation: 0, hue: 0 });
  const out = augmentView(img, 1, createRng(2), cfg);
  const [a, b] = [img.dataSync(), out.dataSync()];
  for (let n = 0; n < 4; n++) {
    const f = b[36 * n] / a[36 * n];
    assert(f >= 0.6 && f <= 1.4, `factor ${f}`);
    for (let i = 0; i < 36; i++) {
      assertAlmostEquals(b[36 * n + i], Math.min(1, f * a[36 * n + i]), 1e-5);
    }
  }
  tf.dispose([x, img, out]);
});

Deno.test("contrast blends with the image's mean luma; saturation with the pixel's luma", () => {
  const data = Float32Array.from([0.2, 0.4, 0.6, 0.8]);
  const x = tf.tensor4d(data, [1, 2, 2, 1]);
  const rgb = tf.tensor4d([0.9, 0.3, 0.1, 0.2, 0.4, 0.8], [1, 1, 2, 3]);
  noLeak(() => {
    // 1 channel, factor 0.5, mean 0.5: 0.5 x + 0.25.
    closeArrays(take(adjustContrast(x, [0.5])), [0.35, 0.45, 0.55, 0.65], 1e-6);
    // RGB, factor 2: mean luma m of the two pixels, 2 x - m, clipped.
    const l = [0.299 * 0.9 + 0.587 * 0.3 + 0.114 * 0.1, 0.299 * 0.2 + 0.587 * 0.4 + 0.114 * 0.8];
    const m = (l[0] + l[1]) / 2;
    const clip = (v: number) => Math.min(1, Math.max(0, v));
    closeArrays(
      take(adjustContrast(rgb, [2])),
      [0.9, 0.3, 0.1, 0.2, 0.4, 0.8].map((v) => clip(2 * v - m)),
      1e-6,
    );
    // Saturation 0 = grayscale; 1.5 pushes away from the pixel's luma.
    closeArrays(take(adjustSaturation(rgb, [0])), [l[0], l[0], l[0], l[1], l[1], l[1]], 1e-6);
    closeArrays(
      take(adjustSaturation(rgb, [1.5])),
      [0.9, 0.3, 0.1, 0.2, 0.4, 0.8].map((v, i) => clip(1.5 * v - 0.5 * l[Math.floor(i / 3)])),
      1e-6,
    );
    // 1 channel: saturation and hue are no-ops.
    closeArrays(take(adjustSaturation(x, [0])), data, 0);
    closeArrays(take(adjustHue(x, [0.3])), data, 0);
  });
  tf.dispose([x, rgb]);
});

/** Independent hue shift in the textbook (colorsys) form: rgb -> hsv, h += shift, hsv -> rgb. */
function hueShiftRef(r: number, g: number, b: number, shift: number): number[] {
  const v = Math.max(r, g, b);
  const mn = Math.min(r, g, b);
  const s = v === 0 ? 0 : (v - mn) / v;
  if (v === mn) return [r, g, b];
  const rc = (v - r) / (v - mn);
  const gc = (v - g) / (v - mn);
  const bc = (v - b) / (v - mn);
  let h = r === v ? bc - gc : g === v ? 2 + rc - bc : 4 + gc - rc;
  h = (((h / 6 + shift) % 1) + 1) % 1;
  const i = Math.floor(h * 6);
  const f = h * 6 - i;
  const p = v * (1 - s);
  const q = v * (1 - s * f);
  const t = v * (1 - s * (1 - f));
  return [[v, t, p], [q, v, p], [p, v, t], [p, q, v], [t, p, v], [v, p, q]][i % 6];
}

Deno.test("hue: red -> yellow/green/blue by 1/6, 1/3, -1/3; random pixels match colorsys", () => {
  const red = tf.tensor4d([1, 0, 0, 0.8, 0.2, 0.2], [1, 1, 2, 3]);
  const four = tf.concat([red, red, red, red]) as tf.Tensor4D;
  noLeak(() => {
    closeArrays(take(adjustHue(four, [1 / 6, 1 / 3, -1 / 3, 0])), [
      ...[1, 1, 0, 0.8, 0.8, 0.2],
      ...[0, 1, 0, 0.2, 0.8, 0.2],
      ...[0, 0, 1, 0.2, 0.2, 0.8],
      ...[1, 0, 0, 0.8, 0.2, 0.2],
    ], 1e-5);
  });
  const data = pixels(5 * 3 * 3 * 3, 23);
  // Ties for the max and the min channel, gray and black pixels (hue undefined: unchanged).
  data.set([1, 1, 0, 0.2, 0.8, 0.8, 0.9, 0.1, 0.9, 0.5, 0.5, 0.5, 0, 0, 0, 0.3, 0.3, 0.7], 27);
  const x = tf.tensor4d(data, [5, 3, 3, 3]);
  const shifts = [0, 0.1, -0.1, 0.05, -0.07];
  noLeak(() => {
    const y = take(adjustHue(x, shifts));
    const expected: number[] = [];
    for (let p = 0; p < 45; p++) {
      expected.push(
        ...hueShiftRef(data[3 * p], data[3 * p + 1], data[3 * p + 2], shifts[Math.floor(p / 9)]),
      );
    }
    closeArrays(y, expected, 1e-5);
  });
  tf.dispose([red, four, x]);
});

Deno.test("jitter order matters: brightness then contrast differs from contrast then brightness", () => {
  const x = tf.tensor4d([0.2, 0.4, 0.6, 0.8, 0.2, 0.4, 0.6, 0.8], [2, 2, 2, 1]);
  const p = identityParams(2);
  p.jitter.fill(1);
  p.brightness.fill(1.5);
  p.contrast.fill(0.5);
  p.order.set([1, 0, 2, 3], 4); // image 1: contrast first
  const cfg = plainConfig(2, 1);
  noLeak(() => {
    const y = applyViewParams(x, p, cfg);
    // b then c: [0.3, 0.6, 0.9, 1 (clipped)], mean 0.7 -> 0.5 x + 0.35.
    // c then b: mean 0.5 -> [0.35, 0.45, 0.55, 0.65] -> x 1.5.
    closeArrays(y.dataSync(), [0.5, 0.65, 0.8, 0.85, 0.525, 0.675, 0.825, 0.975], 1e-6);
    y.dispose();
  });
  x.dispose();
});

Deno.test("blur: constant stays constant, a delta gives the normalised Gaussian outer product", () => {
  const k = 5;
  const sigma = 1.3;
  const w = [-2, -1, 0, 1, 2].map((t) => Math.exp(-(t * t) / (2 * sigma * sigma)));
  const sum = w.reduce((a, b) => a + b);
  const g = w.map((v) => v / sum);
  const s = 9;
  const delta = new Float32Array(2 * s * s);
  delta[4 * s + 4] = 1; // image 0: centre
  delta[s * s + s + 1] = 1; // image 1: next to the corner, to see the reflect padding
  const x = tf.tensor4d(delta, [2, s, s, 1]);
  const c = tf.fill([2, s, s, 2], 0.37) as tf.Tensor4D;
  noLeak(() => {
    const y = take(gaussianBlur(x, [sigma, sigma], k));
    let total = 0;
    for (let i = 0; i < s; i++) {
      for (let j = 0; j < s; j++) {
        const di = i - 4;
        const dj = j - 4;
        const e = Math.abs(di) <= 2 && Math.abs(dj) <= 2 ? g[di + 2] * g[dj + 2] : 0;
        assertAlmostEquals(y[i * s + j], e, 1e-6);
        total += y[i * s + j];
      }
    }
    assertAlmostEquals(total, 1, 1e-5);
    // Delta at index 1 with reflect padding (index -1 reads 1, -2 reads 2): along an axis, output
    // 0 reads indices (2, 1, 0, 1, 2) -> taps 1 and 3; output 1 reads (1, 0, 1, 2, 3) -> taps 0
    // and 2; output 2 -> tap 1; output 3 -> tap 0; beyond, nothing. (Zero padding: g3, g2, ...)
    const axis = [g[1] + g[3], g[0] + g[2], g[1], g[0], 0, 0];
    for (let i = 0; i < 6; i++) {
      for (let j = 0; j < 6; j++) {
        assertAlmostEquals(y[s * s + i * s + j], axis[i] * axis[j], 1e-6);
      }
    }
    closeArrays(
      take(gaussianBlur(c, [0.5, 2], 3)),
      new Float32Array(2 * s * s * 2).fill(0.37),
      1e-6,
    );
  });
  // Sigma 0 leaves the image exactly; blur roughly keeps the mean of a random image.
  const r = tf.tensor4d(pixels(2 * 16 * 16 * 3, 29), [2, 16, 16, 3]);
  noLeak(() => {
    const same = gaussianBlur(r, [0, 0], 3);
    closeArrays(same.dataSync(), r.dataSync(), 0);
    const m0 = tf.tidy(() => tf.mean(r).dataSync()[0]);
    const blurred = gaussianBlur(r, [2, 0.8], 3);
    const m1 = tf.tidy(() => tf.mean(blurred).dataSync()[0]);
    assertAlmostEquals(m1, m0, 0.01);
    tf.dispose([same, blurred]);
  });
  tf.dispose([x, c, r]);
});

Deno.test("1-channel: saturation, hue and grayscale only settings leave the image unchanged", () => {
  const data = pixels(3 * 5 * 5, 31);
  const x = tf.tensor4d(data, [3, 5, 5, 1]);
  const cfg = plainConfig(5, 1, { jitterP: 1, brightness: 0, contrast: 0, grayscaleP: 1 });
  noLeak(() => {
    const y = augmentView(x, 1, createRng(4), cfg);
    closeArrays(y.dataSync(), data, 1e-6);
    y.dispose();
  });
  x.dispose();
});

Deno.test("normalize: (x - mean) / std per channel; wrong length throws", () => {
  const x = tf.tensor4d([0.5, 0.2, 1, 0], [1, 1, 2, 2]);
  noLeak(() => {
    const y = normalize(x, [0.5, 0.1], [0.25, 0.5]);
    closeArrays(y.dataSync(), [0, 0.2, 2, -0.2], 1e-6);
    y.dispose();
  });
  assertThrows(() => normalize(x, [0.5], [0.25]), Error, "length 2");
  x.dispose();
});

Deno.test("previewViews: uint8 views of the right size, deterministic by seed", () => {
  const n = 4;
  const bytes = Uint8Array.from(pixels(n * 12 * 12 * 3, 37), (v) => Math.floor(v * 256));
  noLeak(() => {
    const a = previewViews(bytes, n, 12, 12, 3, 5);
    const b = previewViews(bytes, n, 12, 12, 3, 5);
    const c = previewViews(bytes, n, 12, 12, 3, 6, { outSize: 8 });
    assertEquals(a.size, 12);
    assertEquals(a.view1.length, n * 12 * 12 * 3);
    assertEquals(c.view2.length, n * 8 * 8 * 3);
    assertEquals(Array.from(a.original), Array.from(bytes));
    assertEquals(Array.from(a.view1), Array.from(b.view1));
    assertEquals(Array.from(a.view2), Array.from(b.view2));
    assert(Array.from(a.view1).some((v, i) => v !== bytes[i]));
  });
  assertThrows(() => previewViews(bytes, n, 12, 12, 1, 5), Error, "bytes");
});

const noWebgpu = requireTool(
  "WebGPU augmentation",
  await webgpuStatus(),
  "apt-get install mesa-vulkan-drivers, and run deno with --unstable-webgpu",
);

Deno.test({
  name: "webgpu backend (if an adapter exists): same views as cpu (to float tolerance)",
  ignore: noWebgpu,
  fn: async () => {
    const data = pixels(4 * 32 * 32 * 3, 43);
    const cfg = defaultAugmentConfig({ outSize: 24, channels: 3 });
    const run = async () => {
      const x = tf.tensor4d(data, [4, 32, 32, 3]);
      const [a, b] = twoViews(x, createRng(9), cfg);
      const out = [await a.data(), await b.data()] as Float32Array[];
      tf.dispose([x, a, b]);
      return out;
    };
    const cpu = await run();
    await initBackend({ backend: "webgpu" });
    try {
      const before = tf.memory().numTensors;
      const gpuOut = await run();
      assertEquals(tf.memory().numTensors, before);
      closeArrays(gpuOut[0], cpu[0], 1e-4);
      closeArrays(gpuOut[1], cpu[1], 1e-4);
    } finally {
      await initBackend({ backend: "cpu" });
    }
  },
});

Deno.test("wasm backend: same seed, same views as cpu (to float tolerance)", async () => {
  const data = pixels(4 * 32 * 32 * 3, 41);
  const cfg = defaultAugmentConfig({ outSize: 24, channels: 3 });
  const run = () => {
    const x = tf.tensor4d(data, [4, 32, 32, 3]);
    const [a, b] = twoViews(x, createRng(8), cfg);
    const out = [a.dataSync().slice(), b.dataSync().slice()];
    tf.dispose([x, a, b]);
    return out;
  };
  const cpu = run();
  await initBackend({ backend: "wasm" });
  try {
    const before = tf.memory().numTensors;
    const wasm = run();
    assertEquals(tf.memory().numTensors, before);
    closeArrays(wasm[0], cpu[0], 1e-4);
    closeArrays(wasm[1], cpu[1], 1e-4);
    const again = run();
    assertEquals(Array.from(again[0]), Array.from(wasm[0]));
  } finally {
    await initBackend({ backend: "cpu" });
  }
});

Deno.test("an empty batch gives an empty batch; params for another batch size are refused", () => {
  const cfg = defaultAugmentConfig({ outSize: 8, channels: 3 });
  const x = tf.zeros([0, 12, 12, 3]) as tf.Tensor4D;
  noLeak(() => {
    const [a, b] = twoViews(x, createRng(0), cfg);
    assertEquals(a.shape, [0, 8, 8, 3]);
    assertEquals(b.shape, [0, 8, 8, 3]);
    tf.dispose([a, b]);
  });
  const y = tf.zeros([2, 12, 12, 3]) as tf.Tensor4D;
  assertThrows(() => applyViewParams(y, identityParams(3), cfg), Error, "sampleViewParams");
  tf.dispose([x, y]);
});
