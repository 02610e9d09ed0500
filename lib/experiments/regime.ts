/**
 * The regime of a budget: whether the models its studies compare have learned more than the
 * pixels give. The base configuration at the budget's length (the `pilot` suite's runs with the
 * budget's `epochs`, or the runs its `baseRuns` names: `cpu-long`'s are the patch-projection
 * suite's MoCo v3 runs with a learned projection) and its random initialisation, mean with 95% t-interval over seeds, beside
 * raw pixels under the same protocols (kNN-20 and the linear probe of the full splits: the final
 * report's raw-pixel row, `rawPixelBaseline` in `lib/eval/final_report.ts`).
 *
 * @example
 * ```ts
 * import { budgetRegime, regimeText } from "./regime.ts";
 * const r = budgetRegime(pilotRows, 2, { linear_top1: 84.73, knn_top1: 84.95 });
 * if (r) console.log(regimeText(r));
 * // base configuration: linear 78.8 ± 0.6 (kNN 80.3 ± 0.4), below raw pixels (84.7; kNN 85.0) ...
 * ```
 * @module
 */
import { datasetStats } from "../data/stats.ts";
import { FINAL_KNN_K, rawPixelBaseline } from "../eval/final_report.ts";
import { resolveConfig } from "../train/config.ts";
import { baselineDatasetKey } from "../train/final_eval.ts";
import { loadSplits } from "../train/setup.ts";
import { metricInterval, randomInitRows, type Rows, trainedRows } from "./aggregate.ts";
import type { Interval } from "./stats.ts";
import { type Budget, BUDGET_SPECS, type BudgetSpec } from "./suites.ts";

/** Raw pixels' top-1 (percent) under the budget's protocols. */
export interface RawPixels {
  linear_top1?: number;
  knn_top1?: number;
}

/** What {@link budgetRegime} returns. */
export interface Regime {
  /** Training epochs of the base configuration. */
  epochs: number;
  /** The base configuration over seeds. */
  base: { linear: Interval | null; knn: Interval | null };
  /** Its random initialisation over the same seeds (null without such rows). */
  randomInit: { linear: Interval | null; knn: Interval | null } | null;
  raw: RawPixels;
}

/**
 * The regime from one suite's rows at a budget: the trained runs whose fields equal `match`
 * (default: the pilot's runs of `epochs` epochs) and the random-init rows. Undefined when no
 * trained run matches.
 *
 * @example
 * ```ts
 * budgetRegime([{ epochs: 2, linear_top1: 78 }, { epochs: 2, linear_top1: 79 }], 2, {});
 * // base.linear: mean 78.5 (2 seeds), randomInit null
 * budgetRegime(patchRows, 10, {}, { framework: "mocov3", freezePatchEmbed: false });
 * ```
 */
export function budgetRegime(
  rows: Rows,
  epochs: number,
  raw: RawPixels,
  match: Record<string, unknown> = { epochs },
): Regime | undefined {
  const runs = trainedRows(rows).filter((r) =>
    Object.entries(match).every(([k, v]) => String(r[k]) === String(v))
  );
  if (!runs.length) return undefined;
  const random = randomInitRows(rows);
  const both = (rows: typeof runs) => ({
    linear: metricInterval(rows, "linear_top1"),
    knn: metricInterval(rows, "knn_top1"),
  });
  return { epochs, base: both(runs), randomInit: random.length ? both(random) : null, raw };
}

/** `78.8 ± 0.6`, or `78.8` for a single value. */
function meanText(i: Interval): string {
  return Number.isFinite(i.halfWidth)
    ? `${i.mean.toFixed(1)} ± ${i.halfWidth.toFixed(1)}`
    : i.mean.toFixed(1);
}

/**
 * One sentence: the base configuration's linear probe (and kNN-20) beside raw pixels and random
 * init, with which side of each it is on, judged by its 95% interval (an interval that contains
 * the raw-pixel number is "level with").
 *
 * @example
 * ```ts
 * regimeText(regime);
 * // "regime: the base configuration (2 epochs, 5 seeds) reaches linear 78.8 ± 0.6, kNN 80.3 ±
 * // 0.4: below raw pixels (linear 84.7, kNN 85.0), above random init (72.5 ± 1.0, 73.6 ± 0.3)"
 * ```
 */
export function regimeText(r: Regime): string {
  const side = (i: Interval | null, x: number | undefined) => {
    if (!i || x === undefined || !Number.isFinite(x)) return undefined;
    const lo = Number.isFinite(i.lo) ? i.lo : i.mean, hi = Number.isFinite(i.hi) ? i.hi : i.mean;
    return hi < x ? "below" : lo > x ? "above" : "level with";
  };
  const seeds = r.base.linear?.n ?? r.base.knn?.n ?? 0;
  const parts = [
    r.base.linear ? `linear ${meanText(r.base.linear)}` : undefined,
    r.base.knn ? `kNN ${meanText(r.base.knn)}` : undefined,
  ].filter(Boolean).join(", ");
  const clauses: string[] = [];
  const rawSides = [
    side(r.base.linear, r.raw.linear_top1),
    side(r.base.knn, r.raw.knn_top1),
  ].filter(Boolean);
  if (rawSides.length) {
    const same = rawSides.every((s) => s === rawSides[0]);
    const nums = [
      r.raw.linear_top1 !== undefined ? `linear ${r.raw.linear_top1.toFixed(1)}` : undefined,
      r.raw.knn_top1 !== undefined ? `kNN ${r.raw.knn_top1.toFixed(1)}` : undefined,
    ].filter(Boolean).join(", ");
    clauses.push(
      same
        ? `${rawSides[0]} raw pixels (${nums})`
        : `${rawSides.join(" / ")} raw pixels (${nums}; linear / kNN)`,
    );
  }
  if (r.randomInit) {
    const s = side(r.base.linear, r.randomInit.linear?.mean) ??
      side(r.base.knn, r.randomInit.knn?.mean);
    const nums = [r.randomInit.linear, r.randomInit.knn].filter((i): i is Interval => !!i)
      .map(meanText).join(", ");
    if (s) clauses.push(`${s} random init (${nums})`);
  }
  const verdict = rawSides.length && rawSides.every((s) => s === "below")
    ? "; the models compared have not yet learned more than the pixels give"
    : rawSides.length && rawSides.every((s) => s === "above")
    ? "; the models compared have learned more than the pixels give"
    : "";
  return `regime: the base configuration (${r.epochs} epoch${r.epochs === 1 ? "" : "s"}, ` +
    `${seeds} seed${seeds === 1 ? "" : "s"}) reaches ${parts}: ${clauses.join(", ")}${verdict}`;
}

/**
 * Raw pixels under a budget's protocols (kNN-20 and its linear probe's epochs) on the data of its
 * base configuration, from the baseline cache that pretraining runs share (computed once, about
 * 15 s for Fashion-MNIST).
 *
 * @example
 * ```ts
 * await budgetRawPixels("cpu"); // { linear_top1: 84.73, knn_top1: 84.95, ... }
 * ```
 */
export async function budgetRawPixels(budget: Budget, cacheDir?: string): Promise<RawPixels> {
  const spec = BUDGET_SPECS[budget];
  const cfg = resolveConfig({ ...spec.base, seed: spec.seeds[0] ?? 0 });
  const [train, test] = await loadSplits(cfg);
  return await rawPixelBaseline(train, test, {
    what: spec.linearEpochs > 0 ? "all" : "knn",
    stats: datasetStats(train),
    datasetKey: baselineDatasetKey(cfg, train),
    k: FINAL_KNN_K,
    linearEpochs: spec.linearEpochs > 0 ? spec.linearEpochs : undefined,
    cacheDir,
  });
}

/**
 * The regime sentence of every budget whose base runs the tables hold (see {@link regimeText}),
 * by budget: the pilot's runs of the budget's length, or those its `baseRuns` names (tables by
 * suite name). A budget without such rows is left out.
 *
 * @example
 * ```ts
 * (await budgetRegimes({ pilot })).cpu; // "regime: the base configuration (2 epochs, 5 seeds) ..."
 * ```
 */
export async function budgetRegimes(
  tables: Record<string, { objects(): object[] }>,
  cacheDir?: string,
): Promise<Partial<Record<Budget, string>>> {
  const out: Partial<Record<Budget, string>> = {};
  for (const [budget, spec] of Object.entries(BUDGET_SPECS) as [Budget, BudgetSpec][]) {
    const epochs = resolveConfig({ ...spec.base, seed: 0 }).epochs;
    const from = spec.baseRuns ?? { suite: "pilot", variant: { epochs } };
    const rows = (tables[from.suite]?.objects() ?? []) as Record<string, unknown>[];
    const mine = rows.filter((r) => r.budget === budget);
    const regime = budgetRegime(mine, epochs, {}, from.variant);
    if (!regime) continue;
    out[budget] = regimeText({ ...regime, raw: await budgetRawPixels(budget, cacheDir) });
  }
  return out;
}
