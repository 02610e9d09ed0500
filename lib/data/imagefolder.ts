/**
 * Any labelled image collection laid out as `root/<class>/<image>.png|jpg|jpeg` (torchvision's
 * ImageFolder layout), decoded with `pngjs` and `jpeg-js`.
 *
 * - Splits: when `root` has a `train/` or `test/` folder, the split's folder is read
 *   (`root/train/<class>/...`; `splitRule: "folders"`). Otherwise a split is held out of the tree,
 *   so that no evaluation ever scores the images it trained on: {@link HELD_OUT_FRACTION} (20%)
 *   of each class is the test split and the rest the train split (`splitRule: "held-out 20% per
 *   class (seed 0)"`), see {@link heldOutCount} and {@link heldOutRank}. The split seed is
 *   {@link HELD_OUT_SEED}, fixed and not the run's seed, so that every run (and every evaluation
 *   of it) of one tree uses the same test images. Without `split`, an unsplit tree gives every
 *   image (`splitRule: "none"`).
 * - Classes: sorted subdirectory names (code-unit order). With split folders, the union of both
 *   splits' class folders, so a label means the same class in train and test.
 * - Images: the files directly inside each class folder whose name ends in .png, .jpg or .jpeg
 *   (any case; hidden files skipped), sorted by name; the format is told by the file's first
 *   bytes. Decoded to RGBA, then converted to `channels` (RGBA to RGB drops alpha; to gray by
 *   luminance 0.299 R + 0.587 G + 0.114 B) and resized to `imageSize x imageSize` (bilinear,
 *   antialiased when shrinking; the aspect ratio is not kept). Without `imageSize` every image
 *   must have the size of the first.
 *
 * @example
 * ```ts
 * import { loadImageFolder } from "./imagefolder.ts";
 * const ds = await loadImageFolder({ root: "data/pets", imageSize: 64, channels: 3 });
 * console.log(ds.length, ds.classes);
 * ```
 * @module
 */
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import { Buffer } from "node:buffer";
import { basename, join } from "node:path";
import { DataError, type Dataset, type Split } from "./dataset.ts";
import { convertChannels, resizeBilinear } from "./image.ts";

/** Options of {@link loadImageFolder}. */
export interface ImageFolderOptions {
  /** The folder holding `<class>/` folders, or `train/` and `test/` folders of them. */
  root: string;
  /** Resize every image to this square size; default: keep the size (all must agree). */
  imageSize?: number;
  /** 1 (gray) or 3 (RGB); default 3. */
  channels?: 1 | 3;
  /**
   * Which split: the `train/` or `test/` folder, or the part of an unsplit tree held in or out
   * ({@link HELD_OUT_FRACTION}). Default: `train/` with split folders, every image without.
   */
  split?: Split;
}

/** The share of each class an unsplit tree holds out as its test split. */
export const HELD_OUT_FRACTION = 0.2;
/** The seed of that held-out split: fixed, so every run of a tree tests on the same images. */
export const HELD_OUT_SEED = 0;
/** The `splitRule` of a held-out split. */
export const HELD_OUT_RULE = `held-out ${
  100 * HELD_OUT_FRACTION
}% per class (seed ${HELD_OUT_SEED})`;

/**
 * How many of a class's `n` images the held-out test split takes: {@link HELD_OUT_FRACTION} of
 * them, rounded, but at least one when the class has two or more, and never all of them.
 *
 * @example
 * ```ts
 * [1, 2, 3, 10, 13].map(heldOutCount); // [0, 1, 1, 2, 3]
 * ```
 */
export function heldOutCount(n: number): number {
  if (n < 2) return 0;
  return Math.min(n - 1, Math.max(1, Math.round(n * HELD_OUT_FRACTION)));
}

/**
 * The rank that orders a class's images for the held-out split (the lowest ranks are the test
 * images): a 32-bit hash of the seed and `class/file name`. It depends on the names only, so the
 * split is the same whatever the listing order, and adding an image moves at most the one image
 * at the boundary of its class.
 *
 * @example
 * ```ts
 * heldOutRank(0, "cat", "001.png"); // an integer in [0, 2^32)
 * ```
 */
export function heldOutRank(seed: number, className: string, fileName: string): number {
  // FNV-1a over the UTF-16 code units, then murmur3's finaliser with the seed mixed in.
  let h = 0x811c9dc5;
  const text = `${className}/${fileName}`;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  h = (h ^ Math.imul(seed + 1, 0x9e3779b1)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/**
 * One line saying which split an evaluation uses, for an ImageFolder (`splitRule` set); `""` for
 * datasets with their own split files.
 *
 * @example
 * ```ts
 * splitLine(train, test, "data/pets");
 * // "data: imagefolder data/pets has no train/ and test/ folders: the test split is held-out
 * //  20% per class (seed 0), never trained on: 80 train / 20 test images"
 * ```
 */
export function splitLine(train: Dataset, test: Dataset, root?: string): string {
  if (!train.splitRule) return "";
  const how = train.splitRule === HELD_OUT_RULE
    ? ` has no train/ and test/ folders: the test split is ${train.splitRule}, never trained on`
    : train.splitRule === "folders"
    ? ", split by its train/ and test/ folders"
    : `, split: ${train.splitRule}`;
  return `data: ${train.name} ${root ?? ""}${how}: ${train.length} train / ${test.length} test ` +
    "images";
}

/** The files of one class that a held-out split keeps: the test part, or the rest. */
function heldOutPart(className: string, files: string[], split: Split): string[] {
  const ranked = files.map((f) => ({ f, r: heldOutRank(HELD_OUT_SEED, className, basename(f)) }))
    .sort((a, b) => a.r - b.r || byCodeUnit(a.f, b.f));
  const test = new Set(ranked.slice(0, heldOutCount(files.length)).map((x) => x.f));
  return files.filter((f) => test.has(f) === (split === "test"));
}

const IMAGE_EXT = /\.(png|jpe?g)$/i;

async function subdirs(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".")) continue;
    const isDir = e.isDirectory ||
      (e.isSymlink && (await Deno.stat(join(dir, e.name)).then((s) => s.isDirectory, () => false)));
    if (isDir) names.push(e.name);
  }
  return names.sort(byCodeUnit);
}

function byCodeUnit(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function imageFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.name.startsWith(".") || !IMAGE_EXT.test(e.name) || e.isDirectory) continue;
    names.push(e.name);
  }
  return names.sort(byCodeUnit).map((n) => join(dir, n));
}

async function isDir(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isDirectory;
  } catch {
    return false;
  }
}

/**
 * The largest image {@link decodeImage} decodes, in pixels (its RGBA buffer is 4 bytes a
 * pixel): a corrupt or hostile header cannot make it allocate more.
 */
export const MAX_IMAGE_PIXELS = 40_000_000;

/** Channels of each PNG colour type (gray, -, RGB, palette, gray+alpha, -, RGBA). */
const PNG_CHANNELS: Record<number, number> = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 };

/**
 * Checks a PNG's header before pngjs allocates for it: the IHDR chunk must come first, and the
 * size it claims must fit under {@link MAX_IMAGE_PIXELS} and be reachable from the file's length
 * (deflate expands at most 1032:1). pngjs itself trusts the header and allocates width x height
 * x 4 bytes even for a 100-byte file.
 */
function checkPngHeader(bytes: Uint8Array, file: string): void {
  const fail = (why: string) =>
    new DataError(`cannot decode ${file} as PNG (${why}): replace or remove the file`, file);
  const type = new TextDecoder().decode(bytes.subarray(12, 16));
  if (bytes.length < 33 || type !== "IHDR") throw fail("no IHDR chunk after the signature");
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const width = v.getUint32(16), height = v.getUint32(20);
  const depth = bytes[24], channels = PNG_CHANNELS[bytes[25]];
  if (width === 0 || height === 0 || !channels || ![1, 2, 4, 8, 16].includes(depth)) {
    throw fail(`invalid header: ${width}x${height}, bit depth ${depth}, colour type ${bytes[25]}`);
  }
  if (width * height > MAX_IMAGE_PIXELS) {
    throw fail(
      `${width}x${height} is over the limit of ${MAX_IMAGE_PIXELS} pixels; resize it first`,
    );
  }
  const raw = height * (1 + Math.ceil((width * channels * depth) / 8));
  if (raw > 1032 * bytes.length + 4096) {
    throw fail(
      `its header claims ${width}x${height} pixels, more than ${bytes.length} bytes can hold; ` +
        "the file is corrupt",
    );
  }
}

/**
 * Checks a JPEG's frame header (SOFn) before jpeg-js allocates for it: the size it claims must
 * fit under {@link MAX_IMAGE_PIXELS} and be reachable from the file's length. Every 8x8 block of
 * the full-resolution component takes at least one bit (its DC code), so a file of n bytes holds
 * at most 512 n pixels; jpeg-js itself allocates for the stated size before reading any data.
 */
function checkJpegHeader(bytes: Uint8Array, file: string): void {
  let p = 2;
  while (p + 9 <= bytes.length && bytes[p] === 0xff) {
    const marker = bytes[p + 1];
    if (marker === 0xff) {
      p++; // fill byte
      continue;
    }
    if (marker === 0xd8 || marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) {
      p += 2;
      continue;
    }
    if (marker === 0xda || marker === 0xd9) return; // scan or end before a frame: jpeg-js fails
    const isFrame = marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker);
    if (isFrame) {
      const height = (bytes[p + 5] << 8) | bytes[p + 6];
      const width = (bytes[p + 7] << 8) | bytes[p + 8];
      const why = width * height > MAX_IMAGE_PIXELS
        ? `${width}x${height} is over the limit of ${MAX_IMAGE_PIXELS} pixels; resize it first`
        : width * height > 1024 * bytes.length
        ? `its header claims ${width}x${height} pixels, more than ${bytes.length} bytes can ` +
          "hold; the file is corrupt or truncated"
        : "";
      if (why) {
        throw new DataError(`cannot decode ${file} as JPEG (${why}): replace or remove it`, file);
      }
      return;
    }
    p += 2 + ((bytes[p + 2] << 8) | bytes[p + 3]);
  }
}

/**
 * Decodes a PNG or JPEG file's bytes to RGBA; throws a {@link DataError} naming `file` for
 * anything that is not a valid image of at most {@link MAX_IMAGE_PIXELS} pixels.
 */
export function decodeImage(
  bytes: Uint8Array,
  file: string,
): { width: number; height: number; rgba: Uint8Array } {
  if (bytes.length === 0) {
    throw new DataError(
      `${file} is an empty file (0 bytes), not an image: replace or remove it (an interrupted ` +
        "copy or download leaves such files)",
      file,
    );
  }
  const isPng = bytes.length >= 8 && bytes[0] === 0x89 && bytes[1] === 0x50 &&
    bytes[2] === 0x4e && bytes[3] === 0x47;
  const isJpeg = bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8;
  if (!isPng && !isJpeg) {
    throw new DataError(
      `${file} is not a PNG or JPEG image (its first bytes are neither signature): replace or ` +
        "remove the file",
      file,
    );
  }
  if (isPng) checkPngHeader(bytes, file);
  else checkJpegHeader(bytes, file);
  try {
    if (isPng) {
      // pngjs reads with Buffer methods: wrap the bytes (no copy).
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length));
      return { width: png.width, height: png.height, rgba: new Uint8Array(png.data) };
    }
    const img = jpeg.decode(bytes, {
      useTArray: true,
      formatAsRGBA: true,
      tolerantDecoding: false,
      maxResolutionInMP: MAX_IMAGE_PIXELS / 1e6,
      maxMemoryUsageInMB: 1024,
    });
    return { width: img.width, height: img.height, rgba: img.data };
  } catch (e) {
    throw new DataError(
      `cannot decode ${file} as ${isPng ? "PNG" : "JPEG"} (${
        e instanceof Error ? e.message : e
      }): ` +
        "the file is corrupt or truncated; replace or remove it",
      file,
    );
  }
}

/**
 * Loads an ImageFolder tree as NHWC bytes `[N, imageSize, imageSize, channels]` (or the images'
 * common size without `imageSize`), labels from the class folder names.
 *
 * @example
 * ```ts
 * const test = await loadImageFolder({ root: "data/flowers", split: "test", imageSize: 32 });
 * ```
 */
export async function loadImageFolder(opts: ImageFolderOptions): Promise<Dataset> {
  const { root, imageSize } = opts;
  const split = opts.split ?? "train";
  let splitRule = "folders";
  const channels = opts.channels ?? 3;
  if (channels !== 1 && channels !== 3) {
    throw new DataError(`imagefolder: channels must be 1 or 3, got ${channels}`);
  }
  if (imageSize !== undefined && !(Number.isInteger(imageSize) && imageSize >= 1)) {
    throw new DataError(`imagefolder: imageSize must be a positive integer, got ${imageSize}`);
  }
  if (!(await isDir(root))) {
    throw new DataError(
      `image folder ${root} does not exist or is not a directory: expected ` +
        "root/<class>/<image>.png|jpg (or root/train/<class>/..., root/test/<class>/...)",
      root,
    );
  }
  // Split layout or a plain tree.
  const splitDirs = { train: join(root, "train"), test: join(root, "test") };
  const hasSplits = (await isDir(splitDirs.train)) || (await isDir(splitDirs.test));
  let dir = root;
  let classes: string[];
  if (hasSplits) {
    dir = splitDirs[split];
    if (!(await isDir(dir))) {
      throw new DataError(
        `image folder ${root} has a train/ or test/ folder but no ${split}/ folder: add ` +
          `${dir}/<class>/<image>.png, or point root at a tree without split folders`,
        dir,
      );
    }
    const names = new Set<string>();
    for (const d of Object.values(splitDirs)) {
      if (await isDir(d)) { for (const n of await subdirs(d)) names.add(n); }
    }
    classes = [...names].sort(byCodeUnit);
  } else {
    classes = await subdirs(root);
    splitRule = opts.split ? HELD_OUT_RULE : "none";
  }
  if (classes.length === 0) {
    throw new DataError(
      `image folder ${dir} has no class subfolders: expected ${dir}/<class>/<image>.png|jpg`,
      dir,
    );
  }
  const perClass: string[][] = [];
  for (let c = 0; c < classes.length; c++) {
    const classDir = join(dir, classes[c]);
    // A class present only in the other split has no folder here.
    perClass.push((await isDir(classDir)) ? await imageFiles(classDir) : []);
  }
  if (perClass.every((f) => f.length === 0)) {
    throw new DataError(
      `image folder ${dir} has no .png/.jpg/.jpeg images in its class folders ` +
        `(${classes.join(", ")}): expected ${dir}/<class>/<image>.png|jpg`,
      dir,
    );
  }
  const files: string[] = [];
  const fileLabels: number[] = [];
  for (let c = 0; c < classes.length; c++) {
    const part = splitRule === HELD_OUT_RULE
      ? heldOutPart(classes[c], perClass[c], split)
      : perClass[c];
    for (const f of part) {
      files.push(f);
      fileLabels.push(c);
    }
  }
  if (files.length === 0) {
    throw new DataError(
      `image folder ${root} has no train/ and test/ folders and too few images to hold out a ` +
        `test split (every class has one image; a class gives its test split ` +
        `${100 * HELD_OUT_FRACTION}% of its images, at least one when it has two or more): add ` +
        `images, or split them into ${root}/train/<class>/ and ${root}/test/<class>/`,
      root,
    );
  }

  let height = imageSize ?? 0;
  let width = imageSize ?? 0;
  let first = "";
  let images = new Uint8Array(0);
  for (let i = 0; i < files.length; i++) {
    const file = files[i];
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(file);
    } catch (e) {
      throw new DataError(
        `cannot read ${file}: ${e instanceof Error ? e.message : e}; check its permissions`,
        file,
      );
    }
    const img = decodeImage(bytes, file);
    if (i === 0) {
      first = file;
      if (imageSize === undefined) {
        height = img.height;
        width = img.width;
      }
      images = new Uint8Array(files.length * height * width * channels);
    } else if (imageSize === undefined && (img.height !== height || img.width !== width)) {
      throw new DataError(
        `${file} is ${img.width}x${img.height} but ${first} (the first image) is ` +
          `${width}x${height}: pass imageSize to resize every image, or make them one size`,
        file,
      );
    }
    let px = convertChannels(img.rgba, img.height, img.width, 4, channels);
    px = resizeBilinear(px, img.height, img.width, channels, height, width);
    images.set(px, i * height * width * channels);
  }
  return {
    name: "imagefolder",
    split,
    splitRule,
    length: files.length,
    height,
    width,
    channels,
    classes,
    images,
    labels: Int32Array.from(fileLabels),
  };
}
