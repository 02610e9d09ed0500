/**
 * A suite's runs aggregated over seeds, as plain rows for tables (`deno task figures`'s
 * `summary.md`, the notebooks) and figures (`lib/viz/figures/`): runs grouped by
 * configuration (the suite's varied fields), each metric's mean with its 95% t-interval over
 * seeds ({@link meanInterval}), the random-init baseline rows apart. Pure: rows in, rows out.
 *
 * @example
 * ```ts
 * import { configTable } from "./aggregate.ts";
 * import { readTable, suiteFile } from "./tables.ts";
 * const rows = (await readTable(suiteFile("data/results", "posemb"))).objects();
 * configTable(rows, ["posEmb", "pool"]); // [{ posEmb: "sincos", pool: "cls", seeds: 3, ... }]
 * ```
 * @module
 */
import { type Interval, meanInterval, pairedDifference } from "./stats.ts";

/** One row of a results table. */
export type Row = Record<string, unknown>;

/** Rows as plain objects, or an arquero table (anything with `.objects()`). */
export type Rows = readonly Row[] | { objects(): object[] };

/**
 * The rows of plain objects or of an arquero table.
 *
 * @example
 * ```ts
 * rowsOf(aq.table({ seed: [0, 1] })); // [{ seed: 0 }, { seed: 1 }]
 * ```
 */
export function rowsOf(t: Rows): Row[] {
  return ("objects" in t ? t.objects() : [...t]) as Row[];
}

/**
 * A CSV boolean (`true` or `"true"`).
 *
 * @example
 * ```ts
 * bool("true"); // true
 * ```
 */
export function bool(v: unknown): boolean {
  return v === true || v === "true";
}

/**
 * Whether a row is a random-init baseline (an untrained backbone, no varied fields).
 *
 * @example
 * ```ts
 * isRandomInit({ random_init: "true" }); // true
 * ```
 */
export function isRandomInit(r: Row): boolean {
  return bool(r.random_init);
}

/**
 * The trained rows (random-init baselines left out).
 *
 * @example
 * ```ts
 * trainedRows([{ random_init: true }, { random_init: false }]).length; // 1
 * ```
 */
export function trainedRows(t: Rows): Row[] {
  return rowsOf(t).filter((r) => !isRandomInit(r));
}

/**
 * The random-init baseline rows.
 *
 * @example
 * ```ts
 * randomInitRows([{ random_init: true }, { random_init: false }]).length; // 1
 * ```
 */
export function randomInitRows(t: Rows): Row[] {
  return rowsOf(t).filter(isRandomInit);
}

/**
 * A run id without its `_seed-N` tail: the same for every seed of one configuration.
 *
 * @example
 * ```ts
 * configId("posemb_cpu_posEmb-none_pool-cls_seed-2"); // "posemb_cpu_posEmb-none_pool-cls"
 * ```
 */
export function configId(runId: unknown): string {
  return String(runId).replace(/_seed-\d+$/, "");
}

/**
 * One run per configuration: of the trained rows, the lowest seed of each configuration (by
 * {@link configId}), in first-seen order. The curve figures draw these (a dip is a property of
 * one run; a mean over seeds would smooth it away).
 *
 * @example
 * ```ts
 * firstSeedRuns([{ run_id: "a_seed-1", seed: 1 }, { run_id: "a_seed-0", seed: 0 }]);
 * // [{ run_id: "a_seed-0", seed: 0 }]
 * ```
 */
export function firstSeedRuns(t: Rows): Row[] {
  const best = new Map<string, Row>();
  for (const r of trainedRows(t)) {
    const id = configId(r.run_id);
    const had = best.get(id);
    if (!had || Number(r.seed) < Number(had.seed)) best.set(id, r);
  }
  return [...best.values()];
}

/** The runs of one configuration. */
export interface ConfigGroup {
  /** The configuration's values of the grouping fields. */
  config: Row;
  /** Its trained runs, by seed. */
  runs: Row[];
}

/**
 * Trained rows grouped by their values of `fields` (one group per configuration, in first-seen
 * order; runs sorted by seed). Random-init rows are left out.
 *
 * @example
 * ```ts
 * groupByConfig(rows, ["batchSize", "baseLr"]).map((g) => [g.config, g.runs.length]);
 * // [[{ batchSize: 64, baseLr: 0.0015 }, 3], ...]
 * ```
 */
export function groupByConfig(t: Rows, fields: readonly string[]): ConfigGroup[] {
  const groups = new Map<string, ConfigGroup>();
  for (const r of trainedRows(t)) {
    const config = Object.fromEntries(fields.map((f) => [f, r[f]]));
    const key = JSON.stringify(fields.map((f) => String(r[f])));
    const g = groups.get(key) ?? { config, runs: [] };
    g.runs.push(r);
    groups.set(key, g);
  }
  for (const g of groups.values()) g.runs.sort((a, b) => Number(a.seed) - Number(b.seed));
  return [...groups.values()];
}

/**
 * The finite values of `metric` over runs (a run without a probe has NaN; an empty CSV cell,
 * read as null, is missing too, not 0).
 *
 * @example
 * ```ts
 * metricValues([{ linear_top1: 70 }, { linear_top1: NaN }, { linear_top1: null }], "linear_top1");
 * // [70]
 * ```
 */
export function metricValues(runs: readonly Row[], metric: string): number[] {
  return runs
    .map((r) => r[metric])
    .filter((v) => v !== null && v !== undefined && v !== "")
    .map(Number)
    .filter(Number.isFinite);
}

const sum = (xs: number[]) => xs.reduce((s, x) => s + x, 0);

/**
 * The dips of a configuration's runs, summed; null when none of them had a kNN monitor during
 * training (no `knn_noise`): a suite without one has no dips to count, not zero dips.
 */
function dipSum(runs: readonly Row[], metric: string): number | null {
  return metricValues(runs, "knn_noise").length ? sum(metricValues(runs, metric)) : null;
}

/**
 * The mean of `metric` over runs with its 95% t-interval ({@link meanInterval}); null when no
 * run has a finite value. One value: the mean, with NaN bounds.
 *
 * @example
 * ```ts
 * metricInterval([{ linear_top1: 1 }, { linear_top1: 2 }, { linear_top1: 3 }], "linear_top1");
 * // { n: 3, mean: 2, halfWidth: 4.3027 / sqrt(3) = 2.484, ... }
 * ```
 */
export function metricInterval(runs: readonly Row[], metric: string): Interval | null {
  const xs = metricValues(runs, metric);
  return xs.length ? meanInterval(xs) : null;
}

/**
 * The sample standard deviation (n - 1) of `xs`; NaN for fewer than 2.
 *
 * @example
 * ```ts
 * sampleSd([1, 2, 3]); // 1
 * ```
 */
export function sampleSd(xs: readonly number[]): number {
  if (xs.length < 2) return NaN;
  const m = xs.reduce((s, x) => s + x, 0) / xs.length;
  return Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1));
}

/** NaN and infinities as null (an empty table cell). */
function cell(x: number | undefined): number | null {
  return x !== undefined && Number.isFinite(x) ? x : null;
}

function round(x: number | null, digits = 2): number | null {
  if (x === null) return null;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/**
 * One row per configuration: its field values, the seeds run, linear top-1 and kNN-20 top-1 as
 * mean and 95% half-width over seeds, the runs that diverged, the dips of all its runs, its
 * parameters and forward MFLOPs per image. Random-init rows are left out. Numbers rounded to 2
 * digits; a missing value (or the half-width of a single seed) is null.
 *
 * @example
 * ```ts
 * configTable([
 *   { posEmb: "none", seed: 0, linear_top1: 70, knn_top1: 60 },
 *   { posEmb: "none", seed: 1, linear_top1: 72, knn_top1: 61 },
 * ], ["posEmb"]);
 * // [{ posEmb: "none", seeds: 2, "linear top-1": 71, "linear ±95%": 12.71, ... }]
 * ```
 */
export function configTable(t: Rows, fields: readonly string[]): Row[] {
  return groupByConfig(t, fields).map(({ config, runs }) => {
    const lin = metricInterval(runs, "linear_top1");
    const knn = metricInterval(runs, "knn_top1");
    return {
      ...config,
      seeds: runs.length,
      "linear top-1": round(cell(lin?.mean)),
      "linear ±95%": round(cell(lin?.halfWidth)),
      "kNN-20 top-1": round(cell(knn?.mean)),
      "kNN ±95%": round(cell(knn?.halfWidth)),
      diverged: runs.filter((r) => bool(r.diverged)).length,
      dips: dipSum(runs, "dips"),
      params: cell(Number(runs[0].params)),
      MFLOPs: round(cell(Number(runs[0].flops) / 1e6)),
    };
  });
}

/**
 * The stability study per configuration (default fields: batch size, base lr, frozen patch
 * projection): seeds, mean final linear top-1 with its 95% half-width, runs diverged, dips of
 * all its runs, the deepest (points), dips preceded by a gradient spike, gradient spikes, and
 * the kNN monitor's mean point-to-point noise (dips count only when much deeper).
 *
 * @example
 * ```ts
 * stabilityTable((await readTable("data/results/stability.csv")).objects());
 * // [{ batchSize: 64, baseLr: 0.0015, freezePatchEmbed: false, seeds: 3, ..., dips: 2, ... }]
 * ```
 */
export function stabilityTable(
  t: Rows,
  fields: readonly string[] = ["batchSize", "baseLr", "freezePatchEmbed"],
): Row[] {
  return groupByConfig(t, fields).map(({ config, runs }) => {
    const lin = metricInterval(runs, "linear_top1");
    const deepest = metricValues(runs, "max_dip");
    const noise = metricValues(runs, "knn_noise");
    return {
      ...config,
      seeds: runs.length,
      "linear top-1": round(cell(lin?.mean)),
      "linear ±95%": round(cell(lin?.halfWidth)),
      diverged: runs.filter((r) => bool(r.diverged)).length,
      dips: dipSum(runs, "dips"),
      "deepest dip": deepest.length && noise.length ? Math.max(...deepest) : null,
      "dips after spike": dipSum(runs, "dips_after_spike"),
      "grad spikes": sum(metricValues(runs, "grad_spikes")),
      "monitor noise": noise.length ? round(sum(noise) / noise.length, 3) : null,
    };
  });
}

/**
 * The pilot per training length (`field`, default `epochs`), after a first row for the random
 * init: seeds, linear top-1 and kNN-20 top-1 as mean, 95% half-width and seed-to-seed SD, and
 * the climb above random init (trained minus random init, paired by seed where at least two
 * seeds pair, with its 95% half-width; else the difference of the means).
 *
 * @example
 * ```ts
 * pilotTable((await readTable("data/results/pilot.csv")).objects());
 * // [{ epochs: "random init", seeds: 5, ... }, { epochs: 1, seeds: 5, ..., "climb (linear)": 3.1 }]
 * ```
 */
export function pilotTable(t: Rows, field = "epochs"): Row[] {
  const floor = randomInitRows(t);
  const climb = (runs: Row[], metric: string) => {
    const base = new Map(floor.map((r) => [Number(r.seed), Number(r[metric])]));
    const pairs = runs.filter((r) =>
      Number.isFinite(Number(r[metric])) && Number.isFinite(base.get(Number(r.seed)) ?? NaN)
    );
    if (pairs.length >= 2) {
      return pairedDifference(
        pairs.map((r) => Number(r[metric])),
        pairs.map((r) => base.get(Number(r.seed))!),
      );
    }
    const a = metricInterval(runs, metric), b = metricInterval(floor, metric);
    return a && b ? { mean: a.mean - b.mean, halfWidth: NaN } : null;
  };
  const row = (label: unknown, runs: Row[], isFloor: boolean): Row => {
    const lin = metricInterval(runs, "linear_top1");
    const knn = metricInterval(runs, "knn_top1");
    const cl = isFloor ? null : climb(runs, "linear_top1");
    const ck = isFloor ? null : climb(runs, "knn_top1");
    return {
      [field]: label,
      seeds: runs.length,
      "linear top-1": round(cell(lin?.mean)),
      "linear ±95%": round(cell(lin?.halfWidth)),
      "linear seed SD": round(cell(sampleSd(metricValues(runs, "linear_top1")))),
      "climb (linear)": round(cell(cl?.mean)),
      "climb ±95%": round(cell(cl?.halfWidth)),
      "kNN-20 top-1": round(cell(knn?.mean)),
      "kNN ±95%": round(cell(knn?.halfWidth)),
      "kNN seed SD": round(cell(sampleSd(metricValues(runs, "knn_top1")))),
      "climb (kNN)": round(cell(ck?.mean)),
    };
  };
  const groups = groupByConfig(t, [field])
    .sort((a, b) => Number(a.config[field]) - Number(b.config[field]));
  return [
    ...(floor.length ? [row("random init", floor, true)] : []),
    ...groups.map((g) => row(g.config[field], g.runs, false)),
  ];
}
