/**
 * `deno task figures`: draws the paper's figures from the experiments' tables
 * (`data/results/<suite>.csv`, `<suite>.curves.csv`) into `figures/<name>.html` (self-contained)
 * and `figures/<name>.png` (headless Chromium; `--no-png` skips it), plus `figures/summary.md`
 * ({@link summaryMarkdown}: our effects beside the paper's with their verdicts, from
 * `lib/experiments/summary.ts`, for the linear probe and kNN-20, after each budget's regime; the stability study per
 * configuration and the pilot per training length, from `lib/experiments/aggregate.ts`).
 *
 * ```sh
 * deno task experiments --suite all --budget cpu && deno task figures
 * deno task figures --results-dir /tmp/results --out /tmp/figures --no-png
 * ```
 * @module
 */
import { buildFigures, writeFigure } from "../viz/figures/mod.ts";
import {
  compareWithPaper,
  comparisonMarkdown,
  familyNote,
  lrText,
} from "../experiments/summary.ts";
import { pilotTable, stabilityTable } from "../experiments/aggregate.ts";
import { budgetsIn, ofBudget, readTable, suiteFile, type Table } from "../experiments/tables.ts";
import type { FigureSpec } from "../viz/figures/kit.ts";
import { budgetRegimes } from "../experiments/regime.ts";
import { BUDGETS, SUITE_NAMES } from "../experiments/suites.ts";
import { tableMarkdown } from "../viz/tables.ts";
import { helpText } from "./args.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";

const FLAGS: FlagSpec[] = [
  {
    key: "resultsDir",
    flag: "results-dir",
    kind: "string",
    help: "tables to read (default data/results)",
  },
  { key: "out", flag: "out", kind: "string", help: "output directory (default figures)" },
  { key: "png", flag: "png", kind: "bool", help: "also write PNGs (default; --no-png skips)" },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** Parses the flags, builds every figure and writes it; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values } = parseFlags(args, FLAGS);
  if (values.help) {
    console.log(helpText("deno task figures [flags]: figures from data/results", FLAGS));
    return 0;
  }
  const resultsDir = String(values.resultsDir ?? "data/results");
  const out = String(values.out ?? "figures");
  const png = values.png !== false;
  const tables = await suiteTablesIn(resultsDir);
  const regimes = await budgetRegimes(tables);
  // One set of figures per budget: the first (in BUDGETS order) under the plain names, each
  // other with its budget appended (patch-projection-cpu-long.html).
  const budgets = budgetsIn(Object.values(tables), BUDGETS);
  const figs: Record<string, FigureSpec> = {};
  for (const [i, budget] of budgets.entries()) {
    const mine = await buildFigures(resultsDir, { regimes, budget });
    for (const [name, spec] of Object.entries(mine)) figs[i ? `${name}-${budget}` : name] = spec;
  }
  if (Object.keys(figs).length === 0) {
    throw new UsageError(
      `no result tables in ${resultsDir}: run deno task experiments --suite all --budget smoke ` +
        "(or cpu) first, or pass --results-dir",
    );
  }
  let warned = false;
  for (const [name, spec] of Object.entries(figs)) {
    const res = await writeFigure(spec, name, out, { png });
    console.log(`${name}: ${res.html}${res.png ? `, ${res.png}` : ""}`);
    if (res.warning && !warned) {
      console.error(`warning: ${res.warning}`);
      warned = true;
    }
  }
  const summary = await summaryMarkdown(resultsDir, regimes, budgets);
  await Deno.writeTextFile(`${out}/summary.md`, summary);
  console.log(`summary: ${out}/summary.md\n\n${summary}`);
  return 0;
}

/** The pilot's and every study's result table in `resultsDir`, by suite name. */
async function suiteTablesIn(resultsDir: string): Promise<Record<string, Table>> {
  return Object.fromEntries(
    await Promise.all(
      ["pilot", ...SUITE_NAMES].map(async (s) => [s, await readTable(suiteFile(resultsDir, s))]),
    ),
  );
}

/**
 * `figures/summary.md` from the tables in `resultsDir`: the comparisons with the paper and their
 * verdicts on the linear probe (the paper's metric) and on kNN-20 (`comparisonMarkdown` of
 * `compareWithPaper`), the stability study per configuration (`stabilityTable`) and the pilot
 * per training length (`pilotTable`); a section whose table is absent is left out.
 *
 * @example
 * ```ts
 * await Deno.writeTextFile("figures/summary.md", await summaryMarkdown("data/results"));
 * ```
 */
export async function summaryMarkdown(
  resultsDir: string,
  regimes: Partial<Record<string, string>> = {},
  budgets?: string[],
): Promise<string> {
  const found = budgets ?? budgetsIn(Object.values(await suiteTablesIn(resultsDir)), BUDGETS);
  const table = async (suite: string) =>
    ofBudget(await readTable(suiteFile(resultsDir, suite)), found[0] ?? "");
  const verdicts = async (budget: string | undefined, named: boolean) => {
    const linear = await compareWithPaper(resultsDir, "linear_top1", budget);
    const knn = await compareWithPaper(resultsDir, "knn_top1", budget);
    const at = named ? `, budget ${budget}` : "";
    return [
      `## Linear probe top-1 (the paper's metric)${at}`,
      ...(linear.length
        ? [familyNote(linear), comparisonMarkdown(linear)]
        : ["No comparisons: no result tables."]),
      `## kNN-20 top-1${at}`,
      ...(knn.length
        ? [familyNote(knn), comparisonMarkdown(knn)]
        : ["No comparisons: no result tables."]),
    ];
  };
  const many = found.length > 1;
  const parts = [
    "# Ours beside the paper",
    `Generated by \`deno task figures\` from \`${resultsDir}\`. Each configuration runs under ` +
    "several seeds; a comparison pairs two configurations by seed. Ours: means with 95% " +
    "t-intervals over seeds and the paired difference a - b with its 95% t-interval, on " +
    "Fashion-MNIST; paper: ImageNet linear-probe differences. Verdict: **holds** (our " +
    "interval excludes 0 on the paper's side), **opposite** (on the other side), **not " +
    "detected** (it contains 0; its half-width bounds the effect). **Holm-adjusted verdict**: " +
    "the same, kept only where the paired t-test's p-value, adjusted by Holm's step-down " +
    "method over all the comparisons of the table (family-wise error 5%), stays below 0.05.",
    ...(Object.keys(regimes).length
      ? [
        "## Regime",
        "Whether the models compared have learned more than the pixels give: each budget's base " +
        "configuration (the pilot's run of the budget's length; at cpu-long, the patch-projection " +
        "suite's MoCo v3 runs with a learned projection) and its random initialisation " +
        "beside raw pixels under the same protocols (kNN-20; the budget's linear probe).",
        Object.entries(regimes).map(([b, text]) => `- **${b}**: ${text}`).join("\n"),
      ]
      : []),
    ...(many
      ? [
        `Budget ${found[0]} first; ${found.slice(1).join(", ")} after the stability and pilot ` +
        "tables. Each budget's comparisons are their own family (Holm's adjustment within it).",
      ]
      : []),
    ...await verdicts(found[0], many),
  ];
  const st = await table("stability");
  if (st.numRows()) {
    parts.push(
      "## Stability per configuration",
      "Over the seeds of each configuration: mean final linear top-1 with its 95% half-width, " +
        "runs diverged (their numbers are from the last checkpoint), dips of the kNN monitor " +
        "(all seeds together) and the deepest (points), dips preceded by a gradient spike of " +
        "the patch projection, gradient spikes, and the monitor's mean point-to-point noise.",
      tableMarkdown(stabilityTable(st).map((r) => ({ ...r, baseLr: lrText(r.baseLr) })), {
        digits: 2,
      }),
    );
  }
  const pilot = await table("pilot");
  if (pilot.numRows()) {
    parts.push(
      "## Pilot: training length",
      "Per training length, over seeds: mean with its 95% half-width and the seed-to-seed " +
        "standard deviation, and the climb above random init (paired by seed).",
      tableMarkdown(pilotTable(pilot), { digits: 2 }),
    );
  }
  for (const budget of found.slice(1)) parts.push(...await verdicts(budget, true));
  return parts.join("\n\n") + "\n";
}

if (import.meta.main) runMain(main);
