/**
 * What the notebooks train or load: the backend they start, notebook 02's pretraining run
 * (which 03 and 09 evaluate) and the experiment suites of 04-08, trained now when no complete
 * committed table exists. This is the one module of `lib/viz/` that loads the training loop;
 * the display modules do not.
 *
 * @example
 * ```ts
 * import { ensurePretrained, suiteData } from "./training.ts";
 * const checkpoint = await ensurePretrained();
 * const { results, curves } = await suiteData("posemb");
 * ```
 * @module
 */
import * as aq from "arquero";
import { type BackendName, BACKENDS } from "../backends/mod.ts";
import { type PretrainConfig, resolveConfig } from "../train/config.ts";
import { pretrain } from "../train/pretrain.ts";
import { RESULTS_DIR, runSuite } from "../experiments/run.ts";
import { budgetConfigs } from "../experiments/suites.ts";
import { curvesFile, readTable, suiteFile } from "../experiments/tables.ts";
import { compareWithPaper, type Comparison } from "../experiments/summary.ts";
import { type Budget, budget, byBudget, runsDir } from "./budget.ts";
import { showMarkdown } from "./display.ts";
import { liveLog, trainProgress } from "./progress.ts";
import { relPath, repoPath, runFinished } from "./runs.ts";

/**
 * The tfjs backend a notebook starts: `$VITSSL_BACKEND` when set, else `wasm` for the smoke and
 * cpu budgets (the fastest CPU backend, and quiet) and `auto` for gpu.
 */
export function backendName(b: Budget = budget()): BackendName {
  const v = Deno.env.get("VITSSL_BACKEND");
  if (v) {
    if (!(BACKENDS as readonly string[]).includes(v)) {
      throw new Error(`VITSSL_BACKEND is "${v}": expected one of ${BACKENDS.join(", ")}`);
    }
    return v as BackendName;
  }
  return b === "gpu" ? "auto" : "wasm";
}

/**
 * The pretraining run of notebook 02 (which 03 and 09 evaluate), per budget: `smoke` is the
 * smoke preset (synthetic shapes, 16 steps), `cpu` the default Fashion-MNIST recipe (`fmnist`),
 * `gpu` the longer one. Its directory is `runsDir("02_pretrain")`.
 */
export function pretrainSettings(b: Budget = budget()): Partial<PretrainConfig> & {
  preset: string;
} {
  const common = { backend: backendName(b), outDir: runsDir("02_pretrain", b) };
  return byBudget({
    smoke: { ...common, preset: "smoke", knnEvery: 2 },
    cpu: { ...common, preset: "fmnist", knnEvery: 26, knnTrainSize: 5000, knnTestSize: 1000 },
    gpu: { ...common, preset: "fmnist-long", knnEvery: 100 },
  }, b);
}

/**
 * The backbone of notebook 02's run, training (or finishing) that run first, with live progress,
 * when it is missing or was stopped midway, so that 03 and 09 also run alone. Returns the path
 * of `backbone.safetensors`.
 */
export async function ensurePretrained(): Promise<string> {
  const cfg = resolveConfig(pretrainSettings());
  const path = `${cfg.outDir}/backbone.safetensors`;
  if (!(await runFinished(cfg.outDir))) {
    await showMarkdown(
      `The run of notebook 02 at budget ${budget()} (\`${relPath(cfg.outDir)}\`) is missing or ` +
        "unfinished: training it now.",
    );
    const progress = await trainProgress(cfg.outDir);
    await pretrain(cfg, progress);
    await progress.finish();
  }
  return path;
}

/** A suite's tables as a notebook shows them. */
export interface SuiteData {
  /** `<suite>.csv` rows of this budget (one per run). */
  results: aq.ColumnTable;
  /** `<suite>.curves.csv` rows of those runs (kNN monitor points and per-step gradients). */
  curves: aq.ColumnTable;
  /** Where the rows came from (for the notebook's text). */
  source: string;
  /** The directory of the tables read. */
  resultsDir: string;
  /**
   * This suite's comparisons with the paper on linear top-1 (`compareWithPaper` of the tables
   * read, its study only): paired differences over seeds and their verdicts.
   */
  comparisons: Comparison[];
}

async function comparisonsOf(resultsDir: string, suite: string): Promise<Comparison[]> {
  return (await compareWithPaper(resultsDir)).filter((c) => c.study === suite);
}

function ofBudget(t: aq.ColumnTable, b: Budget): aq.ColumnTable {
  if (t.numRows() === 0 || !t.columnNames().includes("budget")) return t;
  return t.params({ b }).filter((d: { budget: string }, $: { b: string }) => d.budget === $.b);
}

function ofRuns(curves: aq.ColumnTable, results: aq.ColumnTable): aq.ColumnTable {
  if (curves.numRows() === 0 || results.numRows() === 0) return curves;
  const ids = new Set((results.array("run_id") as unknown[]).map(String));
  return aq.from(
    (curves.objects() as { run_id: unknown }[]).filter((r) => ids.has(String(r.run_id))),
  );
}

/**
 * A suite's results at the current budget. At `cpu` and `gpu`, the committed tables in
 * `data/results/` are used when they hold every run of the suite at that budget (set
 * `VITSSL_RERUN=1` to train anyway); otherwise (and always at `smoke`) the suite runs now with
 * `runSuite`, into `runsDir("suites")`, its progress in a live display. Complete runs are
 * skipped, so notebooks sharing a suite (04 and 08) train it once.
 *
 * @example
 * ```ts
 * const { results, curves, comparisons } = await suiteData("posemb");
 * ```
 */
export async function suiteData(suite: string, b: Budget = budget()): Promise<SuiteData> {
  const planned = budgetConfigs(suite, b).length;
  if (b !== "smoke" && !Deno.env.get("VITSSL_RERUN")) {
    const dir = repoPath(RESULTS_DIR);
    const results = ofBudget(await readTable(suiteFile(dir, suite)), b);
    if (results.numRows() >= planned) {
      const curves = ofRuns(await readTable(curvesFile(dir, suite)), results);
      return {
        results,
        curves,
        source: `${RESULTS_DIR}/${suite}.csv (committed, budget ${b})`,
        resultsDir: dir,
        comparisons: await comparisonsOf(dir, suite),
      };
    }
  }
  const base = runsDir("suites", b);
  const resultsDir = `${base}/results`;
  const log = await liveLog(12);
  const res = await runSuite(suite, b, {
    resultsDir,
    runsDir: `${base}/runs`,
    backend: backendName(b),
    print: log.print,
  });
  await log.finish();
  const results = ofBudget(await readTable(suiteFile(resultsDir, suite)), b);
  const curves = ofRuns(await readTable(curvesFile(resultsDir, suite)), results);
  return {
    results,
    curves,
    source: `${relPath(resultsDir)}/${suite}.csv (trained now at budget ${b}: ` +
      `${res.ran.length} run(s), ${res.skipped.length} found complete)`,
    resultsDir,
    comparisons: await comparisonsOf(resultsDir, suite),
  };
}
