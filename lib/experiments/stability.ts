/**
 * The paper's hidden instability, measured: "dips" in a monitored accuracy curve (sudden drops
 * followed by a partial recovery) and the first-layer gradient spikes that precede them. The
 * curve is the kNN monitor's or the online linear probe's ({@link monitorCurve}).
 *
 * A dip, as {@link findDips} defines it:
 * 1. The reference peak is the running maximum of the curve since the start, or since the end
 *    of the previous dip (so a second drop after a partial recovery is measured from where the
 *    curve got back to, not from the old peak it never regained).
 * 2. The dip starts when a point lies at least `minDepth` points below that peak. Its bottom is
 *    the lowest point until recovery; depth = peak - bottom.
 * 3. It has recovered at the first later point that regains at least `recoverFraction` (default
 *    one half) of the depth: acc >= bottom + recoverFraction * depth. Relative to the depth so a
 *    deep dip needs a real climb back, while the paper's "partial recoveries" still count.
 *    For a dip of exactly `minDepth` = 1 point that is a rise of 0.5 from the bottom.
 * 4. A drop that has not recovered when the curve ends is not a dip by this rule (it may be a
 *    collapse, or the run stopped mid-dip); pass `keepUnrecovered` to list it, with
 *    `recoveredStep: null`.
 *
 * Default `minDepth` = 1.0 accuracy point, fixed so that dip counts compare across runs: the
 * paper's dips cost 1-3 points, and repeat runs differ by 0.1-0.3. Point-to-point noise sigma
 * of the monitor matters more than run-to-run noise: on a noisy plateau the running maximum
 * sits a couple of sigma above the mean and single points fall a couple below it. Simulated
 * saturating curves with Gaussian noise give false dips in <= 1% of runs at minDepth = 5 sigma
 * for 100 points (6 sigma for 300), but in 80% at 3 sigma (100 points). So 1.0 is safe up to
 * sigma = 0.2; check {@link curveNoise} (which {@link dipReport} returns) and raise
 * `minDepth` for all compared runs when it is larger.
 *
 * @example
 * ```ts
 * import { dipReport, findDips } from "./stability.ts";
 * const curve = [{ step: 0, acc: 10 }, { step: 100, acc: 30 }, { step: 200, acc: 27 },
 *   { step: 300, acc: 32 }];
 * findDips(curve); // [{ startStep: 100, bottomStep: 200, depth: 3, recoveredStep: 300, ... }]
 * const trace = [{ step: 0, grad_patch: 1 }, { step: 150, grad_patch: 9 },
 *   { step: 250, grad_patch: 1 }];
 * dipReport(curve, trace).dips[0].spike; // true: 9 / median 1 >= 3, at step 150
 * ```
 * @module
 */

/** One point of a monitored accuracy curve (accuracy in percent, e.g. kNN top-1). */
export interface CurvePoint {
  step: number;
  acc: number;
}

/** The monitored series of `knn.csv` a curve can follow: kNN top-1, or the online probe's top-1. */
export type MonitorSeries = "knn" | "probe";

/**
 * A monitor curve for {@link findDips} / {@link dipReport} from `knn.csv` rows: kNN top-1 (the
 * default) or the online linear probe's top-1 (`probe_top1`; rows without it, such as runs
 * without the probe, are left out).
 *
 * @example
 * ```ts
 * const { knn } = await readRunLogs(dir);
 * findDips(monitorCurve(knn, "probe"), { minDepth: dipThreshold(monitorCurve(knn, "probe")) });
 * ```
 */
export function monitorCurve(
  rows: readonly { step: number; top1: number; probe_top1?: number }[],
  series: MonitorSeries = "knn",
): CurvePoint[] {
  if (series === "knn") return rows.map((r) => ({ step: r.step, acc: r.top1 }));
  return rows.filter((r) => typeof r.probe_top1 === "number")
    .map((r) => ({ step: r.step, acc: r.probe_top1! }));
}

/** Options of {@link findDips}. */
export interface DipOptions {
  /** Smallest drop below the reference peak that starts a dip, in accuracy points. Default 1. */
  minDepth?: number;
  /** Share of the depth a later point must regain for the dip to count as recovered. 0.5. */
  recoverFraction?: number;
  /** Also list a final drop that never recovered (with `recoveredStep: null`). Default false. */
  keepUnrecovered?: boolean;
}

/** A dip of the curve (see the module doc for the rule). */
export interface Dip {
  /** Step of the reference peak: the last point before the drop. */
  startStep: number;
  peakAcc: number;
  /** Step of the lowest point before recovery. */
  bottomStep: number;
  bottomAcc: number;
  /** peakAcc - bottomAcc, in accuracy points. */
  depth: number;
  /** First step that regained `recoverFraction` of the depth; null if it never did. */
  recoveredStep: number | null;
  recoveredAcc: number | null;
}

/** Float slack for threshold comparisons (accuracies are printed with a few decimals). */
const SLACK = 1e-9;

function checkIncreasing(points: readonly { step: number }[], what: string): void {
  for (let i = 1; i < points.length; i++) {
    if (!(points[i].step > points[i - 1].step)) {
      throw new Error(
        `${what}: steps must increase, but point ${i} has step ${points[i].step} after ` +
          `${points[i - 1].step}: sort the points by step and drop duplicates`,
      );
    }
  }
}

/**
 * Finds the dips of an accuracy curve (points sorted by step).
 *
 * @example
 * ```ts
 * findDips([{ step: 0, acc: 50 }, { step: 1, acc: 48 }, { step: 2, acc: 49.5 }]);
 * // [{ startStep: 0, peakAcc: 50, bottomStep: 1, bottomAcc: 48, depth: 2, recoveredStep: 2, ... }]
 * ```
 */
export function findDips(curve: readonly CurvePoint[], opts: DipOptions = {}): Dip[] {
  const { minDepth = 1, recoverFraction = 0.5, keepUnrecovered = false } = opts;
  checkIncreasing(curve, "findDips");
  const bad = curve.findIndex((p) => !Number.isFinite(p.acc));
  if (bad >= 0) {
    throw new Error(`findDips: accuracy at step ${curve[bad].step} is ${curve[bad].acc}`);
  }
  const dips: Dip[] = [];
  if (curve.length === 0) return dips;
  let peak = curve[0];
  let bottom: CurvePoint | null = null;
  const dip = (end: CurvePoint | null): Dip => ({
    startStep: peak.step,
    peakAcc: peak.acc,
    bottomStep: bottom!.step,
    bottomAcc: bottom!.acc,
    depth: peak.acc - bottom!.acc,
    recoveredStep: end ? end.step : null,
    recoveredAcc: end ? end.acc : null,
  });
  for (const p of curve.slice(1)) {
    if (!bottom) {
      if (p.acc >= peak.acc) peak = p;
      else if (peak.acc - p.acc >= minDepth - SLACK) bottom = p;
    } else if (p.acc < bottom.acc) {
      bottom = p;
    } else if (p.acc - bottom.acc >= recoverFraction * (peak.acc - bottom.acc) - SLACK) {
      dips.push(dip(p));
      // The next dip is measured from where the curve got back to.
      peak = p;
      bottom = null;
    }
  }
  if (bottom && keepUnrecovered) dips.push(dip(null));
  return dips;
}

function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = Math.floor(s.length / 2);
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/**
 * Point-to-point noise sigma of a curve: the robust standard deviation (1.4826 x median absolute
 * deviation) of its second differences a[i+1] - 2 a[i] + a[i-1], divided by sqrt(6) (their
 * standard deviation for independent noise). A smooth trend, even a curved one, barely counts.
 * Use it to check `minDepth` (5-6 x noise or more, see the module doc). NaN for < 3 points.
 */
export function curveNoise(curve: readonly CurvePoint[]): number {
  const d2 = curve.slice(2).map((p, i) => p.acc - 2 * curve[i + 1].acc + curve[i].acc);
  const m = median(d2);
  return 1.4826 * median(d2.map((x) => Math.abs(x - m))) / Math.sqrt(6);
}

/**
 * The dip threshold of one monitor curve: 5 x its {@link curveNoise}, and at least 1 point (1
 * for a curve too short to measure). The suites' dip counts and the figures' dip marks use it.
 *
 * @example
 * ```ts
 * dipThreshold([{ step: 0, acc: 50 }, { step: 1, acc: 60 }, { step: 2, acc: 70 }]); // 1
 * ```
 */
export function dipThreshold(curve: readonly CurvePoint[]): number {
  const noise = curveNoise(curve);
  return Number.isFinite(noise) ? Math.max(1, 5 * noise) : 1;
}

/** Options of {@link gradientSpikes}. */
export interface SpikeOptions {
  /** Which column of the trace to read (a `log.csv` column). Default `grad_patch`. */
  key?: string;
  /** A point is a spike when value / median(trace) is at least this. Default 3. */
  minRatio?: number;
}

/** A gradient-norm spike. */
export interface Spike {
  step: number;
  value: number;
  /** value / median of the whole trace. */
  ratio: number;
}

function values<T extends { step: number }>(trace: readonly T[], key: string): number[] {
  checkIncreasing(trace, "gradient trace");
  return trace.map((p) => {
    const v = (p as Record<string, unknown>)[key];
    if (typeof v !== "number") {
      throw new Error(
        `gradient trace: point at step ${p.step} has no numeric "${key}" (found ${v}): pass ` +
          `rows of log.csv or set opts.key to the gradient column`,
      );
    }
    return v;
  });
}

/**
 * Spikes of a gradient-norm trace (rows of `log.csv`, sorted by step): points at least
 * `minRatio` times the median of the whole trace. Consecutive spiking points form one spike,
 * reported at its largest value. The baseline is the global median: fine for the smooth trends
 * of these runs; a trace that changes by orders of magnitude would need a rolling median.
 *
 * @example
 * ```ts
 * const trace = [1, 5, 1].map((g, step) => ({ step, grad_patch: g }));
 * gradientSpikes(trace); // [{ step: 1, value: 5, ratio: 5 }]
 * ```
 */
export function gradientSpikes<T extends { step: number }>(
  trace: readonly T[],
  opts: SpikeOptions = {},
): Spike[] {
  const { key = "grad_patch", minRatio = 3 } = opts;
  const v = values(trace, key);
  const med = median(v);
  const spikes: Spike[] = [];
  let inRun = false;
  v.forEach((x, i) => {
    const ratio = x / med;
    if (!(ratio >= minRatio)) {
      inRun = false;
      return;
    }
    const s = { step: trace[i].step, value: x, ratio };
    if (!inRun) spikes.push(s);
    else if (x > spikes[spikes.length - 1].value) spikes[spikes.length - 1] = s;
    inRun = true;
  });
  return spikes;
}

/** Options of {@link dipReport}. */
export interface ReportOptions extends DipOptions, SpikeOptions {
  /**
   * How many steps before a dip's start the gradient window opens. Default: the median spacing
   * of the curve (one monitor interval), since the spike can precede the last good evaluation.
   */
  lookback?: number;
}

/** A dip with the largest gradient norm in its window `[startStep - lookback, bottomStep]`. */
export interface DipWithGradient extends Dip {
  /** Largest gradient norm in the window, and where; null when the trace has no point there. */
  gradMax: number | null;
  gradMaxStep: number | null;
  /** gradMax / median of the trace. */
  gradRatio: number | null;
  /** gradRatio >= minRatio: a spike preceded the dip's bottom. */
  spike: boolean;
}

/** What {@link dipReport} returns. */
export interface DipReport {
  dips: DipWithGradient[];
  /** Every spike of the trace, before a dip or not. */
  spikes: Spike[];
  /** Median of the gradient trace (the spike baseline). */
  gradMedian: number;
  /** {@link curveNoise} of the curve, to judge `minDepth`. */
  noise: number;
}

/**
 * Dips of an accuracy curve, each with the gradient-norm maximum in the window before its bottom,
 * plus all spikes of the trace: the paper's claim is that (most) dips have `spike: true`.
 */
export function dipReport<T extends { step: number }>(
  curve: readonly CurvePoint[],
  trace: readonly T[],
  opts: ReportOptions = {},
): DipReport {
  const { key = "grad_patch", minRatio = 3 } = opts;
  const lookback = opts.lookback ?? median(curve.slice(1).map((p, i) => p.step - curve[i].step));
  const v = values(trace, key);
  const gradMedian = median(v);
  const dips = findDips(curve, opts).map((d): DipWithGradient => {
    let best = -1;
    trace.forEach((p, i) => {
      const inWindow = p.step >= d.startStep - (lookback || 0) && p.step <= d.bottomStep;
      if (inWindow && (best < 0 || v[i] > v[best])) best = i;
    });
    if (best < 0) return { ...d, gradMax: null, gradMaxStep: null, gradRatio: null, spike: false };
    const gradRatio = v[best] / gradMedian;
    return {
      ...d,
      gradMax: v[best],
      gradMaxStep: trace[best].step,
      gradRatio,
      spike: gradRatio >= minRatio,
    };
  });
  return {
    dips,
    spikes: gradientSpikes(trace, { key, minRatio }),
    gradMedian,
    noise: curveNoise(curve),
  };
}
