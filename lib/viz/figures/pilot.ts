/**
 * The pilot: final accuracy against training length over seeds, above the random-init band.
 *
 * @example
 * ```ts
 * import { pilotFigure } from "./pilot.ts";
 * const spec = pilotFigure(rows, { note: "budget cpu" });
 * ```
 * @module
 */
import {
  groupByConfig,
  metricInterval,
  pilotTable,
  randomInitRows,
} from "../../experiments/aggregate.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  type FigureSpec,
  finishFigure,
  KNN,
  LINEAR,
  markedPoints,
  meanOf,
  num,
  panelTitle,
  signed,
  subtitle,
  type TableLike,
} from "./kit.ts";

/**
 * The pilot: final linear top-1 (left) and kNN-20 (right) against training epochs, the mean over
 * seeds with 95% t-interval error bars (trace `trained: mean ± 95% CI`), every seed's value as a
 * grey dot (`seeds`), and the random init as a band (`random init: 95% CI`, the interval of the
 * random-init rows' mean) with its mean dashed (`random init: mean`). The subtitle gives the
 * climb above random init per length (paired by seed, from {@link pilotTable}). Input:
 * `pilot.csv` rows (`epochs`, `seed`, `random_init`, `linear_top1`, `knn_top1`).
 *
 * @example
 * ```ts
 * const spec = pilotFigure((await readTable("data/results/pilot.csv")).objects());
 * ```
 */
export function pilotFigure(results: TableLike, opts: { note?: string } = {}): FigureSpec {
  const groups = groupByConfig(results, ["epochs"])
    .sort((a, b) => num(a.config.epochs) - num(b.config.epochs));
  const epochs = groups.map((g) => num(g.config.epochs));
  const xMax = Math.max(1, ...epochs);
  const floor = randomInitRows(results);
  const data: Trace[] = [];
  const left: [number, number] = [0, 0.46], right: [number, number] = [0.54, 1];
  for (const [metric, ax] of [[LINEAR, ""], [KNN, "2"]] as const) {
    const first = ax === "";
    const iv = groups.map((g) => metricInterval(g.runs, metric));
    const base = metricInterval(floor, metric);
    if (base && Number.isFinite(base.halfWidth)) {
      data.push({
        type: "scatter",
        mode: "lines",
        name: "random init: 95% CI",
        legendgroup: "floor-ci",
        showlegend: first,
        x: [0, xMax, xMax, 0],
        y: [base.lo, base.lo, base.hi, base.hi],
        fill: "toself",
        fillcolor: "rgba(150,150,150,0.25)",
        line: { width: 0, color: "rgba(150,150,150,0.25)" },
        hoverinfo: "skip",
        xaxis: `x${ax}`,
        yaxis: `y${ax}`,
      });
    }
    if (base) {
      data.push({
        type: "scatter",
        mode: "lines",
        name: "random init: mean",
        legendgroup: "floor",
        showlegend: first,
        x: [0, xMax],
        y: [base.mean, base.mean],
        line: { color: "#666", dash: "dash", width: 1.5 },
        xaxis: `x${ax}`,
        yaxis: `y${ax}`,
      });
    }
    const seeds = groups.flatMap((g) =>
      g.runs.filter((r) => Number.isFinite(num(r[metric]))).map((r) => ({
        x: num(g.config.epochs),
        y: num(r[metric]),
        text: `seed ${r.seed}`,
      }))
    );
    data.push({
      ...markedPoints("seeds", seeds, { size: 6, color: "#999", symbol: "circle-open" }, true),
      legendgroup: "seeds",
      showlegend: first,
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    data.push({
      type: "scatter",
      mode: "lines+markers",
      name: "trained: mean ± 95% CI",
      legendgroup: "trained",
      showlegend: first,
      x: epochs,
      y: iv.map(meanOf),
      error_y: ciBars(iv),
      line: { color: first ? COLORS[0] : COLORS[1], width: 2 },
      marker: { size: 8, color: first ? COLORS[0] : COLORS[1] },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
  }
  const climb = pilotTable(results)
    .filter((r) => r.epochs !== "random init" && r["climb (linear)"] !== null)
    .map((r) => {
      const hw = r["climb ±95%"] === null ? "" : ` ± ${num(r["climb ±95%"]).toFixed(1)}`;
      return `${signed(num(r["climb (linear)"]))}${hw} at ${r.epochs}`;
    });
  const xaxis = { range: [0, xMax * 1.08], title: { text: "training epochs" } };
  const layout = baseLayout("Pilot: accuracy against training length, over seeds", {
    xaxis: { ...xaxis, domain: left },
    yaxis: { title: { text: "top-1 (%)" } },
    xaxis2: { ...xaxis, domain: right, anchor: "y2" },
    yaxis2: { anchor: "x2" },
    annotations: [
      subtitle(
        "grey band: random init (95% CI over seeds); " +
          (climb.length
            ? `linear climb above random init (paired by seed): ${climb.join(", ")} epochs`
            : "no random-init rows to climb from"),
        opts.note,
      ),
      panelTitle("linear probe top-1", left),
      panelTitle("kNN-20 top-1", right),
    ],
  });
  return finishFigure(data, layout, { legendGap: 80 });
}
