/**
 * Stratified samples (lib/data/dataset.ts): each class's share of the sample by hand
 * (largest remainders), distinct rows in order, reproducible by seed.
 */
import { assert, assertEquals, assertNotEquals, assertThrows } from "@std/assert";
import { stratifiedIndices, stratifiedSubset } from "../../lib/data/dataset.ts";
import { syntheticDataset } from "../../lib/data/synthetic.ts";

const countsOf = (labels: ArrayLike<number>, idx: ArrayLike<number>, k: number) => {
  const c = new Array(k).fill(0);
  for (let i = 0; i < idx.length; i++) c[labels[idx[i]]]++;
  return c;
};

Deno.test("stratifiedIndices: shares by class, remainders to the largest, distinct and sorted", () => {
  // Classes of 6, 3 and 1 rows, shuffled in place.
  const labels = new Int32Array([1, 0, 0, 2, 0, 1, 0, 1, 0, 0]);
  // n = 5: quotas 3, 1.5, 0.5 -> 3, 1, 0 and one left, to the lower class of the tied 0.5s.
  const idx = stratifiedIndices(labels, 5, 0);
  assertEquals(countsOf(labels, idx, 3), [3, 2, 0]);
  // n = 7: quotas 4.2, 2.1, 0.7 -> 4, 2, 0 and one left, to class 2 (0.7 is the largest).
  assertEquals(countsOf(labels, stratifiedIndices(labels, 7, 0), 3), [4, 2, 1]);
  for (const n of [1, 5, 7, 9]) {
    const s = Array.from(stratifiedIndices(labels, n, 3));
    assertEquals(s.length, n);
    assertEquals(new Set(s).size, n);
    assertEquals(s, [...s].sort((a, b) => a - b));
    assert(s.every((i) => i >= 0 && i < labels.length));
  }
  assertEquals(Array.from(stratifiedIndices(labels, 10, 0)), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assertEquals(Array.from(stratifiedIndices(labels, 0, 0)), []);
  assertThrows(() => stratifiedIndices(labels, 2.5, 0), RangeError, "whole number");
});

Deno.test("stratifiedSubset: the images of the chosen rows, the same for the same seed", () => {
  const ds = syntheticDataset({ n: 200, seed: 1, numClasses: 4 });
  const a = stratifiedSubset(ds, 40, 7), b = stratifiedSubset(ds, 40, 7);
  assertEquals(a.length, 40);
  assertEquals(countsOf(a.labels, Array.from({ length: 40 }, (_, i) => i), 4), [10, 10, 10, 10]);
  assertEquals(a.images, b.images);
  const idx = stratifiedIndices(ds.labels, 40, 7);
  const size = ds.height * ds.width * ds.channels;
  for (const j of [0, 17, 39]) {
    assertEquals(a.labels[j], ds.labels[idx[j]]);
    assertEquals(
      a.images.subarray(j * size, (j + 1) * size),
      ds.images.subarray(idx[j] * size, (idx[j] + 1) * size),
    );
  }
  assertNotEquals(Array.from(stratifiedIndices(ds.labels, 40, 8)), Array.from(idx));
  assertEquals(stratifiedSubset(ds, 500, 0), ds);
});
