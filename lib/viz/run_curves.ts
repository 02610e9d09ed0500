/**
 * Notebook 02's figures of a pretraining run, from its run directory read back
 * ({@link readRun}): the loss with its chance level, the kNN monitor and the online probe, the
 * final kNN on the full splits as a point of its own; and the schedules (lr and momentum).
 *
 * @example
 * ```ts
 * import { runCurveSpecs } from "./run_curves.ts";
 * for (const spec of runCurveSpecs(await readRun(dir), { dataset: "fmnist", chanceLoss: 3.9 })) {
 *   await showPlot(spec);
 * }
 * ```
 * @module
 */
import { lineSpec, trainingCurvesSpec } from "./charts.ts";
import type { PlotSpec } from "./render.ts";
import { type RunRecord, splitKnn } from "./runs.ts";

/** Options of {@link runCurveSpecs}. */
export interface RunCurveOptions {
  /** The data set's name, for the title. */
  dataset?: string;
  /** The chance level of the loss (`4T ln B` for MoCo v3), drawn dashed. */
  chanceLoss?: number;
}

/**
 * The run's two figures: its loss, kNN and online-probe curves (the final kNN of `final.json`
 * drawn as one marked point, apart from the monitor's line; {@link trainingCurvesSpec}) and its
 * lr and momentum schedules (340 px high).
 *
 * @example
 * ```ts
 * const [curves, schedules] = runCurveSpecs(run, { dataset: "fmnist", chanceLoss: 3.88 });
 * ```
 */
export function runCurveSpecs(run: RunRecord, opts: RunCurveOptions = {}): PlotSpec[] {
  const { final } = splitKnn(run);
  const on = opts.dataset ? ` on ${opts.dataset}` : "";
  const curves = trainingCurvesSpec(run.log, run.knn, {
    title: `MoCo v3${on}: loss, kNN and online probe accuracy`,
    reference: opts.chanceLoss === undefined
      ? undefined
      : { name: "chance 4T ln B", loss: opts.chanceLoss },
    final,
  });
  const step = run.log.map((r) => r.step + 1);
  const schedules = lineSpec([
    { name: "lr", x: step, y: run.log.map((r) => r.lr) },
    { name: "momentum m", x: step, y: run.log.map((r) => r.momentum), y2: true },
  ], {
    title: "schedules: lr (warmup + cosine) and momentum (cosine to 1)",
    xTitle: "step",
    yTitle: "lr",
    y2Title: "momentum",
  });
  schedules.layout = { ...schedules.layout, height: 340 };
  return [curves, schedules];
}
