/**
 * Per-channel normalisation statistics of a dataset (of pixels scaled to [0, 1]): the known
 * datasets' published constants, else computed from the pixels. Pretraining's augmentation, the
 * kNN monitor and every evaluation normalise with them.
 *
 * @example
 * ```ts
 * import { datasetStats } from "./stats.ts";
 * datasetStats(fmnistTrain); // { mean: [0.286], std: [0.353] }
 * ```
 * @module
 */
import type { Dataset } from "./dataset.ts";

/** Per-channel normalisation statistics (of pixels scaled to [0, 1]). */
export interface ChannelStats {
  mean: number[];
  std: number[];
}

/**
 * Known datasets' train-split pixel statistics, the one place they live. Fashion-MNIST's are
 * those of its 60,000 training images; CIFAR's are the usual published ones.
 */
export const DATASET_STATS: Record<string, ChannelStats> = {
  fmnist: { mean: [0.286], std: [0.353] },
  cifar10: { mean: [0.4914, 0.4822, 0.4465], std: [0.247, 0.2435, 0.2616] },
  cifar100: { mean: [0.5071, 0.4865, 0.4409], std: [0.2673, 0.2564, 0.2762] },
};

/**
 * Normalisation statistics for a dataset: the constants of {@link DATASET_STATS} when its name is
 * known, otherwise the per-channel mean and (population) std of its own pixels / 255. For an
 * unknown dataset pass the train split and use the result for every split.
 *
 * @example
 * ```ts
 * datasetStats(fmnistTrain); // { mean: [0.286], std: [0.353] }
 * ```
 */
export function datasetStats(ds: Dataset): ChannelStats {
  const known = DATASET_STATS[ds.name];
  if (known && known.mean.length === ds.channels) {
    return { mean: known.mean.slice(), std: known.std.slice() };
  }
  return computeStats(ds);
}

/**
 * Per-channel mean and population std of a dataset's pixels scaled to [0, 1].
 *
 * @example
 * ```ts
 * computeStats(ds); // { mean: [0.5], std: [0.25] } for pixels spread evenly around 127.5
 * ```
 */
export function computeStats(ds: Dataset): ChannelStats {
  const c = ds.channels;
  const sum = new Float64Array(c), sq = new Float64Array(c);
  const img = ds.images;
  for (let i = 0; i < img.length; i++) {
    const v = img[i];
    sum[i % c] += v;
    sq[i % c] += v * v;
  }
  const n = img.length / c;
  const mean: number[] = [], std: number[] = [];
  for (let k = 0; k < c; k++) {
    const m = sum[k] / n;
    mean.push(m / 255);
    std.push(Math.sqrt(Math.max(sq[k] / n - m * m, 0)) / 255 || 1);
  }
  return { mean, std };
}
