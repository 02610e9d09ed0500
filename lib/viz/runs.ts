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
import { type KnnRow, type LogRow, readRunLogs } from "../train/rundir.ts";

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
 * kNN rows deduplicated by step (the last one wins) and sorted by step.
 *
 * @example
 * ```ts
 * const { log, knn } = await readRun(dir); // log.map((r) => r.loss), knn.at(-1)?.top1
 * ```
 */
export async function readRun(dir: string): Promise<{ log: LogRow[]; knn: KnnRow[] }> {
  const { log, knn } = await readRunLogs(dir);
  const byStep = new Map<number, KnnRow>();
  for (const r of knn) byStep.set(r.step, r);
  return { log, knn: [...byStep.values()].sort((a, b) => a.step - b.step) };
}
