/**
 * The kNN monitor of a training run: at fixed intervals (every `knnEvery` steps, else every
 * epoch) the online backbone's kNN accuracy on a fixed test subset against a fixed train bank,
 * and the online probe's top-1 on that subset, appended to `knn.csv` and printed as one line.
 *
 * @example
 * ```ts
 * import { knnMonitor } from "./monitor.ts";
 * const monitorIfDue = knnMonitor({ cfg, state, train, test, stats, stepsPerEpoch, lastStep, ... });
 * if (!(await monitorIfDue(step))) break; // a stop interrupted it
 * ```
 * @module
 */
import { StoppedError, type StopSignal } from "../core/stop.ts";
import { type Dataset, fixedSubset } from "../data/mod.ts";
import type { ChannelStats } from "../data/stats.ts";
import { knnOfBackbone } from "../eval/knn.ts";
import type { PretrainConfig } from "./config.ts";
import { probeAccuracy } from "./online_probe.ts";
import type { TrainingState } from "./run_dir_state.ts";
import { appendRows, knnColumns, type KnnRow, RUN_FILES } from "./rundir.ts";

/** What {@link knnMonitor} measures, where it writes, and whom it tells. */
export interface KnnMonitorOptions {
  cfg: PretrainConfig;
  state: TrainingState;
  train: Dataset;
  test: Dataset;
  stats: ChannelStats;
  stepsPerEpoch: number;
  lastStep: number;
  signal: StopSignal;
  /** Brings the training state up to date first (from data-parallel worker 0). */
  pull: () => Promise<void>;
  onKnn?: (row: KnnRow) => void;
  print: (line: string) => void;
}

/**
 * The monitor of a run: a function of the number of updates done that measures the kNN monitor
 * if it is due after them (every `knnEvery` steps, else every epoch; never at step 0 or at the
 * last step, which the final kNN replaces), appends its row to `knn.csv`, calls `onKnn` and
 * prints it. Resolves false if a stop interrupted it (and says so), else true.
 *
 * @example
 * ```ts
 * const monitorIfDue = knnMonitor(opts);
 * await monitorIfDue(100); // "knn @ step 100: top-1 61.20% top-5 95.10% (k=20, 5000 train / 1000 test)"
 * ```
 */
export function knnMonitor(o: KnnMonitorOptions): (step: number) => Promise<boolean> {
  const { cfg, stepsPerEpoch, lastStep, print } = o;
  return async (step) => {
    const due = cfg.knnEvery > 0 ? step % cfg.knnEvery === 0 : step % stepsPerEpoch === 0;
    if (!due || step === 0 || step >= lastStep) return true;
    try {
      await o.pull();
      const row = await measure(o, step, Math.floor(step / stepsPerEpoch));
      await appendRows(`${cfg.outDir}/${RUN_FILES.knn}`, knnColumns(o.state.probe !== undefined), [
        row,
      ]);
      o.onKnn?.(row);
      print(
        `knn @ step ${step}: top-1 ${row.top1.toFixed(2)}% top-5 ${row.top5.toFixed(2)}% ` +
          `(k=${row.k}, ${row.train_size} train / ${row.test_size} test)` +
          (row.probe_top1 === undefined
            ? ""
            : `; online probe top-1 ${row.probe_top1.toFixed(2)}%`),
      );
      return true;
    } catch (e) {
      if (!(e instanceof StoppedError)) throw e;
      print(`the kNN monitor of step ${step} was stopped; a resumed run measures it first`);
      return false;
    }
  };
}

/**
 * The kNN monitor: the online backbone on a fixed test subset against a fixed train bank, and the
 * online probe's top-1 on that subset.
 */
async function measure(o: KnnMonitorOptions, step: number, epoch: number): Promise<KnnRow> {
  const { cfg, state: { ssl, probe }, stats, signal } = o;
  const bank = fixedSubset(o.train, cfg.knnTrainSize);
  const queries = fixedSubset(o.test, cfg.knnTestSize);
  const res = await knnOfBackbone(ssl.backbone, bank, queries, { k: cfg.knnK, stats, signal });
  const row: KnnRow = {
    step,
    epoch,
    top1: 100 * res.top1,
    top5: 100 * res.top5,
    k: cfg.knnK,
    train_size: bank.length,
    test_size: queries.length,
  };
  // The online probe on the same test subset's features.
  if (probe) row.probe_top1 = 100 * (await probeAccuracy(probe, res.queryFeatures)).top1;
  return row;
}
