/**
 * Reading a suite's curves table (`<suite>.curves.csv`) for the curve figures: one run's kNN
 * monitor points and per-step gradient rows, the seeds the figures draw as a phrase, and long
 * lines thinned for plotting ({@link envelope}).
 *
 * @example
 * ```ts
 * import { knnCurve } from "./curves.ts";
 * const pts = knnCurve(rowsOf(curves), "stability_cpu_batchSize-64_seed-0");
 * ```
 * @module
 */
import type { Row } from "../../experiments/aggregate.ts";
import { distinct, num } from "./kit.ts";

/**
 * kNN points of one run from the curves table, sorted by step.
 *
 * @example
 * ```ts
 * knnCurve(rows, "r0"); // [{ step: 10, images: 640, acc: 41.2 }, ...]
 * ```
 */
export function knnCurve(
  curves: Row[],
  runId: string,
): { step: number; images: number; acc: number }[] {
  return curves
    .filter((c) => String(c.run_id) === runId && c.kind === "knn")
    .map((c) => ({ step: num(c.step), images: num(c.images), acc: num(c.top1) }))
    .sort((a, b) => a.step - b.step);
}

/** One per-step row of the curves table. */
export interface StepRow {
  step: number;
  images: number;
  loss: number;
  grad_patch: number;
  grad_last_block: number;
}

/**
 * Per-step rows of one run from the curves table, sorted by step.
 *
 * @example
 * ```ts
 * stepRows(rows, "r0").map((s) => s.grad_patch);
 * ```
 */
export function stepRows(curves: Row[], runId: string): StepRow[] {
  return curves
    .filter((c) => String(c.run_id) === runId && c.kind === "step")
    .map((c) => ({
      step: num(c.step),
      images: num(c.images),
      loss: num(c.loss),
      grad_patch: num(c.grad_patch),
      grad_last_block: num(c.grad_last_block),
    }))
    .sort((a, b) => a.step - b.step);
}

/**
 * The seeds drawn by the curve figures, as a phrase.
 *
 * @example
 * ```ts
 * seedPhrase([{ seed: 0 }, { seed: 1 }]); // "one run per configuration (seeds 0, 1)"
 * ```
 */
export function seedPhrase(runs: Row[]): string {
  const seeds = distinct(runs.map((r) => num(r.seed)).filter(Number.isFinite)) as number[];
  if (seeds.length === 0) return "one run per configuration";
  return `one run per configuration (seed${seeds.length > 1 ? "s" : ""} ${seeds.join(", ")})`;
}

/**
 * A long line thinned for plotting: at most `maxPoints` points, the lowest and the highest of
 * each of `maxPoints / 2` equal runs of points, in their order, so spikes and troughs stay
 * drawn (a plain stride would drop most of them). Shorter lines come back whole.
 *
 * @example
 * ```ts
 * envelope([0, 1, 2, 3, 4, 5], [1, 9, 1, 1, 0, 1], 4);
 * // { x: [0, 1, 3, 4], y: [1, 9, 1, 0] }: runs [0-2] and [3-5], each its (first) min and max
 * ```
 */
export function envelope(
  x: readonly number[],
  y: readonly number[],
  maxPoints = 600,
): { x: number[]; y: number[] } {
  if (y.length <= maxPoints) return { x: [...x], y: [...y] };
  const buckets = Math.max(1, Math.floor(maxPoints / 2));
  const out = { x: [] as number[], y: [] as number[] };
  for (let b = 0; b < buckets; b++) {
    const lo = Math.floor((b * y.length) / buckets),
      hi = Math.floor(((b + 1) * y.length) / buckets);
    let iMin = lo, iMax = lo;
    for (let i = lo; i < hi; i++) {
      if (y[i] < y[iMin]) iMin = i;
      if (y[i] > y[iMax]) iMax = i;
    }
    for (const i of iMin === iMax ? [iMin] : [Math.min(iMin, iMax), Math.max(iMin, iMax)]) {
      out.x.push(x[i]);
      out.y.push(y[i]);
    }
  }
  return out;
}
