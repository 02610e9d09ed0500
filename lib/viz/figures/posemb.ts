/**
 * The position-embedding study (paper Section 6.2): sin-cos, learned and no position embedding
 * with the class token, and sin-cos with mean pooling, beside the paper's ViT-B numbers.
 *
 * @example
 * ```ts
 * import { posembBars } from "./posemb.ts";
 * const spec = posembBars(rows, { comparisons });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import { groupByConfig } from "../../experiments/aggregate.ts";
import { barsWithPaper } from "./bars_with_paper.ts";
import { type FigureOptions, type FigureSpec, finishFigure, type TableLike } from "./kit.ts";

/** The label of a results row of the position-embedding suite. */
function posembLabel(posEmb: string, pool: string): string {
  const pe = { sincos: "sin-cos", learned: "learned", none: "none" }[posEmb] ?? posEmb;
  return pool === "mean" ? `${pe}, mean pool` : `${pe}, cls token`;
}

/**
 * Position embedding bars: sin-cos / learned / none with the class token, and sin-cos with mean
 * pooling; ours linear top-1 and kNN-20 (means over seeds, 95% CI), the paper's ViT-B numbers
 * as grey bars beside them on the right axis, and the study's verdicts under the title. Input:
 * `posemb.csv` rows.
 *
 * @example
 * ```ts
 * const spec = posembBars(rows, { comparisons: await compareWithPaper("data/results") });
 * ```
 */
export function posembBars(results: TableLike, opts: FigureOptions = {}): FigureSpec {
  const spec = barsWithPaper(
    "Position embedding and pooling",
    results,
    groupByConfig(results, ["posEmb", "pool"]),
    (c) => posembLabel(String(c.posEmb), String(c.pool)),
    opts.paper ?? SUITES.posemb.paper,
    "blue, left axis: ours (dark: linear probe, light: kNN-20; 95% CI over seeds); grey, " +
      "right axis: the paper's ViT-B on ImageNet",
    opts.note,
  );
  return finishFigure(spec.data, spec.layout, {
    study: "posemb",
    comparisons: opts.comparisons,
  });
}
