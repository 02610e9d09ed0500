/**
 * The BENCHMARKS.md table from a session's JSON lines (`deno task bench --json` and
 * `tests/reference/moco_step_torch.py` write the same fields): one row per run, with the ratio
 * of its images/s to the PyTorch runs of the same workload, mode and batch in the same file.
 *
 * ```sh
 * OUT=/tmp/s.jsonl lib/bench/scripts/session.sh && deno run -A lib/bench/table.ts /tmp/s.jsonl
 * ```
 * @module
 */

/** The fields of a result line that the table uses. */
export interface ResultLine {
  workload: string;
  mode: string;
  backend: string;
  /** Data-parallel Deno workers (absent in PyTorch lines and older sessions: 1). */
  workers?: number;
  threads: number;
  batch: number;
  steps: number;
  images_per_s: number;
  ms_per_step: number;
  gflops_per_s: number;
  peak_rss_bytes: number;
  load_avg_start: number | null;
  load_avg_end: number | null;
}

/** Parses JSON lines (other lines, such as progress, are skipped). */
export function parseLines(text: string): ResultLine[] {
  return text.split("\n").filter((l) => l.trim().startsWith("{")).map((l) => JSON.parse(l));
}

const key = (r: ResultLine) => `${r.workload}/${r.mode}/${r.batch}`;

/**
 * A Markdown table of `rows`: workload, mode, batch, backend, workers, threads, steps, images/s,
 * ms/step,
 * GFLOP/s, the ratio to PyTorch (mean images/s of the PyTorch rows with the same workload, mode
 * and batch; "-" without one), peak RSS and the load average at start / end.
 *
 * @example
 * ```ts
 * const md = benchTable(parseLines(await Deno.readTextFile("session.jsonl")));
 * ```
 */
export function benchTable(rows: ResultLine[]): string {
  const torch = new Map<string, number[]>();
  for (const r of rows) {
    if (r.backend === "pytorch") torch.set(key(r), [...(torch.get(key(r)) ?? []), r.images_per_s]);
  }
  const out = [
    "| workload | mode | batch | backend | workers | threads | steps | images/s | ms/step | GFLOP/s | x PyTorch | peak RSS | load |",
    "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
  ];
  for (const r of rows) {
    const ref = torch.get(key(r));
    const ratio = ref ? r.images_per_s / (ref.reduce((a, b) => a + b, 0) / ref.length) : undefined;
    const load = [r.load_avg_start, r.load_avg_end].map((l) => l === null ? "?" : l.toFixed(1));
    out.push(
      `| ${r.workload} | ${r.mode} | ${r.batch} | ${r.backend} | ` +
        `${r.backend === "pytorch" ? "-" : r.workers ?? 1} | ${r.threads} | ${r.steps} | ` +
        `${fmt(r.images_per_s)} | ${r.ms_per_step.toFixed(0)} | ${r.gflops_per_s.toFixed(2)} | ` +
        `${ratio === undefined ? "-" : ratio.toFixed(ratio < 0.1 ? 3 : 2)} | ${
          (r.peak_rss_bytes / 2 ** 30).toFixed(2)
        } GiB | ` +
        `${load.join(" / ")} |`,
    );
  }
  return out.join("\n");
}

/** Three significant digits, no exponent. */
function fmt(x: number): string {
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3);
}

if (import.meta.main) {
  const files = Deno.args;
  if (!files.length) {
    console.error("usage: deno run -A lib/bench/table.ts SESSION.jsonl [MORE.jsonl ...]");
    Deno.exit(2);
  }
  const rows = (await Promise.all(files.map((f) => Deno.readTextFile(f)))).flatMap(parseLines);
  console.log(benchTable(rows));
}
