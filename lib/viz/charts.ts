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

/**
 * A pretraining run's curves from its `log.csv` and `knn.csv` rows: the loss per step (left axis,
 * at step + 1, after the update), an optional constant reference line (e.g. the chance loss), and
 * on the right axis the kNN monitor's top-1 and, where the rows have it, the online linear
 * probe's top-1 (`probe_top1`), both in percent.
 *
 * @example
 * ```ts
 * const { log, knn } = await readRun(dir);
 * await showPlot(trainingCurvesSpec(log, knn, { title: "MoCo v3 on fmnist" }));
 * ```
 */
export function trainingCurvesSpec(
  log: readonly { step: number; loss: number }[],
  knn: readonly { step: number; top1: number; probe_top1?: number }[],
  opts: { title?: string; reference?: { name: string; loss: number } } = {},
): PlotSpec {
  const series: Series[] = [
    { name: "loss", x: log.map((r) => r.step + 1), y: log.map((r) => r.loss) },
  ];
  if (opts.reference) {
    const { name, loss } = opts.reference;
    series.push({ name, x: [1, Math.max(1, log.length)], y: [loss, loss], dash: "dash" });
  }
  series.push({
    name: "kNN top-1 (%)",
    x: knn.map((r) => r.step),
    y: knn.map((r) => r.top1),
    mode: "lines+markers",
    y2: true,
  });
  const probe = knn.filter((r) => typeof r.probe_top1 === "number");
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
  return lineSpec(series, {
    title: opts.title,
    xTitle: "step",
    yTitle: "loss",
    y2Title: probe.length ? "kNN / online probe top-1 (%)" : "kNN top-1 (%)",
  });
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
