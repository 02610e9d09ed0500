/**
 * The notebooks' compact curves of a suite (plotly's default size): its kNN monitor with the
 * dips marked, and its gradient norms with the spikes marked.
 *
 * @example
 * ```ts
 * import { dipCurvesSpec } from "./notebook_curves.ts";
 * const spec = dipCurvesSpec(await suiteData("stability"), (r) => `batch ${r.batchSize}`);
 * ```
 * @module
 */
import { dipThreshold, findDips, gradientSpikes } from "../../experiments/stability.ts";
import { firstSeedRuns, rowsOf } from "../../experiments/aggregate.ts";
import type { PlotSpec, Trace } from "../render.ts";
import { envelope, knnCurve, stepRows } from "./curves.ts";
import { COLORS, markedPoints, type TableLike } from "./kit.ts";

/** A suite's tables as a notebook holds them: `<suite>.csv` rows and `<suite>.curves.csv` rows. */
export interface SuiteTables {
  results: TableLike;
  curves: TableLike;
}

/** The notebooks' compact layout (plotly's default size, legend below). */
function notebookLayout(title: string, yaxis: Record<string, unknown>): Record<string, unknown> {
  return {
    title: { text: title },
    xaxis: { title: { text: "training images seen" } },
    yaxis,
    margin: { t: 50, r: 30, b: 50, l: 60 },
    legend: { orientation: "h", y: -0.2 },
  };
}

/**
 * Whether a suite's runs were monitored during training: some run has at least 3 kNN points (a
 * suite without a monitor has only each run's final kNN, no curve to find dips in).
 *
 * @example
 * ```ts
 * if (hasMonitor(await suiteData("stability"))) console.log("kNN curves to plot");
 * ```
 */
export function hasMonitor(data: SuiteTables): boolean {
  const cur = rowsOf(data.curves);
  return rowsOf(data.results).some((r) => knnCurve(cur, String(r.run_id)).length >= 3);
}

/**
 * The notebooks' kNN monitor curves of a suite, one line per configuration (its lowest seed,
 * {@link firstSeedRuns}; named by `label`) against training images seen, with the bottom of
 * every dip ({@link findDips}; `minDepth` points, default each run's `dipThreshold`) marked by a
 * red x.
 *
 * @example
 * ```ts
 * const spec = dipCurvesSpec(await suiteData("stability"), (r) => `batch ${r.batchSize}`);
 * ```
 */
export function dipCurvesSpec(
  data: SuiteTables,
  label: (row: Record<string, unknown>) => string,
  opts: { title?: string; minDepth?: number } = {},
): PlotSpec {
  const cur = rowsOf(data.curves);
  const traces: Trace[] = [];
  const dips: { x: number; y: number; text: string }[] = [];
  for (const r of firstSeedRuns(data.results)) {
    const pts = knnCurve(cur, String(r.run_id));
    if (pts.length === 0) continue;
    const name = label(r);
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name,
      x: pts.map((p) => p.images),
      y: pts.map((p) => p.acc),
      marker: { size: 4 },
    });
    for (const d of findDips(pts, { minDepth: opts.minDepth ?? dipThreshold(pts) })) {
      const at = pts.find((p) => p.step === d.bottomStep)!;
      dips.push({ x: at.images, y: d.bottomAcc, text: `${name}: -${d.depth.toFixed(1)}` });
    }
  }
  traces.push(
    markedPoints(`dips (${dips.length})`, dips, { symbol: "x", size: 12, color: "#d00" }, true),
  );
  return {
    data: traces,
    layout: notebookLayout(opts.title ?? "kNN top-1 during training (x: dips)", {
      title: { text: "kNN top-1 (%)" },
    }),
  };
}

/**
 * The notebooks' gradient-norm traces of a suite, one configuration each (its lowest seed): the
 * patch projection's (solid) and the last block's (dotted, same colour) against training images
 * seen, log scale, with the patch projection's spikes ({@link gradientSpikes}, >= 3x its
 * median) marked.
 *
 * @example
 * ```ts
 * const spec = gradientSpec(await suiteData("stability"), (r) => `lr ${r.baseLr}`);
 * ```
 */
export function gradientSpec(
  data: SuiteTables,
  label: (row: Record<string, unknown>) => string,
  opts: { title?: string } = {},
): PlotSpec {
  const cur = rowsOf(data.curves);
  const traces: Trace[] = [];
  const spikes: { x: number; y: number }[] = [];
  firstSeedRuns(data.results).forEach((r, i) => {
    const pts = stepRows(cur, String(r.run_id));
    if (pts.length === 0) return;
    const color = COLORS[i % COLORS.length];
    const x = pts.map((p) => p.images);
    // One legend entry per run: the solid patch-projection line; its dotted last-block line
    // toggles with it.
    const group = String(r.run_id);
    traces.push({
      type: "scatter",
      mode: "lines",
      name: label(r),
      legendgroup: group,
      ...envelope(x, pts.map((p) => p.grad_patch)),
      line: { color, width: 1.5 },
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      name: `${label(r)}: last block`,
      legendgroup: group,
      showlegend: false,
      ...envelope(x, pts.map((p) => p.grad_last_block)),
      line: { color, width: 1, dash: "dot" },
    });
    for (const sp of gradientSpikes(pts)) {
      spikes.push({ x: x[pts.findIndex((t) => t.step === sp.step)], y: sp.value });
    }
  });
  traces.push(
    markedPoints(`spikes (${spikes.length})`, spikes, {
      symbol: "circle-open",
      size: 11,
      color: "#d00",
      line: { width: 2 },
    }),
  );
  return {
    data: traces,
    layout: notebookLayout(opts.title ?? "gradient norms: patch projection vs last block", {
      title: { text: "gradient norm" },
      type: "log",
    }),
  };
}
