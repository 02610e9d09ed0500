import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertRejects, assertThrows } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import type { Dataset } from "../../lib/data/dataset.ts";
import { finetune, finetuneSchedule, layerDecayScales, layerId } from "../../lib/eval/finetune.ts";
import { linearProbe } from "../../lib/eval/linear.ts";
import { extractFeatures, prepareImages, rawPixelFeatures } from "../../lib/eval/features.ts";
import { createRng } from "../../lib/core/rng.ts";
import { createViT, disposeViT, vitForward } from "../../lib/model/vit.ts";

await initBackend({ backend: "cpu" });

/**
 * `n` gray `size x size` images of 4 patterns with a random phase and noise: horizontal stripes,
 * vertical stripes, a checkerboard, a bright centre square.
 */
function patterns(n: number, size: number, seed: number): Dataset {
  const rng = createRng(seed);
  const images = new Uint8Array(n * size * size);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const y = i % 4;
    labels[i] = y;
    const ph = rng.int(2);
    for (let r = 0; r < size; r++) {
      for (let c = 0; c < size; c++) {
        const on = y === 0
          ? (r + ph) % 2
          : y === 1
          ? (c + ph) % 2
          : y === 2
          ? (r + c + ph) % 2
          : Number(
            Math.abs(r - size / 2 + 0.5) < size / 4 && Math.abs(c - size / 2 + 0.5) < size / 4,
          );
        images[(i * size + r) * size + c] = Math.round(on * 180 + rng.uniform() * 60);
      }
    }
  }
  return {
    name: "patterns",
    split: "train",
    length: n,
    height: size,
    width: size,
    channels: 1,
    classes: ["h", "v", "check", "centre"],
    images,
    labels,
  };
}

const tiny = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 };

Deno.test("layer decay: scales by hand for depth 2, decay 0.5", () => {
  assertEquals(layerId("patch_embed.proj.weight", 2), 0);
  assertEquals(layerId("blocks.1.attn.qkv.bias", 2), 2);
  const s = layerDecayScales(
    [
      "cls_token",
      "pos_embed",
      "patch_embed.proj.bias",
      "blocks.0.norm1.weight",
      "blocks.1.mlp.fc2.weight",
      "norm.bias",
      "head.weight",
    ],
    2,
    0.5,
  );
  assertEquals(s, {
    cls_token: 0.125,
    pos_embed: 0.125,
    "patch_embed.proj.bias": 0.125,
    "blocks.0.norm1.weight": 0.25,
    "blocks.1.mlp.fc2.weight": 0.5,
    "norm.bias": 1,
    "head.weight": 1,
  });
});

Deno.test("finetune schedule: 5 warmup epochs, at most a tenth of a short run; bad warmup refused", () => {
  // 100 epochs of 10 iterations: DeiT's 5 epochs = 50 steps. 5 epochs: half an epoch = 5 steps
  // (the whole run was warmup before). An explicit warmup is kept, clamped below the total.
  assertEquals(finetuneSchedule(100, 10, {}), {
    peakLr: 1e-3,
    minLr: 1e-6,
    warmupSteps: 50,
    totalSteps: 1000,
  });
  assertEquals(finetuneSchedule(5, 10, { lr: 2e-3 }).warmupSteps, 5);
  assertEquals(finetuneSchedule(5, 10, { warmupEpochs: 2 }).warmupSteps, 20);
  assertEquals(finetuneSchedule(5, 10, { warmupEpochs: 9 }).warmupSteps, 49);
  assertEquals(finetuneSchedule(5, 10, { warmupEpochs: 0 }).warmupSteps, 0);
  for (const bad of [-1, NaN]) {
    assertThrows(() => finetuneSchedule(5, 10, { warmupEpochs: bad }), RangeError, "warmupEpochs");
  }
});

Deno.test("finetune: a tiny ViT overfits 32 pattern images; frozen weights stay; no leak", async () => {
  const ds = patterns(32, 8, 1);
  const model = createViT({ ...tiny, freezePatchEmbed: true }, 0);
  const patch0 = model.params["patch_embed.proj.weight"].dataSync().slice();
  const qkv0 = model.params["blocks.0.attn.qkv.weight"].dataSync().slice();
  const before = tf.memory().numTensors;
  const res = await finetune(model, ds, ds, {
    epochs: 20,
    batchSize: 8,
    lr: 3e-3,
    warmupEpochs: 2,
    labelSmoothing: 0.1,
    layerDecay: 0.75,
    augment: false,
    seed: 1,
  });
  assertEquals(tf.memory().numTensors, before);
  assert(res.top1 >= 0.9, `train top-1 ${res.top1}`);
  assertEquals(res.top5, 1); // 4 classes
  assertEquals(res.trainLoss.length, 20);
  assert(res.trainLoss[19] < 0.5 * res.trainLoss[0], `loss ${res.trainLoss}`);
  // The frozen patch projection is untouched; trainable weights moved.
  assertEquals(model.params["patch_embed.proj.weight"].dataSync(), patch0);
  const qkv1 = model.params["blocks.0.attn.qkv.weight"].dataSync();
  assert(qkv1.some((v, i) => v !== qkv0[i]));
  disposeViT(model);
});

Deno.test("finetune: the augmented path and ViT-BN run without leaks", async () => {
  const ds = patterns(16, 8, 2);
  const model = createViT({ ...tiny, mlpNorm: "batchnorm" }, 0);
  const rm0 = model.buffers["blocks.0.norm2.running_mean"].dataSync().slice();
  const before = tf.memory().numTensors;
  const res = await finetune(model, ds, ds, { epochs: 1, batchSize: 8, augment: true });
  assertEquals(tf.memory().numTensors, before);
  assert(Number.isFinite(res.trainLoss[0]));
  // Training-mode BN updated the running mean.
  const rm1 = model.buffers["blocks.0.norm2.running_mean"].dataSync();
  assert(rm1.some((v, i) => v !== rm0[i]));
  disposeViT(model);
});

Deno.test("features + augmented linear probe on a frozen tiny ViT; cache round trip", async () => {
  const ds = patterns(16, 8, 3);
  const model = createViT(tiny, 0);
  const dir = await Deno.makeTempDir();
  const before = tf.memory().numTensors;
  const progress: number[] = [];
  const stats = { mean: [0.3], std: [0.3] };
  const a = await extractFeatures(model, ds, {
    batchSize: 5,
    ...stats,
    cacheDir: dir,
    cacheKey: "ckpt-A",
    onProgress: (done) => progress.push(done),
  });
  assertEquals(progress, [5, 10, 15, 16]);
  assertEquals(a.fromCache, false);
  assertEquals([a.dim, a.features.length], [32, 16 * 32]);
  // The features of one batch equal those of another batching.
  const b = await extractFeatures(model, ds, { batchSize: 16, ...stats });
  for (let i = 0; i < a.features.length; i++) {
    assertAlmostEquals(a.features[i], b.features[i], 1e-5);
  }
  const c = await extractFeatures(model, ds, {
    batchSize: 5,
    ...stats,
    cacheDir: dir,
    cacheKey: "ckpt-A",
  });
  assertEquals(c.fromCache, true);
  assertEquals(c.features, a.features);
  assertEquals(c.labels, ds.labels);
  const d = await extractFeatures(model, ds, { ...stats, cacheDir: dir, cacheKey: "ckpt-B" });
  assertEquals(d.fromCache, false);
  // Augmented probe: runs the backbone on crops each epoch.
  const res = await linearProbe(a, a, {
    epochs: 2,
    batchSize: 8,
    augment: { model, dataset: ds, stats },
  });
  assertEquals(res.trainLoss.length, 2);
  assert(Number.isFinite(res.trainLoss[1]));
  assertEquals(tf.memory().numTensors, before);
  disposeViT(model);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("readout cls+mean: class token then the mean patch token, its own cache entry", async () => {
  const ds = patterns(6, 8, 5);
  const model = createViT(tiny, 0);
  const dir = await Deno.makeTempDir();
  const before = tf.memory().numTensors;
  const stats = { mean: [0.3], std: [0.3] };
  const opts = { batchSize: 4, ...stats, cacheDir: dir, cacheKey: "ckpt-A" };
  const pooled = await extractFeatures(model, ds, opts);
  const both = await extractFeatures(model, ds, { ...opts, readout: "cls+mean" });
  assertEquals(both.fromCache, false); // not the pooled entry of the same key
  assertEquals([both.dim, both.features.length], [64, 6 * 64]);
  // Expected: tokens after the final LN; row 0 is the class token, rows 1..4 the patches.
  const tok = tf.tidy(() => {
    const x = prepareImages(ds, 0, 6, 8, stats);
    return vitForward(model, x, { training: false, returnTokens: true }).tokens!.arraySync();
  });
  for (let i = 0; i < 6; i++) {
    for (let d = 0; d < 32; d++) {
      assertAlmostEquals(both.features[i * 64 + d], pooled.features[i * 32 + d], 1e-6);
      assertAlmostEquals(both.features[i * 64 + d], tok[i][0][d], 1e-5);
      const mean = (tok[i][1][d] + tok[i][2][d] + tok[i][3][d] + tok[i][4][d]) / 4;
      assertAlmostEquals(both.features[i * 64 + 32 + d], mean, 1e-5);
    }
  }
  const again = await extractFeatures(model, ds, { ...opts, readout: "cls+mean" });
  assertEquals([again.fromCache, again.dim], [true, 64]);
  assertEquals(again.features, both.features);
  // The augmented probe reads the same features from its crops.
  const res = await linearProbe(both, both, {
    epochs: 1,
    batchSize: 4,
    augment: { model, dataset: ds, stats, readout: "cls+mean" },
  });
  assert(Number.isFinite(res.trainLoss[0]));
  assertEquals(tf.memory().numTensors, before);
  disposeViT(model);
  // A backbone without a class token has no cls+mean readout.
  const meanPool = createViT({ ...tiny, pool: "mean" }, 0);
  await assertRejects(
    () => extractFeatures(meanPool, ds, { readout: "cls+mean" }),
    RangeError,
    "class token",
  );
  disposeViT(meanPool);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("rawPixelFeatures: bytes / 255 in NHWC order", () => {
  const ds = patterns(3, 4, 4);
  const f = rawPixelFeatures(ds);
  assertEquals(f.dim, 16);
  assertEquals(f.features.length, 48);
  assertAlmostEquals(f.features[17], ds.images[17] / 255, 1e-7);
  assertEquals(f.labels, new Int32Array([0, 1, 2]));
});
