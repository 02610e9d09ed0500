/**
 * The paper's figures at workbench scale, as plotly figure specs (plain JSON `{data, layout}`)
 * built from the experiments' tables (`data/results/<suite>.csv` and `<suite>.curves.csv`), the
 * notebooks' compact curves of a suite and its table beside the paper, and a writer that turns a
 * spec into a self-contained HTML file and a PNG (through the one renderer, `render.ts`).
 *
 * Every configuration runs under several seeds. A per-configuration figure shows the mean over
 * seeds of the final linear probe top-1 (the paper's metric) with its 95% t-interval as error
 * bars (`meanInterval` of `lib/experiments/stats.ts`, through `aggregate.ts`), kNN-20 top-1 as a
 * second trace, and leaves the random-init baseline rows out except as a reference floor. The
 * curve figures (kNN monitor, gradient norms) draw one run per configuration: its lowest seed
 * (a dip is a property of one run; a mean over seeds would smooth it away). Given
 * `comparisons` (`compareWithPaper` of `lib/experiments/summary.ts`), each study's figure lists
 * its verdicts under the title; {@link verdictForest} draws them all.
 *
 * Building and writing are separate: the same spec shows inline in Jupyter through the
 * `application/vnd.plotly.v1+json` MIME type ({@link mimeBundle}). Each figure puts the paper's
 * ImageNet number beside ours where one exists: diamonds or grey bars named "paper (ImageNet)",
 * on a second y axis or in a side panel, since Fashion-MNIST and ImageNet accuracies are not on
 * one scale.
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
import { dipThreshold, findDips, gradientSpikes } from "../experiments/stability.ts";
import {
  type Budget,
  BUDGET_SPECS,
  budgetText,
  type PaperNumber,
  SUITES,
} from "../experiments/suites.ts";
import { curvesFile, readTable, suiteFile } from "../experiments/tables.ts";
import {
  bool,
  type ConfigGroup,
  configTable,
  firstSeedRuns,
  groupByConfig,
  metricInterval,
  pilotTable,
  randomInitRows,
  type Row,
  type Rows,
  rowsOf,
  trainedRows,
} from "../experiments/aggregate.ts";
import {
  compareRows,
  compareWithPaper,
  type Comparison,
  lrText,
  verdictText,
} from "../experiments/summary.ts";
import type { Interval } from "../experiments/stats.ts";
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
export type TableLike = Rows;

/** The legend name of every paper marker. */
export const PAPER_NAME = "paper (ImageNet)";
/** The legend name of our linear probe top-1 (mean over seeds, 95% t-interval error bars). */
export const OURS_LINEAR = "ours: linear top-1";
/** The legend name of our kNN-20 top-1 (mean over seeds, 95% t-interval error bars). */
export const OURS_KNN = "ours: kNN-20 top-1";

/** Options of the per-configuration figures. */
export interface FigureOptions {
  /** Paper numbers (default: the suite's). Empty: none drawn. */
  paper?: PaperNumber[];
  /** Text under the title (data set, budget). */
  note?: string;
  /** `compareWithPaper`'s comparisons; those of the figure's study are listed under the title. */
  comparisons?: Comparison[];
}

const PAPER_MARKER = {
  symbol: "diamond",
  size: 12,
  color: "#111",
  line: { width: 1, color: "#fff" },
};
const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
const LIGHT = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2"];
const DASHES = ["solid", "dash", "dot", "dashdot"];
const WIDTH = 1100;
const HEIGHT = 520;
const LINEAR = "linear_top1";
const KNN = "knn_top1";

function num(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}

/** The mean of an interval (NaN without one). */
function meanOf(i: Interval | null | undefined): number {
  return i ? i.mean : NaN;
}

/** Error bars of 95% half-widths; a single seed's (NaN) is drawn as none. */
function ciBars(intervals: (Interval | null | undefined)[], horizontal = false) {
  const hw = intervals.map((i) => (i ? i.halfWidth : NaN));
  return {
    type: "data",
    array: hw.map((v) => (Number.isFinite(v) ? v : 0)),
    visible: hw.some(Number.isFinite),
    color: "#444",
    thickness: 1,
    width: horizontal ? 0 : 3,
  };
}

/** Distinct values in first-seen order (numbers sorted ascending). */
function distinct(values: unknown[]): unknown[] {
  const out = [...new Set(values)];
  return out.every((v) => typeof v === "number") ? (out as number[]).sort((a, b) => a - b) : out;
}

function signed(x: number, digits = 1): string {
  return Number.isFinite(x) ? (x > 0 ? "+" : "") + x.toFixed(digits) : "n/a";
}

function projName(frozen: boolean): string {
  return frozen ? "random" : "learned";
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

const VERDICT_COLOR: Record<string, string> = {
  holds: "#2ca02c",
  opposite: "#d62728",
  "not detected": "#777",
  missing: "#bbb",
};

/**
 * The verdicts of one study as lines of text: each comparison (effect, our paired difference
 * with its 95% CI, the verdict, the paper's effect) when there are at most `max`, else the
 * counts of each verdict per kind of effect (the effect's text up to its first comma).
 *
 * @example
 * ```ts
 * verdictLines(await compareWithPaper("data/results"), "posemb");
 * // ["sin-cos - learned: +2.1 [+0.3, +3.9] holds (paper +0.4)", ...]
 * ```
 */
export function verdictLines(comparisons: Comparison[], study: string, max = 4): string[] {
  const mine = comparisons.filter((c) => c.study === study);
  const word = (v: string, text = v) =>
    `<span style="color:${VERDICT_COLOR[v] ?? "#555"}"><b>${text}</b></span>`;
  if (mine.length <= max) {
    return mine.map((c) => {
      const d = c.diff;
      const ours = d ? `${signed(d.mean)} [${signed(d.lo)}, ${signed(d.hi)}]` : "n/a";
      const paper = Number.isFinite(c.paper) ? signed(c.paper) : c.paperSign > 0 ? "> 0" : "< 0";
      return `${c.effect}: ${ours} ${word(c.verdict, verdictText(c))} (paper ${paper})`;
    });
  }
  const groups = new Map<string, Comparison[]>();
  for (const c of mine) {
    const key = c.effect.split(",")[0];
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  return [...groups].map(([key, cs]) => {
    const counts = ["holds", "opposite", "not detected", "missing"]
      .map((v) => [v, cs.filter((c) => c.verdict === v).length] as const)
      .filter(([, n]) => n > 0)
      .map(([v, n]) => `${n} ${word(v)}`);
    return `${key}: ${counts.join(", ")} (of ${cs.length})`;
  });
}

/** Adds a study's verdict lines under the title (the first annotation), growing the top margin. */
function addVerdicts(
  layout: Record<string, unknown>,
  comparisons: Comparison[] | undefined,
  study: string,
): void {
  const lines = comparisons ? verdictLines(comparisons, study) : [];
  if (lines.length === 0) return;
  const metric = comparisons!.find((c) => c.study === study)?.metric === KNN ? "kNN-20" : "linear";
  const head = `verdicts (${metric} top-1, a - b paired over seeds, 95% CI):`;
  const annotations = layout.annotations as Record<string, unknown>[];
  annotations[0].text = `${annotations[0].text}<br>${head}<br>${lines.join("<br>")}`;
  const extra = 16 * (lines.length + 1);
  const margin = layout.margin as Record<string, number>;
  layout.margin = { ...margin, t: margin.t + extra };
  layout.height = num(layout.height) + extra;
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

/** kNN points of one run from the curves table, sorted by step. */
function knnCurve(curves: Row[], runId: string) {
  return curves
    .filter((c) => String(c.run_id) === runId && c.kind === "knn")
    .map((c) => ({ step: num(c.step), images: num(c.images), acc: num(c.top1) }))
    .sort((a, b) => a.step - b.step);
}

/** Per-step rows of one run from the curves table, sorted by step. */
function stepRows(curves: Row[], runId: string) {
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

/** The seeds drawn by the curve figures, as a phrase ("seed 0", "seeds 0, 1"). */
function seedPhrase(runs: Row[]): string {
  const seeds = distinct(runs.map((r) => num(r.seed)).filter(Number.isFinite)) as number[];
  if (seeds.length === 0) return "one run per configuration";
  return `one run per configuration (seed${seeds.length > 1 ? "s" : ""} ${seeds.join(", ")})`;
}

/** Options of the curve figures. */
export interface CurveOptions extends FigureOptions {
  /**
   * Dip threshold in accuracy points (`findDips`' `minDepth`). Default: each run's own
   * `dipThreshold` (max(1, 5 x its monitor noise)), as the suite tables count dips.
   */
  minDepth?: number;
}

const byStability = (a: Row, b: Row) =>
  Number(bool(a.freezePatchEmbed)) - Number(bool(b.freezePatchEmbed)) ||
  num(a.batchSize) - num(b.batchSize) || num(a.baseLr) - num(b.baseLr);

/**
 * Stability curves: kNN monitor top-1 against training images seen, one line per
 * configuration (batch, lr, learned or random patch projection; colour = batch, dash = lr),
 * drawn for its lowest seed ({@link firstSeedRuns}), in one panel per patch projection; the
 * bottom of every dip ({@link findDips}) marked with an x in the traces named `dips`, and the
 * paper's final accuracies per batch size and lr in a side panel. Inputs: `stability.csv` rows
 * (`run_id`, `seed`, `batchSize`, `baseLr`, `freezePatchEmbed`) and its curves.
 *
 * @example
 * ```ts
 * const spec = stabilityCurves(results, curves, { note: "budget cpu" });
 * ```
 */
export function stabilityCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.stability.paper;
  const runs = firstSeedRuns(results).sort(byStability);
  const cur = rowsOf(curves);
  const batches = distinct(runs.map((r) => num(r.batchSize))) as number[];
  const lrs = distinct(runs.map((r) => num(r.baseLr))) as number[];
  const frozen = distinct(runs.map((r) => bool(r.freezePatchEmbed))) as boolean[];
  const right = paper.length ? 0.7 : 1;
  const gap = 0.05;
  const width = (right - gap * (frozen.length - 1)) / Math.max(1, frozen.length);
  const domains = frozen.map((_, i) =>
    [i * (width + gap), i * (width + gap) + width] as [number, number]
  );
  const data: Trace[] = [];
  const layout = baseLayout("Training stability: kNN accuracy during training", {
    annotations: [
      subtitle(
        `${seedPhrase(runs)}; dips (x): drops below the running peak that recover, of >= ${
          opts.minDepth ?? "max(1, 5 x the run's monitor noise)"
        } points`,
        opts.note,
      ),
    ],
  });
  frozen.forEach((f, k) => {
    const ax = k === 0 ? "" : String(k + 1);
    const dips: { x: number; y: number; text: string }[] = [];
    for (const r of runs.filter((q) => bool(q.freezePatchEmbed) === f)) {
      const b = num(r.batchSize), lr = num(r.baseLr);
      const pts = knnCurve(cur, String(r.run_id));
      if (pts.length === 0) continue;
      const color = COLORS[batches.indexOf(b) % COLORS.length];
      const name = `batch ${b}, lr ${lrText(lr)}, ${projName(f)}`;
      data.push({
        type: "scatter",
        mode: "lines+markers",
        name,
        x: pts.map((p) => p.images),
        y: pts.map((p) => p.acc),
        line: { color, dash: DASHES[lrs.indexOf(lr) % DASHES.length], width: 2 },
        marker: { size: 4, color },
        xaxis: `x${ax}`,
        yaxis: `y${ax}`,
      });
      for (const d of findDips(pts, { minDepth: opts.minDepth ?? dipThreshold(pts) })) {
        const bottom = pts.find((p) => p.step === d.bottomStep)!;
        dips.push({
          x: bottom.images,
          y: d.bottomAcc,
          text: `${name}: dip of ${d.depth.toFixed(1)} points`,
        });
      }
    }
    data.push({
      ...markedPoints("dips", dips, {
        symbol: "x-thin",
        size: 14,
        color: "#d00",
        line: { width: 3, color: "#d00" },
      }, true),
      legendgroup: "dips",
      showlegend: k === 0,
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    layout[`xaxis${ax}`] = {
      domain: domains[k],
      anchor: `y${ax}`,
      title: { text: "training images seen" },
    };
    layout[`yaxis${ax}`] = {
      anchor: `x${ax}`,
      title: { text: k === 0 ? "kNN top-1 (%), monitor" : "" },
    };
    (layout.annotations as unknown[]).push(
      panelTitle(`ours: kNN monitor, ${projName(f)} patch projection`, domains[k]),
    );
  });
  if (paper.length) {
    addPaperPanel(data, layout, paper, frozen.length + 1, "linear top-1 (%), ViT-B");
  }
  addVerdicts(layout, opts.comparisons, "stability");
  return { data, layout };
}

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
  if (paper.length) addPaperPanel(data, layout, paper, 3, "linear top-1 (%), ViT-B, batch 4k");
  addVerdicts(layout, opts.comparisons, "stability");
  return { data, layout };
}

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
      showlegend: i === 0,
      x: spikes.map((s) => at.get(s.step)),
      y: spikes.map((s) => s.value),
      marker: { symbol: "circle-open", size: 10, color: COLORS[3], line: { width: 2 } },
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
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

/**
 * A long line thinned for plotting: at most `maxPoints` points, the lowest and the highest of
 * each of `maxPoints / 2` equal runs of points, in their order, so spikes and troughs stay
 * drawn (a plain stride would drop most of them). Shorter lines come back whole.
 *
 * @example
 * ```ts
 * envelope([0, 1, 2, 3, 4, 5], [1, 9, 1, 1, 0, 1], 4);
 * // { x: [0, 1, 3, 4], y: [1, 9, 1, 0] }: runs [0-2] and [3-5], each its (first) min and max
 * ```
 */
export function envelope(
  x: readonly number[],
  y: readonly number[],
  maxPoints = 600,
): { x: number[]; y: number[] } {
  if (y.length <= maxPoints) return { x: [...x], y: [...y] };
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const out = { x: [] as number[], y: [] as number[] };
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * y.length) / buckets),
      hi = Math.floor(((b + 1) * y.length) / buckets);
    let iMin = lo, iMax = lo;
    for (let i = lo; i < hi; i++) {
      if (y[i] < y[iMin]) iMin = i;
      if (y[i] > y[iMax]) iMax = i;
    }
    for (const i of iMin === iMax ? [iMin] : [Math.min(iMin, iMax), Math.max(iMin, iMax)]) {
      out.x.push(x[i]);
      out.y.push(y[i]);
    }
  }
  return out;
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

const FRAMEWORK_LABEL: Record<string, string> = {
  mocov3: "MoCo v3",
  simclr: "SimCLR",
  byol: "BYOL",
  swav: "SwAV",
};

/** A y range that shows differences between bars of similar height (not from zero). */
function zoomRange(values: number[], pad = 0.25): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 100];
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const span = Math.max(hi - lo, 2);
  return [Math.max(0, lo - span * pad * 2), Math.min(100, hi + span * pad)];
}

/** The ends of every interval (for an axis range that shows the error bars). */
function extent(intervals: (Interval | null)[]): number[] {
  return intervals.flatMap((i) =>
    i
      ? [
        i.mean,
        Number.isFinite(i.halfWidth) ? i.lo : i.mean,
        Number.isFinite(i.hi) ? i.hi : i.mean,
      ]
      : []
  );
}

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
  addVerdicts(layout, opts.comparisons, "patch-projection");
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
 */
function barsWithPaper(
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
      text: placed.map((q) => `${q.p.label}: ${q.p.value.toFixed(1)}`),
      textposition: "outside",
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
      showgrid: false,
    },
    shapes: floor.shapes,
    annotations: [subtitle(explain, note), ...floor.annotations],
  });
  return { data, layout };
}

/**
 * Position embedding bars: sin-cos / learned / none with the class token, and sin-cos with mean
 * pooling; ours linear top-1 and kNN-20 (means over seeds, 95% CI), the paper's ViT-B numbers
 * as grey bars beside them on the right axis, and the study's verdicts under the title. Input:
 * `posemb.csv` rows.
 *
 * @example
 * ```ts
 * const spec = posembBars(rows, { comparisons: await compareWithPaper("data/results") });
 * ```
 */
export function posembBars(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const spec = barsWithPaper(
    "Position embedding and pooling",
    results,
    groupByConfig(results, ["posEmb", "pool"]),
    (c) => posembLabel(String(c.posEmb), String(c.pool)),
    opts.paper ?? SUITES.posemb.paper,
    "blue, left axis: ours (dark: linear probe, light: kNN-20; 95% CI over seeds); grey, " +
      "right axis: the paper's ViT-B on ImageNet",
    opts.note,
  );
  addVerdicts(spec.layout, opts.comparisons, "posemb");
  return spec;
}

/**
 * Patch size: left, linear top-1 and kNN-20 per patch size (means over seeds, 95% CI; the
 * paper's ViT-L/16 and ViT-BN-L/7 as grey bars on the right axis); right, forward FLOPs per
 * image, ours (MFLOPs) and the paper's models (GFLOPs, `vitFlops`), side by side. Input:
 * `patch-size.csv` rows (`patchSize`, `seed`, `linear_top1`, `knn_top1`, `flops`).
 *
 * @example
 * ```ts
 * const spec = patchSizeFigure(rows, { imageSize: 28 });
 * ```
 */
export function patchSizeFigure(
  results: TableLike,
  opts: FigureOptions & { imageSize?: number } = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES["patch-size"].paper;
  const groups = groupByConfig(results, ["patchSize"])
    .sort((a, b) => num(b.config.patchSize) - num(a.config.patchSize));
  const side = opts.imageSize ?? 28;
  const label = (c: Row) => `patch ${num(c.patchSize)} (${(side / num(c.patchSize)) ** 2} tokens)`;
  const acc = barsWithPaper("", results, groups, label, paper, "");
  const x = groups.map((g) => label(g.config));
  const flops = groups.map((g) => num(g.runs[0].flops) / 1e6);
  const placed = paper.flatMap((p) => {
    const g = p.match && groups.find((q) => matches(q.config, p.match as Record<string, unknown>));
    return g && p.vit ? [{ p, x: label(g.config), g: vitFlops(vitConfig(p.vit)) / 1e9 }] : [];
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
          "ViT-L/16 -> /7 in the paper; ours: linear (dark) and kNN-20 (light), 95% CI over seeds",
        opts.note,
      ),
      panelTitle("top-1 (ours, left) and paper (right axis)", left),
      panelTitle("forward FLOPs per image", right),
    ],
  });
  addVerdicts(layout, opts.comparisons, "patch-size");
  return { data, layout };
}

/**
 * Scaling: linear top-1 (means over seeds, 95% CI error bars; kNN-20 dashed) against backbone
 * parameters (left) and forward FLOPs per image (right), both log x; ours as lines of labelled
 * points (width x depth), the paper's ViT-B/L/H as diamonds on the right axis at their own
 * parameters and FLOPs. Input: `scaling.csv` rows.
 *
 * @example
 * ```ts
 * const spec = scalingFigure(rows, { comparisons });
 * ```
 */
export function scalingFigure(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const paper = opts.paper ?? SUITES.scaling.paper;
  const groups = groupByConfig(results, ["dim", "depth", "heads"])
    .sort((a, b) => num(a.runs[0].flops) - num(b.runs[0].flops));
  const label = groups.map((g) => `D${num(g.config.dim)}x${num(g.config.depth)}`);
  const lin = groups.map((g) => metricInterval(g.runs, LINEAR));
  const knn = groups.map((g) => metricInterval(g.runs, KNN));
  const paperFlops = paper.map((p) => (p.vit ? vitFlops(vitConfig(p.vit)) : NaN));
  const data: Trace[] = [];
  const panels: [string, "params" | "flops"][] = [["", "params"], ["2", "flops"]];
  panels.forEach(([ax, key], i) => {
    const x = groups.map((g) => num(g.runs[0][key]));
    const y = i === 0 ? "y" : "y3";
    data.push({
      type: "scatter",
      mode: "lines+markers+text",
      name: OURS_LINEAR,
      legendgroup: "ours",
      showlegend: i === 0,
      x,
      y: lin.map(meanOf),
      error_y: ciBars(lin),
      text: label,
      textposition: "top center",
      marker: { size: 9, color: COLORS[0] },
      line: { color: COLORS[0] },
      xaxis: `x${ax}`,
      yaxis: y,
    });
    data.push({
      type: "scatter",
      mode: "lines+markers",
      name: OURS_KNN,
      legendgroup: "knn",
      showlegend: i === 0,
      x,
      y: knn.map(meanOf),
      error_y: ciBars(knn),
      marker: { size: 7, color: LIGHT[0] },
      line: { color: LIGHT[0], dash: "dash" },
      xaxis: `x${ax}`,
      yaxis: y,
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
  const yOurs = {
    title: { text: "top-1 (%), ours: mean ± 95% CI" },
    range: zoomRange([...extent(lin), ...extent(knn)]),
  };
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
      subtitle(
        "ours at a fixed number of training images (solid: linear probe, dashed: kNN-20); " +
          "log x spans both scales",
        opts.note,
      ),
      panelTitle("accuracy vs parameters", left),
      panelTitle("accuracy vs FLOPs", right),
    ],
  });
  addVerdicts(layout, opts.comparisons, "scaling");
  return { data, layout };
}

/**
 * Optimiser: left, the kNN monitor against training images of each configuration (AdamW, LAMB;
 * its lowest seed); middle, the final linear top-1 and kNN-20 of each (means over seeds, 95%
 * CI); right, the paper's LAMB number. Input: `optimizer.csv` rows (`optimizer`, `baseLr`,
 * `weightDecay`, `seed`, `linear_top1`, `knn_top1`) and curves.
 *
 * @example
 * ```ts
 * const spec = optimizerCurves(results, curves, { comparisons });
 * ```
 */
export function optimizerCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.optimizer.paper;
  const cur = rowsOf(curves);
  const name = (r: Row) => {
    const opt = { adamw: "AdamW", lamb: "LAMB" }[String(r.optimizer)] ?? String(r.optimizer);
    return `${opt} lr ${lrText(num(r.baseLr))} wd ${num(r.weightDecay)}`;
  };
  const color = (r: Row, i: number) => (r.optimizer === "lamb" ? COLORS[1 + (i % 3)] : COLORS[0]);
  const runs = firstSeedRuns(results);
  const data: Trace[] = runs.map((r, i) => {
    const pts = knnCurve(cur, String(r.run_id));
    return {
      type: "scatter",
      mode: "lines+markers",
      name: name(r),
      x: pts.map((p) => p.images),
      y: pts.map((p) => p.acc),
      line: { color: color(r, i), width: 2 },
      marker: { size: 5, color: color(r, i) },
    };
  });
  const groups = groupByConfig(results, ["optimizer", "baseLr", "weightDecay"]);
  const x = groups.map((g) => name(g.config));
  const lin = groups.map((g) => metricInterval(g.runs, LINEAR));
  const knn = groups.map((g) => metricInterval(g.runs, KNN));
  for (const [n, iv, c] of [[OURS_LINEAR, lin, COLORS[0]], [OURS_KNN, knn, LIGHT[0]]] as const) {
    data.push({
      type: "bar",
      name: n,
      x,
      y: iv.map(meanOf),
      text: iv.map((i) => (i ? i.mean.toFixed(1) : "")),
      textposition: "outside",
      marker: { color: c },
      error_y: ciBars(iv),
      xaxis: "x2",
      yaxis: "y2",
    });
  }
  const curvesDomain: [number, number] = [0, paper.length ? 0.42 : 0.55];
  const barsDomain: [number, number] = paper.length ? [0.5, 0.74] : [0.63, 1];
  const layout = baseLayout("Optimiser: AdamW vs LAMB", {
    barmode: "group",
    xaxis: { domain: curvesDomain, title: { text: "training images seen" } },
    yaxis: { title: { text: "kNN top-1 (%), monitor" } },
    xaxis2: { domain: barsDomain, anchor: "y2", type: "category" },
    yaxis2: {
      anchor: "x2",
      title: { text: "final top-1 (%), mean ± 95% CI" },
      range: zoomRange([...extent(lin), ...extent(knn)]),
    },
    annotations: [
      subtitle(
        `curves: kNN monitor, ${seedPhrase(runs)}; bars: final linear probe and kNN-20 over seeds`,
        opts.note,
      ),
      panelTitle("ours: kNN monitor", curvesDomain),
      panelTitle("ours: final accuracy", barsDomain),
    ],
  });
  if (paper.length) addPaperPanel(data, layout, paper, 3, "linear top-1 (%), ViT-S");
  addVerdicts(layout, opts.comparisons, "optimizer");
  return { data, layout };
}

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
  return { data, layout };
}

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

/**
 * Our results beside the paper's numbers: one row per configuration of the suite
 * ({@link configTable}: its varied fields, seeds, linear top-1 and kNN-20 as mean and 95%
 * half-width, runs diverged, dips, parameters, MFLOPs) with the paper number whose `match` it
 * satisfies, then the paper numbers no configuration matches. Ours are Fashion-MNIST, the
 * paper's ImageNet linear top-1 (or gains in points): read trends, not levels.
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
  const ours = configTable(results, s.fields as string[]);
  const out: Row[] = ours.map((r) => {
    const p = s.paper.find((q) => q.match && matches(r, q.match as Record<string, unknown>));
    if (p) used.add(p);
    return { ...r, paper: p ? p.label : "", [PAPER_NAME]: p ? paperValue(p) : "" };
  });
  const blank = Object.fromEntries(Object.keys(ours[0] ?? {}).map((k) => [k, null]));
  for (const p of s.paper.filter((q) => !used.has(q))) {
    out.push({
      ...blank,
      ...Object.fromEntries(s.fields.map((f) => [f, ""])),
      params: p.params ?? null,
      paper: p.label + (p.note ? ` (${p.note})` : ""),
      [PAPER_NAME]: paperValue(p),
    });
  }
  return aq.from(out);
}

/**
 * Every figure the tables in `resultsDir` allow, by file name: `stability-lr`,
 * `stability-curves`, `stability-gradients`, `patch-projection`, `posemb`, `patch-size`,
 * `scaling`, `optimizer`, `pilot`, and `verdicts` (every comparison of `compareWithPaper`, whose
 * verdicts also go under each study's title). Suites without a table are left out. Under every
 * title: `note(suite)`, by default the budget(s) of the suite's rows.
 *
 * @example
 * ```ts
 * Object.keys(await buildFigures("data/results")); // ["stability-lr", "stability-curves", ...]
 * ```
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
      `budget ${b}: ${b in BUDGET_SPECS ? budgetText(b as Budget, suite) : "unknown budget"}`
    ).join("; ");
    return res;
  };
  const comparisons = await compareWithPaper(resultsDir);
  const curves = async (suite: string) => await readTable(curvesFile(resultsDir, suite));
  const o = (s: string) => ({ note: opts.note?.(s) ?? notes[s], comparisons });
  const st = await load("stability");
  if (st) {
    const c = await curves("stability");
    out["stability-lr"] = stabilityLrFigure(st, o("stability"));
    // The verdicts go with the accuracy-against-lr figure, not again with the curves.
    out["stability-curves"] = stabilityCurves(st, c, { note: o("stability").note });
    out["stability-gradients"] = gradientTraces(st, c, { note: o("stability").note });
  }
  const pp = await load("patch-projection");
  if (pp) out["patch-projection"] = patchProjectionBars(pp, o("patch-projection"));
  const pe = await load("posemb");
  if (pe) out["posemb"] = posembBars(pe, o("posemb"));
  const ps = await load("patch-size");
  if (ps) out["patch-size"] = patchSizeFigure(ps, o("patch-size"));
  const sc = await load("scaling");
  if (sc) out["scaling"] = scalingFigure(sc, o("scaling"));
  const op = await load("optimizer");
  if (op) out["optimizer"] = optimizerCurves(op, await curves("optimizer"), o("optimizer"));
  const pilot = await load("pilot");
  if (pilot) out["pilot"] = pilotFigure(pilot, { note: o("pilot").note });
  if (comparisons.length) out["verdicts"] = verdictForest(comparisons);
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
