/**
 * The shared kit of the study figures: their types and legend names, colours and size, the
 * layout (title, subtitle, panel titles), the error bars of 95% t-intervals, the side panel of
 * paper numbers, the verdict lines under a title, and {@link finishFigure}, the ending every
 * study figure shares (paper panel, verdicts, spec).
 *
 * @example
 * ```ts
 * import { baseLayout, finishFigure, subtitle } from "./kit.ts";
 * const layout = baseLayout("Position embedding", { annotations: [subtitle("blue: ours")] });
 * const spec = finishFigure([], layout, { study: "posemb", comparisons: [] });
 * ```
 * @module
 */
import type { PaperNumber } from "../../experiments/suites.ts";
import { bool, type Row, type Rows } from "../../experiments/aggregate.ts";
import { type Comparison, verdictText } from "../../experiments/summary.ts";
import type { Interval } from "../../experiments/stats.ts";
import type { PlotSpec, Trace } from "../render.ts";

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

/** Options of the curve figures. */
export interface CurveOptions extends FigureOptions {
  /**
   * Dip threshold in accuracy points (`findDips`' `minDepth`). Default: each run's own
   * `dipThreshold` (max(1, 5 x its monitor noise)), as the suite tables count dips.
   */
  minDepth?: number;
}

/** The marker of every paper number: a black diamond. */
export const PAPER_MARKER = {
  symbol: "diamond",
  size: 12,
  color: "#111",
  line: { width: 1, color: "#fff" },
};
/** Line and bar colours, one per configuration (plotly's ten). */
export const COLORS = [
  "#1f77b4",
  "#ff7f0e",
  "#2ca02c",
  "#d62728",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];
/** The light shade of each of {@link COLORS} (kNN-20 beside the linear probe). */
export const LIGHT = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2"];
/** Line dashes, one per learning rate. */
export const DASHES = ["solid", "dash", "dot", "dashdot"];
/** The width of a study figure (pixels). */
export const WIDTH = 1100;
/** The height of a study figure before its verdict lines (pixels). */
export const HEIGHT = 520;
/** The results column of the linear probe's top-1. */
export const LINEAR = "linear_top1";
/** The results column of kNN-20's top-1. */
export const KNN = "knn_top1";

/**
 * A table value as a number (CSV text parsed).
 *
 * @example
 * ```ts
 * num("0.5"); // 0.5
 * ```
 */
export function num(v: unknown): number {
  return typeof v === "number" ? v : Number(v);
}

/**
 * The mean of an interval (NaN without one).
 *
 * @example
 * ```ts
 * meanOf(null); // NaN
 * ```
 */
export function meanOf(i: Interval | null | undefined): number {
  return i ? i.mean : NaN;
}

/**
 * Error bars of 95% half-widths; a single seed's (NaN) is drawn as none.
 *
 * @example
 * ```ts
 * ciBars([{ n: 3, mean: 70, halfWidth: 2, lo: 68, hi: 72 }]).array; // [2]
 * ```
 */
export function ciBars(
  intervals: (Interval | null | undefined)[],
  horizontal = false,
): Record<string, unknown> {
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

/**
 * Distinct values in first-seen order (numbers sorted ascending).
 *
 * @example
 * ```ts
 * distinct([256, 64, 256]); // [64, 256]
 * ```
 */
export function distinct(values: unknown[]): unknown[] {
  const out = [...new Set(values)];
  return out.every((v) => typeof v === "number") ? (out as number[]).sort((a, b) => a - b) : out;
}

/**
 * A number with its sign (`+1.5`, `-0.3`), or `n/a`.
 *
 * @example
 * ```ts
 * signed(1.46); // "+1.5"
 * ```
 */
export function signed(x: number, digits = 1): string {
  return Number.isFinite(x) ? (x > 0 ? "+" : "") + x.toFixed(digits) : "n/a";
}

/**
 * The name of a patch projection: `random` (frozen) or `learned`.
 *
 * @example
 * ```ts
 * projName(true); // "random"
 * ```
 */
export function projName(frozen: boolean): string {
  return frozen ? "random" : "learned";
}

/**
 * Whether a results row has every field value of `match`.
 *
 * @example
 * ```ts
 * matches({ posEmb: "sincos", pool: "cls" }, { posEmb: "sincos" }); // true
 * ```
 */
export function matches(row: Record<string, unknown>, match: Record<string, unknown>): boolean {
  return Object.entries(match).every(([k, v]) =>
    typeof v === "boolean" ? bool(row[k]) === v : String(row[k]) === String(v)
  );
}

/**
 * The layout every study figure starts from: title top left, {@link WIDTH} x {@link HEIGHT},
 * white, legend below; `extra` overrides or adds.
 *
 * @example
 * ```ts
 * baseLayout("Scaling", { barmode: "group" }).width; // 1100
 * ```
 */
export function baseLayout(
  title: string,
  extra: Record<string, unknown> = {},
): Record<string, unknown> {
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

/**
 * A panel title as an annotation centred over an x domain.
 *
 * @example
 * ```ts
 * panelTitle("linear probe top-1", [0, 0.46]).x; // 0.23
 * ```
 */
export function panelTitle(text: string, domain: [number, number]): Record<string, unknown> {
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

/**
 * Lines below the title: what to look at, then the data set and budget (if given).
 *
 * @example
 * ```ts
 * subtitle("blue: ours", "budget cpu").text; // "blue: ours<br>budget cpu"
 * ```
 */
export function subtitle(text: string, note?: string): Record<string, unknown> {
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

/** The colour of each verdict. */
export const VERDICT_COLOR: Record<string, string> = {
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

/**
 * Adds a study's verdict lines under the title (the first annotation), growing the top margin
 * and the height by 16 px a line.
 *
 * @example
 * ```ts
 * addVerdicts(spec.layout, comparisons, "posemb");
 * ```
 */
export function addVerdicts(
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

/**
 * The side panel of paper numbers (x domain 0.8-1, axes number `axis`): diamonds at
 * categorical x with their values as text.
 *
 * @example
 * ```ts
 * const { trace, axes } = paperPanel(SUITES.stability.paper, 3, "linear top-1 (%)");
 * ```
 */
export function paperPanel(
  paper: PaperNumber[],
  axis: number,
  yTitle: string,
): { trace: Trace; axes: Record<string, unknown> } {
  const trace: Trace = {
    type: "scatter",
    mode: "markers+text",
    name: PAPER_NAME,
    x: paper.map((p) => wrapLabel(p.label, 12)),
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

/** Where {@link finishFigure} draws the paper's numbers: a side panel on axes `axis`. */
export interface PaperPanelOptions {
  numbers: PaperNumber[];
  axis: number;
  yTitle: string;
}

/**
 * The ending every study figure shares: the side panel of paper numbers when `paper` has some
 * ({@link paperPanel}, its title over it), the study's verdict lines under the title when
 * `study` is given ({@link addVerdicts}), and the spec.
 *
 * @example
 * ```ts
 * return finishFigure(data, layout, {
 *   paper: { numbers: paper, axis: 3, yTitle: "linear top-1 (%), ViT-S" },
 *   study: "optimizer",
 *   comparisons: opts.comparisons,
 * });
 * ```
 */
export function finishFigure(
  data: Trace[],
  layout: Record<string, unknown>,
  opts: {
    paper?: PaperPanelOptions;
    study?: string;
    comparisons?: Comparison[];
    /** Place the legend below the x axes' labels and titles ({@link legendBelow}). */
    legendGap?: number;
  } = {},
): FigureSpec {
  if (opts.paper && opts.paper.numbers.length) {
    const { trace, axes } = paperPanel(opts.paper.numbers, opts.paper.axis, opts.paper.yTitle);
    data.push(trace);
    Object.assign(layout, axes);
    (layout.annotations as unknown[]).push(panelTitle(PAPER_NAME, [0.8, 1]));
  }
  if (opts.legendGap !== undefined) legendBelow(layout, data, opts.legendGap);
  if (opts.study) addVerdicts(layout, opts.comparisons, opts.study);
  return { data, layout };
}

/** Pixels of one row of a horizontal legend (font 12). */
const LEGEND_ROW = 20;
/** Pixels an entry takes besides its text (symbol and padding). */
const LEGEND_ITEM = 46;
/** Average pixels a character of the legend's text takes (font 12). */
const LEGEND_CHAR = 6.6;

/**
 * The rows a horizontal legend of `names` takes in `width` pixels: entries packed left to
 * right, each {@link LEGEND_ITEM} px plus its text at {@link LEGEND_CHAR} px a character.
 *
 * @example
 * ```ts
 * legendRows(["a", "b"], 1000); // 1
 * ```
 */
export function legendRows(names: string[], width: number): number {
  let rows = names.length ? 1 : 0, used = 0;
  for (const name of names) {
    const w = LEGEND_ITEM + LEGEND_CHAR * stripHtml(name).length;
    if (used > 0 && used + w > width) {
      rows++;
      used = 0;
    }
    used += w;
  }
  return rows;
}

function stripHtml(text: string): string {
  return text.replace(/<[^>]+>/g, "");
}

/**
 * Puts the horizontal legend `gap` pixels below the plot area (clear of the x axes' tick labels
 * and titles) and makes the bottom margin hold it: the margin grows to `gap` plus the legend's
 * rows ({@link legendRows} of the traces shown in it), taking up to 60 px from the plot area,
 * the rest added to the figure's height. The legend's position is in the plot's own fraction
 * (any plotly version draws it alike).
 *
 * @example
 * ```ts
 * legendBelow(layout, data, 90); // x titles and rotated tick labels above the legend
 * ```
 */
export function legendBelow(layout: Record<string, unknown>, data: Trace[], gap: number): void {
  const margin = layout.margin as Record<string, number>;
  const width = num(layout.width) - margin.l - 10;
  const names = data
    .filter((t) => t.showlegend !== false && t.name !== undefined && hasPoints(t))
    .map((t) => String(t.name));
  const b = Math.ceil(gap + LEGEND_ROW * legendRows(names, width) + 10);
  layout.height = num(layout.height) + Math.max(0, b - margin.b - 60);
  layout.margin = { ...margin, b };
  const plotHeight = num(layout.height) - margin.t - b;
  layout.legend = {
    ...(layout.legend as Record<string, unknown>),
    orientation: "h",
    x: 0,
    y: -gap / plotHeight,
    yanchor: "top",
  };
}

/** Whether a trace draws something (plotly leaves empty traces out of the legend). */
function hasPoints(t: Trace): boolean {
  const x = t.x as unknown[] | undefined, y = t.y as unknown[] | undefined;
  return (x?.length ?? y?.length ?? 1) > 0;
}

/**
 * A label broken into lines of at most `width` characters at spaces (`<br>` between lines), for
 * tick labels and bar texts that would otherwise overlap or shrink.
 *
 * @example
 * ```ts
 * wrapLabel("random patch projection", 12); // "random patch<br>projection"
 * ```
 */
export function wrapLabel(text: string, width = 14): string {
  const lines: string[] = [];
  for (const word of text.split(" ")) {
    const last = lines.length - 1;
    if (last >= 0 && (lines[last] + " " + word).length <= width) lines[last] += " " + word;
    else lines.push(word);
  }
  return lines.join("<br>");
}

/**
 * A markers-only trace of points, with their texts as hover text when `hover`.
 *
 * @example
 * ```ts
 * markedPoints("dips", [{ x: 512, y: 61.2, text: "dip of 3.1" }], { symbol: "x" }, true);
 * ```
 */
export function markedPoints(
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
 * A y range that shows differences between bars of similar height (not from zero).
 *
 * @example
 * ```ts
 * zoomRange([70, 74]); // [68, 75]
 * ```
 */
export function zoomRange(values: number[], pad = 0.25): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [0, 100];
  const lo = Math.min(...finite), hi = Math.max(...finite);
  const span = Math.max(hi - lo, 2);
  return [Math.max(0, lo - span * pad * 2), Math.min(100, hi + span * pad)];
}

/**
 * The ends of every interval (for an axis range that shows the error bars).
 *
 * @example
 * ```ts
 * extent([{ n: 3, mean: 70, halfWidth: 2, lo: 68, hi: 72 }]); // [70, 68, 72]
 * ```
 */
export function extent(intervals: (Interval | null)[]): number[] {
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
 * The order of the stability configurations: learned before random projection, then batch,
 * then lr.
 *
 * @example
 * ```ts
 * firstSeedRuns(results).sort(byStability);
 * ```
 */
export const byStability = (a: Row, b: Row): number =>
  Number(bool(a.freezePatchEmbed)) - Number(bool(b.freezePatchEmbed)) ||
  num(a.batchSize) - num(b.batchSize) || num(a.baseLr) - num(b.baseLr);
