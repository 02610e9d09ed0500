/**
 * The final report of a pretraining run: kNN-20 and a linear probe on the full splits for the
 * trained backbone, beside the same architecture at its random initialisation and beside raw
 * pixels, with the difference to raw pixels stated, so that a run says whether its features have
 * learned more than the images themselves give.
 *
 * The trained backbone's features are extracted once and read by both protocols. The two
 * baselines depend only on the dataset, the architecture and its init seed (and the protocols'
 * settings), so they are computed once and cached as small JSON files under `cacheDir`
 * (default `data/cache/baselines`).
 *
 * @example
 * ```ts
 * import { finalReport, finalReportLines } from "./final_report.ts";
 * const report = await finalReport(vit, () => createViT(vit.config, 0), train, test, {
 *   what: "all",
 *   stats: datasetStats(train),
 *   datasetKey: "fmnist",
 *   baselineKey: "vit_micro seed 0",
 * });
 * console.log(finalReportLines(report).join("\n"));
 * ```
 * @module
 */
import type { Dataset } from "../data/dataset.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import type { StopSignal } from "../core/stop.ts";
import { disposeViT, type ViT } from "../model/vit.ts";
import { extractFeatures, type FeatureSet, rawPixelFeatures, sha256Hex } from "./features.ts";
import { type ChannelStats } from "../data/stats.ts";
import { KNN_TEMPERATURE, knnClassify } from "./knn.ts";
import { linearProbe } from "./linear.ts";

/** Which protocols the final report runs. */
export const FINAL_EVALS = ["knn", "linear", "all", "none"] as const;
/** A value of `--final-eval`. */
export type FinalEval = typeof FINAL_EVALS[number];

/** Neighbours of the final kNN (the paper's and solo-learn's kNN-20). */
export const FINAL_KNN_K = 20;
/** Epochs of the final linear probe (SGD, cosine, on frozen cached features; the suites' 30). */
export const FINAL_LINEAR_EPOCHS = 30;

/** One row of the report: top-1 and top-5 (percent) of each protocol that ran. */
export interface FinalRow {
  model: "trained backbone" | "random init" | "raw pixels";
  knn_top1?: number;
  knn_top5?: number;
  linear_top1?: number;
  linear_top5?: number;
}

/** What {@link finalReport} returns. */
export interface FinalReport {
  /** The trained backbone, its random initialisation, raw pixels (in that order). */
  rows: FinalRow[];
  k: number;
  linearEpochs: number;
  trainSize: number;
  testSize: number;
  /** Seconds spent, the cached baselines' time not counted. */
  seconds: number;
}

/** Options of {@link finalReport}. */
export interface FinalReportOptions {
  what: Exclude<FinalEval, "none">;
  /** Normalisation of the images (the training split's statistics). */
  stats: ChannelStats;
  /** Identifies the data: name, root, split rule, image size (the baselines' cache key). */
  datasetKey: string;
  /** Identifies the architecture and its init seed (the random-init baseline's cache key). */
  baselineKey: string;
  k?: number;
  linearEpochs?: number;
  /** Where the baselines are cached; `null` computes them every time. */
  cacheDir?: string | null;
  signal?: StopSignal;
  print?: (line: string) => void;
}

/**
 * Runs the final report: the protocols of `what` on the trained `backbone`, on the backbone that
 * `randomInit` creates (disposed here) and on raw pixels, the last two read from the cache when
 * present. Accuracies in percent.
 *
 * @example
 * ```ts
 * const r = await finalReport(vit, () => createViT(vit.config, 0), train, test, {
 *   what: "knn", stats, datasetKey: "fmnist", baselineKey: "vit_micro seed 0",
 * });
 * r.rows[0].knn_top1; // the trained backbone's kNN-20 top-1
 * ```
 */
export async function finalReport(
  backbone: ViT,
  randomInit: () => ViT,
  train: Dataset,
  test: Dataset,
  opts: FinalReportOptions,
): Promise<FinalReport> {
  const t0 = performance.now();
  const ctx = context(train, test, opts);
  const backboneRow = async (model: ViT) => {
    const extract = { mean: opts.stats.mean, std: opts.stats.std, signal: opts.signal };
    return await ctx.protocols(
      await extractFeatures(model, train, extract),
      await extractFeatures(model, test, extract),
    );
  };

  ctx.print(`final evaluation: the trained backbone on ${train.length} / ${test.length} images...`);
  const trained = await backboneRow(backbone);
  const random = await ctx.cached(
    "random init",
    { kind: "random init", data: opts.datasetKey, model: opts.baselineKey },
    async () => {
      const model = randomInit();
      try {
        return await backboneRow(model);
      } finally {
        disposeViT(model);
      }
    },
  );
  const raw = await rawPixelBaseline(train, test, opts);
  const pick = (r: Row): Row => ({
    ...(ctx.knn ? { knn_top1: r.knn_top1, knn_top5: r.knn_top5 } : {}),
    ...(ctx.linear ? { linear_top1: r.linear_top1, linear_top5: r.linear_top5 } : {}),
  });
  return {
    rows: [
      { model: "trained backbone", ...pick(trained) },
      { model: "random init", ...pick(random) },
      { model: "raw pixels", ...pick(raw) },
    ],
    k: ctx.k,
    linearEpochs: ctx.linearEpochs,
    trainSize: train.length,
    testSize: test.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

type Row = Omit<FinalRow, "model">;

/**
 * The raw-pixel row of the final report (the protocols of `opts.what` on the images' pixels /
 * 255), read from the baseline cache or computed and cached: the same numbers a pretraining run's
 * report shows for the same data and protocols. The study summaries read their regime from it.
 *
 * @example
 * ```ts
 * const raw = await rawPixelBaseline(train, test, { what: "all", stats, datasetKey: "fmnist" });
 * raw.linear_top1; // about 84.7 on Fashion-MNIST (30 epochs)
 * ```
 */
export async function rawPixelBaseline(
  train: Dataset,
  test: Dataset,
  opts: Omit<FinalReportOptions, "baselineKey">,
): Promise<Row> {
  const ctx = context(train, test, opts);
  return await ctx.cached(
    "raw pixels",
    { kind: "raw pixels", data: opts.datasetKey },
    async () => await ctx.protocols(rawPixelFeatures(train), rawPixelFeatures(test)),
  );
}

/** The protocols and the baseline cache of one report's settings. */
function context(train: Dataset, test: Dataset, opts: Omit<FinalReportOptions, "baselineKey">) {
  const k = opts.k ?? FINAL_KNN_K;
  const linearEpochs = opts.linearEpochs ?? FINAL_LINEAR_EPOCHS;
  const knn = opts.what !== "linear", linear = opts.what !== "knn";
  const print = opts.print ?? (() => {});
  const cacheDir = opts.cacheDir === undefined ? "data/cache/baselines" : opts.cacheDir;
  const classes = train.classes.length;
  const protocols = async (tr: FeatureSet, te: FeatureSet): Promise<Row> => {
    const row: Row = {};
    if (knn) {
      const [r] = await knnClassify(tr, te, {
        k: [k],
        temperature: KNN_TEMPERATURE,
        numClasses: classes,
        signal: opts.signal,
      });
      row.knn_top1 = 100 * r.top1;
      row.knn_top5 = 100 * r.top5;
    }
    if (linear) {
      const r = await linearProbe(tr, te, { epochs: linearEpochs, signal: opts.signal });
      row.linear_top1 = 100 * r.top1;
      row.linear_top5 = 100 * r.top5;
    }
    return row;
  };
  const settings = { k, linearEpochs, train: train.length, test: test.length, stats: opts.stats };
  const cached = async (what: string, key: Record<string, unknown>, run: () => Promise<Row>) => {
    if (cacheDir === null) return await run();
    const keyText = JSON.stringify({ ...key, ...settings });
    const file = `${cacheDir}/${(await sha256Hex(keyText)).slice(0, 16)}.json`;
    const hit = await readBaseline(file, keyText);
    const need = (knn && hit?.knn_top1 === undefined) || (linear && hit?.linear_top1 === undefined);
    if (hit && !need) {
      print(`${what}: from the cache (${file})`);
      return hit;
    }
    print(`${what}: computing (cached for the next run in ${file})...`);
    const row = { ...hit, ...await run() };
    await Deno.mkdir(cacheDir, { recursive: true });
    await writeFileAtomic(file, new TextEncoder().encode(JSON.stringify({ key: keyText, row })));
    return row;
  };
  return { k, linearEpochs, knn, linear, print, protocols, cached };
}

/**
 * The report as printed lines: a header naming the splits and protocols, one row per model
 * (top-1, percent, two decimals), the trained backbone minus raw pixels, and a sentence that
 * says which side of raw pixels it is on for each protocol.
 *
 * @example
 * ```ts
 * finalReportLines(report).join("\n");
 * // final evaluation, top-1 % on the full splits (60000 train / 10000 test images) ...
 * ```
 */
export function finalReportLines(r: FinalReport): string[] {
  const cols: { key: "knn_top1" | "linear_top1"; name: string }[] = [];
  if (r.rows[0].knn_top1 !== undefined) cols.push({ key: "knn_top1", name: `kNN-${r.k}` });
  if (r.rows[0].linear_top1 !== undefined) cols.push({ key: "linear_top1", name: "linear" });
  const what = cols.map((c) =>
    c.key === "knn_top1"
      ? `kNN-${r.k}`
      : `linear probe (${r.linearEpochs} epochs on frozen features)`
  ).join(", ");
  const cell = (v: number | undefined) => (v === undefined ? "n/a" : v.toFixed(2)).padStart(8);
  const signed = (v: number) => ((v > 0 ? "+" : "") + v.toFixed(2)).padStart(8);
  const lines = [
    `final evaluation, top-1 % on the full splits (${r.trainSize} train / ${r.testSize} test ` +
    `images): ${what}`,
    `  ${"".padEnd(18)}${cols.map((c) => c.name.padStart(8)).join("")}`,
    ...r.rows.map((row) =>
      `  ${row.model.padEnd(18)}${cols.map((c) => cell(row[c.key])).join("")}`
    ),
  ];
  const [trained, , raw] = r.rows;
  const diffs = cols.map((c) => ({ name: c.name, d: trained[c.key]! - raw[c.key]! }));
  lines.push(`  ${"trained - raw".padEnd(18)}${diffs.map((x) => signed(x.d)).join("")}`);
  const above = diffs.filter((x) => x.d > 0).map((x) => x.name);
  const below = diffs.filter((x) => x.d <= 0).map((x) => x.name);
  lines.push(
    below.length === 0
      ? `  the features beat raw pixels on ${above.join(" and ")}`
      : above.length === 0
      ? `  the features do not beat raw pixels (${below.join(", ")}): they have not yet learned ` +
        "more than the pixels give; train longer (--epochs) or see docs/recipes.md"
      : `  the features beat raw pixels on ${above.join(", ")}, not on ${below.join(", ")}`,
  );
  return lines;
}

async function readBaseline(
  file: string,
  keyText: string,
): Promise<Omit<FinalRow, "model"> | undefined> {
  try {
    const saved = JSON.parse(await Deno.readTextFile(file));
    return saved.key === keyText ? saved.row : undefined;
  } catch {
    return undefined; // absent or unreadable: computed again and rewritten
  }
}
