/**
 * Numeric helpers shared by the tests that compare tensors with references computed in the test:
 * deterministic inputs without an RNG module, and element-wise comparisons.
 * @module
 */
import { assert, assertEquals } from "@std/assert";

/** Deterministic pseudo-random values in [-1, 1) (a tiny LCG). */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

/** The largest |a[i] - b[i]| (asserts equal lengths). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assertEquals(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/**
 * Asserts |actual[i] - expected[i]| <= tol * max(1, |expected[i]|) for every i: absolute near
 * zero, relative for large values; the message names the first element that fails.
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: number,
): void {
  assertEquals(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    const err = Math.abs(actual[i] - expected[i]);
    assert(
      err <= tol * Math.max(1, Math.abs(expected[i])),
      `[${i}] ${actual[i]} vs ${expected[i]}`,
    );
  }
}

/**
 * Asserts that two float32 arrays hold the same bits element for element (so -0 differs from +0
 * and a NaN equals the same NaN); the message names `name` and the first element that differs.
 *
 * @example
 * ```ts
 * assertSameBits("y", new Float32Array([1, -0]), new Float32Array([1, -0]));
 * ```
 */
export function assertSameBits(name: string, got: Float32Array, want: Float32Array): void {
  assertEquals(got.length, want.length, `${name}: length`);
  const g = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const w = new Uint32Array(want.buffer, want.byteOffset, want.length);
  for (let i = 0; i < g.length; i++) {
    if (g[i] !== w[i]) throw new Error(`${name}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}
