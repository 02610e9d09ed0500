/**
 * Bars of our accuracy per configuration beside the paper's numbers on a second axis, with the
 * random-init floor: the body of the position-embedding and patch-size figures.
 *
 * @example
 * ```ts
 * import { barsWithPaper } from "./bars_with_paper.ts";
 * const spec = barsWithPaper("Position embedding", rows, groups, label, paper, "blue: ours");
 * ```
 * @module
 */
import type { PaperNumber } from "../../experiments/suites.ts";
import {
  type ConfigGroup,
  metricInterval,
  randomInitRows,
  type Row,
} from "../../experiments/aggregate.ts";
import type { Interval } from "../../experiments/stats.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  extent,
  type FigureSpec,
  KNN,
  LIGHT,
  LINEAR,
  matches,
  meanOf,
  OURS_KNN,
  OURS_LINEAR,
  PAPER_NAME,
  subtitle,
  type TableLike,
  wrapLabel,
  zoomRange,
} from "./kit.ts";

/** The font of the paper bars' labels (a fixed size: never shrunk to the bar). */
export const PAPER_BAR_FONT = { size: 11, color: "#222" };

/** A dashed horizontal line at the random-init rows' mean of `metric` (none without such rows). */
function floorLine(results: TableLike, metric: string, yref = "y") {
  const iv = metricInterval(randomInitRows(results), metric);
  if (!iv) return { shapes: [], annotations: [] };
  return {
    shapes: [{
      type: "line",
      xref: "x domain",
      yref,
      x0: 0,
      x1: 1,
      y0: iv.mean,
      y1: iv.mean,
      line: { color: "#888", width: 1.5, dash: "dash" },
    }],
    annotations: [{
      text: `random init ${iv.mean.toFixed(1)}`,
      xref: "x domain",
      yref,
      x: 1,
      y: iv.mean,
      xanchor: "right",
      yanchor: "bottom",
      showarrow: false,
      font: { size: 11, color: "#666" },
    }],
  };
}

/**
 * Bars of our linear and kNN accuracy per configuration (means over seeds, 95% t-interval error
 * bars), with the paper's matching numbers as grey bars beside them on a second y axis (right),
 * and the random-init floor (dashed) where the table has random-init rows.
 *
 * @example
 * ```ts
 * const groups = groupByConfig(rows, ["posEmb", "pool"]);
 * barsWithPaper("Position embedding", rows, groups, (c) => String(c.posEmb), paper, "blue: ours");
 * ```
 */
export function barsWithPaper(
  title: string,
  results: TableLike,
  groups: ConfigGroup[],
  label: (config: Row) => string,
  paper: PaperNumber[],
  explain: string,
  note?: string,
): FigureSpec {
  const x = groups.map((g) => label(g.config));
  const lin = groups.map((g) => metricInterval(g.runs, LINEAR));
  const knn = groups.map((g) => metricInterval(g.runs, KNN));
  const placed = paper.flatMap((p) => {
    const g = p.match && groups.find((q) => matches(q.config, p.match as Record<string, unknown>));
    return g ? [{ p, x: label(g.config) }] : [];
  });
  const bar = (name: string, iv: (Interval | null)[], color: string, group: string): Trace => ({
    type: "bar",
    name,
    x,
    y: iv.map(meanOf),
    text: iv.map((i) => (i ? i.mean.toFixed(1) : "")),
    textposition: "outside",
    marker: { color },
    error_y: ciBars(iv),
    offsetgroup: group,
  });
  const data: Trace[] = [
    bar(OURS_LINEAR, lin, COLORS[0], "ours"),
    bar(OURS_KNN, knn, LIGHT[0], "knn"),
    {
      // Beside ours (grouped), on its own axis: the scales differ.
      type: "bar",
      name: PAPER_NAME,
      x: placed.map((q) => q.x),
      y: placed.map((q) => q.p.value),
      // Wrapped, at a fixed size: on one line plotly shrinks a label wider than its bar.
      text: placed.map((q) => wrapLabel(`${q.p.label}: ${q.p.value.toFixed(1)}`, 16)),
      textposition: "outside",
      textfont: PAPER_BAR_FONT,
      constraintext: "none",
      cliponaxis: false,
      hovertext: placed.map((q) => q.p.note ?? q.p.label),
      marker: { color: "#bdbdbd", line: { color: "#111", width: 1 } },
      offsetgroup: "paper",
      yaxis: "y2",
    },
  ];
  const pv = placed.map((q) => q.p.value);
  const floor = floorLine(results, LINEAR);
  const layout = baseLayout(title, {
    barmode: "group",
    xaxis: { type: "category" },
    yaxis: {
      title: { text: "top-1 (%), ours: mean ± 95% CI over seeds" },
      range: zoomRange([...extent(lin), ...extent(knn), ...floor.shapes.map((s) => s.y0)]),
    },
    yaxis2: {
      title: { text: `${PAPER_NAME}: linear top-1 (%)` },
      overlaying: "y",
      side: "right",
      range: zoomRange(pv.length ? pv : [0, 100]),
      tickformat: ".1f",
      // Its own round ticks (an overlaying axis otherwise takes the grid of the left one).
      tickmode: "auto",
      showgrid: false,
    },
    shapes: floor.shapes,
    annotations: [subtitle(explain, note), ...floor.annotations],
  });
  return { data, layout };
}
