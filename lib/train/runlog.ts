/**
 * Append-only CSV logs of a run (`log.csv`, `knn.csv`) that survive a crash: a resumed run first
 * cuts every row at or after its checkpoint's step (and any half-written last line), so that
 * step numbers stay contiguous with no row lost or duplicated. arquero reads them with
 * `aq.loadCSV`/`aq.fromCSV`.
 *
 * @example
 * ```ts
 * import { appendRows, truncateRows } from "./runlog.ts";
 * await appendRows("/tmp/log.csv", ["step", "loss"], [{ step: 0, loss: 4.1 }]);
 * await truncateRows("/tmp/log.csv", ["step", "loss"], 0); // keeps rows with step < 0: none
 * ```
 * @module
 */
import { diskFullOr, writeFileAtomic } from "../io/atomic.ts";

/** Appends rows (objects keyed by column) to a CSV, writing the header first if it is new. */
export async function appendRows<T extends object>(
  path: string,
  columns: (keyof T & string)[],
  rows: T[],
): Promise<void> {
  let text = "";
  try {
    await Deno.stat(path);
  } catch {
    text = columns.join(",") + "\n";
  }
  for (const row of rows) {
    text += columns.map((c) => formatCell((row as Record<string, unknown>)[c])).join(",") + "\n";
  }
  try {
    await Deno.writeTextFile(path, text, { append: true });
  } catch (e) {
    // A torn last line is cut by truncateRows when the run resumes.
    throw await diskFullOr(e, path);
  }
}

/**
 * A number as text. A float32 value (a loss or a norm read back from a tensor) gets the shortest
 * text that parses back to the same float32, so that two runs' logs compare bit for bit; other
 * numbers (an lr computed in float64) get 7 significant digits.
 */
export function formatNumber(v: number): string {
  if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
  if (Math.fround(v) === v) {
    for (let p = 6; p < 9; p++) {
      const s = v.toPrecision(p);
      if (Math.fround(Number(s)) === v) return String(Number(s));
    }
    return String(Number(v.toPrecision(9)));
  }
  return v.toPrecision(7);
}

function formatCell(v: unknown): string {
  if (typeof v === "number") return formatNumber(v);
  const s = String(v ?? "");
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/**
 * Keeps only the complete rows whose `step` column is below `below` (atomically rewriting the
 * file). A missing file is left missing. Throws if the header is not `columns`.
 */
export async function truncateRows(
  path: string,
  columns: string[],
  below: number,
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  const lines = text.split("\n");
  if (lines[0] !== columns.join(",")) {
    throw new Error(
      `${path}: expected the header "${columns.join(",")}", found "${lines[0]}"; ` +
        "move the file away to start a new log",
    );
  }
  const stepCol = columns.indexOf("step");
  const keep = [lines[0]];
  // Only newline-terminated lines are complete; the text after the last "\n" is a torn write.
  for (const line of lines.slice(1, -1)) {
    const cells = line.split(",");
    if (cells.length !== columns.length) continue;
    if (Number(cells[stepCol]) < below) keep.push(line);
  }
  await writeFileAtomic(path, new TextEncoder().encode(keep.join("\n") + "\n"));
}
