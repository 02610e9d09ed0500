/**
 * Top-k accuracy from class scores, shared by every evaluation protocol (kNN, linear probe,
 * fine-tuning) so they break ties the same way.
 *
 * Tie rule: classes are ranked by score, highest first; among equal scores the lower class index
 * ranks first. A prediction is top-k correct when the true class ranks below k.
 *
 * @example
 * ```ts
 * import { labelRank, topkAccuracy } from "./metrics.ts";
 * labelRank([0.1, 0.7, 0.2], 0, 2); // 2: class 1 and class 2 score higher
 * topkAccuracy(new Float32Array([0.1, 0.9, 0.8, 0.2]), new Int32Array([1, 1]), 2); // { top1: 0.5, top5: 1 }
 * ```
 * @module
 */

/** Accuracies in [0, 1] (fractions, not percent). */
export interface Accuracy {
  /** Fraction of rows whose true class ranks first. */
  top1: number;
  /** Fraction whose true class ranks among the first 5 (1 when there are 5 classes or fewer). */
  top5: number;
}

/**
 * Rank (0 = best) of class `label` among the `numClasses` scores starting at `offset` of `scores`:
 * the number of classes with a higher score, plus those with an equal score and a lower index.
 */
export function labelRank(
  scores: ArrayLike<number>,
  offset: number,
  numClasses: number,
  label: number,
): number {
  const s = scores[offset + label];
  let rank = 0;
  for (let c = 0; c < numClasses; c++) {
    const v = scores[offset + c];
    if (v > s || (v === s && c < label)) rank++;
  }
  return rank;
}

/**
 * Top-1 and top-5 accuracy of row-major scores `[M, numClasses]` (logits or votes) against
 * `labels [M]`. Throws if the sizes disagree or a label is out of range.
 */
export function topkAccuracy(
  scores: ArrayLike<number>,
  labels: Int32Array,
  numClasses: number,
): Accuracy {
  const m = labels.length;
  if (scores.length !== m * numClasses) {
    throw new RangeError(
      `topkAccuracy: expected ${m} x ${numClasses} = ${
        m * numClasses
      } scores, got ${scores.length}`,
    );
  }
  if (m === 0) return { top1: 0, top5: 0 };
  let c1 = 0, c5 = 0;
  for (let i = 0; i < m; i++) {
    const y = labels[i];
    if (!(y >= 0 && y < numClasses)) {
      throw new RangeError(`topkAccuracy: label ${y} of row ${i} is not in [0, ${numClasses})`);
    }
    const r = labelRank(scores, i * numClasses, numClasses, y);
    if (r < 1) c1++;
    if (r < 5) c5++;
  }
  return { top1: c1 / m, top5: c5 / m };
}

/** Number of classes implied by labels: 1 + the largest label (at least 1). */
export function inferNumClasses(...labelSets: Int32Array[]): number {
  let max = 0;
  for (const labels of labelSets) for (const y of labels) if (y > max) max = y;
  return max + 1;
}
