/**
 * A pretraining run's final report (`final.json`: kNN-20 and a linear probe on the full splits
 * for the trained backbone, its random initialisation and raw pixels) as a notebook table, with
 * each model's difference to raw pixels, and the sentence that says, from those numbers only,
 * where the trained backbone stands against both baselines.
 *
 * @example
 * ```ts
 * import { showFinalReport } from "./final_report.ts";
 * await showFinalReport((await readRun(dir)).final);
 * ```
 * @module
 */
import * as aq from "arquero";
import { showMarkdown } from "./display.ts";
import { differencesText } from "./format.ts";
import type { FinalRecord } from "./runs.ts";
import { showTable } from "./tables.ts";

type Metric = "knn_top1" | "linear_top1";

/** The protocols a report holds, with their column names. */
function protocols(r: FinalRecord): { key: Metric; name: string }[] {
  const out: { key: Metric; name: string }[] = [];
  if (r.rows[0]?.knn_top1 !== undefined) out.push({ key: "knn_top1", name: `kNN-${r.k}` });
  if (r.rows[0]?.linear_top1 !== undefined) out.push({ key: "linear_top1", name: "linear" });
  return out;
}

function row(r: FinalRecord, model: string) {
  return r.rows.find((x) => x.model === model);
}

/**
 * The report as a table: one row per model (trained backbone, random init, raw pixels), its
 * top-1 (%) per protocol and, per protocol, its difference to raw pixels in points.
 *
 * @example
 * ```ts
 * finalReportTable(final).columnNames();
 * // ["model", "kNN-20 top-1 (%)", "linear top-1 (%)", "kNN-20 - raw pixels", "linear - raw pixels"]
 * ```
 */
export function finalReportTable(r: FinalRecord): aq.ColumnTable {
  const cols = protocols(r);
  const raw = row(r, "raw pixels");
  return aq.from(r.rows.map((m) => ({
    model: m.model,
    ...Object.fromEntries(cols.map((c) => [`${c.name} top-1 (%)`, m[c.key] ?? null])),
    ...Object.fromEntries(cols.map((c) => [
      `${c.name} - raw pixels`,
      m[c.key] !== undefined && raw?.[c.key] !== undefined ? m[c.key]! - raw[c.key]! : null,
    ])),
  })));
}

/**
 * Where the trained backbone stands, from the report's numbers only: its difference in points
 * to raw pixels and to its random initialisation under each protocol, said as above, below or
 * level ({@link differencesText}).
 *
 * @example
 * ```ts
 * finalReportSentence(final);
 * // "The trained backbone, against raw pixels: kNN-20 -0.52 points (below), ...; against ..."
 * ```
 */
export function finalReportSentence(r: FinalRecord): string {
  const cols = protocols(r);
  const trained = row(r, "trained backbone");
  if (!trained || cols.length === 0) return "The report has no trained backbone row.";
  const against = (model: string, label: string) => {
    const base = row(r, model);
    return differencesText(
      label,
      cols.map((c) => ({ name: c.name, d: (trained[c.key] ?? NaN) - (base?.[c.key] ?? NaN) })),
    );
  };
  return `The trained backbone, ${against("raw pixels", "raw pixels")}; ${
    against("random init", "its random initialisation")
  }.`;
}

/**
 * Shows the report ({@link finalReportTable}, its splits and step in the caption) and its
 * sentence ({@link finalReportSentence}); without a report, one line saying so.
 *
 * @example
 * ```ts
 * await showFinalReport((await readRun(cfg.outDir)).final);
 * ```
 */
export async function showFinalReport(r: FinalRecord | undefined): Promise<void> {
  if (!r) {
    await showMarkdown("This run has no final report (`final.json`; `--final-eval none`).");
    return;
  }
  const n = (v: number) => v.toLocaleString("en");
  await showTable(finalReportTable(r), {
    caption: `final report at step ${r.step}: top-1 (%) on the full splits (${n(r.trainSize)} ` +
      `train / ${n(r.testSize)} test images); kNN-${r.k} and a linear probe (${r.linearEpochs} ` +
      "epochs) on frozen features; differences in points",
    digits: 2,
  });
  await showMarkdown(finalReportSentence(r));
}
