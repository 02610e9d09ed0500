/**
 * Random (frozen) versus learned patch projection per framework (paper Section 4): bars of
 * the linear top-1 of each, and the paired gain beside the paper's.
 *
 * @example
 * ```ts
 * import { patchProjectionBars } from "./patch_projection.ts";
 * const spec = patchProjectionBars(rows, { comparisons });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import { bool, groupByConfig, metricInterval, trainedRows } from "../../experiments/aggregate.ts";
import { compareRows } from "../../experiments/summary.ts";
import type { Interval } from "../../experiments/stats.ts";
import type { Trace } from "../render.ts";
import {
  baseLayout,
  ciBars,
  COLORS,
  distinct,
  extent,
  type FigureOptions,
  type FigureSpec,
  finishFigure,
  LINEAR,
  meanOf,
  panelTitle,
  PAPER_MARKER,
  PAPER_NAME,
  signed,
  subtitle,
  type TableLike,
  zoomRange,
} from "./kit.ts";

const FRAMEWORK_LABEL: Record<string, string> = {
  mocov3: "MoCo v3",
  simclr: "SimCLR",
  byol: "BYOL",
  swav: "SwAV",
};

/**
 * Random (frozen) versus learned patch projection for each framework: left, linear top-1 bars
 * (mean over seeds, 95% t-interval error bars) of the learned and the random projection; right,
 * the gain random - learned paired by seed (`compareRows`) with its 95% CI per framework, the
 * paper's gains as diamonds. Input: `patch-projection.csv` rows (`framework`,
 * `freezePatchEmbed`, `seed`, `linear_top1`).
 *
 * @example
 * ```ts
 * const spec = patchProjectionBars(rows, { comparisons });
 * ```
 */
export function patchProjectionBars(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const paper = (opts.paper ?? SUITES["patch-projection"].paper).filter((p) => p.match?.framework);
  const trained = trainedRows(results);
  const groups = groupByConfig(trained, ["framework", "freezePatchEmbed"]);
  const frameworks = distinct(groups.map((g) => String(g.config.framework))) as string[];
  const labels = frameworks.map((f) => FRAMEWORK_LABEL[f] ?? f);
  // The paper's gains of the frameworks that ran (a table of fewer frameworks draws fewer).
  const shown = paper.filter((p) => frameworks.includes(String(p.match!.framework)));
  const find = (f: string, frozen: boolean) =>
    groups.find((g) => g.config.framework === f && bool(g.config.freezePatchEmbed) === frozen);
  const data: Trace[] = [];
  const all: (Interval | null)[] = [];
  for (const frozen of [false, true]) {
    const iv = frameworks.map((f) => metricInterval(find(f, frozen)?.runs ?? [], LINEAR));
    all.push(...iv);
    data.push({
      type: "bar",
      name: `${frozen ? "random (frozen)" : "learned"}: linear top-1`,
      x: labels,
      y: iv.map(meanOf),
      text: iv.map((i) => (i ? i.mean.toFixed(1) : "")),
      textposition: "outside",
      marker: { color: frozen ? COLORS[1] : COLORS[0] },
      error_y: ciBars(iv),
      offsetgroup: String(frozen),
    });
  }
  const gains = frameworks.map((f) =>
    compareRows(trained, { framework: f, freezePatchEmbed: true }, {
      framework: f,
      freezePatchEmbed: false,
    }, {
      study: "patch-projection",
      effect: `random - learned, ${f}`,
      paper: NaN,
      paperSign: 1,
      paperNote: "",
    }).diff
  );
  data.push({
    type: "bar",
    name: "ours: random - learned (paired by seed)",
    x: labels,
    y: gains.map(meanOf),
    text: gains.map((d) => (d ? signed(d.mean) : "")),
    textposition: "outside",
    marker: { color: COLORS[2] },
    error_y: ciBars(gains),
    xaxis: "x2",
    yaxis: "y2",
  });
  data.push({
    type: "scatter",
    mode: "markers+text",
    name: `${PAPER_NAME}: random - learned`,
    x: shown.map((p) => FRAMEWORK_LABEL[String(p.match!.framework)]),
    y: shown.map((p) => p.value),
    text: shown.map((p) => `+${p.value.toFixed(1)}`),
    textposition: "middle right",
    hovertext: shown.map((p) => `${p.label}: +${p.value}${p.note ? ` (${p.note})` : ""}`),
    marker: PAPER_MARKER,
    xaxis: "x2",
    yaxis: "y2",
  });
  const left: [number, number] = [0, 0.58], right: [number, number] = [0.68, 1];
  const layout = baseLayout("Random vs learned patch projection, per framework", {
    barmode: "group",
    xaxis: { domain: left, type: "category", categoryorder: "array", categoryarray: labels },
    yaxis: {
      title: { text: "linear top-1 (%), mean ± 95% CI over seeds" },
      range: zoomRange(extent(all)),
    },
    xaxis2: {
      domain: right,
      anchor: "y2",
      type: "category",
      categoryorder: "array",
      categoryarray: labels,
    },
    yaxis2: { anchor: "x2", title: { text: "gain (points)" }, zeroline: true },
    annotations: [
      subtitle(
        "random = patch projection frozen at its initialisation; error bars: 95% t-intervals " +
          "over seeds",
        opts.note,
      ),
      panelTitle("linear probe accuracy", left),
      panelTitle(`gain of random projection (ours vs ${PAPER_NAME})`, right),
    ],
  });
  return finishFigure(data, layout, {
    study: "patch-projection",
    comparisons: opts.comparisons,
  });
}
