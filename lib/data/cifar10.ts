/**
 * CIFAR-10 (32x32 RGB, 10 classes) from its binary version: `data_batch_1.bin` ..
 * `data_batch_5.bin` (train, 50,000 images) and `test_batch.bin` (test, 10,000).
 *
 * Each file is a sequence of 3073-byte records: 1 label byte (0..9), then 3072 pixel bytes as
 * three 32x32 planes (red, green, blue), each row-major. Loading converts them to NHWC: pixel
 * (y, x) channel k of record r is byte `r * 3073 + 1 + k * 1024 + y * 32 + x`. Files may hold any
 * whole number of records (the originals hold 10,000).
 *
 * Get the files: download "CIFAR-10 binary version (suitable for C programs)",
 * `cifar-10-binary.tar.gz`, from https://www.cs.toronto.edu/~kriz/cifar.html and extract it under
 * `data/` (it creates `cifar-10-batches-bin/`), or pass its directory as `root`.
 *
 * @example
 * ```ts
 * import { loadCifar10 } from "./cifar10.ts";
 * const test = await loadCifar10("test"); // 10000 x 32 x 32 x 3
 * ```
 * @module
 */
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DataError, type Dataset, type Split } from "./dataset.ts";

/** CIFAR-10 class names, index = label (as in `batches.meta.txt`). */
export const CIFAR10_CLASSES = [
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
];

const SIDE = 32;
const PLANE = SIDE * SIDE;
const RECORD = 1 + 3 * PLANE;
/** The batch files of each split, in load order. */
export const CIFAR10_FILES: Record<Split, string[]> = {
  train: [1, 2, 3, 4, 5].map((k) => `data_batch_${k}.bin`),
  test: ["test_batch.bin"],
};

const HOW_TO_GET = "download the CIFAR-10 binary version (cifar-10-binary.tar.gz, " +
  "https://www.cs.toronto.edu/~kriz/cifar.html) and extract it so that the directory holds " +
  "data_batch_1.bin .. data_batch_5.bin and test_batch.bin; pass that directory as root";

/** The default root: `data/cifar-10-batches-bin/` at the repository root. */
export function defaultCifar10Root(): string {
  return fileURLToPath(new URL("../../data/cifar-10-batches-bin/", import.meta.url));
}

/** Options of {@link loadCifar10}. */
export interface Cifar10Options {
  /**
   * The directory with the `.bin` files, or one that contains `cifar-10-batches-bin/`. Default
   * `data/cifar-10-batches-bin/` at the repository root.
   */
  root?: string;
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/** Resolves `root` to the directory holding the batch files (accepting the tarball's parent). */
async function batchDir(root: string): Promise<string> {
  if (!(await isDir(root))) {
    throw new DataError(`CIFAR-10 directory ${root} does not exist: ${HOW_TO_GET}`, root);
  }
  const inner = join(root, "cifar-10-batches-bin");
  const hasOwn = await Deno.stat(join(root, "test_batch.bin")).then(() => true, () => false);
  return !hasOwn && (await isDir(inner)) ? inner : root;
}

/**
 * Loads a CIFAR-10 split as NHWC bytes `[N, 32, 32, 3]` (N = 50,000 train, 10,000 test with the
 * original files). Missing files, a length that is not a whole number of 3073-byte records, or a
 * label above 9 throw a {@link DataError} naming the file.
 *
 * @example
 * ```ts
 * const train = await loadCifar10("train", { root: "data/cifar-10-batches-bin" });
 * train.classes[train.labels[0]]; // "frog"
 * ```
 */
export async function loadCifar10(split: Split, opts: Cifar10Options = {}): Promise<Dataset> {
  if (split !== "train" && split !== "test") {
    throw new DataError(`unknown split "${split}": expected "train" or "test"`);
  }
  const dir = await batchDir(opts.root ?? defaultCifar10Root());
  const files = CIFAR10_FILES[split].map((f) => join(dir, f));
  // Check every file's presence and length first, so that the arrays are allocated once.
  const counts: number[] = [];
  for (const file of files) {
    let size: number;
    try {
      size = (await Deno.stat(file)).size;
    } catch {
      throw new DataError(`CIFAR-10 file ${file} is missing: ${HOW_TO_GET}`, file);
    }
    if (size === 0 || size % RECORD !== 0) {
      throw new DataError(
        `CIFAR-10 file ${file} has ${size} bytes, expected a positive multiple of ${RECORD} ` +
          `(1 label byte + 3072 pixel bytes per image; 30730000 for 10,000 images). It may be ` +
          `truncated or from the Python/Matlab version: ${HOW_TO_GET}`,
        file,
      );
    }
    counts.push(size / RECORD);
  }
  const n = counts.reduce((a, b) => a + b, 0);
  const images = new Uint8Array(n * PLANE * 3);
  const labels = new Int32Array(n);
  let i = 0;
  for (let f = 0; f < files.length; f++) {
    const bytes = await Deno.readFile(files[f]);
    if (bytes.length !== counts[f] * RECORD) {
      throw new DataError(`CIFAR-10 file ${files[f]} changed while being read`, files[f]);
    }
    for (let r = 0; r < counts[f]; r++, i++) {
      const rec = r * RECORD;
      const label = bytes[rec];
      if (label > 9) {
        throw new DataError(
          `CIFAR-10 file ${files[f]}: record ${r} (byte ${rec}) has label ${label}, expected ` +
            `0..9. CIFAR-100's binary files have 2 label bytes per record and are not supported: ` +
            HOW_TO_GET,
          files[f],
        );
      }
      labels[i] = label;
      const out = i * PLANE * 3;
      for (let p = 0; p < PLANE; p++) {
        const q = out + p * 3;
        images[q] = bytes[rec + 1 + p];
        images[q + 1] = bytes[rec + 1 + PLANE + p];
        images[q + 2] = bytes[rec + 1 + 2 * PLANE + p];
      }
    }
  }
  return {
    name: "cifar10",
    split,
    length: n,
    height: SIDE,
    width: SIDE,
    channels: 3,
    classes: [...CIFAR10_CLASSES],
    images,
    labels,
  };
}
