import * as tf from "@tensorflow/tfjs-core";
import { assertAlmostEquals, assertEquals, assertRejects } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { knnClassify } from "../../lib/eval/knn.ts";
import { labelRank, topkAccuracy } from "../../lib/eval/metrics.ts";
import { createRng } from "../../lib/core/rng.ts";

await initBackend({ backend: "cpu" });

const deg = Math.PI / 180;
/** A 2-D point at `angle` degrees with length `r` (cosine similarity depends only on angles). */
const at = (angle: number, r = 1) => [r * Math.cos(angle * deg), r * Math.sin(angle * deg)];

Deno.test("metrics: rank and top-k with ties going to the lower class", () => {
  assertEquals(labelRank([0.1, 0.7, 0.2], 0, 3, 0), 2);
  assertEquals(labelRank([0.5, 0.5, 0.2], 0, 3, 0), 0);
  assertEquals(labelRank([0.5, 0.5, 0.2], 0, 3, 1), 1);
  // Row 0: label 1 scores highest. Row 1: label 0 ranks 5th of 6 (4 classes above it).
  const scores = [0, 9, 1, 2, 3, 4, /**/ 5, 9, 8, 7, 6, 1];
  assertEquals(topkAccuracy(scores, new Int32Array([1, 0]), 6), { top1: 0.5, top5: 1 });
  // Row 1 with label 5: ranks 6th, outside the top 5.
  assertEquals(topkAccuracy(scores, new Int32Array([1, 5]), 6), { top1: 0.5, top5: 0.5 });
});

Deno.test("knn: weighted votes match a hand computation on 2-D features", async () => {
  // Query at 45 degrees with label 1. Neighbours by cosine: p (0 deg away, class 0, length 3 to
  // check normalisation), u and v (20 deg away, class 1), w (45 deg away, class 2), x (135, 2).
  const train = {
    features: new Float32Array([...at(45, 3), ...at(65), ...at(25, 0.5), ...at(90, 2), ...at(180)]),
    labels: new Int32Array([0, 1, 1, 2, 2]),
    dim: 2,
  };
  const test = { features: new Float32Array(at(45, 7)), labels: new Int32Array([1]), dim: 2 };
  // By hand with T = 0.1: votes exp(cos/T): p e^10 = 22026; u, v e^(9.397) = 12050 each.
  // k=1: class 0 wins (wrong). k=2: 22026 vs 12050 -> class 0. k=3: 22026 vs 24100 -> class 1.
  // k=4 adds e^7.07 = 1177 for class 2 -> still class 1.
  const w = (a: number, T: number) => Math.exp(Math.cos(a * deg) / T);
  assertEquals(w(0, 0.1) > w(20, 0.1) && 2 * w(20, 0.1) > w(0, 0.1), true); // the hand numbers
  const r = await knnClassify(train, test, { k: [1, 2, 3, 4], temperature: 0.1, numClasses: 3 });
  assertEquals(r.map((x) => x.k), [1, 2, 3, 4]);
  assertEquals(r.map((x) => x.top1), [0, 0, 1, 1]);
  assertEquals(r.map((x) => x.top5), [1, 1, 1, 1]); // 3 classes: always within 5
  // T = 0.05 sharpens the weights: e^20 = 4.9e8 > 2 e^18.79 = 2.9e8, so class 0 wins at k=3 too,
  // although a plain majority vote would pick class 1.
  assertEquals(2 * w(20, 0.05) < w(0, 0.05), true);
  const sharp = await knnClassify(train, test, { k: 3, temperature: 0.05, numClasses: 3 });
  assertEquals(sharp[0].top1, 0);
});

Deno.test("knn: top-5 counts the true class among the 5 best of 7", async () => {
  // Train points at 0, 10, ..., 60 degrees with labels 0..6; queries at 0 degrees. With k = 7
  // each class gets one vote, decreasing with the angle: class c ranks c-th.
  const f: number[] = [];
  for (let c = 0; c < 7; c++) f.push(...at(10 * c));
  const train = {
    features: new Float32Array(f),
    labels: new Int32Array([0, 1, 2, 3, 4, 5, 6]),
    dim: 2,
  };
  const test = {
    features: new Float32Array([...at(0), ...at(0), ...at(0), ...at(0)]),
    labels: new Int32Array([0, 4, 5, 6]),
    dim: 2,
  };
  const [r] = await knnClassify(train, test, { k: 7 });
  assertEquals(r.top1, 1 / 4); // only label 0 ranks first
  assertEquals(r.top5, 2 / 4); // labels 0 and 4 rank below 5; 5 and 6 do not
});

/** Reference kNN written independently: full sort of all cosines per query. */
function bruteForce(
  train: { features: Float32Array; labels: Int32Array; dim: number },
  test: { features: Float32Array; labels: Int32Array; dim: number },
  k: number,
  T: number,
  C: number,
): { top1: number; top5: number } {
  const d = train.dim;
  const unit = (a: Float32Array, i: number) => {
    const v = Array.from(a.subarray(i * d, (i + 1) * d));
    const nrm = Math.hypot(...v);
    return v.map((x) => x / nrm);
  };
  const tr = Array.from({ length: train.labels.length }, (_, i) => unit(train.features, i));
  let c1 = 0, c5 = 0;
  for (let q = 0; q < test.labels.length; q++) {
    const u = unit(test.features, q);
    const sims = tr.map((t, i) => ({ s: t.reduce((a, x, j) => a + x * u[j], 0), i }));
    sims.sort((a, b) => b.s - a.s);
    const votes = new Array(C).fill(0);
    for (const { s, i } of sims.slice(0, k)) votes[train.labels[i]] += Math.exp(s / T);
    const y = test.labels[q];
    const order = votes.map((v, c) => ({ v, c })).sort((a, b) => b.v - a.v || a.c - b.c);
    const rank = order.findIndex((o) => o.c === y);
    if (rank < 1) c1++;
    if (rank < 5) c5++;
  }
  return { top1: c1 / test.labels.length, top5: c5 / test.labels.length };
}

function randomSet(n: number, d: number, C: number, seed: number) {
  const rng = createRng(seed);
  const centres = Array.from({ length: C }, () => Array.from({ length: d }, () => rng.normal()));
  const labels = new Int32Array(n);
  const features = new Float32Array(n * d);
  for (let i = 0; i < n; i++) {
    const y = rng.int(C);
    labels[i] = y;
    for (let j = 0; j < d; j++) features[i * d + j] = centres[y][j] + 1.5 * rng.normal();
  }
  return { features, labels, dim: d };
}

Deno.test("knn: chunked equals unchunked and matches a brute-force reference; no leak", async () => {
  const train = randomSet(300, 8, 7, 1);
  const test = randomSet(70, 8, 7, 2);
  const before = tf.memory().numTensors;
  const opts = { k: [1, 5, 20], temperature: 0.07, numClasses: 7 };
  const whole = await knnClassify(train, test, { ...opts, chunkSize: 1000 });
  for (const chunkSize of [1, 3, 32]) {
    assertEquals(await knnClassify(train, test, { ...opts, chunkSize }), whole);
  }
  for (const [i, k] of opts.k.entries()) {
    const ref = bruteForce(train, test, k, 0.07, 7);
    assertAlmostEquals(whole[i].top1, ref.top1, 1e-12);
    assertAlmostEquals(whole[i].top5, ref.top5, 1e-12);
  }
  // The same answer when the caller's features are tensors (which stay the caller's).
  const tt = tf.tensor2d(train.features, [300, 8]);
  const qt = tf.tensor2d(test.features, [70, 8]);
  const fromTensors = await knnClassify(
    { ...train, features: tt },
    { ...test, features: qt },
    { ...opts, chunkSize: 16 },
  );
  assertEquals(fromTensors, whole);
  assertEquals(tt.isDisposed || qt.isDisposed, false);
  tf.dispose([tt, qt]);
  assertEquals(tf.memory().numTensors, before);
});

Deno.test("knn: k larger than the train set is clamped; bad input is rejected", async () => {
  const train = randomSet(10, 4, 3, 3);
  const test = randomSet(5, 4, 3, 4);
  const [r] = await knnClassify(train, test, { k: 50 });
  assertEquals(r.k, 10);
  await assertRejects(
    () => knnClassify(train, { ...test, dim: 3 }, {}),
    RangeError,
    "train dim 4 != test dim 3",
  );
  await assertRejects(
    () => knnClassify({ ...train, labels: new Int32Array(9) }, test, {}),
    RangeError,
    "labels (9)",
  );
});
