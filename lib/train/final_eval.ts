/**
 * The end of a finished run: the final report on the whole splits (kNN-20 and / or the linear
 * probe of the trained backbone, beside its random initialisation and raw pixels; lib/eval/
 * final_report.ts), recorded as the run's last `knn.csv` row and as `final.json`, and printed.
 *
 * @example
 * ```ts
 * import { finalEvaluation } from "./final_eval.ts";
 * const report = await finalEvaluation({ cfg, state, vit, train, test, stats, step, ... });
 * report.rows[0].knn_top1; // the trained backbone's kNN-20 top-1 (percent)
 * ```
 * @module
 */
import { StoppedError, type StopSignal } from "../core/stop.ts";
import { withFp32Matmuls } from "../backends/mod.ts";
import type { Dataset } from "../data/mod.ts";
import type { ChannelStats } from "../data/stats.ts";
import {
  type FinalReport,
  finalReport,
  finalReportLines,
  type FinalReportOptions,
} from "../eval/final_report.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { createViT, type ViTConfig } from "../model/vit.ts";
import type { PretrainConfig } from "./config.ts";
import type { TrainingState } from "./run_dir_state.ts";
import { appendRows, knnColumns, type KnnRow, RUN_FILES, truncateRows } from "./rundir.ts";

/** What {@link finalEvaluation} evaluates and where it writes. */
export interface FinalEvaluationOptions {
  cfg: PretrainConfig;
  /** What the report measures (`cfg.finalEval`, when it is not `none`). */
  what: FinalReportOptions["what"];
  state: TrainingState;
  vit: ViTConfig;
  train: Dataset;
  test: Dataset;
  stats: ChannelStats;
  /** The run's last step (its checkpoint is written). */
  step: number;
  stepsPerEpoch: number;
  /** Where the random-init and raw-pixel baselines are cached (`null`: not cached). */
  baselineCacheDir?: string | null;
  signal: StopSignal;
  onKnn?: (row: KnnRow) => void;
  print: (line: string) => void;
}

/**
 * Runs the final report of a finished run (`what`: kNN, the linear probe or both),
 * replaces any earlier row of its step in `knn.csv` with its kNN, writes `final.json` and prints
 * the report. A stop during it is a `StoppedError` that says the training is complete and how to
 * run the evaluation again.
 *
 * @example
 * ```ts
 * const report = await finalEvaluation(opts);
 * ```
 */
/**
 * The key of a run's data in the baseline cache (`data/cache/baselines`): the dataset, its root,
 * split rule and image size (and, for the synthetic set, its size and seed). Runs of the same
 * data share their raw-pixel baseline.
 *
 * @example
 * ```ts
 * baselineDatasetKey(cfg, train); // '{"dataset":"fmnist","split":"files","size":[28,28,1]}'
 * ```
 */
export function baselineDatasetKey(cfg: PretrainConfig, train: Dataset): string {
  return JSON.stringify({
    dataset: cfg.dataset,
    root: cfg.dataRoot,
    split: train.splitRule,
    size: [train.height, train.width, train.channels],
    ...(cfg.dataset === "synthetic" ? { n: cfg.syntheticSize, seed: cfg.seed } : {}),
  });
}

export async function finalEvaluation(o: FinalEvaluationOptions): Promise<FinalReport> {
  const { cfg, vit, train, step, print } = o;
  const dir = cfg.outDir;
  // Resumed after it finished: measured again, its earlier row replaced (one row per step).
  await truncateRows(`${dir}/${RUN_FILES.knn}`, [knnColumns(false), knnColumns(true)], step);
  let report: FinalReport;
  try {
    // In float32 whatever the training precision: the report and its cached baselines are
    // the same numbers for a bf16 and an fp32 run.
    report = await withFp32Matmuls(() =>
      finalReport(
        o.state.ssl.backbone,
        () => createViT(vit, cfg.seed),
        train,
        o.test,
        {
          what: o.what,
          stats: o.stats,
          datasetKey: baselineDatasetKey(cfg, train),
          baselineKey: JSON.stringify({ vit, seed: cfg.seed }),
          k: cfg.knnK,
          cacheDir: o.baselineCacheDir,
          signal: o.signal,
          print,
        },
      )
    );
  } catch (e) {
    if (!(e instanceof StoppedError)) throw e;
    throw new StoppedError(
      e.phase,
      `stopped during the final evaluation, at ${e.phase}; training is complete and its ` +
        `checkpoint (step ${step}) is in ${dir}: run the final evaluation again with ` +
        `deno task pretrain --resume ${dir}, or evaluate with deno task eval --checkpoint ` +
        `${dir}/${RUN_FILES.backbone}`,
      { cause: e },
    );
  }
  const [trained] = report.rows;
  if (trained.knn_top1 !== undefined) {
    const row: KnnRow = {
      step,
      epoch: Math.floor(step / o.stepsPerEpoch),
      top1: trained.knn_top1,
      top5: trained.knn_top5!,
      k: report.k,
      train_size: report.trainSize,
      test_size: report.testSize,
    };
    await appendRows(`${dir}/${RUN_FILES.knn}`, knnColumns(o.state.probe !== undefined), [row]);
    o.onKnn?.(row);
  }
  await writeFileAtomic(
    `${dir}/${RUN_FILES.final}`,
    new TextEncoder().encode(JSON.stringify({ step, ...report }, null, 2) + "\n"),
  );
  for (const line of finalReportLines(report)) print(line);
  return report;
}
