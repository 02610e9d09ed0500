/**
 * The stability study against the learning rate (paper Section 4): final linear top-1 and
 * kNN-20 over seeds against the base lr, per batch size and patch projection, diverged runs
 * marked.
 *
 * @example
 * ```ts
 * import { stabilityLrFigure } from "./stability_lr.ts";
 * const spec = stabilityLrFigure(results, { comparisons });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import { bool, groupByConfig, metricInterval, trainedRows } from "../../experiments/aggregate.ts";
import { lrText } from "../../experiments/summary.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  distinct,
  type FigureOptions,
  type FigureSpec,
  finishFigure,
  KNN,
  LINEAR,
  markedPoints,
  meanOf,
  num,
  panelTitle,
  projName,
  subtitle,
  type TableLike,
} from "./kit.ts";

/**
 * Stability against the learning rate: final linear top-1 (mean over seeds, 95% t-interval
 * error bars) against the base lr on a log axis, one line per batch size and patch projection
 * (colour = batch, solid = learned, dashed = random/frozen); kNN-20 the same in a second panel;
 * every diverged run marked with a red x at its own value (the trace `diverged runs`); the
 * paper's lr results (batch 4k) in a side panel. Input: `stability.csv` rows.
 *
 * @example
 * ```ts
 * const spec = stabilityLrFigure(results, { comparisons: await compareWithPaper("data/results") });
 * ```
 */
export function stabilityLrFigure(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const paper = opts.paper ?? SUITES.stability.paper.filter((p) => p.label.startsWith("lr"));
  const groups = groupByConfig(results, ["batchSize", "baseLr", "freezePatchEmbed"]);
  const batches = distinct(groups.map((g) => num(g.config.batchSize))) as number[];
  // One line per (batch, projection): learned before random, then by batch.
  const lines = [
    ...new Map(groups.map((g) => {
      const b = num(g.config.batchSize), f = bool(g.config.freezePatchEmbed);
      return [`${b}|${f}`, { b, f }];
    })).values(),
  ].sort((p, q) => Number(p.f) - Number(q.f) || p.b - q.b);
  const [lin, knn]: [number, number][] = paper.length
    ? [[0, 0.4], [0.47, 0.74]]
    : [[0, 0.47], [0.53, 1]];
  const data: Trace[] = [];
  const diverged = trainedRows(results).filter((r) => bool(r.diverged));
  for (const [metric, ax] of [[LINEAR, ""], [KNN, "2"]] as const) {
    for (const { b, f } of lines) {
      const mine = groups
        .filter((g) => num(g.config.batchSize) === b && bool(g.config.freezePatchEmbed) === f)
        .sort((p, q) => num(p.config.baseLr) - num(q.config.baseLr));
      const iv = mine.map((g) => metricInterval(g.runs, metric));
      const color = COLORS[batches.indexOf(b) % COLORS.length];
      data.push({
        type: "scatter",
        mode: "lines+markers",
        name: `batch ${b}, ${projName(f)} patch proj.`,
        legendgroup: `${b}|${f}`,
        showlegend: ax === "",
        x: mine.map((g) => num(g.config.baseLr)),
        y: iv.map(meanOf),
        error_y: ciBars(iv),
        line: { color, dash: f ? "dash" : "solid", width: 2 },
        marker: { size: 7, color, symbol: f ? "square" : "circle" },
        hovertext: mine.map((g, i) =>
          `batch ${b}, lr ${lrText(num(g.config.baseLr))}, ${projName(f)}: ` +
          `${meanOf(iv[i]).toFixed(1)} ± ${(iv[i]?.halfWidth ?? NaN).toFixed(1)} ` +
          `(${g.runs.length} seeds)`
        ),
        xaxis: `x${ax}`,
        yaxis: `y${ax}`,
      });
    }
    data.push({
      ...markedPoints(
        "diverged runs",
        diverged.map((r) => ({
          x: num(r.baseLr),
          y: num(r[metric]),
          text: `diverged: batch ${num(r.batchSize)}, lr ${lrText(num(r.baseLr))}, ` +
            `${projName(bool(r.freezePatchEmbed))}, seed ${r.seed}`,
        })),
        { symbol: "x-thin", size: 14, color: "#d00", line: { width: 3, color: "#d00" } },
        true,
      ),
      legendgroup: "diverged",
      showlegend: ax === "",
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
  }
  const xTitle = { text: "base lr (log; peak = base x batch / 256)" };
  const layout = baseLayout("Training stability: accuracy against learning rate", {
    xaxis: { domain: lin, type: "log", title: xTitle },
    yaxis: { title: { text: "top-1 (%), mean ± 95% CI over seeds" } },
    xaxis2: { domain: knn, anchor: "y2", type: "log", title: xTitle },
    yaxis2: { anchor: "x2" },
    annotations: [
      subtitle(
        `solid: learned patch projection; dashed: random (frozen); x: diverged runs ` +
          `(${diverged.length}), at their last checkpoint's accuracy`,
        opts.note,
      ),
      panelTitle("ours: linear probe top-1", lin),
      panelTitle("ours: kNN-20 top-1", knn),
    ],
  });
  return finishFigure(data, layout, {
    paper: { numbers: paper, axis: 3, yTitle: "linear top-1 (%), ViT-B, batch 4k" },
    study: "stability",
    comparisons: opts.comparisons,
    legendGap: 95,
  });
}
