/**
 * A suite's configurations over seeds beside the paper's numbers, as one arquero table (the
 * notebooks' "ours beside the paper's" table).
 *
 * @example
 * ```ts
 * import { paperComparison } from "./paper_comparison.ts";
 * const table = paperComparison("posemb", rows);
 * ```
 * @module
 */
import * as aq from "arquero";
import { FRAMEWORK_TOP1, type PaperNumber, SUITES } from "../../experiments/suites.ts";
import { bool, configTable, type Row } from "../../experiments/aggregate.ts";
import { matches, PAPER_NAME, type TableLike } from "./kit.ts";

/**
 * Our results beside the paper's numbers: one row per configuration of the suite
 * ({@link configTable}: its varied fields, seeds, linear top-1 and kNN-20 as mean and 95%
 * half-width, runs diverged, dips, parameters, MFLOPs) with the paper number whose `match` it
 * satisfies, then the paper numbers no configuration matches. Ours are Fashion-MNIST, the
 * paper's ImageNet linear top-1 (or gains in points): read trends, not levels.
 *
 * @example
 * ```ts
 * const table = paperComparison("posemb", (await suiteData("posemb")).results);
 * ```
 */
export function paperComparison(suite: string, results: TableLike): aq.ColumnTable {
  const s = SUITES[suite];
  if (!s) throw new Error(`paperComparison: unknown suite "${suite}"`);
  const used = new Set<PaperNumber>();
  const paperValue = (p: PaperNumber) => `${p.value}${p.unit === "points" ? " pts" : "%"}`;
  const ours = configTable(results, s.fields as string[]);
  const out: Row[] = ours.map((r) => {
    const p = s.paper.find((q) => q.match && matches(r, q.match as Record<string, unknown>));
    if (p) used.add(p);
    return { ...r, paper: p ? p.label : "", [PAPER_NAME]: p ? paperValue(p) : "" };
  });
  const blank = Object.fromEntries(Object.keys(ours[0] ?? {}).map((k) => [k, null]));
  for (const p of s.paper.filter((q) => !used.has(q))) {
    out.push({
      ...blank,
      ...Object.fromEntries(s.fields.map((f) => [f, ""])),
      params: p.params ?? null,
      paper: p.label + (p.note ? ` (${p.note})` : ""),
      [PAPER_NAME]: paperValue(p),
    });
  }
  return aq.from(out);
}

/**
 * The frameworks beside the paper's (its Section 6.1, learned patch projection): our rows of the
 * patch-projection suite with the learned projection ({@link configTable} over seeds), each
 * with the paper's ViT-S and ViT-B linear top-1 (`FRAMEWORK_TOP1`), then the paper's frameworks
 * that did not run here (our columns empty). Every framework of `FRAMEWORK_TOP1` is listed.
 *
 * @example
 * ```ts
 * frameworkComparison((await suiteData("patch-projection")).results);
 * // rows: MoCo v3, SimCLR, BYOL, SwAV with "paper ViT-S (%)" and "paper ViT-B (%)"
 * ```
 */
export function frameworkComparison(results: TableLike): aq.ColumnTable {
  const paper = new Map(FRAMEWORK_TOP1.map(([label, s, b, name]) => [name, {
    paper: label,
    "paper ViT-S (%)": s,
    "paper ViT-B (%)": b,
  }]));
  const learned = configTable(results, ["framework", "freezePatchEmbed"])
    .filter((r) => !bool(r.freezePatchEmbed))
    .map(({ freezePatchEmbed: _, ...r }) => r);
  const ran = new Set(learned.map((r) => String(r.framework)));
  const blank = Object.fromEntries(Object.keys(learned[0] ?? {}).map((k) => [k, null]));
  return aq.from([
    ...learned.map((r) => ({ ...r, ...paper.get(String(r.framework)) })),
    ...[...paper].filter(([name]) => !ran.has(name)).map(([name, p]) => ({
      ...blank,
      framework: name,
      ...p,
    })),
  ]);
}
