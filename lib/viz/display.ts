/**
 * Rich cell output for the Deno Jupyter kernel: MIME bundles that JupyterLab, VS Code,
 * `jupyter nbconvert --to html` and GitHub all show, and plotly figures as an interactive
 * `application/vnd.plotly.v1+json` plus a static `image/png` (rendered by `render.ts`), or,
 * without Chromium, a `text/html` fallback that loads plotly.js from a CDN.
 *
 * Outside a kernel (a test, `deno run`) every `show*` prints its `text/plain` instead, so the
 * same code runs anywhere.
 *
 * Every output is complete when the cell's code finishes, in any front end: the Deno kernel
 * (2.x) queues a display message and publishes it from another thread, and a cell's "idle"
 * status can overtake the last queued messages; a front end that stops reading a cell's
 * outputs at "idle" (`jupyter nbconvert --execute`, nbclient) then drops them (a late training
 * summary, a stale progress line). So each display that is not an in-place update waits until
 * the kernel has had time to publish what is queued ({@link flushDisplays}) before it returns.
 *
 * @example
 * ```ts
 * import { showMarkdown, showPlot } from "./display.ts";
 * await showMarkdown("**loss** so far");
 * await showPlot({ data: [{ y: [3, 1, 2], type: "scatter" }], layout: { title: { text: "loss" } } });
 * ```
 * @module
 */
import { Buffer } from "node:buffer";
import {
  figureSize,
  figureTitle,
  mimeBundle,
  plotHtml,
  type PlotSpec,
  renderPng,
  sizedSpec,
} from "./render.ts";

export type { PlotSpec } from "./render.ts";

/** A Jupyter MIME bundle: MIME type -> data (strings, or JSON for `*+json` types). */
export type MimeBundle = Record<string, unknown>;

interface JupyterApi {
  broadcast(type: string, content: Record<string, unknown>): Promise<void>;
}

function jupyter(): JupyterApi | undefined {
  try {
    return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
  } catch {
    return undefined; // outside `deno jupyter`, reading Deno.jupyter throws (Deno 2.x)
  }
}

/**
 * Whether this code runs inside the Deno Jupyter kernel.
 *
 * @example
 * ```ts
 * if (!inNotebook()) console.log("plain text output");
 * ```
 */
export function inNotebook(): boolean {
  return jupyter() !== undefined;
}

/** Options of {@link display}. */
export interface DisplayOptions {
  /** Per-MIME metadata (`{ "image/png": { width: 400 } }`). */
  metadata?: Record<string, unknown>;
  /** Name this display so that a later call with `update: true` replaces it. */
  displayId?: string;
  /** Replace the display named `displayId` instead of adding one. */
  update?: boolean;
}

/**
 * Shows a MIME bundle as a cell output (in a kernel), or prints its `text/plain` (elsewhere).
 *
 * @example
 * ```ts
 * await display({ "text/html": "<b>hi</b>", "text/plain": "hi" });
 * ```
 *
 * A new display returns once the kernel has had time to publish it ({@link flushDisplays});
 * an in-place update (`update: true`) returns at once (a live display updates often: its
 * `finish` flushes).
 */
export async function display(bundle: MimeBundle, opts: DisplayOptions = {}): Promise<void> {
  const api = jupyter();
  if (!api) {
    if (!opts.update) console.log(String(bundle["text/plain"] ?? "[rich output]"));
    return;
  }
  const content = {
    data: bundle,
    metadata: opts.metadata ?? {},
    transient: opts.displayId ? { display_id: opts.displayId } : {},
  };
  await api.broadcast(opts.update ? "update_display_data" : "display_data", content);
  queued.bytes += JSON.stringify(content).length;
  queued.last = performance.now();
  if (!opts.update) await flushDisplays();
}

/** What was broadcast since the last flush: its size, and when the last message left. */
const queued = { bytes: 0, last: 0 };

/** Milliseconds the kernel is given, at least, to publish what is queued (see {@link flushWaitMs}). */
export const FLUSH_BASE_MS = 50;

/** Bytes a millisecond the kernel is assumed to publish, at least (10 MB/s: JSON, HMAC, TCP). */
export const FLUSH_BYTES_PER_MS = 10_000;

/**
 * How long to wait after the last message for the kernel to publish `bytes` queued since the
 * last flush: {@link FLUSH_BASE_MS} (or `$VITSSL_DISPLAY_FLUSH_MS`; 0 turns the wait off) plus
 * the bytes at {@link FLUSH_BYTES_PER_MS}.
 *
 * @example
 * ```ts
 * flushWaitMs(200_000, 50); // 70: 50 ms plus 200 kB at 10 kB/ms
 * ```
 */
export function flushWaitMs(bytes: number, baseMs = flushBaseMs()): number {
  return baseMs <= 0 ? 0 : baseMs + bytes / FLUSH_BYTES_PER_MS;
}

function flushBaseMs(): number {
  const v = Number(Deno.env.get("VITSSL_DISPLAY_FLUSH_MS"));
  return Number.isFinite(v) && Deno.env.get("VITSSL_DISPLAY_FLUSH_MS") !== undefined
    ? v
    : FLUSH_BASE_MS;
}

/**
 * Waits until the kernel has had time to publish every display message sent so far
 * ({@link flushWaitMs} after the last one), so that a cell's outputs are all out before the
 * cell's code finishes. Nothing to wait for outside a kernel, or when nothing was sent since the
 * last flush.
 *
 * @example
 * ```ts
 * await live.update("<b>done</b>");
 * await flushDisplays(); // the last update is published before the cell ends
 * ```
 */
export async function flushDisplays(): Promise<void> {
  if (!jupyter() || queued.bytes === 0) return;
  const wait = queued.last + flushWaitMs(queued.bytes) - performance.now();
  queued.bytes = 0;
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
}

/**
 * HTML as text: the tags dropped (the plain-text alternative of an HTML output).
 *
 * @example
 * ```ts
 * stripTags("<b>hi</b>"); // "hi"
 * ```
 */
export function stripTags(html: string): string {
  return html.replace(/<[^>]+>/g, "");
}

/**
 * Shows HTML (with a plain-text alternative, by default the HTML without its tags).
 *
 * @example
 * ```ts
 * await showHtml("<b>done</b>");
 * ```
 */
export async function showHtml(html: string, text = ""): Promise<void> {
  await display({ "text/html": html, "text/plain": text || stripTags(html) });
}

/**
 * Shows Markdown (rendered by every front end).
 *
 * @example
 * ```ts
 * await showMarkdown("budget **smoke**");
 * ```
 */
export async function showMarkdown(md: string): Promise<void> {
  await display({ "text/markdown": md, "text/plain": md });
}

/**
 * Escapes `&`, `<` and `>` for HTML text.
 *
 * @example
 * ```ts
 * escapeHtml("a < b"); // "a &lt; b"
 * ```
 */
export function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

/** Options of {@link plotBundle} and {@link showPlot}. */
export interface PlotOptions {
  /** Pixel size of the static image and of the interactive figure (see `figureSize`). */
  width?: number;
  height?: number;
  /**
   * Render a PNG with headless Chromium: `true`, `false`, or `auto` (the default: when
   * Chromium is found and `VITSSL_PLOT_PNG` is not `0`).
   */
  png?: boolean | "auto";
}

/**
 * The MIME bundle of a plotly figure: `application/vnd.plotly.v1+json` (the interactive figure
 * for JupyterLab and VS Code) plus `image/png` when Chromium can render it, else a `text/html`
 * fallback that loads plotly.js from a CDN. With `png: true` a failed render throws.
 *
 * @example
 * ```ts
 * const bundle = await plotBundle({ data: [{ y: [1, 3, 2] }] }, { width: 300, height: 200 });
 * ```
 */
export async function plotBundle(spec: PlotSpec, opts: PlotOptions = {}): Promise<MimeBundle> {
  const fig = sizedSpec(spec, opts);
  const bundle: MimeBundle = {
    ...mimeBundle(fig),
    "text/plain": `[plotly figure: ${figureTitle(spec)}]`,
  };
  const want = opts.png ?? "auto";
  const png = want === false || (want === "auto" && Deno.env.get("VITSSL_PLOT_PNG") === "0")
    ? null
    : await plotPng(fig, { required: want === true });
  if (png) bundle["image/png"] = Buffer.from(png).toString("base64");
  else bundle["text/html"] = plotHtml(fig);
  return bundle;
}

/**
 * Shows a plotly figure (see {@link plotBundle}).
 *
 * @example
 * ```ts
 * await showPlot({ data: [{ x: [0, 1, 2], y: [4, 2, 1], type: "scatter" }] });
 * ```
 */
export async function showPlot(spec: PlotSpec, opts: PlotOptions = {}): Promise<void> {
  await display(await plotBundle(spec, opts));
}

/**
 * A figure as PNG bytes at `figureSize` (through `renderPng`); null when it cannot be rendered
 * (no Chromium, or the render failed), unless `required`: then it throws with the reason.
 *
 * @example
 * ```ts
 * const bytes = await plotPng({ data: [{ y: [1, 2] }] }, { width: 320, height: 240 });
 * ```
 */
export async function plotPng(
  spec: PlotSpec,
  opts: { width?: number; height?: number; required?: boolean; chromium?: string } = {},
): Promise<Uint8Array | null> {
  const r = await renderPng(spec, { ...figureSize(spec, opts), chromium: opts.chromium });
  if (r.png) return r.png;
  if (opts.required) throw new Error(`cannot render the figure to PNG: ${r.warning}`);
  return null;
}
