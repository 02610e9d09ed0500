import { assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import {
  appendResult,
  type EvalRow,
  readResults,
  RESULT_COLUMNS,
  ResultsError,
  summaryTable,
} from "../../lib/eval/results.ts";

const row: EvalRow = {
  run_id: "r1",
  checkpoint: "data/runs/r1/last.safetensors",
  dataset: "fmnist",
  protocol: "knn-20",
  params: { k: 20, temperature: 0.07, note: 'a "quoted", comma' },
  top1: 0.8125,
  top5: 0.99,
  seconds: 7.5,
  backend: "wasm",
  date: "2025-01-02T03:04:05.000Z",
};

Deno.test("results: append creates the directory and the file; rows round-trip", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/nested/results/eval.csv`;
  try {
    await appendResult(row, file);
    await appendResult(
      { ...row, run_id: "007", protocol: "linear", top1: 0.5, date: undefined },
      file,
    );
    const text = await Deno.readTextFile(file);
    assertEquals(text.split("\n")[0], RESULT_COLUMNS.join(","));
    const t = await readResults(file);
    assertEquals(t.numRows(), 2);
    const rows = t.objects() as Record<string, unknown>[];
    assertEquals(rows[0], { ...row, params: JSON.stringify(row.params) });
    // Text stays text (no number or date inference), numbers are numbers.
    assertEquals(rows[1].run_id, "007");
    assertEquals(rows[1].top1, 0.5);
    assertEquals(JSON.parse(rows[1].params as string).note, 'a "quoted", comma');
    assertEquals(typeof rows[1].date, "string");
    assertEquals(Number.isNaN(Date.parse(rows[1].date as string)), false);
    const s = await summaryTable(file);
    assertEquals(s.array("run_id"), ["r1", "007"]); // oldest first
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("results: a missing file reads as an empty table with the columns", async () => {
  const t = await readResults("/nonexistent/dir/eval.csv");
  assertEquals(t.numRows(), 0);
  assertEquals(t.columnNames(), [...RESULT_COLUMNS]);
});

Deno.test("results: a file missing a column is an error naming the file and the column", async () => {
  const dir = await Deno.makeTempDir();
  const file = `${dir}/eval.csv`;
  try {
    const cols = RESULT_COLUMNS.filter((c) => c !== "top5");
    await Deno.writeTextFile(file, cols.join(",") + "\n" + cols.map(() => "1").join(",") + "\n");
    const err = await assertRejects(() => appendResult(row, file), ResultsError);
    assertStringIncludes(err.message, file);
    assertStringIncludes(err.message, '"top5"');
    assertEquals((err as ResultsError).file, file);
    // The file is left as it was.
    assertEquals((await Deno.readTextFile(file)).split("\n").length, 3);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("results: non-numeric accuracy is rejected", async () => {
  await assertRejects(
    () => appendResult({ ...row, top1: Number.NaN }, "/nonexistent/eval.csv"),
    TypeError,
    "top1 must be a number",
  );
});
