/**
 * Statistics for comparisons over seeds: a configuration's mean with its 95% t-interval, the
 * paired difference of two configurations run under the same seeds, and a verdict against the
 * paper's direction.
 *
 * @example
 * ```ts
 * import { compareSeeds } from "./stats.ts";
 * const r = compareSeeds([71.2, 70.8, 71.9], [69.9, 70.1, 70.6], { paperSign: 1, paperEffect: 1.5 });
 * r.verdict; // "holds": the paired interval lies above 0, the paper's side
 * ```
 * @module
 */

/** A mean and its two-sided confidence interval. */
export interface Interval {
  /** Number of values. */
  n: number;
  mean: number;
  /** Half the interval's width: t(level, n - 1) * s / sqrt(n); NaN for fewer than 2 values. */
  halfWidth: number;
  lo: number;
  hi: number;
}

/** ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; about 15 digits). */
function logGamma(x: number): number {
  const c = [
    0.99999999999980993,
    676.5203681218851,
    -1259.1392167224028,
    771.32342877765313,
    -176.61503916999185,
    12.507343278686905,
    -0.13857109526572012,
    9.9843695780195716e-6,
    1.5056327351493116e-7,
  ];
  if (x < 0.5) return Math.log(Math.PI / Math.sin(Math.PI * x)) - logGamma(1 - x);
  x -= 1;
  let a = c[0];
  const t = x + 7.5;
  for (let i = 1; i < 9; i++) a += c[i] / (x + i);
  return 0.5 * Math.log(2 * Math.PI) + (x + 0.5) * Math.log(t) - t + Math.log(a);
}

/** The regularised incomplete beta I_x(a, b), by its continued fraction (Lentz's method). */
function incompleteBeta(x: number, a: number, b: number): number {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  if (x > (a + 1) / (a + b + 2)) return 1 - incompleteBeta(1 - x, b, a);
  const front = Math.exp(
    logGamma(a + b) - logGamma(a) - logGamma(b) + a * Math.log(x) + b * Math.log(1 - x),
  ) / a;
  const tiny = 1e-300;
  let f = 1, c = 1, d = 0;
  for (let i = 0; i <= 400; i++) {
    const m = i >> 1;
    const num = i === 0
      ? 1
      : i % 2 === 0
      ? (m * (b - m) * x) / ((a + 2 * m - 1) * (a + 2 * m))
      : -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1));
    d = 1 + num * d;
    d = Math.abs(d) < tiny ? tiny : d;
    d = 1 / d;
    c = 1 + num / c;
    c = Math.abs(c) < tiny ? tiny : c;
    const cd = c * d;
    f *= cd;
    if (Math.abs(1 - cd) < 1e-15) break;
  }
  return front * (f - 1);
}

/**
 * P(T <= t) for Student's t with `df` degrees of freedom.
 *
 * @example
 * ```ts
 * studentTCdf(2.776, 4); // about 0.975
 * ```
 */
export function studentTCdf(t: number, df: number): number {
  const tail = 0.5 * incompleteBeta(df / (df + t * t), df / 2, 0.5);
  return t >= 0 ? 1 - tail : tail;
}

/**
 * The quantile of Student's t: the t with P(T <= t) = p (bisection on {@link studentTCdf}).
 *
 * @example
 * ```ts
 * studentTQuantile(0.975, 2); // 4.3027
 * ```
 */
export function studentTQuantile(p: number, df: number): number {
  if (!(p > 0 && p < 1) || !(df > 0)) {
    throw new RangeError(`studentTQuantile: need 0 < p < 1 and df > 0, got p ${p}, df ${df}`);
  }
  let lo = -1e3, hi = 1e3;
  for (let i = 0; i < 200 && hi - lo > 1e-12; i++) {
    const mid = (lo + hi) / 2;
    if (studentTCdf(mid, df) < p) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}

/**
 * The mean of `xs` with its two-sided t-interval at `level` (default 95%).
 *
 * @example
 * ```ts
 * meanInterval([1, 2, 3]); // mean 2, halfWidth 4.3027 * 1 / sqrt(3) = 2.484
 * ```
 */
export function meanInterval(xs: readonly number[], level = 0.95): Interval {
  const n = xs.length;
  if (n === 0) throw new RangeError("meanInterval: no values");
  const mean = xs.reduce((s, x) => s + x, 0) / n;
  if (n < 2) return { n, mean, halfWidth: NaN, lo: NaN, hi: NaN };
  const variance = xs.reduce((s, x) => s + (x - mean) ** 2, 0) / (n - 1);
  const halfWidth = studentTQuantile(1 - (1 - level) / 2, n - 1) * Math.sqrt(variance / n);
  return { n, mean, halfWidth, lo: mean - halfWidth, hi: mean + halfWidth };
}

/**
 * The paired difference `a[i] - b[i]` (configuration a minus b under the same seed i) with its
 * t-interval.
 *
 * @example
 * ```ts
 * pairedDifference([72, 73, 71], [70, 72, 70]); // mean 1.333, halfWidth 1.434
 * ```
 */
export function pairedDifference(
  a: readonly number[],
  b: readonly number[],
  level = 0.95,
): Interval {
  if (a.length !== b.length) {
    throw new RangeError(
      `pairedDifference: ${a.length} vs ${b.length} values; pair the runs by seed`,
    );
  }
  return meanInterval(a.map((x, i) => x - b[i]), level);
}

/**
 * What a paired interval says about the paper's direction: `holds` (it excludes 0 on the
 * paper's side), `opposite` (it excludes 0 on the other side), `not detected` (it contains 0; its
 * half-width bounds the effect).
 */
export type Verdict = "holds" | "opposite" | "not detected";

/**
 * The verdict of a paired difference `diff` (a - b) where the paper finds a - b of sign
 * `paperSign` (+1: a is better).
 *
 * @example
 * ```ts
 * verdict({ n: 3, mean: 1.3, halfWidth: 1.0, lo: 0.3, hi: 2.3 }, 1); // "holds"
 * ```
 */
export function verdict(diff: Interval, paperSign: 1 | -1): Verdict {
  if (!(diff.lo > 0 || diff.hi < 0)) return "not detected";
  return (diff.lo > 0 ? 1 : -1) === paperSign ? "holds" : "opposite";
}

/** A comparison of two configurations over the same seeds. */
export interface Comparison {
  a: Interval;
  b: Interval;
  /** a - b, paired by seed. */
  diff: Interval;
  verdict: Verdict;
  /** Whether the paper's own effect (a - b) lies inside the paired interval (undefined: not given). */
  paperInside?: boolean;
}

/**
 * Compares configuration `a` with `b` (values paired by seed): both means with their intervals,
 * the paired difference, the verdict against the paper's sign, and whether the paper's effect
 * size lies inside the interval.
 *
 * @example
 * ```ts
 * compareSeeds([71, 72, 73], [70, 70.5, 72], { paperSign: 1, paperEffect: 2 }).verdict; // "holds"
 * ```
 */
export function compareSeeds(
  a: readonly number[],
  b: readonly number[],
  opts: { paperSign: 1 | -1; paperEffect?: number; level?: number },
): Comparison {
  const level = opts.level ?? 0.95;
  const diff = pairedDifference(a, b, level);
  const out: Comparison = {
    a: meanInterval(a, level),
    b: meanInterval(b, level),
    diff,
    verdict: verdict(diff, opts.paperSign),
  };
  if (opts.paperEffect !== undefined) {
    out.paperInside = opts.paperEffect >= diff.lo && opts.paperEffect <= diff.hi;
  }
  return out;
}

/**
 * The two-sided p-value of a paired t-test from its interval: t = mean / (s / sqrt(n)), where
 * s / sqrt(n) is the half-width over t(level, n - 1); NaN for fewer than 2 values. Zero spread
 * with a non-zero mean gives 0 (every difference the same).
 *
 * @example
 * ```ts
 * tTestPValue(pairedDifference([72, 73, 71], [70, 72, 70])); // t = 4, df 2: p = 0.0572
 * ```
 */
export function tTestPValue(diff: Interval, level = 0.95): number {
  if (diff.n < 2 || !Number.isFinite(diff.halfWidth)) return NaN;
  const se = diff.halfWidth / studentTQuantile(1 - (1 - level) / 2, diff.n - 1);
  if (se === 0) return diff.mean === 0 ? 1 : 0;
  const t = Math.abs(diff.mean) / se;
  return Math.min(1, 2 * (1 - studentTCdf(t, diff.n - 1)));
}

/**
 * Holm's step-down adjustment of a family of p-values (controls the family-wise error rate):
 * sorted ascending, the i-th smallest (1-based) becomes max over j <= i of min(1, (m - j + 1) p_j),
 * returned in the input's order. NaN entries are left out of the family and stay NaN.
 *
 * @example
 * ```ts
 * holmAdjust([0.01, 0.04, 0.03]); // [0.03, 0.06, 0.06]
 * ```
 */
export function holmAdjust(ps: readonly number[]): number[] {
  const order = ps.map((p, i) => [p, i] as const).filter(([p]) => Number.isFinite(p))
    .sort((x, y) => x[0] - y[0]);
  const m = order.length;
  const out = ps.map(() => NaN);
  let running = 0;
  order.forEach(([p, i], j) => {
    running = Math.max(running, Math.min(1, (m - j) * p));
    out[i] = running;
  });
  return out;
}

/**
 * The verdict of a paired difference after adjusting for the family: the unadjusted verdict
 * where the adjusted p-value is below `1 - level`, else `not detected`.
 *
 * @example
 * ```ts
 * adjustedVerdict({ n: 3, mean: 1.3, halfWidth: 1.0, lo: 0.3, hi: 2.3 }, 1, 0.2); // "not detected"
 * ```
 */
export function adjustedVerdict(
  diff: Interval,
  paperSign: 1 | -1,
  adjustedP: number,
  level = 0.95,
): Verdict {
  return adjustedP < 1 - level ? verdict(diff, paperSign) : "not detected";
}
