/**
 * Small plotly specs for notebooks (lines with an optional second axis, a run's loss, kNN and
 * online-probe curves, heatmaps) and the matrices they draw: cosine similarity of rows and the ViT paper's mosaic of per-patch maps.
 *
 * @example
 * ```ts
 * import { lineSpec } from "./charts.ts";
 * import { showPlot } from "./display.ts";
 * await showPlot(lineSpec([{ name: "loss", x: [0, 1], y: [3.2, 2.9] }], { xTitle: "step" }));
 * ```
 * @module
 */
import type { PlotSpec } from "./render.ts";

/** A line trace for {@link lineSpec}: a name and points. */
export interface Series {
  name: string;
  x: number[];
  y: number[];
  /** `lines` (default), `markers` or `lines+markers`. */
  mode?: string;
  /** Put this series on a second y axis (right). */
  y2?: boolean;
  /** Line dash: `solid` (default), `dash`, `dot`. */
  dash?: string;
}

/**
 * A line chart of several series.
 *
 * @example
 * ```ts
 * lineSpec([{ name: "loss", x: [0, 1], y: [3.2, 2.9] }], { title: "loss", xTitle: "step" });
 * ```
 */
export function lineSpec(
  series: Series[],
  opts: {
    title?: string;
    xTitle?: string;
    yTitle?: string;
    y2Title?: string;
    logY?: boolean;
    /** Ticks at whole numbers only (steps, blocks). */
    xInteger?: boolean;
  } = {},
): PlotSpec {
  const layout: Record<string, unknown> = {
    title: { text: opts.title ?? "" },
    xaxis: { title: { text: opts.xTitle ?? "" }, ...(opts.xInteger ? { dtick: 1 } : {}) },
    yaxis: { title: { text: opts.yTitle ?? "" }, type: opts.logY ? "log" : "linear" },
    margin: { t: 50, r: 30, b: 50, l: 60 },
    legend: { orientation: "h", y: -0.2 },
  };
  if (series.some((s) => s.y2)) {
    layout.yaxis2 = { title: { text: opts.y2Title ?? "" }, overlaying: "y", side: "right" };
    (layout.margin as Record<string, number>).r = 60;
  }
  return {
    data: series.map((s) => ({
      type: "scatter",
      name: s.name,
      x: s.x,
      y: s.y,
      mode: s.mode ?? "lines",
      ...(s.dash ? { line: { dash: s.dash } } : {}),
      ...(s.y2 ? { yaxis: "y2" } : {}),
    })),
    layout,
  };
}

/** One point of the kNN curve (a `knn.csv` row): its step, top-1 and, optionally, its sizes. */
export interface KnnPoint {
  step: number;
  top1: number;
  probe_top1?: number;
  k?: number;
  train_size?: number;
  test_size?: number;
}

/**
 * A pretraining run's curves from its `log.csv` and `knn.csv` rows: the loss per step (left axis,
 * at step + 1, after the update), an optional constant reference line (e.g. the chance loss), and
 * on the right axis the kNN monitor's top-1 and, where the rows have it, the online linear
 * probe's top-1 (`probe_top1`), both in percent. Given `final` (the final report's kNN on the
 * full splits, {@link splitKnn}), that row is drawn apart, one marked point with its own legend
 * entry, and the monitor's line is named with its subsets' sizes: the two are not one series.
 * Both y axes get round ticks with their grid lines aligned ({@link alignedTicks}).
 *
 * @example
 * ```ts
 * const { log, knn } = await readRun(dir);
 * await showPlot(trainingCurvesSpec(log, knn, { title: "MoCo v3 on fmnist" }));
 * ```
 */
export function trainingCurvesSpec(
  log: readonly { step: number; loss: number }[],
  knn: readonly KnnPoint[],
  opts: { title?: string; reference?: { name: string; loss: number }; final?: KnnPoint } = {},
): PlotSpec {
  const final = opts.final;
  const monitor = final ? knn.filter((r) => r.step !== final.step) : knn;
  const series: Series[] = [
    { name: "loss", x: log.map((r) => r.step + 1), y: log.map((r) => r.loss) },
  ];
  if (opts.reference) {
    const { name, loss } = opts.reference;
    series.push({ name, x: [1, Math.max(1, log.length)], y: [loss, loss], dash: "dash" });
  }
  series.push({
    name: final
      ? `kNN-${monitor[0]?.k ?? final.k ?? 20} monitor${sizes(monitor[0])} (%)`
      : "kNN top-1 (%)",
    x: monitor.map((r) => r.step),
    y: monitor.map((r) => r.top1),
    mode: "lines+markers",
    y2: true,
  });
  const probe = monitor.filter((r) => typeof r.probe_top1 === "number");
  if (probe.length) {
    series.push({
      name: "online probe top-1 (%)",
      x: probe.map((r) => r.step),
      y: probe.map((r) => r.probe_top1!),
      mode: "lines+markers",
      dash: "dot",
      y2: true,
    });
  }
  const spec = lineSpec(series, {
    title: opts.title,
    xTitle: "step",
    yTitle: "loss",
    y2Title: probe.length ? "kNN / online probe top-1 (%)" : "kNN top-1 (%)",
  });
  if (final) {
    spec.data.push({
      type: "scatter",
      mode: "markers",
      name: `final kNN-${final.k ?? 20}${sizes(final)} (%)`,
      x: [final.step],
      y: [final.top1],
      marker: { symbol: "star", size: 14, color: "#111", line: { width: 1, color: "#fff" } },
      yaxis: "y2",
    });
  }
  const values = (axis: string) =>
    spec.data.filter((t) => (t.yaxis ?? "y") === axis).flatMap((t) => t.y as number[]);
  const [left, right] = alignedTicks([
    { values: values("y") },
    { values: values("y2"), min: 0, max: 100 },
  ]);
  const layout = spec.layout as Record<string, Record<string, unknown>>;
  Object.assign(layout.yaxis, { range: left.range, tick0: left.range[0], dtick: left.dtick });
  Object.assign(layout.yaxis2, {
    range: right.range,
    tick0: right.range[0],
    dtick: right.dtick,
    showgrid: false, // its ticks sit on the left axis's grid lines
  });
  return spec;
}

/** ` (5,000 / 1,000 images)` from a kNN row's sizes, or nothing without them. */
function sizes(r: KnnPoint | undefined): string {
  if (!r || !r.train_size || !r.test_size) return "";
  const n = (v: number) => v.toLocaleString("en");
  return ` (${n(r.train_size)} / ${n(r.test_size)} images)`;
}

/** One axis for {@link alignedTicks}: its values, and bounds its range must stay within. */
export interface TickAxis {
  values: readonly number[];
  min?: number;
  max?: number;
}

/**
 * Round ticks for axes drawn over one another: for each, a step of 1, 2, 2.5 or 5 times a power
 * of ten that cuts its values' span into about `target` intervals, and a range from a multiple of
 * the step below its lowest value to one above its highest; then every axis gets as many
 * intervals as the one with most (grown at the top, or at the bottom where the top would pass
 * `max`), so that the grid lines of all fall on ticks of each.
 *
 * @example
 * ```ts
 * alignedTicks([{ values: [2.1, 4.4] }, { values: [35, 72], max: 100 }]);
 * // [{ range: [2, 4.5], dtick: 0.5 }, { range: [30, 80], dtick: 10 }]: 5 intervals each
 * ```
 */
export function alignedTicks(
  axes: TickAxis[],
  target = 5,
): { range: [number, number]; dtick: number }[] {
  const each = axes.map((a) => {
    const v = a.values.filter(Number.isFinite);
    let lo = v.length ? Math.min(...v) : 0, hi = v.length ? Math.max(...v) : 1;
    if (hi - lo < 1e-9) [lo, hi] = [lo - 0.5, hi + 0.5];
    const step = niceStep((hi - lo) / target);
    const from = round(Math.floor(lo / step + 1e-9) * step, step);
    const to = round(Math.ceil(hi / step - 1e-9) * step, step);
    return { axis: a, step, from, n: Math.round((to - from) / step) };
  });
  const n = Math.max(...each.map((e) => e.n));
  return each.map(({ axis, step, from, n: own }) => {
    let lo = from, hi = from + own * step;
    for (let k = own; k < n; k++) {
      if (axis.max === undefined || hi + step <= axis.max + 1e-9) hi += step;
      else if (axis.min === undefined || lo - step >= axis.min - 1e-9) lo -= step;
      else hi += step;
    }
    return { range: [round(lo, step), round(hi, step)], dtick: step };
  });
}

/** The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw`. */
function niceStep(raw: number): number {
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw - 1e-12)!;
}

/** `v` without the float noise of multiplying by `step` (0.1 * 3 = 0.30000000000000004). */
function round(v: number, step: number): number {
  const digits = Math.max(0, -Math.floor(Math.log10(step)) + 2);
  return Number(v.toFixed(digits));
}

/**
 * A heatmap of a row-major matrix `[rows, cols]`, row 0 at the top.
 *
 * @example
 * ```ts
 * heatmapSpec(new Float32Array([0, 1, 1, 0]), 2, 2, { title: "identity" });
 * ```
 */
export function heatmapSpec(
  values: ArrayLike<number>,
  rows: number,
  cols: number,
  opts: {
    title?: string;
    xTitle?: string;
    yTitle?: string;
    colorscale?: string;
    zmin?: number;
    zmax?: number;
    /** Square cells and no tick labels (for image-like maps). */
    image?: boolean;
  } = {},
): PlotSpec {
  const axis = opts.image
    ? { showticklabels: false, showgrid: false, zeroline: false, ticks: "" }
    : {};
  const z = Array.from(
    { length: rows },
    (_, r) => Array.from({ length: cols }, (_, c) => round4(values[r * cols + c])),
  );
  return {
    data: [{
      type: "heatmap",
      z,
      colorscale: opts.colorscale ?? "RdBu",
      zmin: opts.zmin,
      zmax: opts.zmax,
    }],
    layout: {
      title: { text: opts.title ?? "" },
      xaxis: { title: { text: opts.xTitle ?? "" }, ...axis },
      yaxis: {
        title: { text: opts.yTitle ?? "" },
        autorange: "reversed",
        ...axis,
        ...(opts.image ? { scaleanchor: "x" } : {}),
      },
      margin: { t: 50, r: 30, b: 50, l: 60 },
    },
  };
}

function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}

/**
 * Cosine similarity of every pair of rows of a row-major `[n, d]` matrix: `[n, n]`, row-major.
 *
 * @example
 * ```ts
 * cosineSimilarity(new Float32Array([1, 0, 0, 1]), 2, 2); // [1, 0, 0, 1]
 * ```
 */
export function cosineSimilarity(rows: ArrayLike<number>, n: number, d: number): Float32Array {
  if (rows.length !== n * d) {
    throw new Error(`cosineSimilarity: expected ${n} x ${d} = ${n * d} values, got ${rows.length}`);
  }
  const norms = Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += rows[i * d + k] ** 2;
    return Math.sqrt(s) || 1;
  });
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += rows[i * d + k] * rows[j * d + k];
      out[i * n + j] = s / (norms[i] * norms[j]);
    }
  }
  return out;
}

/**
 * Rearranges an `[N, N]` similarity matrix of a `grid x grid` layout (N = grid^2) into a mosaic
 * of per-patch maps, as in the ViT paper's Fig. 7: block (r, c) of the mosaic is the `grid x grid`
 * map of patch (r, c)'s similarity to every patch. Blocks are separated by `gap` cells of NaN
 * (drawn empty). Returns the row-major values and the mosaic's side.
 */
export function similarityMosaic(
  sim: ArrayLike<number>,
  grid: number,
  gap = 1,
): { values: Float32Array; size: number } {
  const N = grid * grid;
  if (sim.length !== N * N) {
    throw new Error(`similarityMosaic: expected ${N} x ${N} values, got ${sim.length}`);
  }
  const size = grid * grid + (grid - 1) * gap;
  const values = new Float32Array(size * size).fill(NaN);
  for (let i = 0; i < N; i++) {
    const [ri, ci] = [Math.floor(i / grid), i % grid];
    for (let j = 0; j < N; j++) {
      const [rj, cj] = [Math.floor(j / grid), j % grid];
      values[(ri * (grid + gap) + rj) * size + ci * (grid + gap) + cj] = sim[i * N + j];
    }
  }
  return { values, size };
}
