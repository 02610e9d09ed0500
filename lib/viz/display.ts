/**
 * Rich cell output for the Deno Jupyter kernel: MIME bundles that JupyterLab, VS Code,
 * `jupyter nbconvert --to html` and GitHub all show, and plotly figures as an interactive
 * `application/vnd.plotly.v1+json` plus a static `image/png` (rendered by `render.ts`), or,
 * without Chromium, a `text/html` fallback that loads plotly.js from a CDN.
 *
 * Outside a kernel (a test, `deno run`) every `show*` prints its `text/plain` instead, so the
 * same code runs anywhere.
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
  return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
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
 */
export async function display(bundle: MimeBundle, opts: DisplayOptions = {}): Promise<void> {
  const api = jupyter();
  if (!api) {
    if (!opts.update) console.log(String(bundle["text/plain"] ?? "[rich output]"));
    return;
  }
  await api.broadcast(opts.update ? "update_display_data" : "display_data", {
    data: bundle,
    metadata: opts.metadata ?? {},
    transient: opts.displayId ? { display_id: opts.displayId } : {},
  });
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
