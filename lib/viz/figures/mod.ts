/**
 * The paper's figures at workbench scale, as plotly figure specs (plain JSON `{data, layout}`)
 * built from the experiments' tables (`data/results/<suite>.csv` and `<suite>.curves.csv`), the
 * notebooks' compact curves of a suite and its table beside the paper, and a writer that turns a
 * spec into a self-contained HTML file and a PNG (through the one renderer, `render.ts`). One
 * file per study figure; `kit.ts` holds what they share, `build.ts` the build step of
 * `deno task figures`, `write.ts` the writer.
 *
 * Every configuration runs under several seeds. A per-configuration figure shows the mean over
 * seeds of the final linear probe top-1 (the paper's metric) with its 95% t-interval as error
 * bars (`meanInterval` of `lib/experiments/stats.ts`, through `aggregate.ts`), kNN-20 top-1 as a
 * second trace, and leaves the random-init baseline rows out except as a reference floor. The
 * curve figures (kNN monitor, gradient norms) draw one run per configuration: its lowest seed
 * (a dip is a property of one run; a mean over seeds would smooth it away). Given
 * `comparisons` (`compareWithPaper` of `lib/experiments/summary.ts`), each study's figure lists
 * its verdicts under the title; {@link verdictForest} draws them all.
 *
 * Building and writing are separate: the same spec shows inline in Jupyter through the
 * `application/vnd.plotly.v1+json` MIME type ({@link mimeBundle}). Each figure puts the paper's
 * ImageNet number beside ours where one exists: diamonds or grey bars named "paper (ImageNet)",
 * on a second y axis or in a side panel, since Fashion-MNIST and ImageNet accuracies are not on
 * one scale.
 *
 * @example
 * ```ts
 * import { buildFigures, writeFigure } from "./mod.ts";
 * const figs = await buildFigures("data/results");
 * for (const [name, spec] of Object.entries(figs)) await writeFigure(spec, name, "figures");
 * // In a notebook: Deno.jupyter.display(mimeBundle(figs.posemb), { raw: true });
 * ```
 * @module
 */
export { mimeBundle, type Trace } from "../render.ts";
export {
  type CurveOptions,
  type FigureOptions,
  type FigureSpec,
  legendBelow,
  legendRows,
  OURS_KNN,
  OURS_LINEAR,
  PAPER_NAME,
  type TableLike,
  verdictLines,
  wrapLabel,
} from "./kit.ts";
export { envelope } from "./curves.ts";
export { stabilityCurves } from "./stability_curves.ts";
export { stabilityLrFigure } from "./stability_lr.ts";
export { gradientTraces } from "./gradient_traces.ts";
export { patchProjectionBars } from "./patch_projection.ts";
export { posembBars } from "./posemb.ts";
export { patchSizeFigure } from "./patch_size.ts";
export { scalingFigure } from "./scaling.ts";
export { optimizerCurves } from "./optimizer.ts";
export { pilotFigure } from "./pilot.ts";
export { verdictForest } from "./verdict_forest.ts";
export { dipCurvesSpec, gradientSpec, hasMonitor, type SuiteTables } from "./notebook_curves.ts";
export { frameworkComparison, paperComparison } from "./paper_comparison.ts";
export { buildFigures } from "./build.ts";
export { writeFigure, type WriteFigureOptions, type WrittenFigure } from "./write.ts";
