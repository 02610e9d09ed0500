/**
 * The stability study's gradient norms (paper Section 4: the first layer's gradient spikes
 * before a dip): the patch projection against the last block, one panel per configuration.
 *
 * @example
 * ```ts
 * import { gradientTraces } from "./gradient_traces.ts";
 * const spec = gradientTraces(results, curves, { note: "budget cpu" });
 * ```
 * @module
 */
import { dipThreshold, findDips, gradientSpikes } from "../../experiments/stability.ts";
import { bool, firstSeedRuns, rowsOf } from "../../experiments/aggregate.ts";
import { lrText } from "../../experiments/summary.ts";
import type { Trace } from "../render.ts";
import { envelope, knnCurve, seedPhrase, stepRows } from "./curves.ts";
import {
  baseLayout,
  byStability,
  COLORS,
  distinct,
  type FigureSpec,
  finishFigure,
  HEIGHT,
  num,
  projName,
  subtitle,
  type TableLike,
} from "./kit.ts";

/**
 * Gradient norms over training, one panel per configuration (its lowest seed): the patch
 * projection (first layer) against the last block, with the patch projection's spikes (>= 3x
 * its median) marked and dotted vertical lines at the kNN dips' bottoms. The paper reports this
 * as a picture (spikes precede dips), not a number, so there is no paper marker.
 *
 * @example
 * ```ts
 * const spec = gradientTraces(results, curves, { note: "budget cpu" });
 * ```
 */
export function gradientTraces(
  results: TableLike,
  curves: TableLike,
  opts: { minDepth?: number; note?: string } = {},
): FigureSpec {
  const rows = firstSeedRuns(results).sort(byStability);
  const cur = rowsOf(curves);
  const lrs = distinct(rows.map((r) => num(r.baseLr))) as number[];
  const cols = Math.max(1, lrs.length);
  const nRows = Math.max(1, Math.ceil(rows.length / cols));
  const data: Trace[] = [];
  const shapes: Record<string, unknown>[] = [];
  const annotations: Record<string, unknown>[] = [
    subtitle(
      "solid: patch projection (first layer; 0 when frozen); dashed: last block; o: spikes; " +
        "dotted: kNN dips; " +
        seedPhrase(rows),
      opts.note,
    ),
  ];
  const layout = baseLayout("Gradient norms: patch projection vs last block", {
    height: Math.max(HEIGHT, 250 * nRows + 140),
    grid: { rows: nRows, columns: cols, pattern: "independent", ygap: 0.35, xgap: 0.12 },
  });
  let spiked = false;
  rows.forEach((r, i) => {
    const k = i + 1;
    const ax = k === 1 ? "" : String(k);
    const steps = stepRows(cur, String(r.run_id));
    const images = steps.map((s) => s.images);
    const proj = r.freezePatchEmbed === undefined ? "" : `, ${projName(bool(r.freezePatchEmbed))}`;
    const title = `batch ${num(r.batchSize)}, lr ${lrText(num(r.baseLr))}${proj}`;
    data.push({
      type: "scatter",
      mode: "lines",
      name: "patch projection",
      legendgroup: "patch",
      showlegend: i === 0,
      ...envelope(images, steps.map((s) => s.grad_patch)),
      line: { color: COLORS[3], width: 1.5 },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    data.push({
      type: "scatter",
      mode: "lines",
      name: "last block",
      legendgroup: "last",
      showlegend: i === 0,
      ...envelope(images, steps.map((s) => s.grad_last_block)),
      line: { color: COLORS[0], width: 1.5, dash: "dash" },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    const spikes = steps.length ? gradientSpikes(steps, { key: "grad_patch" }) : [];
    const at = new Map(steps.map((s) => [s.step, s.images]));
    data.push({
      type: "scatter",
      mode: "markers",
      name: "spike (>= 3x median)",
      legendgroup: "spike",
      // In the legend once: from the first panel with spikes (an empty trace has no entry).
      showlegend: spikes.length > 0 && !spiked,
      x: spikes.map((s) => at.get(s.step)),
      y: spikes.map((s) => s.value),
      marker: { symbol: "circle-open", size: 10, color: COLORS[3], line: { width: 2 } },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    if (spikes.length) spiked = true;
    const pts = knnCurve(cur, String(r.run_id));
    for (const d of findDips(pts, { minDepth: opts.minDepth ?? dipThreshold(pts) })) {
      const x = pts.find((p) => p.step === d.bottomStep)!.images;
      shapes.push({
        type: "line",
        xref: `x${ax}`,
        yref: `y${ax} domain`,
        x0: x,
        x1: x,
        y0: 0,
        y1: 1,
        line: { color: "#d00", width: 1.5, dash: "dot" },
      });
    }
    layout[`xaxis${ax}`] = { title: { text: "images seen", standoff: 2 } };
    // The y title on the first column only: beside the others it would run into the panel
    // to their left.
    const first = i % cols === 0;
    layout[`yaxis${ax}`] = { rangemode: "tozero", title: { text: first ? "grad norm" : "" } };
    annotations.push({
      text: title,
      xref: `x${ax} domain`,
      yref: `y${ax} domain`,
      x: 0.5,
      y: 1,
      yanchor: "bottom",
      showarrow: false,
      font: { size: 12 },
    });
  });
  layout.shapes = shapes;
  layout.annotations = annotations;
  return finishFigure(data, layout, { legendGap: 60 });
}
