import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { createRng } from "../../lib/core/rng.ts";
import {
  curveNoise,
  type CurvePoint,
  dipReport,
  dipThreshold,
  findDips,
  gradientSpikes,
} from "../../lib/experiments/stability.ts";

/** A curve from accuracies at steps 0, 100, 200, ... */
function curveOf(accs: number[], every = 100): CurvePoint[] {
  return accs.map((acc, i) => ({ step: i * every, acc }));
}

/** A saturating rise, 60 (1 - exp(-i / 20)), at steps 0, 100, ... */
function rise(n: number): number[] {
  return Array.from({ length: n }, (_, i) => 60 * (1 - Math.exp(-i / 20)));
}

// Two dips: 40 at step 300 -> 36.5 at 500 (depth 3.5; 38 at 600 is not yet half back, 39 at 700
// is), then 45 at 900 -> 43 at 1000 (depth 2), back to 44.5 at 1100.
const TWO_DIPS = curveOf([10, 20, 30, 40, 37, 36.5, 38, 39, 42, 45, 43, 44.5, 47, 48]);

Deno.test("findDips: a clean rise has no dip (and no noise)", () => {
  const curve = curveOf(rise(100));
  assertEquals(findDips(curve), []);
  assertAlmostEquals(curveNoise(curve), 0, 0.01);
});

Deno.test("findDips: two dips of known depth, position and recovery", () => {
  assertEquals(findDips(TWO_DIPS), [
    {
      startStep: 300,
      peakAcc: 40,
      bottomStep: 500,
      bottomAcc: 36.5,
      depth: 3.5,
      recoveredStep: 700,
      recoveredAcc: 39,
    },
    {
      startStep: 900,
      peakAcc: 45,
      bottomStep: 1000,
      bottomAcc: 43,
      depth: 2,
      recoveredStep: 1100,
      recoveredAcc: 44.5,
    },
  ]);
  // Options: a deeper threshold keeps only the first; a full recovery delays the second's end.
  assertEquals(findDips(TWO_DIPS, { minDepth: 3 }).map((d) => d.startStep), [300]);
  assertEquals(findDips(TWO_DIPS, { recoverFraction: 1 }).map((d) => d.recoveredStep), [800, 1200]);
});

Deno.test("findDips: the threshold is inclusive (a drop of exactly minDepth counts)", () => {
  assertEquals(findDips(curveOf([70, 69, 71])).length, 1);
  assertEquals(findDips(curveOf([70, 69.01, 71])).length, 0);
  assertEquals(findDips(curveOf([70.3, 69.3, 71])).length, 1); // 70.3 - 69.3 is not exactly 1
});

Deno.test("findDips: after a partial recovery the next drop is measured from the new level", () => {
  // 50 -> 47 (dip), back to 48.6 (>= 47 + 1.5), then 48.0: 2 below 50 but only 0.6 below 48.6.
  const dips = findDips(curveOf([50, 47, 48.6, 48.0, 49, 51]));
  assertEquals(dips.length, 1);
  assertEquals([dips[0].bottomStep, dips[0].recoveredStep], [100, 200]);
});

Deno.test("findDips: noise below the threshold gives no dip; curveNoise measures it", () => {
  const rng = createRng(3);
  const sigma = 0.1;
  const curve = curveOf(rise(200).map((a) => a + sigma * rng.normal()));
  assertEquals(findDips(curve), []);
  assertAlmostEquals(curveNoise(curve), sigma, 0.03);
  // Deterministic zig-zag of +-0.45 on a plateau: drops of 0.9 < 1.
  const zigzag = curveOf(Array.from({ length: 50 }, (_, i) => 70 + (i % 2 ? -0.45 : 0.45)));
  assertEquals(findDips(zigzag), []);
  // The same zig-zag at +-0.6 (drops of 1.2, each rebounding fully) is all dips.
  const big = curveOf(Array.from({ length: 50 }, (_, i) => 70 + (i % 2 ? -0.6 : 0.6)));
  assertEquals(findDips(big).length, 24);
});

Deno.test("findDips: a final drop without recovery is dropped by default, kept on request", () => {
  const curve = curveOf([10, 20, 30, 28, 27, 28.4]); // needs 27 + 1.5 = 28.5 to recover
  assertEquals(findDips(curve), []);
  assertEquals(findDips(curve, { keepUnrecovered: true }), [
    {
      startStep: 200,
      peakAcc: 30,
      bottomStep: 400,
      bottomAcc: 27,
      depth: 3,
      recoveredStep: null,
      recoveredAcc: null,
    },
  ]);
});

Deno.test("findDips: unsorted steps and non-finite accuracies are refused", () => {
  assertThrows(() => findDips([{ step: 0, acc: 1 }, { step: 0, acc: 2 }]), Error, "sort");
  assertThrows(() => findDips([{ step: 0, acc: NaN }]), Error, "step 0");
  assertEquals(findDips([]), []);
});

/** 100 steps of a flat gradient norm 1 (median 1), with given values at given steps. */
function traceWith(spikes: Record<number, number>, key = "grad_patch") {
  return Array.from({ length: 100 }, (_, step) => ({ step, [key]: spikes[step] ?? 1 }));
}

Deno.test("gradientSpikes: spikes at known steps; adjacent spiking points merge to their max", () => {
  const trace = traceWith({ 30: 5, 60: 4, 61: 7, 90: 2.5 });
  assertEquals(gradientSpikes(trace), [
    { step: 30, value: 5, ratio: 5 },
    { step: 61, value: 7, ratio: 7 },
  ]);
  assertEquals(gradientSpikes(trace, { minRatio: 2 }).map((s) => s.step), [30, 61, 90]);
  // Ratio to the median: doubling every value changes nothing.
  const doubled = trace.map((p) => ({ step: p.step, grad_patch: 2 * p.grad_patch }));
  assertEquals(gradientSpikes(doubled).map((s) => [s.step, s.ratio]), [[30, 5], [61, 7]]);
});

Deno.test("gradientSpikes: another column by key; a missing column is named", () => {
  const trace = traceWith({ 10: 9 }, "grad_last_block");
  assertEquals(gradientSpikes(trace, { key: "grad_last_block" }).map((s) => s.step), [10]);
  assertThrows(() => gradientSpikes(trace), Error, '"grad_patch"');
});

Deno.test("dipReport: the spike in the window before each dip's bottom, ratio to the median", () => {
  // Curve every 100 steps (lookback 100). Dip 1: peak at 300, bottom 500 -> window [200, 500];
  // dip 2: peak at 900, bottom 1000 -> window [800, 1000].
  const trace = Array.from({ length: 1400 }, (_, step) => ({ step, grad_patch: 2 }));
  trace[350].grad_patch = 16; // before dip 1: ratio 8
  trace[250].grad_patch = 10; // also in dip 1's window, smaller
  trace[700].grad_patch = 30; // between the dips: in no window
  trace[1050].grad_patch = 40; // after dip 2's bottom: not its cause
  trace[790].grad_patch = 5; // just before dip 2's window: ignored
  trace[820].grad_patch = 4; // in dip 2's window: ratio 2, no spike
  const r = dipReport(TWO_DIPS, trace);
  assertEquals(r.gradMedian, 2);
  assertEquals(r.dips.length, 2);
  assertEquals(
    r.dips.map((d) => [d.gradMaxStep, d.gradMax, d.gradRatio, d.spike]),
    [[350, 16, 8, true], [820, 4, 2, false]],
  );
  assertEquals(r.spikes.map((s) => s.step), [250, 350, 700, 1050]);
  // A longer lookback reaches the spike at 790 (ratio 2.5): a spike at minRatio 2.5 only.
  const wide = dipReport(TWO_DIPS, trace, { lookback: 150, minRatio: 2.5 });
  assertEquals(wide.dips[1].gradMaxStep, 790);
  assert(wide.dips[1].spike);
  // No trace point in the window: null, no spike.
  const none = dipReport(TWO_DIPS, [{ step: 5000, grad_patch: 1 }]);
  assertEquals(none.dips[0].gradMax, null);
  assertEquals(none.dips[0].spike, false);
});

Deno.test("dipThreshold: 5 x the curve's noise, at least 1 point", () => {
  // A straight line has no noise: the floor of 1 point.
  assertEquals(dipThreshold(curveOf([50, 51, 52, 53, 54])), 1);
  // Too short to measure: 1.
  assertEquals(dipThreshold(curveOf([50, 60])), 1);
  // 70, 71, 70, 71, 70: second differences -2, 2, -2; median -2, |d - m| = 0, 4, 0, MAD 0: the
  // floor. 70, 71, 70, 72, 70: d2 = -2, 3, -4; median -2, |d - m| = 0, 5, 2, MAD 2; noise
  // 1.4826 x 2 / sqrt(6) = 1.2106, threshold 6.053.
  assertEquals(dipThreshold(curveOf([70, 71, 70, 71, 70])), 1);
  assertAlmostEquals(
    dipThreshold(curveOf([70, 71, 70, 72, 70])),
    5 * 1.4826 * 2 / Math.sqrt(6),
    1e-9,
  );
});
