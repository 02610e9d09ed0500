/**
 * Every comparison with the paper as a forest plot: our paired difference with its 95% CI per
 * comparison, coloured by verdict, the paper's effect beside it.
 *
 * @example
 * ```ts
 * import { verdictForest } from "./verdict_forest.ts";
 * const spec = verdictForest(await compareWithPaper("data/results"));
 * ```
 * @module
 */
import { type Comparison, verdictText } from "../../experiments/summary.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  type FigureSpec,
  KNN,
  PAPER_MARKER,
  PAPER_NAME,
  signed,
  subtitle,
  VERDICT_COLOR,
} from "./kit.ts";

/**
 * The verdicts as a forest plot: one row per comparison (`study: effect`), our paired
 * difference a - b with its 95% CI (coloured by verdict: holds, opposite, not detected), the
 * paper's effect as a diamond where it gives a number, and a line at zero. A missing comparison
 * keeps its row, empty.
 *
 * @example
 * ```ts
 * const spec = verdictForest(await compareWithPaper("data/results"));
 * ```
 */
export function verdictForest(
  comparisons: Comparison[],
  opts: { title?: string; note?: string } = {},
): FigureSpec {
  const label = (c: Comparison) => `${c.study}: ${c.effect}`;
  const labels = comparisons.map(label);
  const data: Trace[] = [];
  for (const v of ["holds", "opposite", "not detected"]) {
    const cs = comparisons.filter((c) => c.verdict === v && c.diff);
    data.push({
      type: "scatter",
      mode: "markers",
      name: v,
      x: cs.map((c) => c.diff!.mean),
      y: cs.map(label),
      error_x: ciBars(cs.map((c) => c.diff), true),
      hovertext: cs.map((c) =>
        `${label(c)}: ${signed(c.diff!.mean)} [${signed(c.diff!.lo)}, ${signed(c.diff!.hi)}], ` +
        `${c.seeds.length} seeds: ${verdictText(c)}`
      ),
      marker: { size: 9, color: VERDICT_COLOR[v] },
    });
  }
  const withPaper = comparisons.filter((c) => Number.isFinite(c.paper));
  data.push({
    type: "scatter",
    mode: "markers",
    name: `${PAPER_NAME}: a - b`,
    x: withPaper.map((c) => c.paper),
    y: withPaper.map(label),
    hovertext: withPaper.map((c) => c.paperNote),
    marker: { ...PAPER_MARKER, size: 10 },
  });
  const metric = comparisons[0]?.metric === KNN ? "kNN-20" : "linear";
  const layout = baseLayout(
    opts.title ?? `Ours beside the paper: paired differences a - b (${metric} top-1)`,
    {
      height: Math.max(360, 190 + 24 * comparisons.length),
      margin: { l: 420, r: 40, t: 100, b: 70 },
      xaxis: { title: { text: "a - b (points): ours 95% CI over seeds; paper ImageNet" } },
      yaxis: {
        type: "category",
        categoryorder: "array",
        categoryarray: labels,
        autorange: "reversed",
        automargin: true,
      },
      legend: { orientation: "h", x: 0, y: 1, yanchor: "bottom", yshift: 10 },
      shapes: [{
        type: "line",
        xref: "x",
        yref: "paper",
        x0: 0,
        x1: 0,
        y0: 0,
        y1: 1,
        line: { color: "#444", width: 1 },
      }],
      annotations: [
        subtitle(
          "holds: the interval excludes 0 on the paper's side; opposite: on the other side; " +
            "not detected: it contains 0",
          opts.note,
        ),
      ],
    },
  );
  return { data, layout };
}
