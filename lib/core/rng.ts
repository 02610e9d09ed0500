/**
 * Seeded pseudo-random numbers, so that every run, init and augmentation is reproducible.
 *
 * One generator type (mulberry32 on a 32-bit state) serves the whole library; its state is a
 * single integer that checkpoints save and restore.
 *
 * @example
 * ```ts
 * import { createRng } from "./rng.ts";
 * const rng = createRng(42);
 * const u = rng.uniform(); // in [0, 1)
 * const n = rng.normal(); // standard normal
 * const saved = rng.state; // restore later with createRng(0).state = saved
 * ```
 * @module
 */

/** A seeded generator of uniform and normal numbers; `state` can be saved and restored. */
export interface Rng {
  /** The 32-bit state: assign a saved value to resume the stream exactly. */
  state: number;
  /** Uniform in [0, 1). */
  uniform(): number;
  /** Uniform in [lo, hi). */
  range(lo: number, hi: number): number;
  /** Integer in [0, n). */
  int(n: number): number;
  /** Standard normal (Box-Muller). */
  normal(): number;
  /** A new independent generator whose seed is drawn from this one. */
  fork(): Rng;
}

/** Mixes a seed so that nearby seeds (0, 1, 2 ...) give unrelated streams. */
function mixSeed(seed: number): number {
  let h = (seed ^ 0x9e3779b9) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0;
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0;
  return (h ^ (h >>> 16)) >>> 0;
}

/** Creates a generator from an integer seed. */
export function createRng(seed: number): Rng {
  const rng: Rng = {
    state: mixSeed(seed),
    uniform() {
      // mulberry32
      rng.state = (rng.state + 0x6d2b79f5) >>> 0;
      let t = rng.state;
      t = Math.imul(t ^ (t >>> 15), t | 1);
      t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    },
    range(lo, hi) {
      return lo + (hi - lo) * rng.uniform();
    },
    int(n) {
      return Math.floor(rng.uniform() * n);
    },
    normal() {
      const u1 = 1 - rng.uniform(); // (0, 1]
      const u2 = rng.uniform();
      return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    },
    fork() {
      return createRng(Math.floor(rng.uniform() * 4294967296));
    },
  };
  return rng;
}

/** Fisher-Yates shuffle of `0..n-1`, as an Int32Array. */
export function permutation(n: number, rng: Rng): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
