/**
 * Everything a notebook cell uses from `lib/viz/`, in one import (`import * as nb from
 * "../lib/viz/notebook.ts"`). Each part lives in the file named for it:
 *
 * - `budget.ts`: `VITSSL_BUDGET` (`budget`, `byBudget`) and what each notebook does per budget;
 * - `display.ts`: MIME bundles, Markdown, HTML, plotly figures (`showPlot`, through `render.ts`);
 * - `tables.ts`, `images.ts`, `progress.ts`: tables, image grids, live progress;
 * - `charts.ts`, `inspect.ts`: small plotly specs; ViT parameter counts and attention maps
 *   (and the sentences computed from them);
 * - `format.ts`: numbers at the precision that tells them apart (`formatSig`), differences as
 *   sentences;
 * - `run_curves.ts`, `final_report.ts`: a pretraining run's curves and its final report;
 * - `protocols.ts`: notebook 03's table of protocols per model and its sentences;
 * - `umap.ts`: UMAP maps of backbone features coloured by class (`featureMaps`, `umapSpec`);
 * - `runs.ts`: where notebook runs live and reading them back;
 * - `notebook_runs.ts`: notebook 02's run and the experiment suites, shown while
 *   lib/experiments/notebook_training.ts trains them;
 * - from `figures/`: the study figures, the suites' compact curves and their table beside the
 *   paper;
 * - from `lib/experiments/`: the per-configuration tables over seeds (`aggregate.ts`) and the
 *   verdict table of a suite's comparisons with the paper (`comparisonMarkdown`).
 *
 * A module that only displays imports its own file (`./display.ts`, `./tables.ts`, ...) and so
 * never loads the training loop.
 *
 * @example
 * ```ts
 * import * as nb from "./notebook.ts";
 * const steps = nb.byBudget({ smoke: 4, cpu: 200, gpu: 2000 });
 * await nb.showPlot(nb.lineSpec([{ name: "loss", x: [0, 1], y: [3, 2] }], { title: "loss" }));
 * ```
 * @module
 */
export * from "./budget.ts";
export * from "./display.ts";
export * from "./tables.ts";
export * from "./images.ts";
export * from "./progress.ts";
export * from "./charts.ts";
export * from "./inspect.ts";
export * from "./format.ts";
export * from "./run_curves.ts";
export * from "./final_report.ts";
export * from "./protocols.ts";
export * from "./umap.ts";
export * from "./runs.ts";
export * from "./notebook_runs.ts";
export {
  dipCurvesSpec,
  frameworkComparison,
  gradientSpec,
  gradientTraces,
  hasMonitor,
  optimizerCurves,
  paperComparison,
  patchProjectionBars,
  patchSizeFigure,
  pilotFigure,
  posembBars,
  scalingFigure,
  stabilityCurves,
  stabilityLrFigure,
  verdictForest,
} from "./figures/mod.ts";
export { configTable, pilotTable, stabilityTable } from "../experiments/aggregate.ts";
export { comparisonMarkdown } from "../experiments/summary.ts";
export { findChromium, plotHtml } from "./render.ts";
