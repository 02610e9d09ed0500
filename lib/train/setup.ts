/**
 * What a pretraining run is made of, before its loop starts: its data splits, backbone,
 * augmentation and whether it trains the online probe, checked against the backend and worker
 * count; and the two seeded streams that make a run reproducible (the data order of each epoch,
 * {@link batchOrder}, and every other stream by {@link subSeed}).
 *
 * @example
 * ```ts
 * import { backboneConfig, loadSplits } from "./setup.ts";
 * const [train, test] = await loadSplits(resolveConfig({ preset: "smoke" }));
 * const vit = backboneConfig(cfg, train);
 * ```
 * @module
 */
import { type AugmentConfig, defaultAugmentConfig } from "../data/augment.ts";
import { type Dataset, getBatch, loadDataset, splitLine } from "../data/mod.ts";
import type { ChannelStats } from "../data/stats.ts";
import { ConfigError } from "../core/errors.ts";
import { createRng, permutation } from "../core/rng.ts";
import { pathExists } from "../io/exists.ts";
import { vitConfig } from "../model/vit.ts";
import { type PretrainConfig, savedRunConfig } from "./config.ts";
import { RUN_FILES } from "./rundir.ts";

/**
 * Loads the train and test splits a config names (train first, so that its errors come first).
 * For an ImageFolder it prints one line with the split used: its `train/` and `test/` folders, or
 * the held-out part of an unsplit tree (`splitRule`, lib/data/imagefolder.ts).
 *
 * @example
 * ```ts
 * const [train, test] = await loadSplits(resolveConfig({ preset: "smoke" }));
 * ```
 */
export async function loadSplits(
  cfg: PretrainConfig,
  print: (line: string) => void = () => {},
): Promise<[Dataset, Dataset]> {
  const common = {
    name: cfg.dataset,
    root: cfg.dataRoot,
    imageSize: cfg.imageSize,
    channels: cfg.channels,
    seed: cfg.seed,
  } as const;
  const train = await loadDataset({ ...common, split: "train", n: cfg.syntheticSize });
  const test = await loadDataset({
    ...common,
    split: "test",
    n: cfg.syntheticSize && Math.ceil(cfg.syntheticSize / 5),
  });
  const line = splitLine(train, test, cfg.dataRoot);
  if (line) print(line);
  return [train, test];
}

/**
 * The backbone config a pretraining config implies for a dataset.
 *
 * @example
 * ```ts
 * const vit = backboneConfig(cfg, train); // vit.imageSize === train.height
 * ```
 */
export function backboneConfig(cfg: PretrainConfig, ds: Dataset) {
  return vitConfig({
    name: cfg.model,
    imageSize: ds.height,
    channels: ds.channels,
    patchSize: cfg.patchSize,
    dim: cfg.dim,
    depth: cfg.depth,
    heads: cfg.heads,
    posEmb: cfg.posEmb,
    pool: cfg.pool,
    mlpNorm: cfg.mlpNorm,
    freezePatchEmbed: cfg.freezePatchEmbed,
  });
}

/**
 * The augmentation of a run: the paper's recipe at the dataset's size and statistics, with the
 * config's crop scale (`--crop-min`).
 *
 * @example
 * ```ts
 * pretrainAugmentConfig({ ...cfg, cropMin: 0.25 }, trainDs, datasetStats(trainDs)).scale; // [0.25, 1]
 * ```
 */
export function pretrainAugmentConfig(
  cfg: Pick<PretrainConfig, "cropMin">,
  train: Pick<Dataset, "height" | "channels">,
  stats: ChannelStats,
): AugmentConfig {
  return defaultAugmentConfig({
    outSize: train.height,
    channels: train.channels,
    mean: stats.mean,
    std: stats.std,
    cropMin: cfg.cropMin,
  });
}

/**
 * Whether a run trains the online probe: `cfg.onlineProbe` when set (refused, in one line, on
 * data without labels: fewer than two classes); unset, what a resumed run recorded (runs made
 * before the probe had none), else on where the data has labels and the run uses one process.
 *
 * @example
 * ```ts
 * cfg = { ...cfg, onlineProbe: await onlineProbeSetting(cfg, train) };
 * ```
 */
export async function onlineProbeSetting(cfg: PretrainConfig, train: Dataset): Promise<boolean> {
  const labelled = train.classes.length >= 2;
  if (cfg.onlineProbe === true && !labelled) {
    throw new ConfigError(
      `--online-probe needs labels, but the training data has ${train.classes.length} class ` +
        `(${train.classes.join(", ") || "none"}): pass --no-online-probe`,
    );
  }
  if (cfg.onlineProbe !== undefined) return cfg.onlineProbe;
  if (await pathExists(`${cfg.outDir}/${RUN_FILES.checkpoint}`)) {
    try {
      const saved = JSON.parse(await Deno.readTextFile(`${cfg.outDir}/${RUN_FILES.config}`));
      return savedRunConfig(saved.config).onlineProbe ?? false;
    } catch { /* checkSameConfig reports an unreadable config.json */ }
  }
  return labelled && cfg.workers === 1;
}

/**
 * Refuses `workers > 1` where the data-parallel runner cannot run it.
 *
 * @example
 * ```ts
 * if (cfg.workers > 1) checkWorkers(cfg, backendInfo.name);
 * ```
 */
export function checkWorkers(cfg: PretrainConfig, backend: string): void {
  if (backend !== "wasm" && backend !== "cpu") {
    throw new ConfigError(
      `--workers ${cfg.workers} runs each worker on wasm or cpu, but the backend is ${backend}: ` +
        "pass --backend wasm (or --workers 1)",
    );
  }
  if (cfg.batchSize % cfg.workers !== 0) {
    throw new ConfigError(
      `batch size ${cfg.batchSize} does not split across ${cfg.workers} workers: choose a ` +
        "--batch that is a multiple of --workers",
    );
  }
}

/**
 * Seeds derived from the run seed, so that each stream is a pure function of (seed, index):
 * stream 0 is the data order of epoch `index`, 1 the augmentation of step `index`, 2 the online
 * probe's initialisation.
 *
 * @example
 * ```ts
 * const rng = createRng(subSeed(cfg.seed, 1, step)); // the augmentation of step `step`
 * ```
 */
export function subSeed(seed: number, stream: number, index: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77) ^
    Math.imul(index + 1, 0xc2b2ae3d)) >>> 0;
}

/**
 * The images of step t: batch t mod E of epoch t div E, in a permutation seeded by the epoch.
 *
 * @example
 * ```ts
 * const batches = batchOrder(cfg, train, stepsPerEpoch);
 * const { images, labels } = batches(step);
 * ```
 */
export function batchOrder(cfg: PretrainConfig, train: Dataset, stepsPerEpoch: number) {
  const B = cfg.batchSize;
  let perm: Int32Array | undefined;
  let permEpoch = -1;
  return (step: number) => {
    const epoch = Math.floor(step / stepsPerEpoch);
    if (epoch !== permEpoch) {
      perm = permutation(train.length, createRng(subSeed(cfg.seed, 0, epoch)));
      permEpoch = epoch;
    }
    const i = step % stepsPerEpoch;
    return getBatch(train, perm!.subarray(i * B, (i + 1) * B));
  };
}
