/**
 * Paths under the repository, and reading a run directory back for display: its `log.csv` and
 * `knn.csv` rows, one kNN row per step (whether it finished and its planned steps are
 * `runFinished` and `plannedSteps` of lib/train/rundir.ts). Nothing here trains.
 *
 * @example
 * ```ts
 * import { readRun, repoPath } from "./runs.ts";
 * const { log, knn } = await readRun(repoPath("data/runs/notebooks-smoke/02_pretrain"));
 * ```
 * @module
 */
import { fileURLToPath } from "node:url";
import { type KnnRow, type LogRow, readRunLogs, RUN_FILES } from "../train/rundir.ts";
import type { FinalReport } from "../eval/final_report.ts";

/** A run's `final.json`: its final report and the step it was measured at. */
export type FinalRecord = FinalReport & { step: number };

/** A run directory read back for display ({@link readRun}). */
export interface RunRecord {
  /** `log.csv`: one row per step. */
  log: LogRow[];
  /** `knn.csv`: one row per step (the monitor's, and the final kNN's at the last step). */
  knn: KnnRow[];
  /** `final.json` (the final report on the full splits), when the run wrote one. */
  final?: FinalRecord;
}

/** The repository root (absolute, with a trailing slash). */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/**
 * A path under the repository root.
 *
 * @example
 * ```ts
 * repoPath("data/results"); // "/…/vitssl/data/results"
 * ```
 */
export function repoPath(rel: string): string {
  return ROOT + rel.replace(/^\.?\//, "");
}

/**
 * A path relative to the repository root when it lies under it (for display).
 *
 * @example
 * ```ts
 * relPath(repoPath("data/runs/x")); // "data/runs/x"
 * ```
 */
export function relPath(path: string): string {
  return path.startsWith(ROOT) ? path.slice(ROOT.length) : path;
}

/**
 * A run directory's `log.csv` and `knn.csv` rows (read by the training's run-directory module),
 * kNN rows deduplicated by step (the last one wins) and sorted by step, and its `final.json`
 * when present (an unreadable one counts as absent).
 *
 * @example
 * ```ts
 * const { log, knn, final } = await readRun(dir); // knn.at(-1)?.top1, final?.rows[0]
 * ```
 */
export async function readRun(dir: string): Promise<RunRecord> {
  const { log, knn } = await readRunLogs(dir);
  const byStep = new Map<number, KnnRow>();
  for (const r of knn) byStep.set(r.step, r);
  const run: RunRecord = { log, knn: [...byStep.values()].sort((a, b) => a.step - b.step) };
  try {
    const final = JSON.parse(await Deno.readTextFile(`${dir}/${RUN_FILES.final}`));
    if (Array.isArray(final?.rows) && Number.isFinite(final?.step)) run.final = final;
  } catch { /* no final report */ }
  return run;
}

/**
 * The kNN rows of a run split into the monitor's (on its training subsets) and the final
 * report's kNN on the full splits: the row at `final.json`'s step when the run has one.
 *
 * @example
 * ```ts
 * const { monitor, final } = splitKnn(await readRun(dir)); // final?.train_size: 60000
 * ```
 */
export function splitKnn(run: RunRecord): { monitor: KnnRow[]; final?: KnnRow } {
  const at = run.final?.step;
  const final = at === undefined ? undefined : run.knn.find((r) => r.step === at);
  return { monitor: run.knn.filter((r) => r !== final), final };
}
