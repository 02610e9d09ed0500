/**
 * The build step of `deno task figures`: every study figure the tables of a results directory
 * allow, by file name, each with its budget note and verdicts.
 *
 * @example
 * ```ts
 * import { buildFigures } from "./build.ts";
 * Object.keys(await buildFigures("data/results")); // ["stability-lr", ...]
 * ```
 * @module
 */
import { type Budget, BUDGET_SPECS, budgetText } from "../../experiments/suites.ts";
import { curvesFile, ofBudget, ofRuns, readTable, suiteFile } from "../../experiments/tables.ts";
import { compareWithPaper } from "../../experiments/summary.ts";
import type { FigureSpec } from "./kit.ts";
import { gradientTraces } from "./gradient_traces.ts";
import { optimizerCurves } from "./optimizer.ts";
import { patchProjectionBars } from "./patch_projection.ts";
import { patchSizeFigure } from "./patch_size.ts";
import { pilotFigure } from "./pilot.ts";
import { posembBars } from "./posemb.ts";
import { scalingFigure } from "./scaling.ts";
import { stabilityCurves } from "./stability_curves.ts";
import { stabilityLrFigure } from "./stability_lr.ts";
import { verdictForest } from "./verdict_forest.ts";

/**
 * Every figure the tables in `resultsDir` allow, by file name: `stability-lr`,
 * `stability-curves`, `stability-gradients`, `patch-projection`, `posemb`, `patch-size`,
 * `scaling`, `optimizer`, `pilot`, and `verdicts` (every comparison of `compareWithPaper`, whose
 * verdicts also go under each study's title). Suites without a table are left out. Under every
 * title: `note(suite)`, by default the budget(s) of the suite's rows, each with its regime
 * (`opts.regimes`) where given. With `opts.budget`, only that budget's rows (runs of two budgets
 * never share a figure: `deno task figures` builds one set per budget).
 *
 * @example
 * ```ts
 * Object.keys(await buildFigures("data/results")); // ["stability-lr", "stability-curves", ...]
 * ```
 */
export async function buildFigures(
  resultsDir: string,
  opts: {
    note?: (suite: string) => string | undefined;
    /** A regime sentence per budget (`budgetRegimes`), added to the notes of its figures. */
    regimes?: Partial<Record<string, string>>;
    /** Only the rows of this budget (default: every row). */
    budget?: string;
  } = {},
): Promise<Record<string, FigureSpec>> {
  const out: Record<string, FigureSpec> = {};
  const notes: Record<string, string> = {};
  const load = async (suite: string) => {
    const all = await readTable(suiteFile(resultsDir, suite));
    const res = opts.budget ? ofBudget(all, opts.budget) : all;
    if (!res.numRows()) return null;
    const budgets = [...new Set(res.array("budget") as string[])];
    notes[suite] = budgets.map((b) =>
      `budget ${b}: ${b in BUDGET_SPECS ? budgetText(b as Budget, suite) : "unknown budget"}` +
      (opts.regimes?.[b] ? `. ${opts.regimes[b]}` : "")
    ).join("; ");
    return res;
  };
  const comparisons = await compareWithPaper(resultsDir, "linear_top1", opts.budget);
  const curves = async (suite: string, rows: Awaited<ReturnType<typeof load>>) =>
    ofRuns(await readTable(curvesFile(resultsDir, suite)), rows!);
  const o = (s: string) => ({ note: opts.note?.(s) ?? notes[s], comparisons });
  const st = await load("stability");
  if (st) {
    const c = await curves("stability", st);
    out["stability-lr"] = stabilityLrFigure(st, o("stability"));
    // The verdicts go with the accuracy-against-lr figure, not again with the curves.
    out["stability-curves"] = stabilityCurves(st, c, { note: o("stability").note });
    out["stability-gradients"] = gradientTraces(st, c, { note: o("stability").note });
  }
  const pp = await load("patch-projection");
  if (pp) out["patch-projection"] = patchProjectionBars(pp, o("patch-projection"));
  const pe = await load("posemb");
  if (pe) out["posemb"] = posembBars(pe, o("posemb"));
  const ps = await load("patch-size");
  if (ps) out["patch-size"] = patchSizeFigure(ps, o("patch-size"));
  const sc = await load("scaling");
  if (sc) out["scaling"] = scalingFigure(sc, o("scaling"));
  const op = await load("optimizer");
  if (op) out["optimizer"] = optimizerCurves(op, await curves("optimizer", op), o("optimizer"));
  const pilot = await load("pilot");
  if (pilot) out["pilot"] = pilotFigure(pilot, { note: o("pilot").note });
  if (comparisons.length) out["verdicts"] = verdictForest(comparisons);
  return out;
}
