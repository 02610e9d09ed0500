/**
 * Memory (issue "Reliability", item 4): `tf.memory()` stays flat over 500 training steps of
 * `pretrain` itself (the loop of `deno task pretrain`, with its kNN monitor and checkpoints
 * inside the window) and over a whole evaluation (features, kNN, linear probe, fine-tuning,
 * baselines). Peak RSS per workload is what `deno task bench` prints (lib/bench/run.ts).
 *
 * Related: tests/model/vit_test.ts and tests/methods/mocov3_test.ts check single steps for leaks.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { saveBackbone } from "../../lib/train/checkpoint.ts";
import { evaluate } from "../../lib/cli/eval_run.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { createViT, disposeViT } from "../../lib/model/vit.ts";

type Mem = { numTensors: number; numBytes: number };
const mem = (): Mem => {
  const { numTensors, numBytes } = tf.memory();
  return { numTensors, numBytes };
};
const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;

Deno.test("memory: tf.memory() is identical after step 10 and every step up to 500 of pretrain", async () => {
  await initBackend({ backend: "wasm" });
  const dir = await Deno.makeTempDir({ prefix: "vitssl_memory_" });
  try {
    // A tiny model (14x14 images, 4 patches, width 16, one block) so 500 steps take seconds;
    // 8 steps an epoch, a kNN monitor and a checkpoint every 100 steps.
    const cfg = resolveConfig({
      preset: "smoke",
      backend: "wasm",
      outDir: dir,
      syntheticSize: 64,
      imageSize: 14,
      patchSize: 7,
      dim: 16,
      depth: 1,
      heads: 2,
      hidden: 16,
      outDim: 8,
      batchSize: 8,
      epochs: 63,
      warmupEpochs: 1,
      maxSteps: 500,
      checkpointEvery: 100,
      knnEvery: 100,
      finalEval: "none",
    });
    const before = mem();
    const seen: Mem[] = [];
    let rss10 = 0;
    const t0 = performance.now();
    const r = await pretrain(cfg, {
      print: () => {},
      onStep: (row) => {
        seen[row.step] = mem();
        if (row.step === 9) rss10 = Deno.memoryUsage().rss;
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    assertEquals(r.steps, 500);
    assertEquals(seen.length, 500);
    const at10 = seen[9];
    for (let s = 9; s < 500; s++) {
      assertEquals(seen[s], at10, `tf.memory() after step ${s + 1} differs from after step 10`);
    }
    // The model and the optimiser state are freed when the run ends.
    assertEquals(mem(), before, "tf.memory() after pretrain returned");
    const rss = Deno.memoryUsage().rss;
    console.log(
      `500 steps in ${seconds.toFixed(1)} s; ${at10.numTensors} tensors, ${at10.numBytes} bytes ` +
        `at steps 10..500; RSS ${mib(rss10)} at step 10, ${mib(rss)} after step 500`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("memory: a whole evaluation (features, kNN, linear probe, fine-tuning, baselines) leaves tf.memory() as it found it", async () => {
  await initBackend({ backend: "wasm" });
  const dir = await Deno.makeTempDir({ prefix: "vitssl_memory_eval_" });
  try {
    const model = createViT(
      { name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1, dim: 16, depth: 1, heads: 2 },
      3,
    );
    await saveBackbone(`${dir}/backbone.safetensors`, model);
    disposeViT(model);
    const opts = {
      checkpoint: `${dir}/backbone.safetensors`,
      dataset: "synthetic" as const,
      protocols: ["knn", "linear", "finetune"] as ("knn" | "linear" | "finetune")[],
      baselines: true,
      k: [20],
      linearEpochs: 2,
      finetuneEpochs: 1,
      finetuneTrainSize: 256,
      cacheDir: `${dir}/cache`,
      resultsFile: `${dir}/eval.csv`,
      print: () => {},
    };
    const before = mem();
    const t0 = performance.now();
    const rows = await evaluate(opts);
    const first = (performance.now() - t0) / 1000;
    // knn + linear + finetune for the checkpoint and the random-init model, knn + linear for
    // raw pixels.
    assertEquals(rows.length, 3 + 3 + 2);
    assertEquals(mem(), before, "tf.memory() after the evaluation");
    assert(rows.every((r) => r.top1 >= 0 && r.top1 <= 1));
    console.log(
      `evaluation: ${first.toFixed(1)} s, ${before.numTensors} tensors / ${before.numBytes} ` +
        `bytes before and after; RSS ${mib(Deno.memoryUsage().rss)}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
