/**
 * The epoch loop of the supervised evaluations (linear probe, fine-tuning): shuffled
 * mini-batches, one optimiser step each, and the mean training loss of every epoch.
 *
 * @example
 * ```ts
 * import { trainEpochs } from "./epochs.ts";
 * const losses = await trainEpochs({ n: 1000, batchSize: 64, epochs: 3, rng }, (idx, it) => {
 *   return stepOn(idx, lrAt(it, sched)); // one update; returns the batch's mean loss
 * });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { permutation, type Rng } from "../core/rng.ts";
import { stopPoint, type StopSignal } from "../core/stop.ts";

/** Options of {@link trainEpochs}. */
export interface EpochOptions {
  /** Training rows. */
  n: number;
  /** Rows per step; the last batch of an epoch may be smaller. */
  batchSize: number;
  epochs: number;
  /** The shuffles: one permutation of the rows per epoch. */
  rng: Rng;
  /** Called after every epoch with its mean training loss. */
  onEpoch?: (epoch: number, loss: number) => void;
  /** Checked between steps: once `stop` is set, a `StoppedError` naming `phase` is thrown. */
  signal?: StopSignal;
  /** What the loop trains, for the stop message ("the linear probe"). Default "training". */
  phase?: string;
}

/**
 * Runs `step(rows, iteration)` on every mini-batch of `epochs` shuffled passes over `n` rows;
 * `step` does one update and returns the batch's mean loss (freed here). Returns the mean loss of
 * each epoch. With `signal`, a `StoppedError` is thrown before the first step after `stop` is set.
 */
export async function trainEpochs(
  opts: EpochOptions,
  step: (rows: Int32Array, iteration: number) => tf.Scalar,
): Promise<number[]> {
  const { n, batchSize } = opts;
  const losses: number[] = [];
  let iteration = 0;
  for (let epoch = 0; epoch < opts.epochs; epoch++) {
    const perm = permutation(n, opts.rng);
    const phase = `${opts.phase ?? "training"} (epoch ${epoch + 1}/${opts.epochs})`;
    let lossSum: tf.Tensor = tf.scalar(0);
    let epochLoss: number;
    try {
      for (let s = 0; s < n; s += batchSize) {
        await stopPoint(opts.signal, phase);
        const rows = perm.subarray(s, Math.min(s + batchSize, n));
        const value = step(rows, iteration++);
        const next = tf.tidy(() => tf.add(lossSum, tf.mul(value, rows.length)));
        tf.dispose([lossSum, value]);
        lossSum = next;
      }
      epochLoss = (await lossSum.data())[0] / n;
    } finally {
      lossSum.dispose();
    }
    losses.push(epochLoss);
    opts.onEpoch?.(epoch, epochLoss);
  }
  return losses;
}
