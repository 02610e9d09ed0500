/**
 * The scaling study (paper Section 6, ViT-B/L/H): accuracy against backbone parameters and
 * FLOPs, ours beside the paper's three models.
 *
 * @example
 * ```ts
 * import { scalingFigure } from "./scaling.ts";
 * const spec = scalingFigure(rows, { comparisons });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import { groupByConfig, metricInterval } from "../../experiments/aggregate.ts";
import { vitConfig, vitFlops } from "../../model/vit.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  extent,
  type FigureOptions,
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
  PAPER_MARKER,
  PAPER_NAME,
  subtitle,
  type TableLike,
  zoomRange,
} from "./kit.ts";

/**
 * Scaling: linear top-1 (means over seeds, 95% CI error bars; kNN-20 dashed) against backbone
 * parameters (left) and forward FLOPs per image (right), both log x; ours as lines of labelled
 * points (width x depth), the paper's ViT-B/L/H as diamonds on the right axis at their own
 * parameters and FLOPs. Input: `scaling.csv` rows.
 *
 * @example
 * ```ts
 * const spec = scalingFigure(rows, { comparisons });
 * ```
 */
export function scalingFigure(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const paper = opts.paper ?? SUITES.scaling.paper;
  const groups = groupByConfig(results, ["dim", "depth", "heads"])
    .sort((a, b) => num(a.runs[0].flops) - num(b.runs[0].flops));
  const label = groups.map((g) => `D${num(g.config.dim)}x${num(g.config.depth)}`);
  const lin = groups.map((g) => metricInterval(g.runs, LINEAR));
  const knn = groups.map((g) => metricInterval(g.runs, KNN));
  const paperFlops = paper.map((p) => (p.vit ? vitFlops(vitConfig(p.vit)) : NaN));
  const data: Trace[] = [];
  const panels: [string, "params" | "flops"][] = [["", "params"], ["2", "flops"]];
  panels.forEach(([ax, key], i) => {
    const x = groups.map((g) => num(g.runs[0][key]));
    const y = i === 0 ? "y" : "y3";
    data.push({
      type: "scatter",
      mode: "lines+markers+text",
      name: OURS_LINEAR,
      legendgroup: "ours",
      showlegend: i === 0,
      x,
      y: lin.map(meanOf),
      error_y: ciBars(lin),
      text: label,
      textposition: "top center",
      marker: { size: 9, color: COLORS[0] },
      line: { color: COLORS[0] },
      xaxis: `x${ax}`,
      yaxis: y,
    });
    data.push({
      type: "scatter",
      mode: "lines+markers",
      name: OURS_KNN,
      legendgroup: "knn",
      showlegend: i === 0,
      x,
      y: knn.map(meanOf),
      error_y: ciBars(knn),
      marker: { size: 7, color: LIGHT[0] },
      line: { color: LIGHT[0], dash: "dash" },
      xaxis: `x${ax}`,
      yaxis: y,
    });
    data.push({
      type: "scatter",
      mode: "lines+markers+text",
      name: PAPER_NAME,
      legendgroup: "paper",
      showlegend: i === 0,
      x: key === "params" ? paper.map((p) => p.params ?? NaN) : paperFlops,
      y: paper.map((p) => p.value),
      text: paper.map((p) => `${p.label} ${p.value.toFixed(1)}`),
      textposition: "bottom center",
      marker: PAPER_MARKER,
      line: { color: "#111", dash: "dot" },
      xaxis: `x${ax}`,
      yaxis: i === 0 ? "y2" : "y4",
    });
  });
  const left: [number, number] = [0, 0.42], right: [number, number] = [0.58, 1];
  const yOurs = {
    title: { text: "top-1 (%), ours: mean ± 95% CI" },
    range: zoomRange([...extent(lin), ...extent(knn)]),
  };
  const pv = paper.map((p) => p.value);
  const yPaper = {
    title: { text: `${PAPER_NAME}: linear top-1 (%)` },
    side: "right",
    showgrid: false,
    tickformat: ".1f",
    tickmode: "auto",
    range: zoomRange(pv.length ? pv : [0, 100]),
  };
  const layout = baseLayout("Model scaling: accuracy vs parameters and FLOPs", {
    xaxis: { domain: left, type: "log", title: { text: "backbone parameters" } },
    yaxis: yOurs,
    yaxis2: { ...yPaper, overlaying: "y", anchor: "x" },
    xaxis2: { domain: right, anchor: "y3", type: "log", title: { text: "FLOPs / image" } },
    yaxis3: { ...yOurs, anchor: "x2" },
    yaxis4: { ...yPaper, overlaying: "y3", anchor: "x2" },
    annotations: [
      subtitle(
        "ours at a fixed number of training images (solid: linear probe, dashed: kNN-20); " +
          "log x spans both scales",
        opts.note,
      ),
      panelTitle("accuracy vs parameters", left),
      panelTitle("accuracy vs FLOPs", right),
    ],
  });
  return finishFigure(data, layout, {
    study: "scaling",
    comparisons: opts.comparisons,
    legendGap: 80,
  });
}
