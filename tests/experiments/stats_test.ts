/**
 * Seed statistics (lib/experiments/stats.ts) against printed t-tables and intervals computed by
 * hand.
 */
import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  adjustedVerdict,
  compareSeeds,
  holmAdjust,
  meanInterval,
  pairedDifference,
  studentTCdf,
  studentTQuantile,
  tTestPValue,
  verdict,
} from "../../lib/experiments/stats.ts";

Deno.test("studentTQuantile(0.975, df) matches the printed t-table", () => {
  const table: [number, number][] = [
    [1, 12.706205],
    [2, 4.302653],
    [3, 3.182446],
    [4, 2.776445],
    [5, 2.570582],
    [9, 2.262157],
    [29, 2.04523],
    [100, 1.983972],
  ];
  for (const [df, t] of table) assertAlmostEquals(studentTQuantile(0.975, df), t, 2e-6, `df ${df}`);
  // One-sided 95% and the symmetry of the distribution.
  assertAlmostEquals(studentTQuantile(0.95, 4), 2.131847, 2e-6);
  assertAlmostEquals(studentTQuantile(0.025, 4), -2.776445, 2e-6);
  assertAlmostEquals(studentTCdf(0, 7), 0.5, 1e-12);
  // df = 1 is the Cauchy distribution: P(T <= 1) = 3/4.
  assertAlmostEquals(studentTCdf(1, 1), 0.75, 1e-8);
  assertThrows(() => studentTQuantile(1, 3), RangeError);
});

Deno.test("meanInterval and pairedDifference by hand", () => {
  // [1, 2, 3]: mean 2, s = 1, half-width 4.302653 / sqrt(3).
  const r = meanInterval([1, 2, 3]);
  assertAlmostEquals(r.mean, 2, 1e-12);
  assertAlmostEquals(r.halfWidth, 4.302653 / Math.sqrt(3), 1e-5);
  assertAlmostEquals(r.lo, 2 - 4.302653 / Math.sqrt(3), 1e-5);
  // Paired: differences [2, 1, 1], mean 4/3, s = sqrt(1/3), half-width 4.302653 / 3.
  const d = pairedDifference([72, 73, 71], [70, 72, 70]);
  assertAlmostEquals(d.mean, 4 / 3, 1e-12);
  assertAlmostEquals(d.halfWidth, 4.302653 / 3, 1e-5);
  assertEquals(meanInterval([5]).n, 1);
  assertEquals(Number.isNaN(meanInterval([5]).halfWidth), true, "one seed: no interval");
  assertThrows(() => pairedDifference([1, 2], [1]), RangeError, "pair the runs by seed");
});

Deno.test("verdicts: holds, opposite, not detected; and whether the paper's effect is inside", () => {
  const above = { n: 3, mean: 1.3, halfWidth: 1, lo: 0.3, hi: 2.3 };
  const below = { n: 3, mean: -1.3, halfWidth: 1, lo: -2.3, hi: -0.3 };
  const across = { n: 3, mean: 0.2, halfWidth: 1, lo: -0.8, hi: 1.2 };
  assertEquals(verdict(above, 1), "holds");
  assertEquals(verdict(above, -1), "opposite");
  assertEquals(verdict(below, -1), "holds");
  assertEquals(verdict(below, 1), "opposite");
  assertEquals(verdict(across, 1), "not detected");
  // Differences [1.3, 0.7, 1.3]: mean 1.1, s = sqrt(0.12), half-width 4.302653 * sqrt(0.04).
  const c = compareSeeds([71.2, 70.8, 71.9], [69.9, 70.1, 70.6], {
    paperSign: 1,
    paperEffect: 1.5,
  });
  assertAlmostEquals(c.diff.mean, 1.1, 1e-9);
  assertAlmostEquals(c.diff.halfWidth, 4.302653 * 0.2, 1e-5);
  assertEquals(c.verdict, "holds");
  assertEquals(c.paperInside, true, "1.5 lies in 1.1 +- 0.86");
  const far = compareSeeds([71.2, 70.8, 71.9], [69.9, 70.1, 70.6], {
    paperSign: 1,
    paperEffect: 3,
  });
  assertEquals(far.paperInside, false);
  assertEquals(compareSeeds([1, 2], [1, 2], { paperSign: 1 }).paperInside, undefined);
});

Deno.test("tTestPValue: a paired t-test's two-sided p by hand", () => {
  // Differences [2, 1, 1]: mean 4/3, s = sqrt(1/3), se = 1/3, t = 4, df 2.
  // P(|T| > 4) for df 2 = 1 - t / sqrt(t^2 + 2) = 1 - 4 / sqrt(18) = 0.057191.
  const d = pairedDifference([72, 73, 71], [70, 72, 70]);
  assertAlmostEquals(tTestPValue(d), 1 - 4 / Math.sqrt(18), 1e-6);
  // df 1 (Cauchy): P(|T| > 1) = 1/2. Differences [2, 0]: mean 1, s = sqrt(2), se = 1, t = 1.
  assertAlmostEquals(tTestPValue(pairedDifference([3, 1], [1, 1])), 0.5, 1e-6);
  // The example: three differences -0.50, -0.68, -0.63: mean -0.60333,
  // s = 0.092916, se = 0.053645, t = 11.2468, df 2: p = 1 - t / sqrt(t^2 + 2) = 0.0078.
  const e = meanInterval([-0.5, -0.68, -0.63]);
  const t = 0.60333333 / (Math.sqrt(((0.10333333) ** 2 + 0.07666667 ** 2 + 0.02666667 ** 2) / 2) /
    Math.sqrt(3));
  assertAlmostEquals(tTestPValue(e), 1 - t / Math.sqrt(t * t + 2), 1e-5);
  assertEquals(Number.isNaN(tTestPValue(meanInterval([1]))), true);
  assertEquals(tTestPValue(meanInterval([1, 1, 1])), 0, "no spread, non-zero mean");
});

Deno.test("holmAdjust: Holm's step-down by hand", () => {
  // m = 3: sorted 0.01, 0.03, 0.04 -> 3 x 0.01 = 0.03, max(0.03, 2 x 0.03) = 0.06,
  // max(0.06, 1 x 0.04) = 0.06; back in input order.
  const r = holmAdjust([0.01, 0.04, 0.03]);
  [0.03, 0.06, 0.06].forEach((v, i) => assertAlmostEquals(r[i], v, 1e-12));
  // Capped at 1, NaN left out of the family (m = 2 here) and kept NaN.
  const s = holmAdjust([0.6, NaN, 0.001]);
  assertAlmostEquals(s[0], 0.6, 1e-12);
  assertAlmostEquals(s[2], 0.002, 1e-12);
  assertEquals(Number.isNaN(s[1]), true);
  assertEquals(holmAdjust([0.5, 0.7]), [1, 1]);
  // 38 comparisons: the smallest must be below 0.05 / 38 to stay significant.
  const many = Array.from({ length: 38 }, (_, i) => (i === 0 ? 0.001 : 0.5));
  assertAlmostEquals(holmAdjust(many)[0], 0.038, 1e-12);
});

Deno.test("adjustedVerdict keeps the direction only where the adjusted p is small", () => {
  const above = { n: 3, mean: 1.3, halfWidth: 1, lo: 0.3, hi: 2.3 };
  assertEquals(adjustedVerdict(above, 1, 0.01), "holds");
  assertEquals(adjustedVerdict(above, -1, 0.01), "opposite");
  assertEquals(adjustedVerdict(above, 1, 0.2), "not detected");
});
