/**
 * Notebook 03's results: one row per model (the pretrained backbone, its random initialisation,
 * raw pixels), one column per protocol (kNN-20, kNN-200, linear probe, fine-tune), top-1 in
 * percent; the fine-tune column named for what it is (its epochs and images, and whether that
 * is a converged fine-tune), and the sentences that say, from those numbers only, where the
 * pretrained backbone stands against each baseline.
 *
 * @example
 * ```ts
 * import { protocolSentences, protocolTable } from "./protocols.ts";
 * const table = protocolTable(rows, { finetune: { epochs: 1, images: 5000 } });
 * await showMarkdown(protocolSentences(table));
 * ```
 * @module
 */
import * as aq from "arquero";
import { differencesText } from "./format.ts";

/**
 * Fine-tuning epochs below which a fine-tune is labelled short and not converged: the notebook's
 * budgets run 1 to 5 epochs, where end-to-end fine-tuning recipes run for many tens of epochs;
 * such a column checks that the backbone fine-tunes, not its accuracy once fine-tuned.
 */
export const CONVERGED_FINETUNE_EPOCHS = 50;

/** What the fine-tune of {@link protocolTable} ran: its epochs and training images. */
export interface FinetuneRun {
  epochs: number;
  /** Training images (0 or absent: the whole training split, `trainSize` images). */
  images: number;
  /** The training split's size, to name "all" images by their number. */
  trainSize?: number;
}

/**
 * The fine-tune column's name: epochs and images, and "short, not converged" below
 * {@link CONVERGED_FINETUNE_EPOCHS} epochs.
 *
 * @example
 * ```ts
 * finetuneLabel({ epochs: 1, images: 5000 });
 * // "fine-tune (1 epoch, 5,000 images; short, not converged)"
 * ```
 */
export function finetuneLabel(f: FinetuneRun): string {
  const n = f.images > 0 ? f.images : f.trainSize;
  const images = n ? `${n.toLocaleString("en")} images` : "all images";
  const epochs = `${f.epochs} epoch${f.epochs === 1 ? "" : "s"}`;
  const short = f.epochs < CONVERGED_FINETUNE_EPOCHS ? "; short, not converged" : "";
  return `fine-tune (${epochs}, ${images}${short})`;
}

/** The protocols' columns, in order: result name, column name. */
const COLUMNS: [string, string][] = [
  ["knn-20", "kNN-20"],
  ["knn-200", "kNN-200"],
  ["linear", "linear"],
];

/**
 * `evaluate`'s rows (top-1 as fractions) as one row per model (`model`: the run id) and one
 * column per protocol, top-1 in percent (the best row where a model has several of a
 * protocol); the fine-tune column named by {@link finetuneLabel}.
 *
 * @example
 * ```ts
 * protocolTable(rows, { finetune: { epochs: 1, images: 5000 } }).columnNames();
 * // ["model", "kNN-20", "kNN-200", "linear", "fine-tune (1 epoch, 5,000 images; short, ...)"]
 * ```
 */
export function protocolTable(
  rows: readonly { run_id: string; protocol: string; top1: number }[],
  opts: { finetune: FinetuneRun },
): aq.ColumnTable {
  const columns: [string, string][] = [...COLUMNS, ["finetune", finetuneLabel(opts.finetune)]];
  const models = [...new Set(rows.map((r) => r.run_id))];
  return aq.from(models.map((model) => ({
    model,
    ...Object.fromEntries(columns.map(([protocol, name]) => {
      const v = rows.filter((r) => r.run_id === model && r.protocol === protocol)
        .map((r) => 100 * r.top1);
      return [name, v.length ? Math.max(...v) : null];
    })),
  })));
}

/**
 * Where the pretrained backbone (the row that is neither `raw-pixels` nor `random-init:*`)
 * stands against its random initialisation and against raw pixels, protocol by protocol, in
 * points ({@link differencesText}): one sentence each, from the table's numbers only.
 *
 * @example
 * ```ts
 * protocolSentences(table);
 * // "The pretrained backbone, against its random initialisation: kNN-20 +4.10 points (above), ..."
 * ```
 */
export function protocolSentences(table: aq.ColumnTable): string {
  const rows = table.objects() as Record<string, unknown>[];
  const names = table.columnNames().filter((c) => c !== "model");
  const isRandom = (m: unknown) => String(m).startsWith("random-init");
  const trained = rows.find((r) => r.model !== "raw-pixels" && !isRandom(r.model));
  if (!trained) return "No pretrained backbone in the table.";
  const against = (base: Record<string, unknown> | undefined, label: string) =>
    differencesText(
      label,
      names.filter((c) => base && base[c] !== null && trained[c] !== null).map((c) => ({
        name: c.replace(/ \(.*$/, ""),
        d: Number(trained[c]) - Number(base![c]),
      })),
    );
  const parts = [
    against(rows.find((r) => isRandom(r.model)), "its random initialisation"),
    against(rows.find((r) => r.model === "raw-pixels"), "raw pixels"),
  ];
  return `The pretrained backbone, ${parts.join("; ")}.`;
}
