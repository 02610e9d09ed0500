/**
 * The evaluation results table: one CSV row per evaluation (kNN, linear probe, fine-tuning) in
 * `data/results/eval.csv`, read and written through arquero so notebooks can group and plot it.
 *
 * Accuracies are fractions in [0, 1]; `params` holds the protocol's hyper-parameters as a JSON
 * string; `date` is an ISO 8601 timestamp.
 *
 * @example
 * ```ts
 * import { appendResult, summaryTable } from "./results.ts";
 * await appendResult({
 *   run_id: "r1", checkpoint: "data/runs/r1/last.safetensors", dataset: "fmnist",
 *   protocol: "knn", params: { k: 20, temperature: 0.07 }, top1: 0.81, top5: 0.98,
 *   seconds: 7.2, backend: "wasm",
 * });
 * (await summaryTable()).print();
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import * as aq from "arquero";
import { writeFileAtomic } from "../io/atomic.ts";

/** Default location of the results table. */
export const RESULTS_FILE = "data/results/eval.csv";

/** The columns every results file has, in file order. */
export const RESULT_COLUMNS = [
  "run_id",
  "checkpoint",
  "dataset",
  "protocol",
  "params",
  "top1",
  "top5",
  "seconds",
  "backend",
  "date",
] as const;

const NUMERIC = ["top1", "top5", "seconds"] as const;

/** One evaluation result. */
export interface EvalRow {
  /** Identifies the pretraining run (or "raw-pixels" for the baseline). */
  run_id: string;
  /** Checkpoint path evaluated ("" for none). */
  checkpoint: string;
  /** Dataset name (`fmnist`, `cifar10` ...). */
  dataset: string;
  /** `knn-20`, `knn-200`, `linear`, `linear-aug`, `finetune` ... */
  protocol: string;
  /** Hyper-parameters: an object (stored as JSON) or a JSON string. */
  params: string | Record<string, unknown>;
  /** Top-1 accuracy, fraction in [0, 1]. */
  top1: number;
  /** Top-5 accuracy, fraction in [0, 1]. */
  top5: number;
  /** Wall-clock seconds of the evaluation. */
  seconds: number;
  /** tfjs backend summary (`wasm`, `webgpu` ...). */
  backend: string;
  /** ISO 8601 time; default now. */
  date?: string;
}

/** An arquero table (the type of `aq.table(...)`). */
export type ResultsTable = ReturnType<typeof aq.table>;

/** A results file that cannot be used; the message names the file and what is wrong. */
export class ResultsError extends UserError {
  override name = "ResultsError";
  /** The file at fault. */
  file: string;
  /** @param message the whole explanation; @param file the path at fault. */
  constructor(message: string, file: string) {
    super(message);
    this.file = file;
  }
}

function emptyTable(): ResultsTable {
  return aq.table(Object.fromEntries(RESULT_COLUMNS.map((c) => [c, []])));
}

/**
 * Reads a results CSV (numbers in `top1`, `top5`, `seconds`, text elsewhere). A missing file gives
 * an empty table with the columns. Throws {@link ResultsError} naming the file and the column when
 * a column is missing.
 */
export async function readResults(file: string = RESULTS_FILE): Promise<ResultsTable> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return emptyTable();
    throw new ResultsError(`cannot read results file ${file}: ${(e as Error).message}`, file);
  }
  if (text.trim() === "") return emptyTable();
  const parse = Object.fromEntries(NUMERIC.map((c) => [c, Number]));
  // Blank lines (the file's final newline included) would parse as rows of nulls.
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  const table = aq.fromCSV(lines.join("\n"), { autoType: false, parse });
  const have = new Set(table.columnNames());
  const missing = RESULT_COLUMNS.filter((c) => !have.has(c));
  if (missing.length > 0) {
    throw new ResultsError(
      `results file ${file} lacks column${missing.length > 1 ? "s" : ""} ` +
        `${missing.map((c) => `"${c}"`).join(", ")}; expected the header ` +
        `${RESULT_COLUMNS.join(",")}. Add the column(s) or move the file aside to start a new one`,
      file,
    );
  }
  return table;
}

/**
 * Appends one row to the results CSV (creating it and its directory) and returns the whole
 * table. Extra columns already in the file are kept (empty in the new row).
 *
 * @example
 * ```ts
 * await appendResult({ ...row, protocol: "linear", params: { epochs: 90, lr: 0.1 } });
 * ```
 */
export async function appendResult(
  row: EvalRow,
  file: string = RESULTS_FILE,
): Promise<ResultsTable> {
  for (const c of NUMERIC) {
    if (typeof row[c] !== "number" || Number.isNaN(row[c])) {
      throw new TypeError(`appendResult: ${c} must be a number, got ${row[c]}`);
    }
  }
  const record: Record<string, unknown> = {
    ...row,
    params: typeof row.params === "string" ? row.params : JSON.stringify(row.params),
    date: row.date ?? new Date().toISOString(),
  };
  const existing = await readResults(file);
  const added = aq.from([Object.fromEntries(RESULT_COLUMNS.map((c) => [c, record[c]]))]);
  const table = existing.numRows() === 0 ? added : existing.concat(added);
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) : ".";
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(file, new TextEncoder().encode(table.toCSV() + "\n"));
  return table;
}

/**
 * The results table for printing (`.print()`) or grouping: every row, oldest first.
 *
 * @example
 * ```ts
 * (await summaryTable()).groupby("protocol").rollup({ best: aq.op.max("top1") }).print();
 * ```
 */
export async function summaryTable(file: string = RESULTS_FILE): Promise<ResultsTable> {
  const t = await readResults(file);
  return t.numRows() === 0 ? t : t.orderby("date");
}
