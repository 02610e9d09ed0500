/**
 * The one figure renderer: a plotly spec (`{data, layout, config}`) to a self-contained HTML page
 * (plotly.js inlined) and to PNG bytes through headless Chromium. `writeFigure`
 * (`deno task figures`) and the notebooks' `plotBundle` both render through here, so every
 * figure has one size rule ({@link figureSize}), one Chromium ({@link findChromium}) and one
 * timeout ({@link RENDER_TIMEOUT_S}).
 *
 * A missing or failing Chromium is never an exception: {@link renderPng} returns one line saying
 * why and what to install.
 *
 * @example
 * ```ts
 * import { figureHtml, renderPng } from "./render.ts";
 * const spec = { data: [{ type: "scatter", y: [3, 1, 2] }], layout: { title: { text: "loss" } } };
 * await Deno.writeTextFile("loss.html", figureHtml(spec));
 * const r = await renderPng(spec);
 * if (r.png) await Deno.writeFile("loss.png", r.png); else console.log(r.warning);
 * ```
 * @module
 */
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";

/** A plotly trace (plain JSON). */
export type Trace = Record<string, unknown>;

/** A plotly figure: traces, layout and config, as `Plotly.newPlot` takes them. */
export interface PlotSpec {
  data: Trace[];
  layout?: Record<string, unknown>;
  config?: Record<string, unknown>;
}

/** A figure's size in pixels. */
export interface FigureSize {
  width: number;
  height: number;
}

/** The size of a figure whose spec, and whose caller, name none. */
export const DEFAULT_SIZE: Readonly<FigureSize> = { width: 760, height: 420 };

/** Seconds before a Chromium render is abandoned. */
export const RENDER_TIMEOUT_S = 90;

/**
 * The size rule of every figure: the caller's `width`/`height`, else the layout's, else
 * {@link DEFAULT_SIZE}; rounded to whole pixels.
 *
 * @example
 * ```ts
 * figureSize({ data: [], layout: { width: 1100, height: 520 } }); // { width: 1100, height: 520 }
 * figureSize({ data: [] }, { height: 340 }); // { width: 760, height: 340 }
 * ```
 */
export function figureSize(spec: PlotSpec, opts: Partial<FigureSize> = {}): FigureSize {
  const w = Number(spec.layout?.width), h = Number(spec.layout?.height);
  return {
    width: Math.round(opts.width ?? (w > 0 ? w : DEFAULT_SIZE.width)),
    height: Math.round(opts.height ?? (h > 0 ? h : DEFAULT_SIZE.height)),
  };
}

/**
 * The spec as it is drawn: its layout at {@link figureSize} (white background unless it sets
 * one) and a fixed-size, logo-free config.
 *
 * @example
 * ```ts
 * sizedSpec({ data: [] }, { height: 300 }).layout; // { paper_bgcolor: "white", width: 760, height: 300 }
 * ```
 */
export function sizedSpec(spec: PlotSpec, opts: Partial<FigureSize> = {}): Required<PlotSpec> {
  const { width, height } = figureSize(spec, opts);
  return {
    data: spec.data,
    layout: { paper_bgcolor: "white", ...spec.layout, width, height },
    config: { responsive: false, displaylogo: false, ...spec.config },
  };
}

/** The figure's title text (layout.title as a string or `{text}`), else `fallback`. */
export function figureTitle(spec: PlotSpec, fallback = "figure"): string {
  const t = spec.layout?.title as string | { text?: string } | undefined;
  return (typeof t === "string" ? t : t?.text) || fallback;
}

/**
 * A spec as a Jupyter MIME bundle of the plotly MIME type alone (JupyterLab and VS Code draw it);
 * `plotBundle` adds the static PNG or HTML fallback.
 *
 * @example
 * ```ts
 * Deno.jupyter.display(mimeBundle({ data: [{ y: [1, 2] }] }), { raw: true });
 * ```
 */
export function mimeBundle(spec: PlotSpec): Record<string, unknown> {
  return { "application/vnd.plotly.v1+json": spec };
}

const PLOTLY_CDN = "https://cdn.jsdelivr.net/npm/plotly.js-dist@4.1.1/plotly.js";

/** `draw()`: `Plotly.newPlot` of the spec into element `id` ("<" escaped: no string ends the script). */
function drawCall(spec: PlotSpec, id: string): string {
  const json = JSON.stringify(spec).replaceAll("<", "\\u003c");
  return `const spec = ${json};\n` +
    `const draw = () => Plotly.newPlot(${
      JSON.stringify(id)
    }, spec.data, spec.layout, spec.config);`;
}

/**
 * A self-contained HTML page that draws the figure at {@link figureSize} (plotly.js inlined, no
 * external script): what `writeFigure` writes and what Chromium screenshots.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("fig.html", figureHtml({ data: [{ y: [1, 2] }] }, "my figure"));
 * ```
 */
export function figureHtml(spec: PlotSpec, title = figureTitle(spec)): string {
  const fig = sizedSpec(spec);
  fig.config = { displayModeBar: false, ...fig.config };
  const { width, height } = figureSize(fig);
  const safeTitle = title.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>${safeTitle}</title>
<script>${plotlyJs()}</script>
</head><body style="margin:0;background:#fff">
<div id="figure" style="width:${width}px;height:${height}px"></div>
<script>
${drawCall(fig, "figure")}
draw();
</script>
</body></html>
`;
}

/**
 * An HTML fragment that draws the figure with plotly.js loaded from a CDN (when the page has no
 * `Plotly` yet): the `text/html` fallback of a notebook figure when no PNG could be rendered.
 *
 * @example
 * ```ts
 * const html = plotHtml({ data: [{ y: [1, 2] }] }); // <div id="vitssl-plot-..."></div><script>...
 * ```
 */
export function plotHtml(spec: PlotSpec, opts: { id?: string } = {}): string {
  const id = opts.id ?? `vitssl-plot-${crypto.randomUUID().slice(0, 8)}`;
  return `<div id="${id}"></div>\n<script>\n(function () {\n${drawCall(sizedSpec(spec), id)}\n` +
    `  if (window.Plotly) { draw(); return; }\n` +
    `  const s = document.createElement("script");\n` +
    `  s.src = ${JSON.stringify(PLOTLY_CDN)}; s.onload = draw;\n` +
    `  document.head.appendChild(s);\n})();\n</script>`;
}

let plotlySource: string | undefined;

/**
 * The plotly.js bundle's source, read once from the npm package `plotly.js-dist`. Throws saying
 * to run `deno install` when the package is missing.
 *
 * @example
 * ```ts
 * plotlyJs().slice(0, 30); // "/**\n* plotly.js v..."
 * ```
 */
export function plotlyJs(): string {
  if (plotlySource !== undefined) return plotlySource;
  const candidates = [
    () => createRequire(import.meta.url).resolve("plotly.js-dist/plotly.js"),
    () => fileURLToPath(new URL("../../node_modules/plotly.js-dist/plotly.js", import.meta.url)),
  ];
  for (const path of candidates) {
    try {
      plotlySource = Deno.readTextFileSync(path());
      return plotlySource;
    } catch { /* try the next place */ }
  }
  throw new Error("the npm package plotly.js-dist is not installed: run `deno install`");
}

const CHROMIUM_NAMES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"];
let warnedAlias = false;

/** Where {@link findChromium} looked, and what it found. */
export interface ChromiumLookup {
  /** The executable, or null when none was found. */
  path: string | null;
  /** What was looked for (a name for messages: the path asked for, or the PATH names). */
  wanted: string;
}

/**
 * The Chromium (or Chrome) executable: `explicit` when given, else `$VITSSL_CHROMIUM`, else
 * `$CHROMIUM` (deprecated alias: warns once), else the first of `chromium`, `chromium-browser`,
 * `google-chrome`, `google-chrome-stable` on the PATH. A named one that does not exist is not
 * replaced by another.
 *
 * @example
 * ```ts
 * const { path, wanted } = chromiumLookup();
 * console.log(path ?? `no ${wanted}`);
 * ```
 */
export function chromiumLookup(explicit?: string): ChromiumLookup {
  let named = explicit || Deno.env.get("VITSSL_CHROMIUM");
  if (!named && Deno.env.get("CHROMIUM")) {
    named = Deno.env.get("CHROMIUM");
    if (!warnedAlias) {
      console.warn("warning: $CHROMIUM is deprecated; set $VITSSL_CHROMIUM instead");
      warnedAlias = true;
    }
  }
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  const names = named ? [named] : CHROMIUM_NAMES;
  const wanted = named ? `"${named}"` : CHROMIUM_NAMES.join(", ");
  for (const n of names) {
    for (const c of n.includes("/") ? [n] : dirs.map((d) => `${d}/${n}`)) {
      try {
        if (Deno.statSync(c).isFile) return { path: c, wanted };
      } catch { /* not there */ }
    }
  }
  return { path: null, wanted };
}

/**
 * The Chromium executable {@link chromiumLookup} finds, or null.
 *
 * @example
 * ```ts
 * if (!findChromium()) console.log("figures: HTML only");
 * ```
 */
export function findChromium(explicit?: string): string | null {
  return chromiumLookup(explicit).path;
}

/** Options of {@link renderPng}. */
export interface RenderOptions extends Partial<FigureSize> {
  /** The Chromium executable (default: {@link findChromium}'s). */
  chromium?: string;
  /** Seconds before the render is abandoned. Default {@link RENDER_TIMEOUT_S}. */
  timeoutSeconds?: number;
}

/** What {@link renderPng} made: PNG bytes, or one line saying why there are none. */
export type Rendered = { png: Uint8Array; warning?: undefined } | {
  png?: undefined;
  warning: string;
};

/**
 * Renders a figure to PNG bytes at {@link figureSize} by screenshotting {@link figureHtml} with
 * headless Chromium. Never throws: without Chromium (or plotly.js), or when the render fails or
 * times out, it returns `warning`, one line saying why and what to install.
 *
 * @example
 * ```ts
 * const r = await renderPng({ data: [{ y: [1, 3, 2] }] }, { width: 320, height: 240 });
 * if (r.warning) console.log(r.warning);
 * ```
 */
export async function renderPng(spec: PlotSpec, opts: RenderOptions = {}): Promise<Rendered> {
  const { width, height } = figureSize(spec, opts);
  const { path: chromium, wanted } = chromiumLookup(opts.chromium);
  if (!chromium) {
    return {
      warning: `no Chromium: ${wanted} is not installed (apt-get install chromium, or set ` +
        "VITSSL_CHROMIUM to its path)",
    };
  }
  const timeout = opts.timeoutSeconds ?? RENDER_TIMEOUT_S;
  let dir: string | undefined;
  try {
    dir = await Deno.makeTempDir({ prefix: "vitssl-render-" });
    await Deno.writeTextFile(`${dir}/fig.html`, figureHtml(sizedSpec(spec, { width, height })));
    // Deno.Command throws at spawn (NotFound, PermissionDenied): caught below, as a warning.
    const out = await new Deno.Command(chromium, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        `--user-data-dir=${dir}/profile`,
        `--window-size=${width},${height}`,
        "--virtual-time-budget=5000",
        `--screenshot=${dir}/fig.png`,
        `file://${dir}/fig.html`,
      ],
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(timeout * 1000),
    }).output();
    const png = await Deno.readFile(`${dir}/fig.png`).catch(() => null);
    if (png && png.length > 0) return { png };
    if (out.signal) return { warning: `no PNG: ${chromium} was stopped after ${timeout} s` };
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-3).join(" | ");
    return { warning: `no PNG: ${chromium} wrote none (exit ${out.code}${err ? `: ${err}` : ""})` };
  } catch (e) {
    const why = e instanceof Deno.errors.NotFound
      ? `${wanted} is not installed (apt-get install chromium, or set VITSSL_CHROMIUM)`
      : (e as Error).message;
    return { warning: `no PNG: ${why}` };
  } finally {
    if (dir) await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}
