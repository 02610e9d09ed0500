/**
 * The experiments' CSV tables, read and written through arquero: `<suite>.csv` (one row per
 * run), `<suite>.curves.csv` (kNN monitor points and per-step gradient norms of every run) and
 * `suite_times.csv`. Rows are keyed by `run_id`; appending a run id that is present adds nothing.
 *
 * @example
 * ```ts
 * import { readTable, suiteFile } from "./tables.ts";
 * (await readTable(suiteFile("data/results", "posemb"))).select("posEmb", "knn_top1").print();
 * ```
 * @module
 */
import * as aq from "arquero";
import { writeFileAtomic } from "../io/atomic.ts";

/** An arquero table (the type of `aq.table(...)`). */
export type Table = ReturnType<typeof aq.table>;

/** Path of a suite's results table. */
export function suiteFile(resultsDir: string, suite: string): string {
  return `${resultsDir}/${suite}.csv`;
}

/** Path of a suite's curves table. */
export function curvesFile(resultsDir: string, suite: string): string {
  return `${resultsDir}/${suite}.curves.csv`;
}

/**
 * Reads a suite's results (or curves) table with numbers and booleans parsed; a missing file
 * gives an empty table.
 *
 * @example
 * ```ts
 * (await readTable("data/results/posemb.csv")).select("posEmb", "knn_top1").print();
 * ```
 */
export async function readTable(file: string): Promise<Table> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return aq.table({});
    throw new Error(`cannot read ${file}: ${(e as Error).message}`);
  }
  const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
  if (lines.length === 0) return aq.table({});
  // run ids and dates stay text; everything else that looks like a number or boolean is one.
  return aq.fromCSV(lines.join("\n"), {
    autoType: true,
    parse: { run_id: String, run_dir: String, date: String, backend: String },
  });
}

/** Adds rows to a table file unless their run id is there already; rewrites it atomically. */
export async function appendTableRows(
  file: string,
  columns: string[],
  rows: Record<string, unknown>[],
): Promise<number> {
  const existing = await readTable(file);
  const have = new Set(
    existing.numRows() ? (existing.array("run_id") as unknown[]).map(String) : [],
  );
  const fresh = rows.filter((r) => !have.has(String(r.run_id)));
  if (fresh.length === 0) return 0;
  const names = [...new Set([...existing.columnNames(), ...columns])];
  const all = [...(existing.objects() as Record<string, unknown>[]), ...fresh];
  const table = aq.from(all.map((r) => Object.fromEntries(names.map((c) => [c, r[c] ?? null]))));
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/")) : ".";
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(file, new TextEncoder().encode(table.toCSV() + "\n"));
  return fresh.length;
}

/**
 * The rows of budget `b` (a table without a `budget` column is returned as it is).
 *
 * @example
 * ```ts
 * ofBudget(await readTable(suiteFile("data/results", "patch-projection")), "cpu-long");
 * ```
 */
export function ofBudget(t: Table, b: string): Table {
  if (t.numRows() === 0 || !t.columnNames().includes("budget")) return t;
  return t.params({ b }).filter((d: { budget: string }, $: { b: string }) => d.budget === $.b);
}

/**
 * The rows of `curves` (a suite's `.curves.csv`) whose run is one of `results`' rows.
 *
 * @example
 * ```ts
 * ofRuns(await readTable(curvesFile(dir, "stability")), ofBudget(results, "cpu"));
 * ```
 */
export function ofRuns(curves: Table, results: Table): Table {
  if (curves.numRows() === 0 || results.numRows() === 0) return curves;
  const ids = new Set((results.array("run_id") as unknown[]).map(String));
  return aq.from(
    (curves.objects() as { run_id: unknown }[]).filter((r) => ids.has(String(r.run_id))),
  );
}

/**
 * The budgets that suite tables hold, in `order` (the study budgets' order), then any other.
 *
 * @example
 * ```ts
 * budgetsIn([await readTable(suiteFile("data/results", "patch-projection"))], BUDGETS);
 * // ["cpu", "cpu-long"]
 * ```
 */
export function budgetsIn(tables: Iterable<Table>, order: readonly string[]): string[] {
  const seen = new Set<string>();
  for (const t of tables) {
    if (t.numRows() && t.columnNames().includes("budget")) {
      for (const b of t.array("budget") as unknown[]) seen.add(String(b));
    }
  }
  return [...order.filter((b) => seen.has(b)), ...[...seen].filter((b) => !order.includes(b))];
}
