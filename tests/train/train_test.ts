/**
 * Tests of the pretraining loop (lib/train/pretrain.ts) and its command line (lib/cli/pretrain.ts):
 * exact resume (in process and after SIGKILL of a child process), the divergence guard (stop and
 * rollback), refusal to resume a run directory with another config, a short run that learns
 * (loss falls, kNN above chance and above the random-init model), and the CLI's errors.
 *
 * Everything runs on the wasm backend (deterministic, single thread), in temp directories.
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertInstanceOf,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { loadBackbone } from "../../lib/train/checkpoint.ts";
import { type Dataset, getBatch } from "../../lib/data/mod.ts";
import { knnClassify } from "../../lib/eval/knn.ts";
import { extractFeatures } from "../../lib/eval/features.ts";
import { datasetStats } from "../../lib/data/stats.ts";
import { createFramework } from "../../lib/methods/mod.ts";
import { createRng, permutation } from "../../lib/core/rng.ts";
import { readSafetensors, toFloat32 } from "../../lib/io/safetensors.ts";
import { pretrain, type PretrainConfig, resolveConfig } from "../../lib/train/pretrain.ts";
import { backboneConfig, loadSplits } from "../../lib/train/setup.ts";
import { DivergenceError } from "../../lib/train/run_checkpoints.ts";
import { main } from "../../lib/cli/pretrain.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

const BACKEND = "wasm" as const;
/** The repository root and the CLI script, whatever the working directory. */
const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../lib/cli/pretrain.ts", import.meta.url).pathname;

/** `deno run -A lib/cli/pretrain.ts ...args` from the repository root. */
function cli(args: string[], io: "piped" | "null" = "piped"): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, ...args],
    cwd: ROOT,
    stdout: io,
    stderr: io,
  });
}
const quiet = { print: () => {} };

// ---------- helpers ----------

type Row = Record<string, number>;

/** Rows of a run's CSV log as numbers (every column of log.csv / knn.csv is numeric). */
async function readCsv(path: string): Promise<Row[]> {
  const text = await Deno.readTextFile(path);
  assert(text.endsWith("\n"), `${path}: the last line must be complete`);
  const [header, ...lines] = text.trimEnd().split("\n");
  const cols = header.split(",");
  return lines.map((l) => {
    const cells = l.split(",");
    assertEquals(cells.length, cols.length, `${path}: row "${l}"`);
    return Object.fromEntries(cols.map((c, i) => [c, Number(cells[i])]));
  });
}

function assertContiguous(rows: Row[], n: number, what: string): void {
  assertEquals(rows.map((r) => r.step), Array.from({ length: n }, (_, i) => i), what);
}

/** Same values in every column but the timing one, within float32 text precision. */
function assertSameRows(got: Row[], want: Row[], what: string, rel = 1e-6): void {
  assertEquals(got.length, want.length, `${what}: row count`);
  for (let i = 0; i < want.length; i++) {
    for (const [k, v] of Object.entries(want[i])) {
      if (k === "images_per_s") continue;
      const g = got[i][k];
      assert(
        Math.abs(g - v) <= rel * Math.max(1, Math.abs(v)),
        `${what}: row ${i} ${k}: got ${g}, expected ${v}`,
      );
    }
  }
}

/** Every tensor of a safetensors file as f32, and its metadata. */
async function readTensors(path: string) {
  const { tensors, metadata } = await readSafetensors(path);
  const out: Record<string, Float32Array | Int32Array> = {};
  for (const [k, t] of Object.entries(tensors)) {
    out[k] = t.dtype === "I32" ? t.data as Int32Array : toFloat32(t);
  }
  return { tensors: out, metadata };
}

async function assertSameTensors(pathA: string, pathB: string, tol = 1e-6): Promise<void> {
  const a = (await readTensors(pathA)).tensors, b = (await readTensors(pathB)).tensors;
  assertEquals(Object.keys(a).sort(), Object.keys(b).sort());
  for (const k of Object.keys(a)) {
    let worst = 0;
    for (let i = 0; i < a[k].length; i++) worst = Math.max(worst, Math.abs(a[k][i] - b[k][i]));
    assert(worst <= tol, `${k}: max |difference| ${worst} between ${pathA} and ${pathB}`);
  }
}

function smoke(outDir: string, extra: Partial<PretrainConfig> = {}): PretrainConfig {
  return resolveConfig({
    preset: "smoke",
    backend: BACKEND,
    finalEval: "none",
    outDir,
    ...extra,
  });
}

/** Lr schedule of the smoke preset by hand: peak 1.5e-3 * 32 / 256, 4 warmup steps of 16. */
function smokeLr(step: number): number {
  const peak = 1.5e-3 * 32 / 256, warm = 4, total = 16;
  return step < warm
    ? peak * step / warm
    : peak * 0.5 * (1 + Math.cos(Math.PI * (step - warm) / (total - warm)));
}

const tmpDirs: string[] = [];
removeOnUnload(tmpDirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_train_test_" });
  tmpDirs.push(d);
  return d;
}

/** The uninterrupted smoke run (2 epochs, 16 steps) the resume tests compare with. */
let reference: Promise<string> | undefined;
function referenceRun(): Promise<string> {
  reference ??= (async () => {
    const dir = await tempDir();
    const r = await pretrain(smoke(dir), quiet);
    assertEquals([r.status, r.steps], ["done", 16]);
    return dir;
  })();
  return reference;
}

// ---------- (1) resume ----------

Deno.test("resume: stopped by hooks.signal (at a kNN + checkpoint step) then resumed = uninterrupted", async () => {
  const ref = await referenceRun();
  const refLog = await readCsv(`${ref}/log.csv`);
  assertContiguous(refLog, 16, "reference log");
  refLog.forEach((r, i) => assertAlmostEquals(r.lr, smokeLr(i), 1e-9, `lr of step ${i}`));

  const dir = await tempDir();
  const signal = { stop: false };
  // Stop after 8 steps: the end of epoch 1, where the kNN monitor and a checkpoint are due.
  const first = await pretrain(smoke(dir), {
    ...quiet,
    signal,
    onStep: (row) => {
      if (row.step === 7) signal.stop = true;
    },
  });
  assertEquals([first.status, first.steps], ["stopped", 8]);
  assertEquals((await readSafetensors(`${dir}/checkpoint.safetensors`)).metadata.step, "8");
  const lines: string[] = [];
  const second = await pretrain(smoke(dir), { print: (s) => lines.push(s) });
  assertEquals([second.status, second.steps], ["done", 16]);
  assert(lines.some((l) => l.includes("resumed") && l.includes("at step 8")), lines.join("\n"));

  const log = await readCsv(`${dir}/log.csv`);
  assertContiguous(log, 16, "resumed log");
  assertSameRows(log, refLog, "log.csv");
  // The kNN row of step 8 is there once: the stop came before that monitor began, so the
  // resumed run measured it first.
  assertSameRows(await readCsv(`${dir}/knn.csv`), await readCsv(`${ref}/knn.csv`), "knn.csv");
  assertEquals((await readCsv(`${dir}/knn.csv`)).map((r) => r.step), [8]);
  await assertSameTensors(`${dir}/checkpoint.safetensors`, `${ref}/checkpoint.safetensors`);
  await assertSameTensors(`${dir}/backbone.safetensors`, `${ref}/backbone.safetensors`);
});

Deno.test("resume: a run cut by maxSteps continues with maxSteps 0 exactly", async () => {
  const ref = await referenceRun();
  const dir = await tempDir();
  const a = await pretrain(smoke(dir, { maxSteps: 5 }), quiet);
  assertEquals(a.steps, 5);
  assertContiguous(await readCsv(`${dir}/log.csv`), 5, "first part");
  // maxSteps may change on resume (it does not change the run's result).
  const b = await pretrain(smoke(dir, { maxSteps: 0 }), quiet);
  assertEquals([b.status, b.steps], ["done", 16]);
  const log = await readCsv(`${dir}/log.csv`);
  assertContiguous(log, 16, "resumed log");
  assertSameRows(log, await readCsv(`${ref}/log.csv`), "log.csv");
  await assertSameTensors(`${dir}/checkpoint.safetensors`, `${ref}/checkpoint.safetensors`);
});

// ---------- (2) divergence ----------

Deno.test("divergence: injectNanAt stops with DivergenceError; the last good checkpoint is kept", async () => {
  const dir = await tempDir();
  const n0 = tf.memory().numTensors;
  const e = await assertRejects(
    () => pretrain(smoke(dir, { injectNanAt: 6 }), quiet),
    DivergenceError,
  );
  assertStringIncludes(e.message, "at step 7/16 (epoch 1)"); // 0-based step 6, as the bar counts
  assertStringIncludes(e.message, "patch_embed"); // the first layer whose gradient went NaN
  assertStringIncludes(e.message, `The last checkpoint (step 4) is ${dir}/checkpoint.safetensors`);
  assertStringIncludes(e.message, "--on-nan rollback");
  // Checkpoints are every 4 steps: the one of step 4 is intact and finite.
  for (const file of ["checkpoint.safetensors", "backbone.safetensors"]) {
    const { tensors, metadata } = await readTensors(`${dir}/${file}`);
    assertEquals(metadata.step, "4", file);
    for (const [k, v] of Object.entries(tensors)) {
      assert(v.every(Number.isFinite), `${file}: ${k} holds non-finite values`);
    }
  }
  assertContiguous(await readCsv(`${dir}/log.csv`), 6, "log up to the bad step");
  assertEquals(tf.memory().numTensors, n0, "no tensors left behind by the failed run");
});

Deno.test("divergence: onNan rollback restores the checkpoint and continues with lr x factor", async () => {
  const ref = await referenceRun();
  const refLog = await readCsv(`${ref}/log.csv`);
  const dir = await tempDir();
  const lines: string[] = [];
  // A guard against an endless replay of the bad step: stop after 40 steps in all.
  const signal = { stop: false };
  let stepsRun = 0;
  const r = await pretrain(
    smoke(dir, { injectNanAt: 6, onNan: "rollback", nanLrFactor: 0.5 }),
    { print: (s) => lines.push(s), signal, onStep: () => signal.stop = ++stepsRun >= 40 },
  );
  assertEquals([r.status, r.steps], ["done", 16]);
  assertEquals(stepsRun, 16 + 2, "steps 4 and 5 are run twice");
  assert(
    lines.some((l) => l.includes("rolled back to the checkpoint at step 4")),
    lines.join("\n"),
  );
  const log = await readCsv(`${dir}/log.csv`);
  assertContiguous(log, 16, "log after rollback");
  for (const row of log) {
    const expected = smokeLr(row.step) * (row.step < 4 ? 1 : 0.5);
    assertAlmostEquals(row.lr, expected, 1e-9, `lr of step ${row.step}`);
  }
  // Steps 0-4 see the same weights as the reference (step 4 starts from the restored
  // checkpoint); step 5 follows an update with half the lr.
  assertSameRows(log.slice(0, 4), refLog.slice(0, 4), "before the rollback");
  assertAlmostEquals(log[4].loss, refLog[4].loss, 1e-6, "step 4 starts from the checkpoint");
  assertNotEquals(log[5].loss, refLog[5].loss);
  const { metadata } = await readSafetensors(`${dir}/checkpoint.safetensors`);
  assertEquals([metadata.step, metadata.lr_scale], ["16", "0.5"]);
});

// ---------- (3) config mismatch ----------

Deno.test("resume into a directory of another config is refused unless forced", async () => {
  const dir = await tempDir();
  await pretrain(smoke(dir, { maxSteps: 2 }), quiet);
  const other = smoke(dir, { maxSteps: 3, baseLr: 3e-3, temperature: 0.1 });
  const e = await assertRejects(() => pretrain(other, quiet), Error);
  assertEquals(e.name, "ConfigError");
  assertStringIncludes(e.message, `${dir} belongs to a different config`);
  assertStringIncludes(e.message, "baseLr: run has 0.0015, now 0.003");
  assertStringIncludes(e.message, "temperature: run has 0.2, now 0.1");
  assertStringIncludes(e.message, "--force");
  assert(!e.message.includes("maxSteps"), "maxSteps may change on resume");
  // Nothing was changed by the refusal.
  assertContiguous(await readCsv(`${dir}/log.csv`), 2, "log after the refusal");
  // Forced: resumes at step 2 with the new config.
  const lines: string[] = [];
  const r = await pretrain(other, { force: true, print: (s) => lines.push(s) });
  assertEquals(r.steps, 3);
  assert(lines.some((l) => l.includes("at step 2")), lines.join("\n"));
  assertContiguous(await readCsv(`${dir}/log.csv`), 3, "log after the forced resume");
});

// ---------- (4) a short run that learns ----------

/** The first `n` images of a fixed permutation of a split. */
function subset(ds: Dataset, n: number, seed: number): Dataset {
  const idx = permutation(ds.length, createRng(seed)).subarray(0, n);
  const { images, labels } = getBatch(ds, idx);
  return { ...ds, length: n, images, labels };
}

Deno.test("a short Fashion-MNIST run learns: loss falls, kNN above chance and above random init", async () => {
  // 150 steps of batch 128 (about 30 s of CPU). The synthetic set is no good for this check:
  // with the paper's augmentation MoCo first learns the per-image brightness of its shapes
  // (class-independent), and kNN falls below the random-init model in a run of this length.
  const dir = await tempDir();
  const cfg = resolveConfig({
    preset: "smoke",
    dataset: "fmnist",
    backend: BACKEND,
    outDir: dir,
    batchSize: 128,
    hidden: 256,
    outDim: 128,
    epochs: 1,
    warmupEpochs: 0.05,
    maxSteps: 150,
    checkpointEvery: 1000,
    knnEvery: 0,
    finalEval: "none",
  });
  const [train, test] = await loadSplits(cfg);
  const bank = subset(train, 5000, 1), queries = subset(test, 1000, 2);
  const stats = datasetStats(train);
  const knn = async (model: Parameters<typeof extractFeatures>[0]) => {
    const opts = { mean: stats.mean, std: stats.std };
    const f1 = await extractFeatures(model, bank, opts);
    const f2 = await extractFeatures(model, queries, opts);
    const [r] = await knnClassify(f1, f2, { k: 20, numClasses: 10 });
    return 100 * r.top1;
  };
  // The same model at random init: same framework, config and seed as the run builds.
  const init = createFramework(cfg.framework, backboneConfig(cfg, train), {
    hidden: cfg.hidden,
    outDim: cfg.outDim,
    temperature: cfg.temperature,
  }, cfg.seed);
  const initTop1 = await knn(init.backbone);
  init.dispose();

  const r = await pretrain(cfg, quiet);
  assertEquals(r.steps, 150);
  const trained = await loadBackbone(`${dir}/backbone.safetensors`);
  const top1 = await knn(trained);
  tf.dispose(Object.values(trained.params));

  const loss = (await readCsv(`${dir}/log.csv`)).map((row) => row.loss);
  const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
  const early = mean(loss.slice(0, 30)), late = mean(loss.slice(-30));
  const msg = `loss ${early.toFixed(3)} -> ${late.toFixed(3)}, kNN top-1 ` +
    `${initTop1.toFixed(1)}% at init -> ${top1.toFixed(1)}%`;
  console.log(msg);
  assert(late < early - 0.15, `the loss should fall: ${msg}`);
  assert(top1 > 10 + 40, `kNN should be far above chance (10%): ${msg}`);
  assert(top1 > initTop1 + 3, `kNN should beat the random-init model: ${msg}`);
});

// ---------- (5) CLI errors ----------

/** Runs `fn` with console.log silenced (the CLI prints progress). */
async function silently<T>(fn: () => Promise<T>): Promise<T> {
  const log = console.log;
  console.log = () => {};
  try {
    return await fn();
  } finally {
    console.log = log;
  }
}

/** Runs the CLI's main in process and returns the error it throws. */
async function cliError(args: string[]): Promise<Error> {
  const dir = await tempDir();
  const e = await assertRejects(() =>
    silently(() =>
      main(["--preset", "smoke", "--backend", BACKEND, "--out", `${dir}/run`, ...args])
    )
  );
  assertInstanceOf(e, Error);
  return e;
}

Deno.test("CLI: bad input gives an error naming the cause and the fix", async () => {
  const cases: [string[], string, string[]][] = [
    [["--dataset", "imagenet"], "UsageError", ["--dataset", '"imagenet"', "fmnist, cifar10"]],
    [["--bacth", "64"], "UsageError", ["--bacth", "did you mean --batch?", "--help"]],
    [["--batch", "abc"], "UsageError", ["--batch must be a number", '"abc"']],
    [["--batch", "1"], "UsageError", ["--batch must be >= 2", "BatchNorm"]],
    [["--lr", "-1"], "UsageError", ["--lr must be > 0", "-1"]],
    [["--lr=-0.5"], "UsageError", ["--lr must be > 0", "-0.5"]],
    [["--epochs", "2.5"], "UsageError", ["--epochs must be a whole number"]],
    [["--preset", "nope"], "UsageError", ['unknown --preset "nope"', "smoke"]],
    [["--framework", "mocov4"], "UsageError", [
      'unknown --framework "mocov4"',
      "did you mean mocov3?",
    ]],
    [["--dataset", "cifar10"], "ConfigError", ["--data-root DIR", "data_batch_1.bin"]],
    [
      ["--dataset", "cifar10", "--data-root", "/nonexistent/cifar"],
      "DataError",
      ["/nonexistent/cifar does not exist", "download", "cifar-10-binary.tar.gz"],
    ],
  ];
  for (const [args, name, parts] of cases) {
    const e = await cliError(args);
    assertEquals(e.name, name, `${args.join(" ")}: ${e.message}`);
    for (const p of parts) assertStringIncludes(e.message, p, args.join(" "));
  }
});

Deno.test("CLI: a bad flag exits with code 2 and one error line, no stack trace", async () => {
  const out = await cli(["--bacth", "64"]).output();
  const err = new TextDecoder().decode(out.stderr).trim();
  assertEquals(out.code, 2, err);
  assertEquals(
    err,
    "error: unknown flag --bacth: did you mean --batch? (run with --help to list the flags)",
  );
});

// ---------- (6) SIGKILL and resume ----------

async function waitFor(cond: () => Promise<boolean>, what: string, timeoutMs = 60_000) {
  const start = performance.now();
  while (!(await cond())) {
    if (performance.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function countRows(path: string): Promise<number> {
  try {
    return (await Deno.readTextFile(path)).split("\n").length - 2;
  } catch {
    return 0;
  }
}

Deno.test("CLI: SIGKILL after a checkpoint, then --resume, ends as an uninterrupted run", async () => {
  const killed = await tempDir(), whole = await tempDir();
  const flags = [
    "--preset",
    "smoke",
    "--backend",
    BACKEND,
    "--epochs",
    "4",
    "--ckpt-every",
    "3",
    "--final-eval",
    "none",
  ];
  const total = 32; // 4 epochs of 256 / 32
  const child = cli([...flags, "--out", killed], "null").spawn();
  const ckpt = `${killed}/checkpoint.safetensors`;
  try {
    // Kill once a checkpoint exists and the log has run past it (rows to cut on resume).
    await waitFor(async () => {
      try {
        await Deno.stat(ckpt);
      } catch {
        return false;
      }
      return (await countRows(`${killed}/log.csv`)) >= 5;
    }, "the first checkpoint");
    child.kill("SIGKILL");
  } finally {
    const status = await child.status;
    assertEquals(status.signal, "SIGKILL", "the child must be killed, not finish");
  }
  const at = Number((await readSafetensors(ckpt)).metadata.step);
  assert(at > 0 && at < total, `checkpoint step ${at}`);
  assert((await countRows(`${killed}/log.csv`)) < total);

  // Resume in a child process, and the uninterrupted run in this one (same flags, same backend).
  const resumed = await cli(["--resume", killed]).output();
  const text = new TextDecoder().decode(resumed.stdout);
  assertEquals(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
  assertStringIncludes(text, `resumed ${killed} at step ${at}/${total}`);
  assertEquals(await silently(() => main([...flags, "--out", whole])), 0);

  const rows = await readCsv(`${killed}/log.csv`);
  assertContiguous(rows, total, "log after kill and resume");
  assertSameRows(rows, await readCsv(`${whole}/log.csv`), "log.csv");
  const knnRows = await readCsv(`${killed}/knn.csv`);
  assertEquals(knnRows.map((r) => r.step), [8, 16, 24]);
  assertSameRows(knnRows, await readCsv(`${whole}/knn.csv`), "knn.csv");
  await assertSameTensors(ckpt, `${whole}/checkpoint.safetensors`);
  await assertSameTensors(`${killed}/backbone.safetensors`, `${whole}/backbone.safetensors`);
});
