/**
 * Honest evaluation on an unsplit ImageFolder (issue 21, item 5): a tree without `train/` and
 * `test/` gets a held-out test split, 20% of each class, by a fixed split seed, disjoint from the
 * train split, so that no kNN ever scores the images it trained on; split folders behave as
 * before; pretraining says which split it used and records it in config.json. Also: a zero-byte
 * image is reported as an empty file.
 *
 * Every image here encodes its own identity in its pixels (class in red, index in green), so the
 * tests tell the images of a split apart without the loader's help.
 */
import { assert, assertEquals, assertNotEquals, assertRejects } from "@std/assert";
import { PNG } from "pngjs";
import { join } from "node:path";
import { DataError, type Dataset, loadDataset, loadImageFolder } from "../../lib/data/mod.ts";
import { heldOutCount } from "../../lib/data/imagefolder.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { createRng } from "../../lib/core/rng.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

const dirs: string[] = [];
removeOnUnload(dirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_split_" });
  dirs.push(d);
  return d;
}

/** A 2x2 PNG whose every pixel is (r, g, b). */
function png(r: number, g: number, b = 0): Uint8Array {
  const img = new PNG({ width: 2, height: 2 });
  for (let p = 0; p < 4; p++) img.data.set([r, g, b, 255], p * 4);
  return new Uint8Array(PNG.sync.write(img));
}

/** Writes `counts[c]` images into class folder `names[c]` under `root` (red c, green i). */
async function writeClasses(root: string, names: string[], counts: number[]): Promise<void> {
  for (const [c, name] of names.entries()) {
    await Deno.mkdir(join(root, name), { recursive: true });
    for (let i = 0; i < counts[c]; i++) {
      await Deno.writeFile(join(root, name, `img_${String(i).padStart(3, "0")}.png`), png(c, i));
    }
  }
}

/** The identities "class:index" of a split's images, read from their pixels. */
function ids(ds: Dataset): string[] {
  const size = ds.height * ds.width * ds.channels;
  return Array.from({ length: ds.length }, (_, i) => {
    const [r, g] = ds.images.subarray(i * size, i * size + 2);
    assertEquals(ds.labels[i], r, "the label is the class folder");
    return `${r}:${g}`;
  });
}

function perClass(ds: Dataset): number[] {
  const n = new Array(ds.classes.length).fill(0);
  for (const l of ds.labels) n[l]++;
  return n;
}

const NAMES = ["ant", "bee", "cow", "dog"];
const COUNTS = [10, 5, 3, 1];

Deno.test("imagefolder, no split folders: a held-out 20% per class, disjoint, complete, by a fixed seed", async () => {
  const root = await tempDir();
  await writeClasses(root, NAMES, COUNTS);
  const load = (split: "train" | "test", seed = 0) =>
    loadDataset({ name: "imagefolder", root, split, seed });
  const train = await load("train"), test = await load("test");
  // 20% of 10, 5, 3, 1 rounded, at least one from a class of two or more, never all: 2, 1, 1, 0.
  assertEquals(perClass(test), [2, 1, 1, 0]);
  assertEquals(perClass(train), [8, 4, 2, 1]);
  assertEquals([1, 2, 3, 4, 5, 7, 8, 10, 13].map(heldOutCount), [0, 1, 1, 1, 1, 1, 2, 2, 3]);
  const trainIds = ids(train), testIds = ids(test);
  assertEquals(trainIds.filter((id) => testIds.includes(id)), [], "no image is in both");
  const all = COUNTS.flatMap((n, c) => Array.from({ length: n }, (_, i) => `${c}:${i}`));
  assertEquals([...trainIds, ...testIds].sort(), all.sort(), "every image is in one of them");
  assertEquals(train.classes, NAMES);
  assertEquals(test.classes, NAMES);
  assertEquals([train.split, test.split], ["train", "test"]);
  assertEquals(train.splitRule, "held-out 20% per class (seed 0)");
  assertEquals(test.splitRule, "held-out 20% per class (seed 0)");

  // The same split every time, whatever the run's seed, size or channels.
  assertEquals(ids(await load("test", 7)), testIds);
  assertEquals(ids(await load("train", 123)), trainIds);
  const small = await loadDataset({ name: "imagefolder", root, split: "test", imageSize: 1 });
  assertEquals(small.length, test.length);
  assertEquals([...small.labels], [...test.labels]);
  // ... and whatever other images a class gains: the held-out images of the other classes stay.
  await Deno.writeFile(join(root, "ant", "img_999.png"), png(0, 99));
  const grown = ids(await load("test"));
  const other = (l: string[]) => l.filter((id) => !id.startsWith("0:"));
  assertEquals(other(grown), other(testIds));
  // ... and its own held-out images change by at most the one at the boundary.
  const ant = (l: string[]) => l.filter((id) => id.startsWith("0:"));
  assertEquals(ant(grown).length, 2);
  assert(ant(grown).filter((id) => ant(testIds).includes(id)).length >= 1, grown.join());

  // Not a fixed slice: the held-out images of the 10-image class are not its first or last two.
  const antTest = testIds.filter((id) => id.startsWith("0:")).sort();
  assertNotEquals(antTest, ["0:0", "0:1"]);
  assertNotEquals(antTest, ["0:8", "0:9"]);

  // Without a split asked for, the loader gives every image.
  const whole = await loadImageFolder({ root });
  assertEquals(whole.length, 20);
  assertEquals(whole.splitRule, "none");
});

Deno.test("imagefolder, train/ and test/ folders: read as they are (splitRule folders)", async () => {
  const root = await tempDir();
  await writeClasses(join(root, "train"), ["a", "b"], [5, 5]);
  await writeClasses(join(root, "test"), ["a", "b"], [2, 3]);
  const train = await loadDataset({ name: "imagefolder", root, split: "train" });
  const test = await loadDataset({ name: "imagefolder", root, split: "test" });
  assertEquals(perClass(train), [5, 5]);
  assertEquals(perClass(test), [2, 3]);
  assertEquals(ids(test), ["0:0", "0:1", "1:0", "1:1", "1:2"], "all of test/, in name order");
  assertEquals([train.splitRule, test.splitRule], ["folders", "folders"]);
});

Deno.test("imagefolder: too few images to hold out a test split is one clear error", async () => {
  const root = await tempDir();
  await writeClasses(root, ["a", "b"], [1, 1]);
  assertEquals((await loadDataset({ name: "imagefolder", root, split: "train" })).length, 2);
  const e = await assertRejects(
    () => loadDataset({ name: "imagefolder", root, split: "test" }),
    DataError,
  );
  assert(e.message.startsWith(`image folder ${root} has no train/ and test/ folders and too few`));
  assert(e.message.includes(`split them into ${root}/train/<class>/ and ${root}/test/<class>/`));
});

Deno.test("imagefolder: a zero-byte image is reported as an empty file", async () => {
  const root = await tempDir();
  await writeClasses(root, ["a"], [2]);
  const empty = join(root, "a", "img_000.png");
  await Deno.writeFile(empty, new Uint8Array(0));
  const e = await assertRejects(() => loadImageFolder({ root }), DataError);
  assertEquals(
    e.message,
    `${empty} is an empty file (0 bytes), not an image: replace or remove it (an interrupted ` +
      "copy or download leaves such files)",
  );
});

Deno.test("pretrain on an unsplit folder of noise: says so in one line, records the split, kNN near chance", async () => {
  // 3 classes of 25 random-noise images: a label cannot be told from the pixels, so any kNN score
  // well above chance (33%) would mean the queries were in the bank.
  const root = await tempDir();
  const rng = createRng(21);
  for (const name of ["x", "y", "z"]) {
    await Deno.mkdir(join(root, name));
    for (let i = 0; i < 25; i++) {
      const img = new PNG({ width: 28, height: 28 });
      for (let p = 0; p < 28 * 28; p++) {
        const v = Math.floor(rng.uniform() * 256);
        img.data.set([v, v, v, 255], p * 4);
      }
      await Deno.writeFile(join(root, name, `${i}.png`), new Uint8Array(PNG.sync.write(img)));
    }
  }
  const out = join(await tempDir(), "run");
  const lines: string[] = [];
  const res = await pretrain(
    resolveConfig({
      preset: "smoke",
      backend: "wasm",
      dataset: "imagefolder",
      dataRoot: root,
      imageSize: 28,
      channels: 1,
      maxSteps: 2,
      outDir: out,
      finalEval: "knn",
    }),
    { print: (l) => lines.push(l), baselineCacheDir: null },
  );
  const said = lines.filter((l) => l.startsWith("data: "));
  assertEquals(said, [
    `data: imagefolder ${root} has no train/ and test/ folders: the test split is held-out 20% ` +
    "per class (seed 0), never trained on: 60 train / 15 test images",
  ]);
  const config = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
  assertEquals(config.resolved.split, "held-out 20% per class (seed 0)");
  const final = lines.find((l) => l.startsWith("final evaluation, top-1"));
  assert(final?.includes("(60 train / 15 test images)"), final);
  // 15 queries by chance: the expected score is 33%; all 15 of them in the bank gave 100%.
  assert(res.knnTop1! < 70, `kNN top-1 ${res.knnTop1}% on noise`);
});
