/**
 * Writing a figure: a self-contained HTML file and a PNG rendered by headless Chromium (both
 * through `render.ts`).
 *
 * @example
 * ```ts
 * import { writeFigure } from "./write.ts";
 * const { html, png, warning } = await writeFigure(spec, "posemb", "figures");
 * ```
 * @module
 */
import { figureHtml, figureTitle, type RenderOptions, renderPng } from "../render.ts";
import type { FigureSpec } from "./kit.ts";

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
