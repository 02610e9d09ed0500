/**
 * The final report (lib/eval/final_report.ts): raw pixels' kNN against a float64 kNN written
 * here, the baselines' cache (a second report computes neither baseline again), the printed
 * table by hand, and a pretraining run's report, its final.json and its knn.csv row.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { syntheticDataset } from "../../lib/data/synthetic.ts";
import { datasetStats } from "../../lib/data/stats.ts";
import { type FinalReport, finalReport, finalReportLines } from "../../lib/eval/final_report.ts";
import { createViT, disposeViT } from "../../lib/model/vit.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { savedRunConfig } from "../../lib/train/config.ts";
import { readRunLogs } from "../../lib/train/rundir.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

await initBackend({ backend: "wasm" });
const temps: string[] = [];
removeOnUnload(temps);

/** kNN top-1 (percent) in float64: cosine similarity, votes exp(sim / 0.07) of the k nearest. */
function knnTop1F64(
  train: { x: Float64Array[]; y: number[] },
  test: { x: Float64Array[]; y: number[] },
  k: number,
  classes: number,
): number {
  const unit = (v: Float64Array) => {
    const n = Math.sqrt(v.reduce((s, a) => s + a * a, 0));
    return v.map((a) => a / n);
  };
  const tr = train.x.map(unit);
  let right = 0;
  test.x.forEach((q0, i) => {
    const q = unit(q0);
    const sims = tr.map((t, j) => ({ s: t.reduce((s, a, d) => s + a * q[d], 0), y: train.y[j] }));
    sims.sort((a, b) => b.s - a.s);
    const votes = new Float64Array(classes);
    for (const { s, y } of sims.slice(0, k)) votes[y] += Math.exp(s / 0.07);
    let best = 0;
    for (let c = 1; c < classes; c++) if (votes[c] > votes[best]) best = c;
    if (best === test.y[i]) right++;
  });
  return (100 * right) / test.x.length;
}

function pixels(ds: ReturnType<typeof syntheticDataset>) {
  const d = ds.height * ds.width * ds.channels;
  return {
    x: Array.from(
      { length: ds.length },
      (_, i) => Float64Array.from(ds.images.subarray(i * d, (i + 1) * d), (v) => v / 255),
    ),
    y: Array.from(ds.labels),
  };
}

Deno.test("finalReport: raw pixels' kNN-20 equals a float64 kNN; the baselines are cached", async () => {
  const train = syntheticDataset({ n: 120, imageSize: 14, seed: 3 });
  const test = syntheticDataset({ n: 40, imageSize: 14, seed: 3, split: "test" });
  const vit = { name: "vit_nano", imageSize: 14, channels: 1, patchSize: 7 };
  const backbone = createViT(vit, 1);
  const cacheDir = await Deno.makeTempDir();
  temps.push(cacheDir);
  let inits = 0;
  const randomInit = () => {
    inits++;
    return createViT(vit, 0);
  };
  const lines: string[] = [];
  const opts = {
    what: "all" as const,
    stats: datasetStats(train),
    datasetKey: "synthetic 14",
    baselineKey: JSON.stringify(vit),
    linearEpochs: 3,
    cacheDir,
    print: (l: string) => lines.push(l),
  };
  const n0 = tf.memory().numTensors;
  try {
    const r = await finalReport(backbone, randomInit, train, test, opts);
    assertEquals(r.rows.map((x) => x.model), ["trained backbone", "random init", "raw pixels"]);
    assertEquals([r.trainSize, r.testSize, r.k, r.linearEpochs], [120, 40, 20, 3]);
    const expected = knnTop1F64(pixels(train), pixels(test), 20, train.classes.length);
    assertAlmostEquals(r.rows[2].knn_top1!, expected, 1e-9);
    for (const row of r.rows) {
      assert(row.linear_top1! >= 0 && row.linear_top1! <= 100, JSON.stringify(row));
      assert(row.knn_top5! >= row.knn_top1!, JSON.stringify(row));
    }
    assertEquals(inits, 1);
    assertEquals(tf.memory().numTensors, n0, "no tensor left behind");

    // The second report reads both baselines from the cache: no random init is built.
    lines.length = 0;
    const again = await finalReport(backbone, randomInit, train, test, opts);
    assertEquals(inits, 1);
    assertEquals(again.rows.slice(1), r.rows.slice(1));
    assertEquals(lines.filter((l) => l.includes("from the cache")).length, 2, lines.join("\n"));
    // Another k is another key: computed again.
    await finalReport(backbone, randomInit, train, test, { ...opts, what: "knn", k: 5 });
    assertEquals(inits, 2);
    // A report without a cache computes every time.
    const none = await finalReport(backbone, randomInit, train, test, {
      ...opts,
      what: "knn",
      cacheDir: null,
    });
    assertEquals(inits, 3);
    assertEquals(none.rows[0].linear_top1, undefined, "knn only");
  } finally {
    disposeViT(backbone);
  }
});

Deno.test("finalReportLines: the table by hand, the difference to raw pixels and its verdict", () => {
  const report: FinalReport = {
    rows: [
      { model: "trained backbone", knn_top1: 85.5, linear_top1: 84.25 },
      { model: "random init", knn_top1: 73.64, linear_top1: 72 },
      { model: "raw pixels", knn_top1: 84.95, linear_top1: 84.5 },
    ],
    k: 20,
    linearEpochs: 30,
    trainSize: 60000,
    testSize: 10000,
    seconds: 1,
  };
  assertEquals(finalReportLines(report), [
    "final evaluation, top-1 % on the full splits (60000 train / 10000 test images): kNN-20, " +
    "linear probe (30 epochs on frozen features)",
    "                      kNN-20  linear",
    "  trained backbone     85.50   84.25",
    "  random init          73.64   72.00",
    "  raw pixels           84.95   84.50",
    "  trained - raw        +0.55   -0.25",
    "  the features beat raw pixels on kNN-20, not on linear",
  ]);
  const below = { ...report, rows: report.rows.map((r) => ({ ...r, linear_top1: undefined })) };
  below.rows[0].knn_top1 = 80;
  const lines = finalReportLines(below);
  assertEquals(lines[lines.length - 2], "  trained - raw        -4.95");
  assertStringIncludes(lines[lines.length - 1], "do not beat raw pixels (kNN-20)");
});

Deno.test("pretrain: the final report in final.json, its kNN row in knn.csv; --final-eval none", async () => {
  const dir = await Deno.makeTempDir();
  const cacheDir = await Deno.makeTempDir();
  temps.push(dir, cacheDir);
  const cfg = resolveConfig({ preset: "smoke", backend: "wasm", outDir: `${dir}/run` });
  assertEquals(cfg.finalEval, "all");
  const lines: string[] = [];
  const hooks = { baselineCacheDir: cacheDir };
  const res = await pretrain(cfg, { ...hooks, print: (l) => lines.push(l) });
  const saved = JSON.parse(await Deno.readTextFile(`${dir}/run/final.json`));
  assertEquals(saved.step, res.steps);
  assertEquals(saved.rows.length, 3);
  assertEquals(res.knnTop1, saved.rows[0].knn_top1);
  assertEquals(res.linearTop1, saved.rows[0].linear_top1);
  const { knn } = await readRunLogs(`${dir}/run`);
  const last = knn[knn.length - 1];
  assertEquals([last.step, last.train_size], [res.steps, 256]);
  assertAlmostEquals(last.top1, res.knnTop1!, 1e-4); // the CSV keeps 5 decimals
  assert(lines.some((l) => l.startsWith("  trained - raw")), lines.join("\n"));
  assert(
    (await Array.fromAsync(Deno.readDir(cacheDir))).length === 2,
    "random init and raw pixels cached",
  );

  const off = await pretrain(
    resolveConfig({ preset: "smoke", backend: "wasm", outDir: `${dir}/off`, finalEval: "none" }),
    { ...hooks, print: () => {} },
  );
  assertEquals([off.knnTop1, off.report], [undefined, undefined]);
  assertEquals(await Deno.stat(`${dir}/off/final.json`).then(() => true, () => false), false);
});

Deno.test("a run made before --final-eval resumes with what its finalKnn did", () => {
  const legacy = (v: boolean) => ({ preset: "smoke", finalKnn: v }) as Record<string, unknown>;
  assertEquals(savedRunConfig(legacy(true)).finalEval, "knn");
  assertEquals(savedRunConfig(legacy(false)).finalEval, "none");
  assertEquals("finalKnn" in savedRunConfig(legacy(false)), false);
  assertEquals(savedRunConfig({ finalEval: "linear" }).finalEval, "linear");
});
