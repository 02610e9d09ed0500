/**
 * Our results beside the paper's, one line per comparison: two configurations of a study run
 * under the same seeds, each one's mean with its 95% t-interval over seeds, their paired
 * difference (a - b, paired by seed) with its 95% t-interval, and a verdict against the paper's
 * direction (`stats.ts`): **holds** (the interval excludes 0 on the paper's side), **opposite**
 * (it excludes 0 on the other side) or **not detected** (it contains 0; its half-width bounds the
 * effect). Also whether the paper's own effect size lies inside our interval.
 *
 * The patch-projection study also holds the paper's framework comparison: MoCo v3 minus SimCLR,
 * BYOL and SwAV with the learned projection, each read against the paper's ViT-S and ViT-B gaps.
 *
 * The metric is the final linear probe top-1 (the paper's), or kNN-20 top-1.
 *
 * @example
 * ```ts
 * import { comparisonMarkdown, compareWithPaper } from "./summary.ts";
 * console.log(comparisonMarkdown(await compareWithPaper("data/results")));
 * ```
 * @module
 */
import { ofBudget, readTable, suiteFile } from "./tables.ts";
import {
  adjustedVerdict,
  compareSeeds,
  holmAdjust,
  type Interval,
  meanInterval,
  tTestPValue,
  type Verdict,
} from "./stats.ts";
import { trainedRows } from "./aggregate.ts";
import { FRAMEWORK_TOP1 } from "./suites.ts";

type Row = Record<string, unknown>;

/** The final metrics a comparison can read. */
export type Metric = "linear_top1" | "knn_top1";

/** One comparison of an effect, ours against the paper's. */
export interface Comparison {
  study: string;
  /** What is compared, e.g. "random - learned patch projection, MoCo v3". */
  effect: string;
  metric: Metric;
  /** The seeds both configurations have (the pairs). */
  seeds: number[];
  /** Configuration a's and b's means over those seeds, with 95% t-intervals. */
  a: Interval | null;
  b: Interval | null;
  /** a - b paired by seed, with its 95% t-interval (null: fewer than one pair). */
  diff: Interval | null;
  /** `missing` when fewer than two seeds pair up. */
  verdict: Verdict | "missing";
  /** The paired t-test's two-sided p-value (NaN when missing). */
  p: number;
  /**
   * The verdict after Holm's adjustment over the family (every comparison `compareWithPaper`
   * makes for one budget and metric); set by {@link adjustFamily}, else equal to `verdict`.
   */
  adjusted: Verdict | "missing";
  /** Holm-adjusted p-value (NaN when missing or not adjusted). */
  adjustedP: number;
  /** The paper's a - b in linear top-1 points (NaN: a direction without a number). */
  paper: number;
  /** The paper's direction: +1 (a better) or -1. */
  paperSign: 1 | -1;
  paperNote: string;
  /** Whether the paper's effect lies inside our interval (undefined without a number). */
  paperInside?: boolean;
}

function matches(r: Row, match: Row): boolean {
  return Object.entries(match).every(([k, v]) => String(r[k]) === String(v));
}

/** Metric values by seed of the rows matching `match`. */
function bySeed(rows: Row[], match: Row, metric: Metric): Map<number, number> {
  const out = new Map<number, number>();
  for (const r of rows) {
    const v = Number(r[metric]);
    if (matches(r, match) && Number.isFinite(v)) out.set(Number(r.seed), v);
  }
  return out;
}

/**
 * Compares the rows matching `a` with those matching `b`, paired by seed.
 *
 * @example
 * ```ts
 * compareRows(rows, { posEmb: "sincos" }, { posEmb: "none" }, {
 *   study: "posemb", effect: "sin-cos - none", paper: 1.6, paperNote: "76.5 - 74.9",
 * }).verdict;
 * ```
 */
export function compareRows(
  rows: Row[],
  a: Row,
  b: Row,
  what: {
    study: string;
    effect: string;
    paper: number;
    paperSign?: 1 | -1;
    paperNote: string;
    metric?: Metric;
  },
): Comparison {
  const metric = what.metric ?? "linear_top1";
  const va = bySeed(rows, a, metric), vb = bySeed(rows, b, metric);
  const seeds = [...va.keys()].filter((s) => vb.has(s)).sort((x, y) => x - y);
  const paperSign = what.paperSign ?? (what.paper < 0 ? -1 : 1);
  const base = {
    study: what.study,
    effect: what.effect,
    metric,
    seeds,
    paper: what.paper,
    paperSign,
    paperNote: what.paperNote,
  };
  if (seeds.length < 2) {
    return {
      ...base,
      a: va.size ? meanInterval([...va.values()]) : null,
      b: vb.size ? meanInterval([...vb.values()]) : null,
      diff: null,
      verdict: "missing",
      p: NaN,
      adjusted: "missing",
      adjustedP: NaN,
    };
  }
  const c = compareSeeds(seeds.map((s) => va.get(s)!), seeds.map((s) => vb.get(s)!), {
    paperSign,
    paperEffect: Number.isFinite(what.paper) ? what.paper : undefined,
  });
  return { ...base, ...c, p: tTestPValue(c.diff), adjusted: c.verdict, adjustedP: NaN };
}

/**
 * Holm's step-down adjustment over a family of comparisons (one budget, one metric): each gets
 * its adjusted p-value and the verdict that survives it (`holds`/`opposite` only where the
 * adjusted p is below 0.05). Missing comparisons are not in the family.
 *
 * @example
 * ```ts
 * const family = adjustFamily(await compareWithPaper("data/results"));
 * family.filter((c) => c.adjusted === "holds").length;
 * ```
 */
export function adjustFamily(comparisons: Comparison[]): Comparison[] {
  const adjusted = holmAdjust(comparisons.map((c) => (c.diff ? c.p : NaN)));
  return comparisons.map((c, i) => ({
    ...c,
    adjustedP: adjusted[i],
    adjusted: c.diff && c.verdict !== "missing"
      ? adjustedVerdict(c.diff, c.paperSign, adjusted[i])
      : "missing",
  }));
}

/**
 * What a family of comparisons at 95% means by chance: how many there are, how many `holds` or
 * `opposite` verdicts 5% of them give where no effect is real, and the counts before and after
 * Holm's adjustment.
 *
 * @example
 * ```ts
 * familyNote(adjustFamily(await compareWithPaper("data/results")));
 * // "38 comparisons at 95%: about 1.90 would read holds or opposite by chance alone ..."
 * ```
 */
export function familyNote(comparisons: Comparison[]): string {
  const family = comparisons.filter((c) => c.verdict !== "missing");
  const m = family.length;
  const count = (key: "verdict" | "adjusted") =>
    (["holds", "opposite", "not detected"] as const)
      .map((v) => `${family.filter((c) => c[key] === v).length} ${v}`).join(", ");
  return `${m} comparisons at 95%: about ${(0.05 * m).toFixed(2)} would read holds or opposite ` +
    `by chance alone if no effect were real. Unadjusted: ${count("verdict")}. After Holm's ` +
    `adjustment over these ${m} (family-wise error 5%): ${count("adjusted")}.`;
}

/**
 * A learning rate as the tables and figures write it: one decimal, exponent form.
 *
 * @example
 * ```ts
 * lrText(0.0015); // "1.5e-3"
 * lrText(0.096); // "9.6e-2"
 * ```
 */
export function lrText(lr: unknown): string {
  return Number(lr).toExponential(1).replace(".0e", "e");
}

function distinct(rows: Row[], key: string): unknown[] {
  const vals = [...new Set(rows.map((r) => String(r[key])))];
  return vals.map((v) => (v === "true" ? true : v === "false" ? false : Number.isNaN(+v) ? v : +v))
    .sort((x, y) => (typeof x === "number" && typeof y === "number" ? x - y : 0));
}

/**
 * Every comparison the tables in `resultsDir` allow, study by study: of the rows of `budget`
 * where given (runs of two budgets never pair), else of every row.
 *
 * @example
 * ```ts
 * await compareWithPaper("data/results", "linear_top1", "cpu-long");
 * ```
 */
export async function compareWithPaper(
  resultsDir: string,
  metric: Metric = "linear_top1",
  budget?: string,
): Promise<Comparison[]> {
  const load = async (s: string) => {
    const t = await readTable(suiteFile(resultsDir, s));
    return trainedRows(budget ? ofBudget(t, budget) : t);
  };
  const out: Comparison[] = [];
  const cmp = (
    rows: Row[],
    a: Row,
    b: Row,
    study: string,
    effect: string,
    paper: number,
    paperNote: string,
    paperSign?: 1 | -1,
  ) => out.push(compareRows(rows, a, b, { study, effect, paper, paperNote, paperSign, metric }));

  const st = await load("stability");
  if (st.length) {
    const batches = distinct(st, "batchSize") as number[];
    const lrs = distinct(st, "baseLr") as number[];
    const frozen = distinct(st, "freezePatchEmbed") as boolean[];
    const [bLo, bHi] = [batches[0], batches[batches.length - 1]];
    const proj = (f: boolean) => (f ? "random" : "learned") + " patch proj.";
    for (const f of frozen) {
      for (const lr of bHi > bLo ? lrs : []) {
        cmp(
          st,
          { batchSize: bHi, baseLr: lr, freezePatchEmbed: f },
          { batchSize: bLo, baseLr: lr, freezePatchEmbed: f },
          "stability",
          `batch ${bHi} - ${bLo}, lr ${lrText(lr)}, ${proj(f)}`,
          -2.9,
          "batch 6k - 2k: 69.7 - 72.6 (4k: -0.4)",
        );
      }
    }
    for (const f of frozen) {
      for (const b of batches) {
        for (const lr of lrs.slice(1)) {
          cmp(
            st,
            { batchSize: b, baseLr: lr, freezePatchEmbed: f },
            { batchSize: b, baseLr: lrs[0], freezePatchEmbed: f },
            "stability",
            `lr ${lrText(lr)} - ${lrText(lrs[0])}, batch ${b}, ${proj(f)}`,
            f ? 0.6 : -0.5,
            f
              ? "random proj., batch 4k, lr 1.5e-4 - 1.0e-4: 73.4 - 72.8"
              : "learned, batch 4k, lr 1.5e-4 - 1.0e-4: 71.7 - 72.2, more dips",
          );
        }
      }
    }
    if (frozen.length === 2) {
      for (const b of batches) {
        for (const lr of lrs) {
          cmp(
            st,
            { batchSize: b, baseLr: lr, freezePatchEmbed: true },
            { batchSize: b, baseLr: lr, freezePatchEmbed: false },
            "stability",
            `random - learned patch proj., batch ${b}, lr ${lrText(lr)}`,
            lr === lrs[lrs.length - 1] ? 1.7 : 0.5,
            lr === lrs[lrs.length - 1]
              ? "lr 1.5e-4, batch 4k: 73.4 - 71.7"
              : "lower lr: +0.4 / +0.6 (0.5e-4 / 1.0e-4)",
          );
        }
      }
    }
  }

  const pp = await load("patch-projection");
  const gains: Record<string, [number, string]> = {
    mocov3: [1.7, "MoCo v3 ViT-B, lr 1.5e-4 (+0.4 / +0.6 at 0.5e-4 / 1.0e-4)"],
    simclr: [0.8, "SimCLR ViT-B"],
    byol: [1.3, "BYOL ViT-B"],
    swav: [0.6, "SwAV: 65.8 -> 66.4; learned diverges at a higher lr"],
  };
  for (const fw of distinct(pp, "framework")) {
    const [paper, note] = gains[String(fw)] ?? [NaN, ""];
    cmp(
      pp,
      { framework: fw, freezePatchEmbed: true },
      { framework: fw, freezePatchEmbed: false },
      "patch-projection",
      `random - learned, ${fw}`,
      paper,
      note,
      1,
    );
  }
  // The paper's framework comparison: MoCo v3 against each other framework, learned projection,
  // once against its ViT-S gap and once against its ViT-B gap.
  const frameworks = distinct(pp, "framework").map(String);
  const [moco, ...others] = FRAMEWORK_TOP1;
  for (const [label, s, b, fw] of frameworks.includes(moco[3]) ? others : []) {
    if (!frameworks.includes(fw)) continue;
    for (const [vit, ours, theirs] of [["ViT-S", moco[1], s], ["ViT-B", moco[2], b]] as const) {
      cmp(
        pp,
        { framework: moco[3], freezePatchEmbed: false },
        { framework: fw, freezePatchEmbed: false },
        "patch-projection",
        `${moco[0]} - ${label}, learned patch proj. (vs ${vit})`,
        Math.round((ours - theirs) * 10) / 10,
        `${vit}: ${ours.toFixed(1)} - ${theirs.toFixed(1)}`,
      );
    }
  }

  const pe = await load("posemb");
  if (pe.length) {
    const sincos = { posEmb: "sincos", pool: "cls" };
    cmp(
      pe,
      sincos,
      { posEmb: "learned", pool: "cls" },
      "posemb",
      "sin-cos - learned",
      0.4,
      "76.5 - 76.1",
    );
    cmp(
      pe,
      sincos,
      { posEmb: "none", pool: "cls" },
      "posemb",
      "sin-cos - none",
      1.6,
      "76.5 - 74.9",
    );
    cmp(
      pe,
      sincos,
      { posEmb: "sincos", pool: "mean" },
      "posemb",
      "class token - mean pool",
      0.2,
      "76.5 - 76.3 (pooling without the final LN)",
    );
  }

  const ps = await load("patch-size");
  if (ps.length) {
    const flops = (p: number) => Number(ps.find((r) => Number(r.patchSize) === p)?.flops);
    cmp(
      ps,
      { patchSize: 4 },
      { patchSize: 7 },
      "patch-size",
      `patch 4 - patch 7 (x${(flops(4) / flops(7)).toFixed(1)} FLOPs)`,
      2.5,
      "/7 vs /16: about +2-3 at about 6x FLOPs",
    );
  }

  const sc = await load("scaling");
  if (sc.length) {
    const sizes = [...new Map(sc.map((r) => [`${r.dim}x${r.depth}`, r])).values()]
      .sort((x, y) => Number(x.params) - Number(y.params));
    const small = sizes[0];
    for (const big of sizes.slice(1)) {
      cmp(
        sc,
        { dim: big.dim, depth: big.depth },
        { dim: small.dim, depth: small.depth },
        "scaling",
        `D${big.dim}x${big.depth} - D${small.dim}x${small.depth} ` +
          `(x${(Number(big.params) / Number(small.params)).toFixed(0)} params)`,
        1.4,
        "ViT-H - ViT-B: 78.1 - 76.7 (x7 params)",
      );
    }
  }

  const op = await load("optimizer");
  if (op.length) {
    cmp(
      op,
      { optimizer: "lamb" },
      { optimizer: "adamw" },
      "optimizer",
      "LAMB - AdamW",
      0.3,
      "LAMB 72.5, 'slightly above' AdamW (ViT-S); more lr-sensitive",
    );
  }
  return adjustFamily(out);
}

function signed(x: number, digits = 1): string {
  if (!Number.isFinite(x)) return "n/a";
  return (x > 0 ? "+" : "") + x.toFixed(digits);
}

function meanText(i: Interval | null): string {
  if (!i) return "n/a";
  return Number.isFinite(i.halfWidth)
    ? `${i.mean.toFixed(1)} ± ${i.halfWidth.toFixed(1)}`
    : i.mean.toFixed(1);
}

/** The verdict in words, with the half-width that bounds an undetected effect. */
export function verdictText(c: Comparison): string {
  if (c.verdict === "missing" || !c.diff) return "missing";
  if (c.verdict === "not detected") {
    return `not detected (±${c.diff.halfWidth.toFixed(1)})`;
  }
  return c.verdict;
}

/** The Holm-adjusted verdict with its adjusted p-value. */
export function adjustedText(c: Comparison): string {
  if (c.adjusted === "missing" || !Number.isFinite(c.adjustedP)) return c.adjusted;
  const p = c.adjustedP < 0.001 ? "< 0.001" : c.adjustedP.toFixed(3);
  return `${c.adjusted} (p ${p})`;
}

/** The comparisons as a markdown table. */
export function comparisonMarkdown(rows: Comparison[]): string {
  const metric = rows[0]?.metric === "knn_top1" ? "kNN-20" : "linear";
  const head = `| study | effect | a (${metric}, mean ± 95% CI) | b | a - b, paired (95% CI) | ` +
    "seeds | verdict | Holm-adjusted verdict | paper (ImageNet linear points) | " +
    "paper's effect inside ours |\n" +
    "|---|---|---|---|---|---|---|---|---|---|";
  const lines = rows.map((c) => {
    const diff = c.diff
      ? `${signed(c.diff.mean)} [${signed(c.diff.lo)}, ${signed(c.diff.hi)}]`
      : "n/a";
    const paper = Number.isFinite(c.paper) ? signed(c.paper) : c.paperSign > 0 ? "> 0" : "< 0";
    const inside = c.paperInside === undefined ? "-" : c.paperInside ? "yes" : "no";
    return `| ${c.study} | ${c.effect} | ${meanText(c.a)} | ${meanText(c.b)} | ${diff} | ` +
      `${c.seeds.length} | ${verdictText(c)} | ${adjustedText(c)} | ${paper} (${c.paperNote}) | ` +
      `${inside} |`;
  });
  return [head, ...lines].join("\n");
}
