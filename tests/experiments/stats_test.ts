/**
 * Seed statistics (lib/experiments/stats.ts) against printed t-tables and intervals computed by
 * hand.
 */
import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import {
  compareSeeds,
  meanInterval,
  pairedDifference,
  studentTCdf,
  studentTQuantile,
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
