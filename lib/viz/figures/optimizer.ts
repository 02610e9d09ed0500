/**
 * The optimiser study (AdamW against LAMB): the kNN monitor of each configuration and its final
 * accuracy over seeds, beside the paper's LAMB number.
 *
 * @example
 * ```ts
 * import { optimizerCurves } from "./optimizer.ts";
 * const spec = optimizerCurves(results, curves, { comparisons });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import {
  firstSeedRuns,
  groupByConfig,
  metricInterval,
  type Row,
  rowsOf,
} from "../../experiments/aggregate.ts";
import { lrText } from "../../experiments/summary.ts";
import type { Trace } from "../render.ts";
import { knnCurve, seedPhrase } from "./curves.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  type CurveOptions,
  extent,
  type FigureSpec,
  finishFigure,
  KNN,
  LIGHT,
  LINEAR,
  meanOf,
  num,
  OURS_KNN,
  OURS_LINEAR,
  panelTitle,
  subtitle,
  type TableLike,
  zoomRange,
} from "./kit.ts";

/**
 * Optimiser: left, the kNN monitor against training images of each configuration (AdamW, LAMB;
 * its lowest seed); middle, the final linear top-1 and kNN-20 of each (means over seeds, 95%
 * CI); right, the paper's LAMB number. Input: `optimizer.csv` rows (`optimizer`, `baseLr`,
 * `weightDecay`, `seed`, `linear_top1`, `knn_top1`) and curves.
 *
 * @example
 * ```ts
 * const spec = optimizerCurves(results, curves, { comparisons });
 * ```
 */
export function optimizerCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.optimizer.paper;
  const cur = rowsOf(curves);
  const name = (r: Row) => {
    const opt = { adamw: "AdamW", lamb: "LAMB" }[String(r.optimizer)] ?? String(r.optimizer);
    return `${opt} lr ${lrText(num(r.baseLr))} wd ${num(r.weightDecay)}`;
  };
  const color = (r: Row, i: number) => (r.optimizer === "lamb" ? COLORS[1 + (i % 3)] : COLORS[0]);
  const runs = firstSeedRuns(results);
  const data: Trace[] = runs.map((r, i) => {
    const pts = knnCurve(cur, String(r.run_id));
    return {
      type: "scatter",
      mode: "lines+markers",
      name: name(r),
      x: pts.map((p) => p.images),
      y: pts.map((p) => p.acc),
      line: { color: color(r, i), width: 2 },
      marker: { size: 5, color: color(r, i) },
    };
  });
  const groups = groupByConfig(results, ["optimizer", "baseLr", "weightDecay"]);
  // Bar labels in two lines: one line is too wide for its bar and gets cut.
  const x = groups.map((g) => name(g.config).replace(" lr ", "<br>lr "));
  const lin = groups.map((g) => metricInterval(g.runs, LINEAR));
  const knn = groups.map((g) => metricInterval(g.runs, KNN));
  for (const [n, iv, c] of [[OURS_LINEAR, lin, COLORS[0]], [OURS_KNN, knn, LIGHT[0]]] as const) {
    data.push({
      type: "bar",
      name: n,
      x,
      y: iv.map(meanOf),
      text: iv.map((i) => (i ? i.mean.toFixed(1) : "")),
      textposition: "outside",
      marker: { color: c },
      error_y: ciBars(iv),
      xaxis: "x2",
      yaxis: "y2",
    });
  }
  const curvesDomain: [number, number] = [0, paper.length ? 0.42 : 0.55];
  const barsDomain: [number, number] = paper.length ? [0.5, 0.74] : [0.63, 1];
  const layout = baseLayout("Optimiser: AdamW vs LAMB", {
    barmode: "group",
    xaxis: { domain: curvesDomain, title: { text: "training images seen" } },
    yaxis: { title: { text: "kNN top-1 (%), monitor" } },
    xaxis2: { domain: barsDomain, anchor: "y2", type: "category" },
    yaxis2: {
      anchor: "x2",
      title: { text: "final top-1 (%), mean ± 95% CI" },
      range: zoomRange([...extent(lin), ...extent(knn)]),
    },
    annotations: [
      subtitle(
        `curves: kNN monitor, ${seedPhrase(runs)}; bars: final linear probe and kNN-20 over seeds`,
        opts.note,
      ),
      panelTitle("ours: kNN monitor", curvesDomain),
      panelTitle("ours: final accuracy", barsDomain),
    ],
  });
  return finishFigure(data, layout, {
    paper: { numbers: paper, axis: 3, yTitle: "linear top-1 (%), ViT-S" },
    study: "optimizer",
    comparisons: opts.comparisons,
    legendGap: 95,
  });
}
