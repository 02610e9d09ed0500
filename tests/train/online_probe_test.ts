/**
 * Tests of the online linear probe (lib/train/online_probe.ts) and its place in the training
 * loop: one SGD step against a float64 computation by hand, no gradient into the backbone (the
 * run's weights and log are bit-identical with and without it), its `probe_top1` column in
 * knn.csv, a bit-exact resume with the probe in the checkpoint, older runs' logs without the
 * column, and the one-line refusals (no labels, `--workers`).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { join } from "node:path";
import { PNG } from "pngjs";
import { initBackend } from "../../lib/backends/mod.ts";
import { readSafetensors } from "../../lib/io/safetensors.ts";
import { createFramework } from "../../lib/methods/mod.ts";
import { vitForward } from "../../lib/model/vit.ts";
import { monitorCurve } from "../../lib/experiments/stability.ts";
import { trainingCurvesSpec } from "../../lib/viz/charts.ts";
import {
  createOnlineProbe,
  disposeOnlineProbe,
  ONLINE_PROBE,
  probeAccuracy,
  probeStep,
  probeTensors,
} from "../../lib/train/online_probe.ts";
import { pretrain, type PretrainConfig, resolveConfig } from "../../lib/train/pretrain.ts";
import { readRunLogs, truncateLogs } from "../../lib/train/rundir.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

await initBackend({ backend: "wasm" });
const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../lib/cli/pretrain.ts", import.meta.url).pathname;
const quiet = { print: () => {} };
const dirs: string[] = [];
removeOnUnload(dirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_probe_test_" });
  dirs.push(d);
  return d;
}

function smoke(outDir: string, extra: Partial<PretrainConfig> = {}): PretrainConfig {
  return resolveConfig({ preset: "smoke", backend: "wasm", finalEval: "none", outDir, ...extra });
}

/** Every tensor's raw bytes, by name. */
async function tensorBytes(path: string): Promise<Map<string, Uint8Array>> {
  const { tensors } = await readSafetensors(path);
  return new Map(
    Object.entries(tensors).map(([k, t]) => [k, new Uint8Array(t.data.buffer)] as const),
  );
}

function assertSameBytes(a: Map<string, Uint8Array>, b: Map<string, Uint8Array>, what: string) {
  assertEquals([...a.keys()].sort(), [...b.keys()].sort(), what);
  for (const [k, x] of a) {
    const y = b.get(k)!;
    assert(x.length === y.length && x.every((v, i) => v === y[i]), `${what}: ${k} differs`);
  }
}

/** log.csv without its timing column. */
async function logText(dir: string): Promise<string> {
  const lines = (await Deno.readTextFile(`${dir}/log.csv`)).trimEnd().split("\n");
  return lines.map((l) => l.split(",").slice(0, -1).join(",")).join("\n");
}

// ---------- the probe's update, by hand ----------

/** One SGD (momentum, no decay) step of softmax cross-entropy in float64, as torch would. */
function sgdStep64(
  W: number[][],
  b: number[],
  bufW: number[][],
  bufB: number[],
  X: number[][],
  y: number[],
  lr: number,
  momentum: number,
  first: boolean,
): number {
  const B = X.length, C = W.length, D = X[0].length;
  const gW = W.map((r) => r.map(() => 0)), gB = b.map(() => 0);
  let loss = 0;
  for (let i = 0; i < B; i++) {
    const z = W.map((w, c) => b[c] + w.reduce((s, wd, d) => s + wd * X[i][d], 0));
    const m = Math.max(...z);
    const e = z.map((v) => Math.exp(v - m));
    const sum = e.reduce((s, v) => s + v, 0);
    loss -= Math.log(e[y[i]] / sum) / B;
    for (let c = 0; c < C; c++) {
      const g = (e[c] / sum - (c === y[i] ? 1 : 0)) / B;
      gB[c] += g;
      for (let d = 0; d < D; d++) gW[c][d] += g * X[i][d];
    }
  }
  for (let c = 0; c < C; c++) {
    bufB[c] = first ? gB[c] : momentum * bufB[c] + gB[c];
    b[c] -= lr * bufB[c];
    for (let d = 0; d < D; d++) {
      bufW[c][d] = first ? gW[c][d] : momentum * bufW[c][d] + gW[c][d];
      W[c][d] -= lr * bufW[c][d];
    }
  }
  return loss;
}

Deno.test("probeStep: two SGD momentum steps of softmax cross-entropy match a float64 loop", () => {
  const n0 = tf.memory().numTensors;
  const probe = createOnlineProbe(3, 3, 0);
  const W = [[0.5, -0.2, 0.1], [0.0, 0.3, -0.4], [-0.1, 0.2, 0.25]];
  const b = [0.05, -0.1, 0.0];
  tf.tidy(() => {
    probe.params.weight.assign(tf.tensor2d(W));
    probe.params.bias.assign(tf.tensor1d(b));
  });
  const bufW = W.map((r) => r.map(() => 0)), bufB = b.map(() => 0);
  const batches: [number[][], number[]][] = [
    [[[1, 0, 2], [0.5, -1, 0], [-1, 1, 1], [2, 2, -0.5]], [0, 2, 1, 2]],
    [[[0, 1, -1], [1.5, 0.5, 0.5], [-0.5, -2, 1], [1, -1, 3]], [1, 0, 2, 1]],
  ];
  batches.forEach(([X, y], step) => {
    const want = sgdStep64(W, b, bufW, bufB, X, y, ONLINE_PROBE.lr, 0.9, step === 0);
    const x = tf.tensor2d(X);
    const loss = probeStep(probe, x, Int32Array.from(y));
    assertAlmostEquals(loss.dataSync()[0], want, 1e-6, `loss of step ${step}`);
    tf.dispose([loss, x]);
    const gotW = probe.params.weight.arraySync() as number[][];
    const gotB = probe.params.bias.arraySync() as number[];
    W.forEach((r, c) =>
      r.forEach((v, d) => assertAlmostEquals(gotW[c][d], v, 1e-6, `W[${c}][${d}]`))
    );
    b.forEach((v, c) => assertAlmostEquals(gotB[c], v, 1e-6, `b[${c}]`));
  });
  // The momentum buffer is checkpointed beside the weights.
  const slots = probeTensors(probe);
  assertEquals(Object.keys(slots).sort(), [
    "online_probe.bias",
    "online_probe.optim.momentum_buffer.bias",
    "online_probe.optim.momentum_buffer.weight",
    "online_probe.weight",
  ]);
  const buf = slots["online_probe.optim.momentum_buffer.weight"].arraySync() as number[][];
  bufW.forEach((r, c) => r.forEach((v, d) => assertAlmostEquals(buf[c][d], v, 1e-6)));
  disposeOnlineProbe(probe);
  assertEquals(tf.memory().numTensors, n0, "tensors leaked");
});

Deno.test("probeAccuracy: the argmax of features x W^T + b against the labels", async () => {
  const probe = createOnlineProbe(2, 3, 0);
  // Class scores: [x0, x1, 0.5 - x0 - x1] (W rows (1,0), (0,1), (-1,-1); b (0, 0, 0.5)).
  tf.tidy(() => {
    probe.params.weight.assign(tf.tensor2d([[1, 0], [0, 1], [-1, -1]]));
    probe.params.bias.assign(tf.tensor1d([0, 0, 0.5]));
  });
  // Scores by hand: (2, 0, -1.5), (0, 2, -1.5), (-1, -1, 2.5), (1, 3, -3.5), (0.25, 0, 0.25):
  // argmax 0, 1, 2, 1 and, for the tie of classes 0 and 2 in the last row, the lower index 0.
  const features = Float32Array.from([2, 0, 0, 2, -1, -1, 1, 3, 0.25, 0]);
  const labels = Int32Array.from([0, 1, 2, 0, 2]);
  const acc = await probeAccuracy(probe, { features, labels, dim: 2 });
  assertAlmostEquals(acc.top1, 3 / 5, 1e-12);
  assertAlmostEquals(acc.top5, 1, 1e-12); // 3 classes
  disposeOnlineProbe(probe);
});

Deno.test("the step's features are view 1's pooled backbone features of the same forward pass", () => {
  const ssl = createFramework(
    "mocov3",
    { name: "vit_nano", imageSize: 14, patchSize: 7, channels: 1 },
    { hidden: 16, outDim: 8 },
    0,
  );
  const x1 = tf.randomNormal([4, 14, 14, 1], 0, 1, "float32", 1) as tf.Tensor4D;
  const x2 = tf.randomNormal([4, 14, 14, 1], 0, 1, "float32", 2) as tf.Tensor4D;
  // LayerNorm ViT: training and eval forward agree; before the update, on the same weights.
  const want = tf.tidy(() => vitForward(ssl.backbone, x1, { training: true }).features);
  const r = ssl.step(x1, x2, { momentum: 0.99, features: true });
  assertEquals(r.features!.shape, [4, ssl.backbone.config.dim]);
  assertEquals(Array.from(r.features!.dataSync()), Array.from(want.dataSync()));
  const plain = ssl.step(x1, x2, { momentum: 0.99 });
  assertEquals(plain.features, undefined);
  tf.dispose([x1, x2, want, r.loss, r.features!, plain.loss, ...Object.values(r.grads)]);
  tf.dispose(Object.values(plain.grads));
  ssl.dispose();
});

// ---------- in the training loop ----------

/** The smoke run with the probe (16 steps, kNN monitor every 4), shared by the tests below. */
let withProbe: Promise<string> | undefined;
function probeRun(): Promise<string> {
  withProbe ??= (async () => {
    const dir = await tempDir();
    const r = await pretrain(smoke(dir, { knnEvery: 4 }), quiet);
    assertEquals([r.status, r.steps], ["done", 16]);
    return dir;
  })();
  return withProbe;
}

Deno.test("no gradient into the backbone: weights and log.csv bit-identical with and without the probe", async () => {
  const on = await probeRun();
  const off = await tempDir();
  await pretrain(smoke(off, { knnEvery: 4, onlineProbe: false }), quiet);
  const a = await tensorBytes(`${on}/checkpoint.safetensors`);
  const b = await tensorBytes(`${off}/checkpoint.safetensors`);
  const probeNames = [...a.keys()].filter((k) => k.startsWith("online_probe."));
  assertEquals(probeNames.length, 4, "the probe is in the checkpoint");
  for (const k of probeNames) a.delete(k);
  // Every trainable weight, momentum encoder, BN buffer and optimiser slot after 16 steps.
  assertSameBytes(a, b, "checkpoint without the probe");
  assertSameBytes(
    await tensorBytes(`${on}/backbone.safetensors`),
    await tensorBytes(`${off}/backbone.safetensors`),
    "backbone",
  );
  assertEquals(await logText(on), await logText(off));
  // The kNN columns agree too; only the run with the probe has probe_top1.
  const [knnOn, knnOff] = [(await readRunLogs(on)).knn, (await readRunLogs(off)).knn];
  assertEquals(knnOn.map(({ probe_top1: _, ...r }) => r), knnOff);
  assert(knnOff.every((r) => r.probe_top1 === undefined));
  const config = async (d: string) =>
    JSON.parse(await Deno.readTextFile(`${d}/config.json`)).config.onlineProbe;
  assertEquals([await config(on), await config(off)], [true, false]);
});

Deno.test("knn.csv: probe_top1 present and in range, the same rows as the monitor lines", async () => {
  const dir = await tempDir();
  const lines: string[] = [];
  await pretrain(smoke(dir, { knnEvery: 4 }), { print: (s) => lines.push(s) });
  const header = (await Deno.readTextFile(`${dir}/knn.csv`)).split("\n")[0];
  assertEquals(header, "step,epoch,top1,top5,k,train_size,test_size,probe_top1");
  const { knn } = await readRunLogs(dir);
  assertEquals(knn.map((r) => r.step), [4, 8, 12]);
  for (const r of knn) {
    // A fraction of the test subset's size, in percent.
    const hits = r.probe_top1! * r.test_size / 100;
    assert(r.probe_top1! >= 0 && r.probe_top1! <= 100, `probe_top1 ${r.probe_top1}`);
    assertAlmostEquals(hits, Math.round(hits), 1e-4, `probe_top1 ${r.probe_top1}`);
  }
  const monitor = lines.filter((l) => l.startsWith("knn @ step"));
  assertEquals(monitor.length, 3);
  knn.forEach((r, i) =>
    assertStringIncludes(monitor[i], `; online probe top-1 ${r.probe_top1!.toFixed(2)}%`)
  );
  // The dip detector's probe series is this column.
  assertEquals(monitorCurve(knn, "probe"), knn.map((r) => ({ step: r.step, acc: r.probe_top1! })));
  assertEquals(monitorCurve(knn), knn.map((r) => ({ step: r.step, acc: r.top1 })));
  // Notebook 02's curves: loss, reference, kNN and the probe (both on the right axis).
  const { log } = await readRunLogs(dir);
  const spec = trainingCurvesSpec(log, knn, { reference: { name: "chance", loss: 2 } });
  assertEquals(spec.data.map((d) => d.name), [
    "loss",
    "chance",
    "kNN top-1 (%)",
    "online probe top-1 (%)",
  ]);
  assertEquals(spec.data[3].y, knn.map((r) => r.probe_top1));
  assertEquals(spec.data[3].x, [4, 8, 12]);
  assertEquals(spec.data[3].yaxis, "y2");
  assertEquals(spec.data[0].x, log.map((r) => r.step + 1));
  const plain = trainingCurvesSpec(log, knn.map(({ probe_top1: _, ...r }) => r));
  assertEquals(plain.data.map((d) => d.name), ["loss", "kNN top-1 (%)"]);
});

Deno.test("resume with the probe: stopped at step 6, resumed = uninterrupted, bit for bit", async () => {
  const ref = await probeRun();
  const dir = await tempDir();
  const signal = { stop: false };
  const first = await pretrain(smoke(dir, { knnEvery: 4 }), {
    ...quiet,
    signal,
    onStep: (row) => {
      if (row.step === 5) signal.stop = true;
    },
  });
  assertEquals([first.status, first.steps], ["stopped", 6]);
  await pretrain(smoke(dir, { knnEvery: 4 }), quiet);
  assertSameBytes(
    await tensorBytes(`${dir}/checkpoint.safetensors`),
    await tensorBytes(`${ref}/checkpoint.safetensors`),
    "checkpoint (probe included)",
  );
  assertEquals(
    await Deno.readTextFile(`${dir}/knn.csv`),
    await Deno.readTextFile(`${ref}/knn.csv`),
  );
  assertEquals(await logText(dir), await logText(ref));
});

Deno.test("a run made before the probe (no field, knn.csv without the column) resumes without it", async () => {
  const dir = await tempDir();
  await pretrain(smoke(dir, { knnEvery: 4, maxSteps: 6, onlineProbe: false }), quiet);
  // As an older version wrote it: config.json without the field.
  const json = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
  delete json.config.onlineProbe;
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(json));
  // Unset (the default) on resume: the run keeps what it had, no probe.
  const cfg = smoke(dir, { knnEvery: 4 });
  assertEquals(cfg.onlineProbe, undefined);
  await pretrain(cfg, quiet);
  const text = await Deno.readTextFile(`${dir}/knn.csv`);
  assertEquals(text.split("\n")[0], "step,epoch,top1,top5,k,train_size,test_size");
  assertEquals((await readRunLogs(dir)).knn.map((r) => r.step), [4, 8, 12]);
  // truncateLogs reads both headers.
  await truncateLogs(dir, 8);
  assertEquals((await readRunLogs(dir)).knn.map((r) => r.step), [4, 8]);
  const probed = await probeRun();
  const copy = await tempDir();
  await Deno.copyFile(`${probed}/knn.csv`, `${copy}/knn.csv`);
  await truncateLogs(copy, 4);
  const rows = (await readRunLogs(copy)).knn;
  assertEquals(rows.map((r) => r.step), [4]);
  assert(rows[0].probe_top1 !== undefined);
});

// ---------- bad input ----------

async function cliRun(args: string[]): Promise<{ code: number; err: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  return { code: out.code, err: new TextDecoder().decode(out.stderr).trim() };
}

Deno.test("--online-probe without labels (one class) or with --workers 2: exit 2, one line", async () => {
  const root = await tempDir();
  await Deno.mkdir(join(root, "only"), { recursive: true });
  for (let i = 0; i < 10; i++) {
    const img = new PNG({ width: 14, height: 14 });
    img.data.fill(20 * i);
    await Deno.writeFile(join(root, "only", `${i}.png`), new Uint8Array(PNG.sync.write(img)));
  }
  const common = ["--preset", "smoke", "--backend", "wasm", "--batch", "4"];
  const data = ["--dataset", "imagefolder", "--data-root", root, "--channels", "1"];
  const one = await cliRun([...common, ...data, "--online-probe", "--out", join(root, "r1")]);
  assertEquals(one.code, 2, one.err);
  assertEquals(one.err.split("\n").length, 1, one.err);
  assertStringIncludes(one.err, "--online-probe needs labels");
  assertStringIncludes(one.err, "--no-online-probe");
  const two = await cliRun([...common, "--workers", "2", "--online-probe"]);
  assertEquals(two.code, 2, two.err);
  assertEquals(two.err.split("\n").length, 1, two.err);
  assertStringIncludes(two.err, "--no-online-probe");
});

Deno.test("unset, the probe is off on data without labels (recorded in config.json)", async () => {
  const root = await tempDir();
  await Deno.mkdir(join(root, "only"), { recursive: true });
  for (let i = 0; i < 10; i++) {
    const img = new PNG({ width: 14, height: 14 });
    img.data.fill(20 * i);
    await Deno.writeFile(join(root, "only", `${i}.png`), new Uint8Array(PNG.sync.write(img)));
  }
  const out = join(root, "run");
  await pretrain(
    smoke(out, {
      dataset: "imagefolder",
      dataRoot: root,
      channels: 1,
      batchSize: 4,
      maxSteps: 1,
      prototypes: 4,
    }),
    quiet,
  );
  assertEquals(JSON.parse(await Deno.readTextFile(`${out}/config.json`)).config.onlineProbe, false);
});
