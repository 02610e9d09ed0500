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

const f32 = new Float32Array(1), u32 = new Uint32Array(f32.buffer);

/** The bits of `x` as a float32. @example `f32Bits(1) === 0x3f800000` */
export function f32Bits(x: number): number {
  f32[0] = x;
  return u32[0];
}

/** The float32 with bits `b`. @example `fromF32Bits(0x3f800000) === 1` */
export function fromF32Bits(b: number): number {
  u32[0] = b >>> 0;
  return f32[0];
}

/**
 * `x` rounded to bf16 (8 significant bits), to nearest, ties to even, by comparing the two bf16
 * neighbours of x in float64 arithmetic (not by the library's bit trick). NaN stays NaN; past the
 * largest bf16 it is infinity.
 *
 * @example
 * ```ts
 * bf16(1 + 2 ** -8); // 1: a tie, to even
 * ```
 */
export function bf16(x: number): number {
  if (Number.isNaN(x) || !Number.isFinite(x) || x === 0) return x;
  const lo = fromF32Bits(f32Bits(x) & 0xffff0000); // toward zero: a bf16 value
  const hi = fromF32Bits((f32Bits(x) & 0xffff0000) + 0x10000); // the next one away from zero
  // Past bf16's largest finite value the next one is infinity, at 2^128 for the distance.
  const far = Number.isFinite(hi) ? hi : Math.sign(x) * 2 ** 128;
  const dl = Math.abs(x - lo), dh = Math.abs(far - x);
  if (dl < dh) return lo;
  if (dh < dl) return hi;
  return ((f32Bits(lo) >>> 16) & 1) === 0 ? lo : hi;
}

/**
 * The bf16 values of `v` (each rounded by {@link bf16}) as stored: their high 16 bits.
 *
 * @example
 * ```ts
 * bf16Halves(new Float32Array([1])); // Uint16Array [0x3f80]
 * ```
 */
export function bf16Halves(v: Float32Array): Uint16Array {
  return Uint16Array.from(v, (x) => f32Bits(bf16(x)) >>> 16);
}

/**
 * Asserts two arrays of bf16 (or any 16-bit words) are equal, naming the first difference.
 *
 * @example
 * ```ts
 * assertSameHalves("y", new Uint16Array([1]), new Uint16Array([1]));
 * ```
 */
export function assertSameHalves(name: string, got: Uint16Array, want: Uint16Array): void {
  assertEquals(got.length, want.length, `${name}: length`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) throw new Error(`${name}: element ${i} is ${got[i]}, want ${want[i]}`);
  }
}
