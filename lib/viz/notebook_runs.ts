/**
 * The notebooks' runs as they show them: the backend and pretraining settings of each budget,
 * and the displays around what lib/experiments/notebook_training.ts trains: notebook 02's run
 * (which 03 and 09 evaluate), with a note and live progress, and the experiment suites of 04-08,
 * with a live log. Only the display is here; the training is there.
 *
 * @example
 * ```ts
 * import { ensurePretrained, suiteData } from "./notebook_runs.ts";
 * const checkpoint = await ensurePretrained();
 * const { results, curves } = await suiteData("posemb");
 * ```
 * @module
 */
import type * as aq from "arquero";
import { type BackendName, BACKENDS, initBackend } from "../backends/mod.ts";
import { type PretrainConfig, resolveConfig } from "../train/config.ts";
import { RESULTS_DIR } from "../experiments/run.ts";
import {
  committedSuiteTables,
  suiteTables,
  trainUnlessFinished,
} from "../experiments/notebook_training.ts";
import { budgetRegimes } from "../experiments/regime.ts";
import type { Budget as StudyBudget } from "../experiments/suites.ts";
import type { Comparison } from "../experiments/summary.ts";
import { type Budget, budget, byBudget, runsDir } from "./budget.ts";
import { showMarkdown } from "./display.ts";
import { liveLog, trainProgress } from "./progress.ts";
import { relPath, repoPath } from "./runs.ts";

/**
 * The tfjs backend a notebook starts: `$VITSSL_BACKEND` when set, else `wasm` at smoke (quiet, and
 * the same on every machine) and `auto` at cpu and gpu (the native C backend on Linux x86-64,
 * with bf16 matrix products where the CPU has AVX512-BF16 under the default recipe).
 *
 * @example
 * ```ts
 * await initBackend({ backend: backendName() }); // wasm at smoke, auto at cpu and gpu
 * ```
 */
export function backendName(b: Budget = budget()): BackendName {
  const v = Deno.env.get("VITSSL_BACKEND");
  if (v) {
    if (!(BACKENDS as readonly string[]).includes(v)) {
      throw new Error(`VITSSL_BACKEND is "${v}": expected one of ${BACKENDS.join(", ")}`);
    }
    return v as BackendName;
  }
  return b === "smoke" ? "wasm" : "auto";
}

/**
 * The pretraining run of notebook 02 (which 03 and 09 evaluate), per budget: `smoke` is the
 * smoke preset (synthetic shapes, 16 steps), `cpu` the default recipe (`default`: D 128, 10
 * epochs, the one `deno task pretrain` runs, with a kNN monitor 20 times), `gpu` `fmnist-long`.
 * Its directory is `runsDir("02_pretrain")`.
 *
 * @example
 * ```ts
 * const cfg = resolveConfig(pretrainSettings("smoke")); // the smoke preset, kNN every 2 steps
 * ```
 */
export function pretrainSettings(b: Budget = budget()): Partial<PretrainConfig> & {
  preset: string;
} {
  const common = { backend: backendName(b), outDir: runsDir("02_pretrain", b) };
  return byBudget({
    smoke: { ...common, preset: "smoke", knnEvery: 2 },
    cpu: { ...common, preset: "default", knnEvery: 117, knnTrainSize: 5000, knnTestSize: 1000 },
    gpu: { ...common, preset: "fmnist-long", knnEvery: 100 },
  }, b);
}

/**
 * The backbone of notebook 02's run, training (or finishing) that run first, with live progress,
 * when it is missing or was stopped midway, so that 03 and 09 also run alone. Returns the path
 * of `backbone.safetensors`.
 *
 * @example
 * ```ts
 * const checkpoint = await ensurePretrained(); // ".../02_pretrain/backbone.safetensors"
 * ```
 */
export async function ensurePretrained(): Promise<string> {
  const cfg = resolveConfig(pretrainSettings());
  return await trainUnlessFinished(cfg, async () => {
    await showMarkdown(
      `The run of notebook 02 at budget ${budget()} (\`${relPath(cfg.outDir)}\`) is missing or ` +
        "unfinished: training it now.",
    );
    return await trainProgress(cfg.outDir);
  });
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

/**
 * A suite's results at the current budget (`suiteTables`): the committed tables in
 * `data/results/` at `cpu` and `gpu` when they hold every run of the suite at that budget (set
 * `VITSSL_RERUN=1` to train anyway); otherwise (and always at `smoke`) the suite runs now into
 * `runsDir("suites")`, its progress in a live display. Complete runs are skipped, so notebooks
 * sharing a suite (04 and 08) train it once.
 *
 * @example
 * ```ts
 * const { results, curves, comparisons } = await suiteData("posemb");
 * ```
 */
export async function suiteData(suite: string, b: Budget = budget()): Promise<SuiteData> {
  const t = await suiteTables(suite, b, {
    committedDir: repoPath(RESULTS_DIR),
    trainAt: () => {
      const base = runsDir("suites", b);
      return { resultsDir: `${base}/results`, runsDir: `${base}/runs`, backend: backendName(b) };
    },
    live: () => liveLog(12),
  });
  const source = t.trained
    ? `${relPath(t.resultsDir)}/${suite}.csv (trained now at budget ${b}: ` +
      `${t.trained.ran} run(s), ${t.trained.skipped} found complete)`
    : `${RESULTS_DIR}/${suite}.csv (committed, budget ${b})`;
  const { results, curves, resultsDir, comparisons } = t;
  return { results, curves, source, resultsDir, comparisons };
}

/** What {@link committedSuiteData} returns. */
export interface CommittedSuiteData {
  /** The committed rows of the budget (none when it has not run). */
  results: aq.ColumnTable;
  comparisons: Comparison[];
  /** Runs the suite plans at that budget. */
  planned: number;
  /** One line: where the rows are, how many of the planned, and the command that adds the rest. */
  source: string;
  /** The budget's regime sentence (`budgetRegimes`), unless `regime: false` or no base runs. */
  regime?: string;
}

/**
 * A suite's committed results at a study budget that notebooks do not run (`cpu-long`), never
 * training: the rows `data/results/` holds, part way or complete, with the regime of the budget.
 *
 * @example
 * ```ts
 * const long = await committedSuiteData("patch-projection", "cpu-long");
 * await showMarkdown(long.source);
 * ```
 */
export async function committedSuiteData(
  suite: string,
  b: StudyBudget,
  opts: { regime?: boolean } = {},
): Promise<CommittedSuiteData> {
  const t = await committedSuiteTables(suite, b, repoPath(RESULTS_DIR));
  const n = t.results.numRows();
  const more = n < t.planned
    ? `; the rest: \`deno task experiments --suite ${suite} --budget ${b}\` (it resumes)`
    : "";
  const source = `${RESULTS_DIR}/${suite}.csv (committed, budget ${b}): ${n} of ${t.planned} ` +
    `runs${more}`;
  // Raw pixels under the budget's protocols come from the repository's baseline cache, or are
  // computed once on this notebook's backend (about 15 s on native).
  if (opts.regime !== false && n > 0) await initBackend({ backend: backendName() });
  const regime = opts.regime === false || n === 0
    ? undefined
    : (await budgetRegimes({ [suite]: t.results }, repoPath("data/cache/baselines")))[b];
  return { results: t.results, comparisons: t.comparisons, planned: t.planned, source, regime };
}
