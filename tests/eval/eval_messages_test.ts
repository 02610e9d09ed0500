/**
 * `deno task eval` on what a user is likely to give it (issue 21, smaller messages and item 5):
 * a run directory as `--checkpoint` (its backbone is used), a directory without one (a line that
 * says what to give), images that do not fit the backbone (a line naming the flags that convert
 * them), and an unsplit ImageFolder, whose rows record the held-out split they were scored on.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { PNG } from "pngjs";
import { basename, join } from "node:path";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { main as evalMain } from "../../lib/cli/eval.ts";
import { checkpointFile, evaluate } from "../../lib/cli/eval_run.ts";
import { readResults } from "../../lib/eval/results.ts";
import { createViT, disposeViT, vitForward } from "../../lib/model/vit.ts";
import { initBackend } from "../../lib/backends/mod.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

await initBackend({ backend: "wasm" });

const dirs: string[] = [];
removeOnUnload(dirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_eval_msg_" });
  dirs.push(d);
  return d;
}

/** A finished 2-step smoke run (28x28 gray, vit_nano), made once. */
let runDir: Promise<string> | undefined;
function run(): Promise<string> {
  runDir ??= (async () => {
    const dir = join(await tempDir(), "smoke-run");
    const cfg = resolveConfig({
      preset: "smoke",
      backend: "wasm",
      maxSteps: 2,
      finalEval: "none",
      outDir: dir,
    });
    await pretrain(cfg, { print: () => {} });
    return dir;
  })();
  return runDir;
}

/** An unsplit ImageFolder of 8x8 RGB images: 2 classes of 10. */
async function rgbTree(): Promise<string> {
  const root = await tempDir();
  for (const [c, name] of ["left", "right"].entries()) {
    await Deno.mkdir(join(root, name));
    for (let i = 0; i < 10; i++) {
      const img = new PNG({ width: 8, height: 8 });
      for (let p = 0; p < 64; p++) img.data.set([c * 200, i * 20, (p * 4) % 256, 255], p * 4);
      await Deno.writeFile(join(root, name, `${i}.png`), new Uint8Array(PNG.sync.write(img)));
    }
  }
  return root;
}

/** Runs the eval CLI in process with its output silenced; the error it throws. */
async function evalError(args: string[]): Promise<Error> {
  const log = console.log;
  console.log = () => {};
  try {
    return await assertRejects(() => evalMain(args)) as Error;
  } finally {
    console.log = log;
  }
}

Deno.test("eval --checkpoint DIR: a run directory means its backbone; other directories say what to give", async () => {
  const dir = await run();
  assertEquals(await checkpointFile(dir), `${dir}/backbone.safetensors`);
  assertEquals(await checkpointFile(`${dir}/`), `${dir}/backbone.safetensors`);
  assertEquals(
    await checkpointFile(`${dir}/checkpoint.safetensors`),
    `${dir}/checkpoint.safetensors`,
  );
  const empty = await tempDir();
  const results = join(empty, "eval.csv");
  const e = await evalError(["--checkpoint", empty, "--results", results]);
  assertEquals(e.name, "CheckpointError");
  assertEquals(
    e.message,
    `--checkpoint ${empty} is a directory without backbone.safetensors or ` +
      "checkpoint.safetensors: give a run directory that has them, or a .safetensors file",
  );
});

Deno.test("eval: images that do not fit the backbone name the flags that convert them", async () => {
  const dir = await run();
  const root = await rgbTree();
  const results = join(await tempDir(), "eval.csv");
  const args = ["--checkpoint", dir, "--dataset", "imagefolder", "--data-root", root];
  // Without flags the images are converted to the checkpoint's input (one line says so).
  const lines: string[] = [];
  const rows = await evaluate({
    checkpoint: dir,
    dataset: "imagefolder",
    dataRoot: root,
    protocols: ["knn"],
    k: [1],
    resultsFile: results,
    print: (l) => lines.push(l),
  });
  assertEquals(rows.length, 1);
  assert(
    lines.includes(
      "data: imagefolder read at 28x28x1, the checkpoint's input (--image-size and --channels " +
        "override)",
    ),
    lines.join("\n"),
  );
  await Deno.remove(results);
  // Flags that contradict the checkpoint are refused, naming the flags that would fit.
  const e = await evalError([
    ...args,
    "--image-size",
    "8",
    "--channels",
    "3",
    "--backend",
    "wasm",
    "--results",
    results,
  ]);
  assertEquals(e.name, "ConfigError");
  assertEquals(
    e.message,
    `${dir}/backbone.safetensors takes 28x28x1 images but imagefolder has 8x8x3: give the ` +
      "--dataset it was pretrained on (its run's config.json names it, with any --image-size " +
      "and --channels), or convert these images with --image-size 28 --channels 1",
  );
  // Only the channels differ: only that flag is named.
  const e2 = await evalError([
    ...args,
    "--image-size",
    "28",
    "--channels",
    "3",
    "--backend",
    "wasm",
    "--results",
    results,
  ]);
  assertStringIncludes(e2.message, "but imagefolder has 28x28x3");
  assert(e2.message.endsWith("convert these images with --channels 1"), e2.message);
  assertEquals(await Deno.stat(results).then(() => true, () => false), false, "no row written");

  // The model's own check, for library callers, names both routes.
  const vit = createViT({ name: "vit_nano", imageSize: 28, channels: 1, patchSize: 7 }, 0);
  try {
    const x = tf.zeros([1, 8, 8, 3]) as tf.Tensor4D;
    const err = (() => {
      try {
        tf.tidy(() => vitForward(vit, x).features);
      } catch (e) {
        return e as Error;
      } finally {
        x.dispose();
      }
    })();
    assertEquals(
      err?.message,
      "input is 8x8x3 but the model expects 28x28x1: convert the images to that size and those " +
        "channels (loadDataset's imageSize and channels; --image-size and --channels on the " +
        "command line)",
    );
  } finally {
    disposeViT(vit);
  }
});

Deno.test("eval on an unsplit ImageFolder: scored on the held-out 20%, and every row says so", async () => {
  const dir = await run();
  const root = await rgbTree();
  const tmp = await tempDir();
  const lines: string[] = [];
  const rows = await evaluate({
    checkpoint: dir,
    protocols: ["knn"],
    dataset: "imagefolder",
    dataRoot: root,
    imageSize: 28,
    channels: 1,
    k: [3],
    resultsFile: join(tmp, "eval.csv"),
    cacheDir: join(tmp, "features"),
    print: (l) => lines.push(l),
  });
  assertEquals(lines[0], `checkpoint: ${dir}/backbone.safetensors`);
  assertEquals(
    lines[1],
    `data: imagefolder ${root} has no train/ and test/ folders: the test split is held-out 20% ` +
      "per class (seed 0), never trained on: 16 train / 4 test images",
  );
  assertEquals(rows.length, 1);
  assertEquals(rows[0].run_id, basename(dir));
  assertEquals(rows[0].checkpoint, `${dir}/backbone.safetensors`);
  assertEquals(rows[0].params, {
    k: 3,
    temperature: 0.07,
    split: "held-out 20% per class (seed 0)",
  });
  // 4 queries: top-1 is a multiple of 1/4.
  assertEquals(Math.round(rows[0].top1 * 4), rows[0].top1 * 4);
  const table = (await readResults(join(tmp, "eval.csv"))).objects() as { params: string }[];
  assertEquals(JSON.parse(table[0].params).split, "held-out 20% per class (seed 0)");
});
