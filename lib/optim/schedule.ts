/**
 * The schedules of a run, per iteration as in MoCo v3's main_moco.py: the batch-scaled learning
 * rate ({@link scaledLr}), linear warmup then cosine decay ({@link lrAt}), and the cosine EMA
 * momentum of the momentum encoder ({@link momentumAt}).
 *
 * @example
 * ```ts
 * import { lrAt, momentumAt, scaledLr } from "./schedule.ts";
 * const peakLr = scaledLr(1.5e-4, 256);
 * const lr = lrAt(it, { peakLr, warmupSteps: 40 * itersPerEpoch, totalSteps: total });
 * const m = momentumAt(it, total, 0.99);
 * ```
 * @module
 */

/**
 * Linear batch-size scaling of the learning rate (MoCo v3): `baseLr * batchSize / 256`.
 *
 * @example
 * ```ts
 * scaledLr(1.5e-4, 4096); // 2.4e-3
 * ```
 */
export function scaledLr(baseLr: number, batchSize: number): number {
  return baseLr * batchSize / 256;
}

/** Options of {@link lrAt}; all counts are iterations (optimiser steps). */
export interface LrScheduleOptions {
  /** Learning rate at the end of warmup (already batch-scaled, see {@link scaledLr}). */
  peakLr: number;
  /** Iterations of linear warmup from 0 (may be 0). */
  warmupSteps: number;
  /** Total iterations of the run; the cosine reaches `minLr` here. */
  totalSteps: number;
  /** Floor of the cosine. Default 0 (as in MoCo v3). */
  minLr?: number;
}

/**
 * Learning rate at iteration `step` (0-based), per iteration as in MoCo v3's main_moco.py
 * `adjust_learning_rate` (called with the fractional epoch `epoch + i / iters_per_epoch`, which in
 * iterations is the same formula):
 * - step < warmupSteps: `peakLr * step / warmupSteps` (so the first update uses lr 0);
 * - otherwise: `minLr + (peakLr - minLr) * 0.5 * (1 + cos(pi * (step - warmupSteps) /
 *   (totalSteps - warmupSteps)))`, with step clamped to totalSteps (minLr from there on).
 * With minLr = 0 this is exactly the official formula.
 *
 * @example
 * ```ts
 * lrAt(50, { peakLr: 1e-3, warmupSteps: 100, totalSteps: 1000 }); // 5e-4
 * ```
 */
export function lrAt(step: number, opts: LrScheduleOptions): number {
  const { peakLr, warmupSteps, totalSteps } = opts;
  const minLr = opts.minLr ?? 0;
  if (!(warmupSteps >= 0 && totalSteps > warmupSteps)) {
    throw new Error(
      `optim.lrAt: expected 0 <= warmupSteps < totalSteps; got warmupSteps ${warmupSteps}, ` +
        `totalSteps ${totalSteps}`,
    );
  }
  if (!(step >= 0)) throw new Error(`optim.lrAt: step must be >= 0; got ${step}`);
  if (step < warmupSteps) return peakLr * step / warmupSteps;
  const frac = (Math.min(step, totalSteps) - warmupSteps) / (totalSteps - warmupSteps);
  return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * frac));
}

/**
 * EMA momentum of the key encoder at iteration `step` of `totalSteps` (MoCo v3's
 * `adjust_moco_momentum`, per iteration): `1 - 0.5 * (1 + cos(pi * step / totalSteps)) * (1 - m0)`,
 * rising from m0 to 1; step is clamped to [0, totalSteps].
 *
 * @example
 * ```ts
 * momentumAt(500, 1000, 0.99); // 0.995
 * ```
 */
export function momentumAt(step: number, totalSteps: number, m0: number): number {
  if (!(totalSteps > 0)) {
    throw new Error(`optim.momentumAt: totalSteps must be > 0; got ${totalSteps}`);
  }
  const t = Math.min(Math.max(step, 0), totalSteps);
  return 1 - 0.5 * (1 + Math.cos(Math.PI * t / totalSteps)) * (1 - m0);
}
