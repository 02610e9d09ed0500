/**
 * Runs a suite of {@link SUITES} at a budget: each run of its grid trains with `pretrain` in its
 * own directory (`<runsDir>/<run id>`), gets a final kNN evaluation, and adds one row to
 * `<resultsDir>/<suite>.csv`, plus its kNN curve and gradient trace to `<suite>.curves.csv`
 * (tracked, so the figures rebuild without the run directories).
 *
 * Resumable at every level: a run whose directory holds `result.json` is complete and skipped; a
 * run stopped midway resumes from its checkpoint (`pretrain` does that); a row whose run id is
 * already in the table is not added again. Interrupt and re-run the same command at will.
 *
 * @example
 * ```ts
 * import { runSuite } from "./run.ts";
 * const res = await runSuite("posemb", "smoke", { resultsDir: "/tmp/r", runsDir: "/tmp/runs" });
 * res.rows.map((r) => [r.run_id, r.knn_top1]);
 * ```
 * @module
 */
import * as aq from "arquero";
import type { BackendName } from "../backends/mod.ts";
import { loadBackbone } from "../train/checkpoint.ts";
import { checkpointCacheKey, extractFeatures } from "../eval/features.ts";
import { datasetStats } from "../data/stats.ts";
import { KNN_TEMPERATURE, knnClassify } from "../eval/knn.ts";
import { linearProbe } from "../eval/linear.ts";
import { initBackend, withFp32Matmuls } from "../backends/mod.ts";
import { readRunLogs, RUN_FILES } from "../train/rundir.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { fileSystemErrorOr } from "../io/fs_errors.ts";
import { pathExists } from "../io/exists.ts";
import { lockRunDir, type RunLock, RunLockedError } from "../io/lock.ts";
import { appendTableRows, curvesFile, readTable, suiteFile } from "./tables.ts";
import { dipReport, dipThreshold } from "./stability.ts";
import { pretrain, type PretrainConfig, resolveConfig } from "../train/pretrain.ts";
import { backboneConfig, loadSplits } from "../train/setup.ts";
import { DivergenceError } from "../train/run_checkpoints.ts";
import { countParams, createViT, disposeViT, type ViT, vitFlops } from "../model/vit.ts";
import { ConfigError } from "../core/errors.ts";
import { StoppedError, type StopSignal } from "../core/stop.ts";
import {
  type Budget,
  BUDGET_SPECS,
  budgetConfigs,
  getSuite,
  type PlannedRun,
  SUITE_NAMES,
  suiteGrid,
  SUITES,
  suitesAt,
} from "./suites.ts";

/** Default directory of the result tables. */
export const RESULTS_DIR = "data/results";
/** Default directory of the experiments' run directories (gitignored). */
export const RUNS_DIR = "data/runs/experiments";

/** One row of `<suite>.csv`: the run, its varied fields and seed, final evaluation and costs. */
export interface SuiteRow {
  suite: string;
  run_id: string;
  budget: Budget;
  /** The suite's varied fields (`batchSize`, `posEmb` ...) are further columns. */
  [field: string]: string | number | boolean;
  /** The run's seed: rows of one suite with the same seed pair up. */
  seed: number;
  /** True for the untrained baseline (the base config's backbone at its random init). */
  random_init: boolean;
  /** True when training stopped on a non-finite loss: the numbers are its last checkpoint's. */
  diverged: boolean;
  /**
   * Final linear probe top-1 / top-5 (percent): trained on the frozen features of the whole
   * train split, evaluated on the whole test split (the paper's metric); NaN with no probe.
   */
  linear_top1: number;
  linear_top5: number;
  /** Epochs of that probe. */
  linear_epochs: number;
  /** Final kNN top-1 / top-5 (percent) with k neighbours, on a bank and queries of these sizes. */
  knn_top1: number;
  knn_top5: number;
  knn_k: number;
  knn_train_size: number;
  knn_test_size: number;
  /**
   * Backbone parameters: every tensor but the fixed sin-cos table, so a frozen (random) patch
   * projection counts. Not `countParams(model.params)`, the trainable count, which leaves a frozen
   * patch projection out: this column keeps the count recorded in `data/results/*.csv`.
   */
  params: number;
  /** Forward FLOPs per image of the backbone (`vitFlops`, a multiply-add counts 2). */
  flops: number;
  steps: number;
  /** Training images seen (steps x batch). */
  images: number;
  /** Wall-clock seconds of the invocation that completed the run (training + final kNN). */
  seconds: number;
  /** Median training throughput from `log.csv`. */
  images_per_s: number;
  backend: string;
  /** Dips of the kNN monitor curve (`findDips`, depth >= 1 point) and the deepest, in points. */
  dips: number;
  max_dip: number;
  /** Point-to-point noise of the monitor curve (`curveNoise`); dips need depth >> noise. */
  knn_noise: number;
  /** Spikes of the patch projection's gradient norm (>= 3x its median). */
  grad_spikes: number;
  /** Dips preceded by such a spike (in the monitor interval before the dip's start). */
  dips_after_spike: number;
  run_dir: string;
  /** ISO 8601. */
  date: string;
}

/** One row of `<suite>.curves.csv`: a kNN monitor point or a training step of one run. */
export interface CurveRow {
  run_id: string;
  /** `knn` (top1/top5 set) or `step` (loss and gradient norms set). */
  kind: "knn" | "step";
  step: number;
  /** Training images seen at this point (step x batch). */
  images: number;
  top1: number | null;
  top5: number | null;
  loss: number | null;
  grad_patch: number | null;
  grad_first_block: number | null;
  grad_last_block: number | null;
  grad_total: number | null;
}

const CURVE_COLUMNS: (keyof CurveRow)[] = [
  "run_id",
  "kind",
  "step",
  "images",
  "top1",
  "top5",
  "loss",
  "grad_patch",
  "grad_first_block",
  "grad_last_block",
  "grad_total",
];

/** Options of {@link runSuite}. */
export interface RunSuiteOptions {
  /** Where `<suite>.csv` and `<suite>.curves.csv` go. Default `data/results`. */
  resultsDir?: string;
  /** Where the run directories go. Default `data/runs/experiments`. */
  runsDir?: string;
  /** Tensor backend of every run (default: the budget's config, i.e. `auto`). */
  backend?: BackendName;
  /** Progress lines (default: console). */
  print?: (line: string) => void;
  /**
   * Set `.stop = true` to stop after the current step (checkpointed) or evaluation batch; re-run
   * to resume (a stopped evaluation runs again).
   */
  signal?: StopSignal;
  /** Threads of each run's backend (0: the backend's default, every core on native). */
  threads?: number;
  /**
   * One of several processes sharing a suite (`deno task experiments --jobs N`): skip the runs
   * that another process holds (their directory's lock), and write only each run's
   * `result.json`; the parent records the rows once every process is done.
   */
  worker?: boolean;
  /**
   * Only the run at this index of the plan (`deno task experiments --index I`, a Slurm array
   * task): it is trained (or resumed, or skipped when complete) and its row appended like a
   * whole suite's, under the results lock that serialises the table writes of every process.
   */
  index?: number;
}

/** What {@link runSuite} returns. */
export interface SuiteResult {
  suite: string;
  budget: Budget;
  /** A row per run of the grid (complete runs), in grid order. */
  rows: SuiteRow[];
  /** Run ids trained (or resumed) now, and those found complete and skipped. */
  ran: string[];
  skipped: string[];
  /** Wall-clock seconds of this call. */
  seconds: number;
  /** False when stopped by the signal before every run was complete. */
  complete: boolean;
}

/**
 * Runs every run of a suite at a budget (skipping complete ones) and records them.
 *
 * @example
 * ```ts
 * await runSuite("stability", "cpu"); // data/results/stability.csv, figures via deno task figures
 * ```
 */
export async function runSuite(
  name: string,
  budget: Budget,
  opts: RunSuiteOptions = {},
): Promise<SuiteResult> {
  const suite = getSuite(name);
  const resultsDir = opts.resultsDir ?? RESULTS_DIR;
  const runsDir = opts.runsDir ?? RUNS_DIR;
  const print = opts.print ?? ((s: string) => console.log(s));
  const signal = opts.signal ?? { stop: false };
  const t0 = performance.now();
  const plan = budgetConfigs(suite.name, budget);
  const result: SuiteResult = {
    suite: suite.name,
    budget,
    rows: [],
    ran: [],
    skipped: [],
    seconds: 0,
    complete: true,
  };
  const extra = { ...(opts.backend ? { backend: opts.backend } : {}), threads: opts.threads ?? 0 };
  if (opts.index !== undefined && !(opts.index >= 0 && opts.index < plan.length)) {
    throw new ConfigError(
      `--index ${opts.index} is not a run of ${suite.name} at budget ${budget}: choose 0 to ` +
        `${plan.length - 1}`,
    );
  }
  // Rows already recorded win (as for --status): their runs are not trained again, wherever
  // (or whether) their run directories are.
  const table = await readTable(suiteFile(resultsDir, suite.name));
  const recorded = new Map(
    (table.numRows() ? table.objects() as SuiteRow[] : []).map((r) => [String(r.run_id), r]),
  );
  for (const [i, run] of plan.entries()) {
    if (opts.index !== undefined && i !== opts.index) continue;
    const dir = `${runsDir}/${run.runId}`;
    let row = await readJson<SuiteRow>(`${dir}/${RUN_FILES.result}`);
    if (row) await checkPlanned(dir, run);
    if (!row && recorded.has(run.runId)) {
      result.skipped.push(run.runId);
      result.rows.push(recorded.get(run.runId)!);
      if (!opts.worker) {
        print(`[${suite.name} ${i + 1}/${plan.length}] ${run.runId}: recorded, skipped`);
      }
      continue;
    }
    if (row) {
      result.skipped.push(run.runId);
      if (!opts.worker) {
        print(`[${suite.name} ${i + 1}/${plan.length}] ${run.runId}: complete, skipped`);
      }
    } else {
      let lock: RunLock;
      try {
        lock = await lockRunDir(dir, {
          dirFlag: "--runs-dir",
          lockedHint: "; to train one suite's runs side by side, give one command --jobs N",
        });
      } catch (e) {
        if (!(opts.worker && e instanceof RunLockedError)) throw e;
        continue; // another process of this suite trains it
      }
      print(`[${suite.name} ${i + 1}/${plan.length}] ${run.runId}`);
      try {
        const cfg = resolveConfig({ ...run.config, outDir: dir, ...extra });
        row = await trainAndEvaluate(suite.name, budget, run, cfg, lock, print, signal);
      } finally {
        lock.release();
      }
      if (!row) {
        result.complete = false;
        break;
      }
      result.ran.push(run.runId);
      print(
        `[${suite.name} ${i + 1}/${plan.length}] linear top-1 ${row.linear_top1.toFixed(2)}%, ` +
          `kNN-20 ${row.knn_top1.toFixed(2)}% (${row.seconds.toFixed(0)} s, ${row.dips} dips` +
          `${row.diverged ? ", diverged" : ""})`,
      );
    }
    result.rows.push(row);
    if (opts.worker) continue;
    const curves = await runCurves(run.runId, dir);
    await withResultsLock(resultsDir, suite.name, async () => {
      await appendSuiteRows(suiteFile(resultsDir, suite.name), [row]);
      await appendCurves(curvesFile(resultsDir, suite.name), curves);
    });
  }
  result.seconds = (performance.now() - t0) / 1000;
  return result;
}

/**
 * Runs `fn` holding an exclusive lock on `<resultsDir>/.<suite>.lock` (waiting for it): the
 * processes of one suite (Slurm array tasks, a local run beside them) rewrite its tables one
 * at a time, so no row is lost to a concurrent rewrite. The OS releases it if a holder dies.
 */
async function withResultsLock(
  resultsDir: string,
  suite: string,
  fn: () => Promise<void>,
): Promise<void> {
  const path = `${resultsDir}/.${suite}.lock`;
  let file: Deno.FsFile;
  try {
    await Deno.mkdir(resultsDir, { recursive: true });
    file = await Deno.open(path, { write: true, create: true });
  } catch (e) {
    throw fileSystemErrorOr(e, path, `cannot record the ${suite} rows in ${resultsDir}`);
  }
  try {
    await file.lock(true);
    await fn();
  } finally {
    file.close();
  }
}

/** Fields a complete run may differ in from its plan (they do not change its result). */
const FREE = new Set(["backend", "threads", "outDir", "checkpointEvery"]);

/**
 * Refuses to reuse a complete run whose saved config differs from the plan (the suite or budget
 * was edited since): its row would describe another experiment.
 */
async function checkPlanned(dir: string, run: PlannedRun): Promise<void> {
  const saved = (await readJson<{ config: Record<string, unknown> }>(`${dir}/${RUN_FILES.config}`))
    ?.config;
  if (!saved) return;
  const diffs = Object.entries(run.config)
    .filter(([k, v]) => !FREE.has(k) && JSON.stringify(saved[k]) !== JSON.stringify(v))
    .map(([k, v]) => `${k}: run has ${JSON.stringify(saved[k])}, plan has ${JSON.stringify(v)}`);
  if (diffs.length) {
    throw new ConfigError(
      `${dir} is complete but was run with another config (${diffs.join("; ")}): the suite or ` +
        "budget changed since. Delete that run directory (and its rows in the results tables) " +
        "to redo it, or choose another --runs-dir",
    );
  }
}

/**
 * Trains (or resumes) one run under its directory's lock, evaluates it and writes `result.json`;
 * null if stopped.
 */
async function trainAndEvaluate(
  suite: string,
  budget: Budget,
  run: PlannedRun,
  cfg: PretrainConfig,
  lock: RunLock,
  print: (s: string) => void,
  signal: StopSignal,
): Promise<SuiteRow | null> {
  const dir = cfg.outDir;
  const t0 = performance.now();
  let steps = 0, backendName = "";
  let diverged = false;
  let weights = `${dir}/${RUN_FILES.backbone}`;
  if (run.randomInit) {
    backendName = (await initBackend({ backend: cfg.backend, threads: cfg.threads || undefined }))
      .summary;
    await writeFileAtomic(
      `${dir}/${RUN_FILES.config}`,
      new TextEncoder().encode(JSON.stringify({ config: cfg, randomInit: true }, null, 2) + "\n"),
    );
  } else {
    try {
      const res = await pretrain(cfg, { lock, signal, print: (line) => print(`  ${line}`) });
      if (res.status !== "done") return null;
      steps = res.steps;
      backendName = res.backend;
    } catch (e) {
      if (!(e instanceof DivergenceError)) throw e;
      // A failed run is a result of the study: its last good checkpoint is evaluated.
      print(`  diverged: ${e.message}`);
      diverged = true;
      weights = `${dir}/${RUN_FILES.checkpoint}`;
    }
  }
  let ev;
  try {
    ev = await withFp32Matmuls(() =>
      finalEvaluation(cfg, dir, run, weights, BUDGET_SPECS[budget].linearEpochs, signal)
    );
  } catch (e) {
    if (!(e instanceof StoppedError)) throw e;
    print(`  ${e.message}; its training is checkpointed, the evaluation runs again on a re-run`);
    return null;
  }
  const seconds = (performance.now() - t0) / 1000;
  const { log, knn: knnRows } = run.randomInit ? { log: [], knn: [] } : await readRunLogs(dir);
  if (diverged) steps = log.length ? log[log.length - 1].step + 1 : 0;
  const curve = knnRows.map((r) => ({ step: r.step, acc: r.top1 }));
  const report = monitorReport(curve, log);
  const varied: Record<string, string | number | boolean> = {};
  for (const f of getSuite(suite).fields) {
    if (!run.randomInit) varied[f] = cfg[f] as string | number | boolean;
  }
  const row: SuiteRow = {
    suite,
    run_id: run.runId,
    budget,
    ...varied,
    seed: run.seed,
    random_init: run.randomInit,
    diverged,
    linear_top1: ev.linearTop1,
    linear_top5: ev.linearTop5,
    linear_epochs: ev.linearEpochs,
    knn_top1: ev.knnTop1,
    knn_top5: ev.knnTop5,
    knn_k: FINAL_KNN_K,
    knn_train_size: ev.trainSize,
    knn_test_size: ev.testSize,
    params: ev.params,
    flops: ev.flops,
    steps,
    images: steps * cfg.batchSize,
    seconds: round(seconds, 1),
    images_per_s: round(median(log.map((r) => r.images_per_s)), 1),
    backend: backendName,
    dips: report.dips.length,
    max_dip: round(Math.max(0, ...report.dips.map((d) => d.depth)), 2),
    knn_noise: round(report.noise, 3),
    grad_spikes: report.spikes.length,
    dips_after_spike: report.dips.filter((d) => d.spike).length,
    run_dir: dir,
    date: new Date().toISOString(),
  };
  await writeFileAtomic(
    `${dir}/${RUN_FILES.result}`,
    new TextEncoder().encode(JSON.stringify(row, null, 2) + "\n"),
  );
  return row;
}

/** Neighbours of the final kNN (the paper's kNN monitor and DINO's k). */
export const FINAL_KNN_K = 20;

/**
 * Dips of a monitor curve with the gradient spikes before them, counting only dips deeper than
 * both 1 point and five times the curve's own point-to-point noise (see `stability.ts`).
 */
function monitorReport(curve: { step: number; acc: number }[], log: { step: number }[]) {
  if (curve.length < 3 || log.length === 0) return { dips: [], spikes: [], noise: NaN };
  return dipReport(curve, log, { minDepth: dipThreshold(curve) });
}

/**
 * The final evaluation of a run, the paper's metric on frozen features: the features of the
 * whole train and test splits (cached in the run directory), kNN-20 with the whole train split as
 * the bank, and a linear probe of `linearEpochs` epochs (none at 0). A random-init run evaluates
 * the base config's backbone at the run's seed; the others the saved weights.
 */
async function finalEvaluation(
  cfg: PretrainConfig,
  dir: string,
  run: PlannedRun,
  weights: string,
  linearEpochs: number,
  signal: StopSignal,
) {
  const [train, test] = await loadSplits(cfg);
  // A run that diverged before its first checkpoint is evaluated at its initialisation.
  const atInit = run.randomInit || !(await pathExists(weights));
  const model: ViT = atInit
    ? createViT(backboneConfig(cfg, train), run.seed)
    : await loadBackbone(weights);
  try {
    const stats = datasetStats(train);
    const cacheKey = atInit
      ? `random-init:${JSON.stringify(model.config)}:seed-${run.seed}`
      : await checkpointCacheKey(weights);
    const extract = {
      mean: stats.mean,
      std: stats.std,
      cacheDir: `${dir}/features`,
      cacheKey,
      signal,
    };
    const fTrain = await extractFeatures(model, train, extract);
    const fTest = await extractFeatures(model, test, extract);
    const [knn] = await knnClassify(fTrain, fTest, {
      k: [FINAL_KNN_K],
      temperature: KNN_TEMPERATURE,
      numClasses: train.classes.length,
      signal,
    });
    const linear = linearEpochs > 0
      ? await linearProbe(fTrain, fTest, {
        epochs: linearEpochs,
        seed: run.seed,
        numClasses: train.classes.length,
        signal,
      })
      : { top1: NaN, top5: NaN };
    // The `params` column's count (see SuiteRow.params): learned or frozen, sin-cos excluded.
    const learnedOrFrozen = Object.fromEntries(
      Object.entries(model.params).filter(([n]) => !(n === "pos_embed" && cfg.posEmb === "sincos")),
    );
    return {
      knnTop1: round(100 * knn.top1, 2),
      knnTop5: round(100 * knn.top5, 2),
      linearTop1: round(100 * linear.top1, 2),
      linearTop5: round(100 * linear.top5, 2),
      linearEpochs,
      trainSize: train.length,
      testSize: test.length,
      params: countParams(learnedOrFrozen, { includeFrozen: true }),
      flops: vitFlops(model.config),
    };
  } finally {
    disposeViT(model);
  }
}

/** A run's kNN curve and per-step gradient trace as {@link CurveRow}s. */
async function runCurves(runId: string, dir: string): Promise<CurveRow[]> {
  const cfg = (await readJson<{ config: PretrainConfig }>(`${dir}/${RUN_FILES.config}`))?.config;
  const batch = cfg?.batchSize ?? 0;
  const { log, knn: knnRows } = await readRunLogs(dir);
  const none = {
    top1: null,
    top5: null,
    loss: null,
    grad_patch: null,
    grad_first_block: null,
    grad_last_block: null,
    grad_total: null,
  };
  return [
    ...knnRows.map((r): CurveRow => ({
      ...none,
      run_id: runId,
      kind: "knn",
      step: r.step,
      images: r.step * batch,
      top1: r.top1,
      top5: r.top5,
    })),
    // log.csv row s is the update from s to s + 1; it has seen (s + 1) batches afterwards.
    ...log.map((r): CurveRow => ({
      ...none,
      run_id: runId,
      kind: "step",
      step: r.step,
      images: (r.step + 1) * batch,
      loss: r.loss,
      grad_patch: r.grad_patch,
      grad_first_block: r.grad_first_block,
      grad_last_block: r.grad_last_block,
      grad_total: r.grad_total,
    })),
  ];
}

/** The row columns in file order: fixed ones around the suite's varied fields. */
function rowColumns(row: SuiteRow, fields: string[] = []): string[] {
  const head = ["suite", "run_id", "budget"];
  const tail = [
    "seed",
    "random_init",
    "diverged",
    "linear_top1",
    "linear_top5",
    "linear_epochs",
    "knn_top1",
    "knn_top5",
    "knn_k",
    "knn_train_size",
    "knn_test_size",
    "params",
    "flops",
    "steps",
    "images",
    "seconds",
    "images_per_s",
    "backend",
    "dips",
    "max_dip",
    "knn_noise",
    "grad_spikes",
    "dips_after_spike",
    "run_dir",
    "date",
  ];
  const rest = Object.keys(row).filter((k) => !head.includes(k) && !tail.includes(k));
  return [...head, ...new Set([...fields, ...rest]), ...tail];
}

/**
 * Appends suite rows to `<suite>.csv` through arquero, skipping run ids already present (so a
 * re-run adds no duplicates). Returns how many rows were added.
 */
export async function appendSuiteRows(file: string, rows: SuiteRow[]): Promise<number> {
  if (rows.length === 0) return 0;
  const fields = SUITES[rows[0].suite]?.fields ?? [];
  return await appendTableRows(
    file,
    rowColumns(rows[0], fields as string[]),
    rows as Record<string, unknown>[],
  );
}

/** Appends a run's curve rows unless that run id is present already. */
async function appendCurves(file: string, rows: CurveRow[]): Promise<number> {
  if (rows.length === 0) return 0;
  return await appendTableRows(file, CURVE_COLUMNS, rows as unknown as Record<string, unknown>[]);
}

/** One row per suite run: how long it took (for the README and the budget planning). */
export async function recordSuiteTime(resultsDir: string, r: SuiteResult): Promise<void> {
  const file = `${resultsDir}/suite_times.csv`;
  const existing = await readTable(file);
  const row = {
    suite: r.suite,
    budget: r.budget,
    runs: r.rows.length,
    ran: r.ran.length,
    skipped: r.skipped.length,
    seconds: round(r.seconds, 1),
    train_seconds: round(r.rows.reduce((s, x) => s + x.seconds, 0), 1),
    complete: r.complete,
    date: new Date().toISOString(),
  };
  const all = [...(existing.objects() as Record<string, unknown>[]), row];
  await Deno.mkdir(resultsDir, { recursive: true });
  await writeFileAtomic(file, new TextEncoder().encode(aq.from(all).toCSV() + "\n"));
}

/**
 * Expands `all` into every suite that runs at `budget` (every suite but the pilot at the notebook
 * budgets); checks the others, and that each runs at `budget` when given.
 *
 * @example
 * ```ts
 * suiteList("all", "cpu-long"); // ["patch-projection"]
 * ```
 */
export function suiteList(name: string, budget?: Budget): string[] {
  if (name === "all") return budget ? suitesAt(budget) : SUITE_NAMES;
  const names = name.split(",").map((n) => getSuite(n.trim()).name);
  if (budget) names.forEach((n) => suiteGrid(n, budget));
  return names;
}

async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await Deno.readTextFile(file)) as T;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw new Error(`${file} is not readable JSON (${(e as Error).message}); delete it to redo`);
  }
}

function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

function round(x: number, digits: number): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
