/**
 * What the notebooks train: a pretraining run unless its directory holds a finished one (notebook
 * 02's run, which 03 and 09 evaluate), and an experiment suite's tables at a budget, read from the
 * committed tables when they hold every run, else trained now with `runSuite`. Nothing here
 * draws: the notebooks' displays around the training (a note, live progress, a live log) are
 * passed in by lib/viz/notebook_runs.ts.
 *
 * @example
 * ```ts
 * import { suiteTables, trainUnlessFinished } from "./notebook_training.ts";
 * const start = () => Promise.resolve({ finish: () => Promise.resolve() });
 * const backbone = await trainUnlessFinished(cfg, start); // ".../backbone.safetensors"
 * const { results, curves } = await suiteTables("posemb", "smoke", opts);
 * ```
 * @module
 */
import * as aq from "arquero";
import type { BackendName } from "../backends/mod.ts";
import type { PretrainConfig } from "../train/config.ts";
import { pretrain, type RunHooks } from "../train/pretrain.ts";
import { RUN_FILES, runFinished } from "../train/rundir.ts";
import { runSuite } from "./run.ts";
import { type Budget, budgetConfigs } from "./suites.ts";
import { compareWithPaper, type Comparison } from "./summary.ts";
import { curvesFile, ofBudget, ofRuns, readTable, suiteFile } from "./tables.ts";

/**
 * Trains (or finishes) the run of `cfg` when its directory does not hold a finished run, with the
 * hooks `start` opens (and finishes after the run); returns the path of its
 * `backbone.safetensors`.
 *
 * @example
 * ```ts
 * const path = await trainUnlessFinished(cfg, async () => await trainProgress(cfg.outDir));
 * ```
 */
export async function trainUnlessFinished(
  cfg: PretrainConfig,
  start: () => Promise<RunHooks & { finish(): Promise<void> }>,
): Promise<string> {
  const path = `${cfg.outDir}/${RUN_FILES.backbone}`;
  if (!(await runFinished(cfg.outDir))) {
    const progress = await start();
    await pretrain(cfg, progress);
    await progress.finish();
  }
  return path;
}

/** Where {@link suiteTables} reads a suite's tables, and how it trains one when it must. */
export interface SuiteTablesOptions {
  /** The committed tables (`data/results/`), used at cpu and gpu when they hold every run. */
  committedDir: string;
  /** Where a suite trained now writes its tables and runs, and on which backend (asked then). */
  trainAt: () => { resultsDir: string; runsDir: string; backend: BackendName };
  /** Opens the display of a suite trained now: `print` takes its lines, `finish` ends it. */
  live: () => Promise<{ print: (line: string) => void; finish(): Promise<void> }>;
}

/** A suite's tables at a budget, as {@link suiteTables} found them. */
export interface SuiteTables {
  /** `<suite>.csv` rows of this budget (one per run). */
  results: aq.ColumnTable;
  /** `<suite>.curves.csv` rows of those runs (kNN monitor points and per-step gradients). */
  curves: aq.ColumnTable;
  /** The directory of the tables read. */
  resultsDir: string;
  /**
   * This suite's comparisons with the paper on linear top-1 (`compareWithPaper` of the tables
   * read, its study only): paired differences over seeds and their verdicts.
   */
  comparisons: Comparison[];
  /** Absent when the committed tables were read; else the runs trained now and found complete. */
  trained?: { ran: number; skipped: number };
}

async function comparisonsOf(
  resultsDir: string,
  suite: string,
  b: Budget,
): Promise<Comparison[]> {
  return (await compareWithPaper(resultsDir, "linear_top1", b)).filter((c) => c.study === suite);
}

/**
 * A suite's results at budget `b`. At `cpu` and `gpu`, the committed tables are used when they
 * hold every run of the suite at that budget (set `VITSSL_RERUN=1` to train anyway); otherwise
 * (and always at `smoke`) the suite runs now with `runSuite`, its progress in the `live` display.
 * Complete runs are skipped, so notebooks sharing a suite (04 and 08) train it once.
 *
 * @example
 * ```ts
 * const { results, trained } = await suiteTables("posemb", "cpu", {
 *   committedDir: "data/results",
 *   trainAt: () => ({ resultsDir: "/tmp/s/results", runsDir: "/tmp/s/runs", backend: "wasm" }),
 *   live: () => Promise.resolve({ print: console.log, finish: () => Promise.resolve() }),
 * });
 * ```
 */
export async function suiteTables(
  suite: string,
  b: Budget,
  opts: SuiteTablesOptions,
): Promise<SuiteTables> {
  const planned = budgetConfigs(suite, b).length;
  if (b !== "smoke" && !Deno.env.get("VITSSL_RERUN")) {
    const dir = opts.committedDir;
    const results = ofBudget(await readTable(suiteFile(dir, suite)), b);
    if (results.numRows() >= planned) {
      const curves = ofRuns(await readTable(curvesFile(dir, suite)), results);
      return { results, curves, resultsDir: dir, comparisons: await comparisonsOf(dir, suite, b) };
    }
  }
  const log = await opts.live();
  const { resultsDir, runsDir, backend } = opts.trainAt();
  const res = await runSuite(suite, b, { resultsDir, runsDir, backend, print: log.print });
  await log.finish();
  const results = ofBudget(await readTable(suiteFile(resultsDir, suite)), b);
  const curves = ofRuns(await readTable(curvesFile(resultsDir, suite)), results);
  return {
    results,
    curves,
    resultsDir,
    comparisons: await comparisonsOf(resultsDir, suite, b),
    trained: { ran: res.ran.length, skipped: res.skipped.length },
  };
}

/**
 * A suite's committed results at budget `b`, never training: whatever rows `dir` holds (a study
 * budget such as `cpu-long` may be part way), with the runs planned and this suite's comparisons.
 *
 * @example
 * ```ts
 * const t = await committedSuiteTables("patch-projection", "cpu-long", "data/results");
 * `${t.results.numRows()} of ${t.planned} runs`;
 * ```
 */
export async function committedSuiteTables(
  suite: string,
  b: Budget,
  dir: string,
): Promise<SuiteTables & { planned: number }> {
  const results = ofBudget(await readTable(suiteFile(dir, suite)), b);
  const curves = ofRuns(await readTable(curvesFile(dir, suite)), results);
  const comparisons = await comparisonsOf(dir, suite, b);
  return { results, curves, resultsDir: dir, comparisons, planned: budgetConfigs(suite, b).length };
}
