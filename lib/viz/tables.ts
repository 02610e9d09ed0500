/**
 * Tables in notebooks: an arquero table (or plain rows) as an HTML `<table>` with a caption and
 * rounded numbers, shown with Markdown as its plain-text alternative.
 *
 * @example
 * ```ts
 * import { showTable } from "./tables.ts";
 * await showTable([{ model: "ViT-S", params: 22e6 }], { caption: "sizes" });
 * ```
 * @module
 */
import * as aq from "arquero";
import { display, escapeHtml } from "./display.ts";

/** Options of {@link tableHtml}. */
export interface TableOptions {
  /** A bold line above the table. */
  caption?: string;
  /** Most rows shown. Default 50. */
  limit?: number;
  /** Fraction digits of numbers. Default 3. */
  digits?: number;
  /** Columns to show, in order (default all). */
  columns?: string[];
  /**
   * Per-column formatters, by column name (e.g. `{ baseLr: formatSig }` of `format.ts`):
   * they replace `digits` for their column.
   */
  format?: Record<string, (value: unknown) => string>;
}

/** Anything {@link tableHtml} accepts: an arquero table or an array of plain row objects. */
export type TableLike = aq.ColumnTable | Record<string, unknown>[];

function asTable(t: TableLike): aq.ColumnTable {
  return Array.isArray(t) ? aq.from(t) : t;
}

/**
 * An arquero table as an HTML `<table>` (with a caption and a row count when rows were cut).
 *
 * @example
 * ```ts
 * tableHtml(aq.table({ model: ["ViT-S"], params: [22e6] }), { caption: "sizes" });
 * ```
 */
export function tableHtml(table: TableLike, opts: TableOptions = {}): string {
  const t = asTable(table);
  const limit = opts.limit ?? 50;
  const style = {
    table: "border-collapse: collapse; font-size: 13px; margin: 4px 0;",
    th: "border-bottom: 1px solid #888; padding: 2px 10px; text-align: right;",
    td: "padding: 2px 10px; font-variant-numeric: tabular-nums;",
  };
  const body = t.toHTML({
    limit,
    maxdigits: opts.digits ?? 3,
    columns: opts.columns,
    format: opts.format,
    style,
    null: () => "",
  });
  const caption = opts.caption ? `<div><b>${escapeHtml(opts.caption)}</b></div>` : "";
  const more = t.numRows() > limit
    ? `<div style="color:#666">${limit} of ${t.numRows()} rows shown</div>`
    : "";
  return `<div class="vitssl-table">${caption}${body}${more}</div>`;
}

/**
 * An arquero table (or plain rows) as a Markdown table: numbers to `digits` fraction digits
 * (default 3), missing values (null, NaN) as empty cells.
 *
 * @example
 * ```ts
 * tableMarkdown([{ model: "ViT-S", top1: 72.456, ci: null }], { digits: 1 });
 * // "|model|top1|ci|\n|:-|-:|-:|\n|ViT-S|72.5||"
 * ```
 */
export function tableMarkdown(table: TableLike, opts: TableOptions = {}): string {
  return asTable(table).toMarkdown({
    limit: opts.limit ?? 50,
    maxdigits: opts.digits ?? 3,
    columns: opts.columns,
    format: opts.format,
  }).trimEnd()
    // Markdown has no null format: empty cells instead of "null" (and "NaN").
    .replace(/\|(?:null|NaN)(?=\|)/g, "|");
}

/**
 * Shows a table as HTML (with Markdown as the plain-text alternative).
 *
 * @example
 * ```ts
 * await showTable(await summaryTable(), { caption: "all evaluations" });
 * ```
 */
export async function showTable(table: TableLike, opts: TableOptions = {}): Promise<void> {
  const t = asTable(table);
  await display({
    "text/html": tableHtml(t, opts),
    "text/plain": (opts.caption ? `${opts.caption}\n` : "") + tableMarkdown(t, opts),
  });
}
