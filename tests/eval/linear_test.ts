import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertRejects } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { crossEntropy, linearProbe } from "../../lib/eval/linear.ts";
import { createRng } from "../../lib/core/rng.ts";

await initBackend({ backend: "cpu" });

/** `n` points of `C` Gaussian blobs in `d` dimensions, centres `sep` apart on random axes. */
function blobs(n: number, d: number, C: number, sep: number, noise: number, seed: number) {
  const rng = createRng(seed);
  const centreRng = createRng(1234); // the same centres for train and test
  const centres = Array.from(
    { length: C },
    () => Array.from({ length: d }, () => sep * centreRng.normal()),
  );
  const labels = new Int32Array(n);
  const features = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const y = i % C;
    labels[i] = y;
    // An offset and scale per dimension that the standardisation must undo.
    for (let j = 0; j < d; j++) {
      features[i * d + j] = 100 + (j + 1) * (centres[y][j] + noise * rng.normal());
    }
  }
  return { features, labels, dim: d };
}

Deno.test("crossEntropy: matches the formula, with and without label smoothing", () => {
  const logits = tf.tensor2d([[1, 2, 0.5], [0, -1, 3]]);
  const labels = tf.tensor1d([1, 0], "int32");
  const lse = (r: number[]) => Math.log(r.reduce((a, x) => a + Math.exp(x), 0));
  const rows = [[1, 2, 0.5], [0, -1, 3]];
  const nll = rows.map((r, i) => lse(r) - r[[1, 0][i]]);
  const uniform = rows.map((r) => r.reduce((a, x) => a + (lse(r) - x), 0) / 3);
  const eps = 0.1;
  const ce0 = crossEntropy(logits, labels);
  const ce1 = crossEntropy(logits, labels, eps);
  assertAlmostEquals(ce0.dataSync()[0], (nll[0] + nll[1]) / 2, 1e-5);
  const smooth = nll.map((x, i) => (1 - eps) * x + eps * uniform[i]);
  assertAlmostEquals(ce1.dataSync()[0], (smooth[0] + smooth[1]) / 2, 1e-5);
  tf.dispose([logits, labels, ce0, ce1]);
});

Deno.test("linearProbe: separable 16-D blobs reach 100% and the loss falls; no leak", async () => {
  const train = blobs(400, 16, 5, 3, 0.3, 1);
  const test = blobs(200, 16, 5, 3, 0.3, 2);
  const before = tf.memory().numTensors;
  const res = await linearProbe(train, test, { epochs: 10, batchSize: 32, lr: 0.1, seed: 3 });
  assertEquals(tf.memory().numTensors, before);
  assertEquals(res.top1, 1);
  assertEquals(res.top5, 1);
  assertEquals(res.trainLoss.length, 10);
  // Chance cross-entropy is ln 5 = 1.61; the first epoch already learns, the last is near 0.
  assert(res.trainLoss[0] < Math.log(5), `first epoch loss ${res.trainLoss[0]}`);
  assert(res.trainLoss[9] < 0.05, `last epoch loss ${res.trainLoss[9]}`);
  assert(res.trainLoss[9] < res.trainLoss[0]);
});

Deno.test("linearProbe: with zero lr the classifier stays at its random init (near chance)", async () => {
  // A 0.01-std random classifier gives logits near 0, so the loss is ln 2 for 2 classes.
  const train = blobs(200, 8, 2, 3, 0.3, 1);
  const res = await linearProbe(train, train, { epochs: 1, lr: 0, seed: 0 });
  assertAlmostEquals(res.trainLoss[0], Math.log(2), 0.05);
});

Deno.test("linearProbe: same seed, same result; bad sizes are rejected", async () => {
  const train = blobs(100, 4, 3, 0.5, 1, 5);
  const test = blobs(60, 4, 3, 0.5, 1, 6);
  const a = await linearProbe(train, test, { epochs: 3, batchSize: 16, seed: 7 });
  const b = await linearProbe(train, test, { epochs: 3, batchSize: 16, seed: 7 });
  assertEquals([a.top1, a.top5, a.trainLoss], [b.top1, b.top5, b.trainLoss]);
  await assertRejects(
    () => linearProbe(train, { ...test, dim: 5 }),
    RangeError,
    "train dim 4 != test dim 5",
  );
});
