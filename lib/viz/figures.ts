/**
 * The paper's figures at workbench scale, as plotly figure specs (plain JSON `{data, layout}`)
 * built from the experiments' tables (`data/results/<suite>.csv` and `<suite>.curves.csv`), the
 * notebooks' compact curves of a suite and its table beside the paper, and a writer that turns a
 * spec into a self-contained HTML file and a PNG (through the one renderer, `render.ts`).
 *
 * Building and writing are separate: the same spec shows inline in Jupyter through the
 * `application/vnd.plotly.v1+json` MIME type ({@link mimeBundle}). Each figure puts the paper's
 * ImageNet number beside ours where one exists: diamonds named "paper (ImageNet)", on a second
 * y axis or in a side panel, since Fashion-MNIST kNN and ImageNet linear-probe accuracies are
 * not on one scale.
 *
 * @example
 * ```ts
 * import { buildFigures, writeFigure } from "./figures.ts";
 * const figs = await buildFigures("data/results");
 * for (const [name, spec] of Object.entries(figs)) await writeFigure(spec, name, "figures");
 * // In a notebook: Deno.jupyter.display(mimeBundle(figs.posemb), { raw: true });
 * ```
 * @module
 */
import * as aq from "arquero";
import { findDips, gradientSpikes } from "../experiments/stability.ts";
import { type Budget, BUDGET_SPECS, type PaperNumber, SUITES } from "../experiments/suites.ts";
import { curvesFile, readTable, suiteFile } from "../experiments/tables.ts";
import { vitConfig, vitFlops } from "../model/vit.ts";
import {
  figureHtml,
  figureTitle,
  type PlotSpec,
  type RenderOptions,
  renderPng,
  type Trace,
} from "./render.ts";

export { mimeBundle, type Trace } from "./render.ts";

/** A figure of the paper's studies: a plotly spec whose layout is always set (size included). */
export interface FigureSpec extends PlotSpec {
  layout: Record<string, unknown>;
}

/** Rows as plain objects, or an arquero table (anything with `.objects()`). */
export type TableLike = Record<string, unknown>[] | { objects(): object[] };

/** The legend name of every paper marker. */
export const PAPER_NAME = "paper (ImageNet)";

const PAPER_MARKER = {
  symbol: "diamond",
  size: 12,
  color: "#111",
  line: { width: 1, color: "#fff" },
};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const DASHES = ["solid", "dash", "dot", "dashdot"];
const WIDTH = 1100;
const HEIGHT = 520;

function rowsOf(t: TableLike): Record<string, unknown>[] {
  return (Array.isArray(t) ? t : t.objects()) as Record<string, unknown>[];
}

function num(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}

/**
 * Binomial standard error (points) of a row's kNN top-1 on its `knn_test_size` queries; NaN
 * when the size is unknown.
 */
function seOf(row: Record<string, unknown> | undefined): number {
  if (!row) return NaN;
  const p = num(row.knn_top1) / 100, n = num(row.knn_test_size);
  return 100 * Math.sqrt(p * (1 - p) / n);
}

const errorBars = (se: number[]) => ({
  type: "data",
  array: se.map((v) => (Number.isFinite(v) ? v : 0)),
  visible: se.some(Number.isFinite),
  color: "#444",
  thickness: 1,
  width: 3,
});

function bool(v: unknown): boolean {
  return v === true || v === "true";
}

/** Distinct values in first-seen order (numbers sorted ascending). */
function distinct(values: unknown[]): unknown[] {
  const out = [...new Set(values)];
  return out.every((v) => typeof v === "number") ? (out as number[]).sort((a, b) => a - b) : out;
}

function fmtLr(lr: number): string {
  return lr.toExponential(1).replace(".0e", "e");
}

function baseLayout(title: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    title: { text: title, x: 0.02, xanchor: "left", y: 0.985, yanchor: "top", font: { size: 17 } },
    width: WIDTH,
    height: HEIGHT,
    template: "plotly_white",
    paper_bgcolor: "#fff",
    plot_bgcolor: "#fff",
    font: { family: "Helvetica, Arial, sans-serif", size: 12 },
    margin: { l: 70, r: 80, t: 115, b: 70 },
    legend: { orientation: "h", x: 0, y: -0.16, yanchor: "top" },
    ...extra,
  };
}

/** A panel title as an annotation centred over an x domain. */
function panelTitle(text: string, domain: [number, number]): Record<string, unknown> {
  return {
    text,
    x: (domain[0] + domain[1]) / 2,
    y: 1.0,
    xref: "paper",
    yref: "paper",
    xanchor: "center",
    yanchor: "bottom",
    yshift: 6,
    showarrow: false,
    font: { size: 13 },
  };
}

/** Lines below the title: what to look at, then the data set and budget (if given). */
function subtitle(text: string, note?: string): Record<string, unknown> {
  return {
    text: note ? `${text}<br>${note}` : text,
    align: "left",
    x: 0,
    y: 1,
    yshift: 26,
    xref: "paper",
    yref: "paper",
    xanchor: "left",
    yanchor: "bottom",
    showarrow: false,
    font: { size: 12, color: "#555" },
  };
}

/** The side panel of paper numbers: diamonds at categorical x with their values as text. */
function paperPanel(
  paper: PaperNumber[],
  axis: number,
  yTitle: string,
): { trace: Trace; axes: Record<string, unknown> } {
  const trace: Trace = {
    type: "scatter",
    mode: "markers+text",
    name: PAPER_NAME,
    x: paper.map((p) => p.label),
    y: paper.map((p) => p.value),
    text: paper.map((p) => p.value.toFixed(1)),
    textposition: "middle right",
    hovertext: paper.map((p) => `${p.label}: ${p.value}${p.note ? ` (${p.note})` : ""}`),
    marker: PAPER_MARKER,
    xaxis: `x${axis}`,
    yaxis: `y${axis}`,
    cliponaxis: false,
  };
  const domain: [number, number] = [0.8, 1];
  const values = paper.map((p) => p.value);
  const pad = Math.max(1, (Math.max(...values) - Math.min(...values)) * 0.2);
  return {
    trace,
    axes: {
      [`xaxis${axis}`]: { domain, anchor: `y${axis}`, type: "category", tickangle: -35 },
      [`yaxis${axis}`]: {
        anchor: `x${axis}`,
        title: { text: yTitle },
        range: [Math.min(...values) - pad, Math.max(...values) + pad],
      },
    },
  };
}

/** kNN points of one run from the curves table, sorted by step. */
function knnCurve(curves: Record<string, unknown>[], runId: string) {
  return curves
    .filter((c) => String(c.run_id) === runId && c.kind === "knn")
    .map((c) => ({ step: num(c.step), images: num(c.images), acc: num(c.top1) }))
    .sort((a, b) => a.step - b.step);
}

/** Per-step rows of one run from the curves table, sorted by step. */
function stepRows(curves: Record<string, unknown>[], runId: string) {
  return curves
    .filter((c) => String(c.run_id) === runId && c.kind === "step")
    .map((c) => ({
      step: num(c.step),
      images: num(c.images),
      loss: num(c.loss),
      grad_patch: num(c.grad_patch),
      grad_last_block: num(c.grad_last_block),
    }))
    .sort((a, b) => a.step - b.step);
}

/** Options of the curve figures. */
export interface CurveOptions {
  /** Paper numbers for the side panel (default: the suite's). Empty: no panel. */
  paper?: PaperNumber[];
  /** Dip threshold in accuracy points (`findDips`' `minDepth`). Default 1. */
  minDepth?: number;
  /** Text under the title (data set, budget). */
  note?: string;
}

/**
 * Stability curves: kNN top-1 against training images seen, one line per (batch, lr) run
 * (colour = batch, dash = lr), the bottom of every dip ({@link findDips}) marked with an x in
 * the trace named `dips`, and the paper's final accuracies per batch size and lr in a side
 * panel. Inputs: `stability.csv` rows (`run_id`, `batchSize`, `baseLr`) and its curves.
 */
export function stabilityCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.stability.paper;
  const rows = rowsOf(results);
  const cur = rowsOf(curves);
  const batches = distinct(rows.map((r) => num(r.batchSize))) as number[];
  const lrs = distinct(rows.map((r) => num(r.baseLr))) as number[];
  const data: Trace[] = [];
  const dipX: number[] = [], dipY: number[] = [], dipText: string[] = [];
  const sorted = [...rows].sort((a, b) =>
    num(a.batchSize) - num(b.batchSize) || num(a.baseLr) - num(b.baseLr)
  );
  for (const r of sorted) {
    const b = num(r.batchSize), lr = num(r.baseLr);
    const pts = knnCurve(cur, String(r.run_id));
    if (pts.length === 0) continue;
    const color = COLORS[batches.indexOf(b) % COLORS.length];
    data.push({
      type: "scatter",
      mode: "lines+markers",
      name: `batch ${b}, lr ${fmtLr(lr)}`,
      x: pts.map((p) => p.images),
      y: pts.map((p) => p.acc),
      line: { color, dash: DASHES[lrs.indexOf(lr) % DASHES.length], width: 2 },
      marker: { size: 4, color },
    });
    for (const d of findDips(pts, { minDepth: opts.minDepth ?? 1 })) {
      const bottom = pts.find((p) => p.step === d.bottomStep)!;
      dipX.push(bottom.images);
      dipY.push(d.bottomAcc);
      dipText.push(`batch ${b}, lr ${fmtLr(lr)}: dip of ${d.depth.toFixed(1)} points`);
    }
  }
  data.push({
    type: "scatter",
    mode: "markers",
    name: "dips",
    x: dipX,
    y: dipY,
    hovertext: dipText,
    marker: { symbol: "x-thin", size: 14, color: "#d00", line: { width: 3, color: "#d00" } },
  });
  const mainDomain: [number, number] = [0, paper.length ? 0.7 : 1];
  const layout = baseLayout("Training stability: kNN accuracy during training", {
    xaxis: { domain: mainDomain, title: { text: "training images seen" } },
    yaxis: { title: { text: "kNN top-1 (%), ours" } },
    annotations: [
      subtitle("dips (x): drops of >= 1 point below the running peak that recover", opts.note),
      panelTitle("ours: kNN monitor", mainDomain),
    ],
  });
  if (paper.length) addPaperPanel(data, layout, paper, 2, "linear top-1 (%), ViT-B");
  return { data, layout };
}

function addPaperPanel(
  data: Trace[],
  layout: Record<string, unknown>,
  paper: PaperNumber[],
  axis: number,
  yTitle: string,
): void {
  const { trace, axes } = paperPanel(paper, axis, yTitle);
  data.push(trace);
  Object.assign(layout, axes);
  (layout.annotations as unknown[]).push(panelTitle(PAPER_NAME, [0.8, 1]));
}

/**
 * Gradient norms over training, one panel per run: the patch projection (first layer) against
 * the last block, with the patch projection's spikes (>= 3x its median) marked and
 * dotted vertical lines at the kNN dips' bottoms. The paper reports this as a picture (spikes
 * precede dips), not a number, so there is no paper marker.
 */
export function gradientTraces(
  results: TableLike,
  curves: TableLike,
  opts: { minDepth?: number; note?: string } = {},
): FigureSpec {
  const rows = [...rowsOf(results)].sort((a, b) =>
    num(a.batchSize) - num(b.batchSize) || num(a.baseLr) - num(b.baseLr)
  );
  const cur = rowsOf(curves);
  const lrs = distinct(rows.map((r) => num(r.baseLr))) as number[];
  const cols = Math.max(1, lrs.length);
  const nRows = Math.max(1, Math.ceil(rows.length / cols));
  const data: Trace[] = [];
  const shapes: Record<string, unknown>[] = [];
  const annotations: Record<string, unknown>[] = [
    subtitle(
      "solid: patch projection (first layer); dashed: last block; o: spikes; dotted: kNN dips",
      opts.note,
    ),
  ];
  const layout = baseLayout("Gradient norms: patch projection vs last block", {
    height: Math.max(HEIGHT, 250 * nRows + 140),
    grid: { rows: nRows, columns: cols, pattern: "independent", ygap: 0.35, xgap: 0.12 },
  });
  rows.forEach((r, i) => {
    const k = i + 1;
    const ax = k === 1 ? "" : String(k);
    const steps = stepRows(cur, String(r.run_id));
    const title = `batch ${num(r.batchSize)}, lr ${fmtLr(num(r.baseLr))}`;
    data.push({
      type: "scatter",
      mode: "lines",
      name: "patch projection",
      legendgroup: "patch",
      showlegend: i === 0,
      x: steps.map((s) => s.images),
      y: steps.map((s) => s.grad_patch),
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
      x: steps.map((s) => s.images),
      y: steps.map((s) => s.grad_last_block),
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
      showlegend: i === 0,
      x: spikes.map((s) => at.get(s.step)),
      y: spikes.map((s) => s.value),
      marker: { symbol: "circle-open", size: 10, color: COLORS[3], line: { width: 2 } },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    const pts = knnCurve(cur, String(r.run_id));
    for (const d of findDips(pts, { minDepth: opts.minDepth ?? 1 })) {
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
    layout[`yaxis${ax}`] = { rangemode: "tozero", title: { text: "grad norm" } };
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
  return { data, layout };
}

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

/** A markers-only trace of points, with their texts as hover text when `hover`. */
function markedPoints(
  name: string,
  points: { x: number; y: number; text?: string }[],
  marker: Record<string, unknown>,
  hover = false,
): Trace {
  const trace: Trace = {
    type: "scatter",
    mode: "markers",
    name,
    x: points.map((p) => p.x),
    y: points.map((p) => p.y),
  };
  if (hover) trace.hovertext = points.map((p) => p.text);
  trace.marker = marker;
  return trace;
}

/**
 * The notebooks' kNN monitor curves of a suite's runs (one line per run, named by `label`)
 * against training images seen, with the bottom of every dip ({@link findDips}, `minDepth`
 * points, default 1) marked by a red x.
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
  for (const r of rowsOf(data.results)) {
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
    for (const d of findDips(pts, { minDepth: opts.minDepth ?? 1 })) {
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
 * The notebooks' gradient-norm traces of a suite's runs: the patch projection's (solid) and the
 * last block's (dotted, same colour) against training images seen, log scale, with the patch
 * projection's spikes ({@link gradientSpikes}, >= 3x its median) marked.
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
  rowsOf(data.results).forEach((r, i) => {
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
      x,
      y: pts.map((p) => p.grad_patch),
      line: { color, width: 1.5 },
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      name: `${label(r)}: last block`,
      legendgroup: group,
      showlegend: false,
      x,
      y: pts.map((p) => p.grad_last_block),
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

const FRAMEWORK_LABEL: Record<string, string> = {
  mocov3: "MoCo v3",
  simclr: "SimCLR",
  byol: "BYOL",
};

/** A y range that shows differences between bars of similar height (not from zero). */
function zoomRange(values: number[], pad = 0.25): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 100];
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const span = Math.max(hi - lo, 2);
  return [Math.max(0, lo - span * pad * 2), Math.min(100, hi + span * pad)];
}

/**
 * Random (frozen) versus learned patch projection for each framework: left, kNN top-1 bars
 * (learned / random at each lr); right, the gain random - learned in points per framework and
 * lr, with the paper's gains as diamonds. Input: `patch-projection.csv` rows.
 */
export function patchProjectionBars(
  results: TableLike,
  opts: { paper?: PaperNumber[]; note?: string } = {},
): FigureSpec {
  const paper = (opts.paper ?? SUITES["patch-projection"].paper).filter((p) => p.match?.framework);
  const rows = rowsOf(results);
  const frameworks = distinct(rows.map((r) => String(r.framework))) as string[];
  const labels = frameworks.map((f) => FRAMEWORK_LABEL[f] ?? f);
  const lrs = distinct(rows.map((r) => num(r.baseLr))) as number[];
  const find = (f: string, frozen: boolean, lr: number) =>
    rows.find((r) =>
      r.framework === f && bool(r.freezePatchEmbed) === frozen && num(r.baseLr) === lr
    );
  const data: Trace[] = [];
  const accs: number[] = [];
  lrs.forEach((lr, j) => {
    for (const frozen of [false, true]) {
      const y = frameworks.map((f) => num(find(f, frozen, lr)?.knn_top1 ?? NaN));
      accs.push(...y);
      data.push({
        type: "bar",
        name: `${frozen ? "random (frozen)" : "learned"}, lr ${fmtLr(lr)}`,
        x: labels,
        y,
        text: y.map((v) => (Number.isFinite(v) ? v.toFixed(1) : "")),
        textposition: "outside",
        marker: {
          color: frozen ? ["#ff7f0e", "#ffbb78"][j % 2] : ["#1f77b4", "#aec7e8"][j % 2],
        },
        offsetgroup: `${j}-${frozen}`,
      });
    }
  });
  lrs.forEach((lr, j) => {
    const y = frameworks.map((f) =>
      num(find(f, true, lr)?.knn_top1 ?? NaN) - num(find(f, false, lr)?.knn_top1 ?? NaN)
    );
    const se = frameworks.map((f) => Math.hypot(seOf(find(f, true, lr)), seOf(find(f, false, lr))));
    data.push({
      type: "bar",
      name: `ours: random - learned, lr ${fmtLr(lr)}`,
      x: labels,
      y,
      text: y.map((v) => (Number.isFinite(v) ? (v >= 0 ? "+" : "") + v.toFixed(1) : "")),
      textposition: "outside",
      marker: { color: ["#2ca02c", "#98df8a"][j % 2] },
      error_y: errorBars(se),
      xaxis: "x2",
      yaxis: "y2",
    });
  });
  data.push({
    type: "scatter",
    mode: "markers+text",
    name: `${PAPER_NAME}: random - learned`,
    x: paper.map((p) => FRAMEWORK_LABEL[String(p.match!.framework)]),
    y: paper.map((p) => p.value),
    text: paper.map((p) => `+${p.value.toFixed(1)}`),
    textposition: "middle right",
    hovertext: paper.map((p) => `${p.label}: +${p.value}${p.note ? ` (${p.note})` : ""}`),
    marker: PAPER_MARKER,
    xaxis: "x2",
    yaxis: "y2",
  });
  const left: [number, number] = [0, 0.58], right: [number, number] = [0.68, 1];
  const layout = baseLayout("Random vs learned patch projection, per framework", {
    barmode: "group",
    xaxis: { domain: left, type: "category", categoryorder: "array", categoryarray: labels },
    yaxis: { title: { text: "kNN top-1 (%), ours" }, range: zoomRange(accs) },
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
        "random = patch projection frozen at its initialisation; error bars: binomial s.e.",
        opts.note,
      ),
      panelTitle("kNN accuracy", left),
      panelTitle(`gain of random projection (ours vs ${PAPER_NAME})`, right),
    ],
  });
  return { data, layout };
}

/** The label of a results row of the position-embedding suite. */
function posembLabel(posEmb: string, pool: string): string {
  const pe = { sincos: "sin-cos", learned: "learned", none: "none" }[posEmb] ?? posEmb;
  return pool === "mean" ? `${pe}, mean pool` : `${pe}, cls token`;
}

/** Whether a results row has every field value of `match`. */
function matches(row: Record<string, unknown>, match: Record<string, unknown>): boolean {
  return Object.entries(match).every(([k, v]) =>
    typeof v === "boolean" ? bool(row[k]) === v : String(row[k]) === String(v)
  );
}

/**
 * Bars of our accuracy per category, with the paper's matching numbers as grey bars beside them
 * on a second y axis (right).
 */
function barsWithPaper(
  title: string,
  rows: Record<string, unknown>[],
  label: (r: Record<string, unknown>) => string,
  paper: PaperNumber[],
  explain: string,
  note?: string,
): FigureSpec {
  const x = rows.map(label);
  const y = rows.map((r) => num(r.knn_top1));
  const placed = paper.flatMap((p) => {
    const r = p.match && rows.find((row) => matches(row, p.match as Record<string, unknown>));
    return r ? [{ p, x: label(r) }] : [];
  });
  const data: Trace[] = [{
    type: "bar",
    name: "ours (Fashion-MNIST kNN)",
    x,
    y,
    text: y.map((v) => v.toFixed(1)),
    textposition: "outside",
    marker: { color: COLORS[0] },
    error_y: errorBars(rows.map(seOf)),
    offsetgroup: "ours",
  }, {
    // Beside ours (grouped), on its own axis: the scales differ.
    type: "bar",
    name: PAPER_NAME,
    x: placed.map((q) => q.x),
    y: placed.map((q) => q.p.value),
    text: placed.map((q) => `${q.p.label}: ${q.p.value.toFixed(1)}`),
    textposition: "outside",
    hovertext: placed.map((q) => q.p.note ?? q.p.label),
    marker: { color: "#bdbdbd", line: { color: "#111", width: 1 } },
    offsetgroup: "paper",
    yaxis: "y2",
  }];
  const pv = placed.map((q) => q.p.value);
  const layout = baseLayout(title, {
    barmode: "group",
    xaxis: { type: "category" },
    yaxis: { title: { text: "kNN top-1 (%), ours" }, range: zoomRange(y) },
    yaxis2: {
      title: { text: `${PAPER_NAME}: linear top-1 (%)` },
      overlaying: "y",
      side: "right",
      range: zoomRange(pv.length ? pv : [0, 100]),
      tickformat: ".1f",
      showgrid: false,
    },
    annotations: [subtitle(explain, note)],
  });
  return { data, layout };
}

/**
 * Position embedding bars: sin-cos / learned / none with the class token, and sin-cos with mean
 * pooling; the paper's ViT-B numbers as grey bars beside ours, on the right axis. Input:
 * `posemb.csv` rows.
 */
export function posembBars(
  results: TableLike,
  opts: { paper?: PaperNumber[]; note?: string } = {},
): FigureSpec {
  const rows = rowsOf(results);
  return barsWithPaper(
    "Position embedding and pooling",
    rows,
    (r) => posembLabel(String(r.posEmb), String(r.pool)),
    opts.paper ?? SUITES.posemb.paper,
    "blue, left axis: ours (error bars: binomial s.e.); grey, right axis: the paper's ViT-B " +
      "on ImageNet",
    opts.note,
  );
}

/**
 * Patch size: left, kNN top-1 per patch size (the paper's ViT-L/16 and ViT-BN-L/7 as grey bars
 * on the right axis); right, forward FLOPs per image, ours (MFLOPs) and the paper's models
 * (GFLOPs, `vitFlops`), side by side. Input: `patch-size.csv` rows (`patchSize`, `knn_top1`, `flops`).
 */
export function patchSizeFigure(
  results: TableLike,
  opts: { paper?: PaperNumber[]; note?: string; imageSize?: number } = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES["patch-size"].paper;
  const rows = [...rowsOf(results)].sort((a, b) => num(b.patchSize) - num(a.patchSize));
  const side = opts.imageSize ?? 28;
  const label = (r: Record<string, unknown>) =>
    `patch ${num(r.patchSize)} (${(side / num(r.patchSize)) ** 2} tokens)`;
  const acc = barsWithPaper("", rows, label, paper, "");
  const x = rows.map(label);
  const flops = rows.map((r) => num(r.flops) / 1e6);
  const placed = paper.flatMap((p) => {
    const r = p.match && rows.find((row) => matches(row, p.match as Record<string, unknown>));
    return r && p.vit ? [{ p, x: label(r), g: vitFlops(vitConfig(p.vit)) / 1e9 }] : [];
  });
  const data: Trace[] = [
    ...acc.data,
    {
      type: "bar",
      name: "ours: forward MFLOPs / image",
      x,
      y: flops,
      text: flops.map((v) => v.toFixed(1)),
      textposition: "outside",
      marker: { color: COLORS[2] },
      offsetgroup: "ours",
      xaxis: "x2",
      yaxis: "y3",
    },
    {
      type: "bar",
      name: `${PAPER_NAME}: GFLOPs / image`,
      x: placed.map((q) => q.x),
      y: placed.map((q) => q.g),
      text: placed.map((q) => `${q.p.label}: ${q.g.toFixed(0)}`),
      textposition: "outside",
      marker: { color: "#e0e0e0", line: { color: "#111", width: 1 } },
      offsetgroup: "paper",
      xaxis: "x2",
      yaxis: "y4",
    },
  ];
  const left: [number, number] = [0, 0.42], right: [number, number] = [0.58, 1];
  const fl = flops.filter(Number.isFinite), gl = placed.map((q) => q.g);
  const ratio = fl.length >= 2 ? Math.max(...fl) / Math.min(...fl) : NaN;
  const paperRatio = gl.length >= 2 ? Math.max(...gl) / Math.min(...gl) : NaN;
  const accLayout = acc.layout as Record<string, Record<string, unknown>>;
  const layout = baseLayout("Patch size: accuracy and cost", {
    barmode: "group",
    xaxis: { domain: left, type: "category" },
    yaxis: accLayout.yaxis,
    yaxis2: { ...accLayout.yaxis2, anchor: "x", overlaying: "y", side: "right" },
    xaxis2: { domain: right, anchor: "y3", type: "category" },
    yaxis3: { anchor: "x2", title: { text: "ours: MFLOPs / image" }, rangemode: "tozero" },
    yaxis4: {
      anchor: "x2",
      overlaying: "y3",
      side: "right",
      title: { text: `${PAPER_NAME}: GFLOPs / image` },
      rangemode: "tozero",
      tickformat: ".0f",
      showgrid: false,
    },
    annotations: [
      subtitle(
        `smaller patches: x${ratio.toFixed(1)} FLOPs for us, x${paperRatio.toFixed(1)} for ` +
          "ViT-L/16 -> /7 in the paper",
        opts.note,
      ),
      panelTitle("kNN top-1 (ours, left) and paper (right axis)", left),
      panelTitle("forward FLOPs per image", right),
    ],
  });
  return { data, layout };
}

/**
 * Scaling: kNN top-1 against backbone parameters (left) and forward FLOPs per image (right),
 * both log x; ours as a line of labelled points (width x depth), the paper's ViT-B/L/H as
 * diamonds on the right axis at their own parameters and FLOPs. Input: `scaling.csv` rows.
 */
export function scalingFigure(
  results: TableLike,
  opts: { paper?: PaperNumber[]; note?: string } = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.scaling.paper;
  const rows = [...rowsOf(results)].sort((a, b) => num(a.flops) - num(b.flops));
  const label = rows.map((r) => `D${num(r.dim)}x${num(r.depth)}`);
  const acc = rows.map((r) => num(r.knn_top1));
  const paperFlops = paper.map((p) => (p.vit ? vitFlops(vitConfig(p.vit)) : NaN));
  const data: Trace[] = [];
  const panels: [string, "params" | "flops", string][] = [
    ["", "params", "parameters"],
    ["2", "flops", "forward FLOPs / image"],
  ];
  panels.forEach(([ax, key], i) => {
    data.push({
      type: "scatter",
      mode: "lines+markers+text",
      name: "ours (Fashion-MNIST kNN)",
      legendgroup: "ours",
      showlegend: i === 0,
      x: rows.map((r) => num(r[key])),
      y: acc,
      text: label,
      textposition: "top center",
      marker: { size: 9, color: COLORS[0] },
      line: { color: COLORS[0] },
      xaxis: `x${ax}`,
      yaxis: i === 0 ? "y" : "y3",
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
  const yOurs = { title: { text: "kNN top-1 (%), ours" }, range: zoomRange(acc) };
  const pv = paper.map((p) => p.value);
  const yPaper = {
    title: { text: `${PAPER_NAME}: linear top-1 (%)` },
    side: "right",
    showgrid: false,
    tickformat: ".1f",
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
      subtitle("ours at a fixed number of training images; log x spans both scales", opts.note),
      panelTitle("accuracy vs parameters", left),
      panelTitle("accuracy vs FLOPs", right),
    ],
  });
  return { data, layout };
}

/**
 * Optimiser curves: kNN top-1 against training images for each run (AdamW, LAMB at each lr),
 * the final kNN in the legend, and the paper's LAMB number in a side panel.
 * Input: `optimizer.csv` rows (`optimizer`, `baseLr`, `weightDecay`, `knn_top1`) and curves.
 */
export function optimizerCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.optimizer.paper;
  const rows = rowsOf(results);
  const cur = rowsOf(curves);
  const data: Trace[] = rows.map((r, i) => {
    const pts = knnCurve(cur, String(r.run_id));
    const opt = { adamw: "AdamW", lamb: "LAMB" }[String(r.optimizer)] ?? String(r.optimizer);
    const name = `${opt} lr ${fmtLr(num(r.baseLr))} wd ` +
      `${num(r.weightDecay)} (final ${num(r.knn_top1).toFixed(1)})`;
    const color = r.optimizer === "lamb" ? ["#ff7f0e", "#d62728", "#8c564b"][i % 3] : COLORS[0];
    return {
      type: "scatter",
      mode: "lines+markers",
      name,
      x: pts.map((p) => p.images),
      y: pts.map((p) => p.acc),
      line: { color, width: 2 },
      marker: { size: 5, color },
    };
  });
  const mainDomain: [number, number] = [0, paper.length ? 0.7 : 1];
  const layout = baseLayout("Optimiser: AdamW vs LAMB", {
    xaxis: { domain: mainDomain, title: { text: "training images seen" } },
    yaxis: { title: { text: "kNN top-1 (%), ours (monitor subset)" } },
    annotations: [
      subtitle("curves: kNN monitor; legend: final kNN on the larger evaluation set", opts.note),
      panelTitle("ours", mainDomain),
    ],
  });
  if (paper.length) addPaperPanel(data, layout, paper, 2, "linear top-1 (%), ViT-S");
  return { data, layout };
}

/**
 * Our results beside the paper's numbers: every run of the suite (its varied fields, kNN top-1,
 * dips, parameters, MFLOPs) with the paper number whose `match` it satisfies, then the paper
 * numbers no run matches. Ours are Fashion-MNIST kNN top-1, the paper's ImageNet linear top-1
 * (or gains in points): read trends, not levels.
 *
 * @example
 * ```ts
 * const table = paperComparison("posemb", (await suiteData("posemb")).results);
 * ```
 */
export function paperComparison(suite: string, results: TableLike): aq.ColumnTable {
  const s = SUITES[suite];
  if (!s) throw new Error(`paperComparison: unknown suite "${suite}"`);
  const used = new Set<PaperNumber>();
  const paperValue = (p: PaperNumber) => `${p.value}${p.unit === "points" ? " pts" : "%"}`;
  const out: Record<string, unknown>[] = rowsOf(results).map((r) => {
    const p = s.paper.find((q) => q.match && matches(r, q.match as Record<string, unknown>));
    if (p) used.add(p);
    return {
      ...Object.fromEntries(s.fields.map((f) => [f, r[f]])),
      "kNN top-1 (ours, %)": r.knn_top1,
      dips: r.dips,
      params: r.params,
      MFLOPs: num(r.flops) / 1e6,
      paper: p ? p.label : "",
      [PAPER_NAME]: p ? paperValue(p) : "",
    };
  });
  for (const p of s.paper.filter((q) => !used.has(q))) {
    out.push({
      ...Object.fromEntries(s.fields.map((f) => [f, ""])),
      "kNN top-1 (ours, %)": null,
      dips: null,
      params: p.params ?? null,
      MFLOPs: null,
      paper: p.label + (p.note ? ` (${p.note})` : ""),
      [PAPER_NAME]: paperValue(p),
    });
  }
  return aq.from(out);
}

/**
 * Every figure the tables in `resultsDir` allow, by file name: `stability-curves`,
 * `stability-gradients`, `patch-projection`, `posemb`, `patch-size`, `scaling`, `optimizer`.
 * Suites without a table are left out. Under every title: `note(suite)`, by default the
 * budget(s) of the suite's rows.
 */
export async function buildFigures(
  resultsDir: string,
  opts: { note?: (suite: string) => string | undefined } = {},
): Promise<Record<string, FigureSpec>> {
  const out: Record<string, FigureSpec> = {};
  const notes: Record<string, string> = {};
  const load = async (suite: string) => {
    const res = await readTable(suiteFile(resultsDir, suite));
    if (!res.numRows()) return null;
    const budgets = [...new Set(res.array("budget") as string[])];
    notes[suite] = budgets.map((b) =>
      `budget ${b}: ${BUDGET_SPECS[b as Budget]?.about ?? "unknown budget"}`
    ).join("; ");
    return res;
  };
  const budgetNote = (s: string) => notes[s];
  const curves = async (suite: string) => await readTable(curvesFile(resultsDir, suite));
  const note = (s: string) => opts.note?.(s) ?? budgetNote(s);
  const st = await load("stability");
  if (st) {
    const c = await curves("stability");
    out["stability-curves"] = stabilityCurves(st, c, { note: note("stability") });
    out["stability-gradients"] = gradientTraces(st, c, { note: note("stability") });
  }
  const pp = await load("patch-projection");
  if (pp) out["patch-projection"] = patchProjectionBars(pp, { note: note("patch-projection") });
  const pe = await load("posemb");
  if (pe) out["posemb"] = posembBars(pe, { note: note("posemb") });
  const ps = await load("patch-size");
  if (ps) out["patch-size"] = patchSizeFigure(ps, { note: note("patch-size") });
  const sc = await load("scaling");
  if (sc) out["scaling"] = scalingFigure(sc, { note: note("scaling") });
  const op = await load("optimizer");
  if (op) {
    out["optimizer"] = optimizerCurves(op, await curves("optimizer"), { note: note("optimizer") });
  }
  return out;
}

/** Options of {@link writeFigure}: whether to write a PNG, and how to render it. */
export interface WriteFigureOptions extends Omit<RenderOptions, "width" | "height"> {
  /** Also write a PNG with headless Chromium. Default true. */
  png?: boolean;
}

/** What {@link writeFigure} wrote. */
export interface WrittenFigure {
  html: string;
  /** The PNG path, when one was written. */
  png?: string;
  /** Why no PNG was written (Chromium missing or failed), when asked for one. */
  warning?: string;
}

/**
 * Writes `<outDir>/<name>.html` (self-contained: plotly.js inlined) and, unless `png: false`,
 * `<outDir>/<name>.png` rendered by headless Chromium at the layout's size (both through
 * `render.ts`). Without Chromium the HTML is still written and `warning` says what to install.
 *
 * @example
 * ```ts
 * const { html, png, warning } = await writeFigure(posembBars(rows), "posemb", "figures");
 * ```
 */
export async function writeFigure(
  spec: FigureSpec,
  name: string,
  outDir = "figures",
  opts: WriteFigureOptions = {},
): Promise<WrittenFigure> {
  if (!/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw new Error(`writeFigure: the name "${name}" must be a plain file name (letters, -, _)`);
  }
  await Deno.mkdir(outDir, { recursive: true });
  const html = `${outDir}/${name}.html`;
  await Deno.writeTextFile(html, figureHtml(spec, figureTitle(spec, name)));
  if (opts.png === false) return { html };
  const png = `${outDir}/${name}.png`;
  await Deno.remove(png).catch(() => {});
  const r = await renderPng(spec, opts);
  if (!r.png) return { html, warning: `${r.warning}; ${html} is written (--no-png skips PNGs)` };
  await Deno.writeFile(png, r.png);
  return { html, png };
}
