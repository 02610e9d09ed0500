// The layer primitives of lib/model/layers.ts against float64 loops written here, and the
// fast-path registry of lib/backends/fused.ts that they consult.
import * as tf from "@tensorflow/tfjs-core";
import { assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { batchNorm, BN_EPS, ema, gelu } from "../../lib/model/layers.ts";
import { fastPath, fastPathCalls, registerFastPaths } from "../../lib/backends/fused.ts";
import { assertClose, values } from "../_helpers/numeric.ts";

await initBackend({ backend: "cpu" });

/** BatchNorm of the rows of `x [m, d]` in float64: statistics given, or the batch's (biased). */
function batchNorm64(
  x: ArrayLike<number>,
  [m, d]: [number, number],
  eps: number,
  affine?: { w: ArrayLike<number>; b: ArrayLike<number> },
  stats?: { mean: ArrayLike<number>; variance: ArrayLike<number> },
) {
  const y = new Float64Array(m * d), mean = new Float64Array(d), variance = new Float64Array(d);
  for (let j = 0; j < d; j++) {
    let mu = 0, v = 0;
    for (let i = 0; i < m; i++) mu += x[i * d + j];
    mu /= m;
    for (let i = 0; i < m; i++) v += (x[i * d + j] - mu) ** 2;
    v /= m;
    mean[j] = stats ? stats.mean[j] : mu;
    variance[j] = stats ? stats.variance[j] : v;
    for (let i = 0; i < m; i++) {
      const z = (x[i * d + j] - mean[j]) / Math.sqrt(variance[j] + eps);
      y[i * d + j] = affine ? z * affine.w[j] + affine.b[j] : z;
    }
  }
  return { y, mean, variance };
}

Deno.test("batchNorm: batch statistics, affine or not, given statistics, eps", () => {
  const [m, d] = [7, 5];
  // Columns with different offsets and scales, so that every statistic matters.
  const x = Float32Array.from(values(m * d, 21), (v, i) => v * (1 + (i % d)) + (i % d) - 2);
  const w = values(d, 22), b = values(d, 23);
  const running = { mean: values(d, 24), variance: values(d, 25).map((v) => v + 1.5) };
  const before = tf.memory().numTensors;
  tf.tidy(() => {
    const xt = tf.tensor2d(x, [m, d]);
    const weight = tf.tensor1d(w), bias = tf.tensor1d(b);

    // Training mode with affine (the heads' hidden BN, ViT-BN in training).
    const r = batchNorm(xt, { weight, bias });
    const want = batchNorm64(x, [m, d], 1e-5, { w, b });
    assertEquals(r.y.shape, [m, d]);
    assertEquals(r.mean.shape, [d]);
    assertClose(r.y.dataSync(), want.y, 1e-5);
    assertClose(r.mean.dataSync(), want.mean, 1e-6);
    assertClose(r.variance.dataSync(), want.variance, 1e-5);

    // No affine (MoCo v3's last BN of the projector and predictor).
    assertClose(batchNorm(xt).y.dataSync(), batchNorm64(x, [m, d], 1e-5).y, 1e-5);

    // Given statistics (ViT-BN at eval, with running mean and variance).
    const stats = { mean: tf.tensor1d(running.mean), variance: tf.tensor1d(running.variance) };
    const e = batchNorm(xt, { weight, bias, stats });
    const wantE = batchNorm64(x, [m, d], 1e-5, { w, b }, running);
    assertClose(e.y.dataSync(), wantE.y, 1e-5);
    assertClose(e.mean.dataSync(), running.mean, 0);

    // eps is the variance floor: a constant column normalises to 0 / sqrt(eps).
    const eps = 0.25;
    assertClose(batchNorm(xt, { eps }).y.dataSync(), batchNorm64(x, [m, d], eps).y, 1e-5);
    const flat = batchNorm(tf.fill([4, 2], 3) as tf.Tensor2D, {
      weight: tf.tensor1d([2, 3]),
      bias: tf.tensor1d([1, -1]),
    });
    assertClose(flat.y.dataSync(), [1, -1, 1, -1, 1, -1, 1, -1], 0);
  });
  assertEquals(BN_EPS, 1e-5); // PyTorch's BatchNorm1d, the value both callers used before
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("fast paths: consulted for the active backend, counted, declining falls back", () => {
  const xs = [-1.5, 0, 2];
  const gelu64 = [-0.1002108, 0, 1.95449974]; // x Phi(x), float64
  try {
    // A fast path that returns a visibly different value, so the test sees which route ran.
    registerFastPaths("cpu", { gelu: (x) => tf.add(x, 100), ema: () => undefined });
    assertEquals(typeof fastPath("gelu"), "function");
    const before = fastPathCalls();
    const y = tf.tidy(() => gelu(tf.tensor1d(xs)).dataSync());
    assertClose(y, [98.5, 100, 102], 1e-6);
    // The ema fast path declines: the plain ops run, and it is not counted.
    const e = tf.tidy(() => ema(tf.tensor1d([1, 2]), tf.tensor1d([3, 5]), 0.75).dataSync());
    assertClose(e, [1.5, 2.75], 1e-7);
    assertEquals(fastPathCalls(), { ...before, gelu: before.gelu + 1 });
  } finally {
    registerFastPaths("cpu", {});
  }
  assertEquals(fastPath("gelu"), undefined);
  const before = fastPathCalls();
  assertClose(tf.tidy(() => gelu(tf.tensor1d(xs)).dataSync()), gelu64, 1e-6);
  assertEquals(fastPathCalls(), before);
});
