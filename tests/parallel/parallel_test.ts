/**
 * Tests of the data-parallel runner (lib/parallel/): the contrastive loss with a label offset
 * against a plain-JS computation; one worker equals `momentumUpdateThenMocoGrads` + `applyGradients` exactly; two
 * workers equal a per-shard reference computed here (keys of all shards, per-shard BN) and stay
 * bit-identical over 3 steps; worker errors reject with a message and leave no workers or tensors
 * behind; pretraining with `--workers 2` runs, checkpoints and resumes exactly.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertRejects } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { momentumUpdateThenMocoGrads } from "../../lib/methods/mocov3.ts";
import { ctr } from "../../lib/methods/losses.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  momentumEmbed,
  type MomentumNetworks,
  momentumState,
  momentumTrainable,
  momentumUpdate,
} from "../../lib/methods/two_view.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
  optimizerStateTensors,
} from "../../lib/optim/optim.ts";
import { createDataParallel, type DataParallelState } from "../../lib/parallel/mod.ts";
import { createFramework } from "../../lib/methods/mod.ts";
import { createRng } from "../../lib/core/rng.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { readSafetensors, toFloat32 } from "../../lib/io/safetensors.ts";
import { benchWorkload } from "../../lib/bench/run.ts";
import { maxAbsDiff } from "../_helpers/numeric.ts";

// The workers run wasm; so does the reference here, for bit-exact comparisons.
await initBackend({ backend: "wasm" });

const vit = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1, dim: 16, depth: 1 };
const heads = { hidden: 32, outDim: 16, temperature: 0.2 };
const optimizer: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
const LR = 1e-3, M = 0.99;

function images(B: number, seed: number): tf.Tensor4D {
  const rng = createRng(seed);
  const v = new Float32Array(B * 8 * 8);
  for (let i = 0; i < v.length; i++) v[i] = rng.normal();
  return tf.tensor4d(v, [B, 8, 8, 1]);
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

/** Main's model and optimiser state as the runner's state type. */
function localState(
  model: MomentumNetworks,
  opt: ReturnType<typeof createOptimizerState>,
): DataParallelState {
  const tensors: DataParallelState["tensors"] = {};
  const all = { ...momentumState(model), ...optimizerStateTensors(opt) };
  for (const [k, v] of Object.entries(all)) {
    tensors[k] = { shape: v.shape, data: v.dataSync() as Float32Array };
  }
  return { tensors, optimizerStep: opt.step };
}

function assertSameState(a: DataParallelState, b: DataParallelState, what: string): void {
  assertEquals(Object.keys(a.tensors).sort(), Object.keys(b.tensors).sort());
  assertEquals(a.optimizerStep, b.optimizerStep);
  for (const [k, t] of Object.entries(a.tensors)) {
    const u = b.tensors[k];
    assertEquals(t.shape, u.shape, `${what}: shape of ${k}`);
    for (let i = 0; i < t.data.length; i++) {
      if (!Object.is(t.data[i], u.data[i])) {
        throw new Error(`${what}: ${k}[${i}] differs: ${t.data[i]} vs ${u.data[i]}`);
      }
    }
  }
}

Deno.test("ctr with a label offset matches CE against gathered keys by hand", () => {
  const rng = createRng(3);
  const B = 3, K = 7, C = 5, T = 0.2, offset = 4;
  const q = Array.from({ length: B }, () => Array.from({ length: C }, () => rng.normal()));
  const k = Array.from({ length: K }, () => Array.from({ length: C }, () => rng.normal()));
  const norm = (r: number[]) => r.map((v) => v / Math.hypot(...r));
  let ce = 0;
  for (let i = 0; i < B; i++) {
    const logits = k.map((kr) => norm(kr).reduce((s, v, c) => s + v * norm(q[i])[c], 0) / T);
    const mx = Math.max(...logits);
    ce += mx + Math.log(logits.reduce((s, l) => s + Math.exp(l - mx), 0)) - logits[offset + i];
  }
  const expected = (ce / B) * 2 * T;
  const loss = ctr(tf.tensor2d(q), tf.tensor2d(k), T, offset);
  assertAlmostEquals(loss.dataSync()[0], expected, 1e-5);
  loss.dispose();
  let msg = "";
  try {
    ctr(tf.tensor2d(q), tf.tensor2d(k), T, 5);
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(/must index the 7 keys/.test(msg), msg);
});

Deno.test("one worker equals momentumUpdateThenMocoGrads + applyGradients exactly over two steps", async () => {
  const n0 = tf.memory().numTensors;
  const dp = await createDataParallel({ workers: 1, vit, heads, optimizer, seed: 5 });
  const model = createMomentumNetworks(vit, heads, 5);
  const params = momentumTrainable(model);
  const opt = createOptimizerState(optimizer, params);
  try {
    for (let s = 0; s < 2; s++) {
      const x1 = images(8, 10 + s), x2 = images(8, 20 + s);
      const r = await dp.step(x1, x2, { lr: LR, momentum: M });
      const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: M });
      assert(r.applied);
      assertEquals(r.loss, loss.dataSync()[0]);
      const mean = dp.lastGradients();
      for (const [k, g] of Object.entries(grads)) {
        assertEquals(maxAbsDiff(mean[k], g.dataSync()), 0, k);
      }
      applyGradients(params, grads, opt, optimizer, LR);
      tf.dispose([x1, x2, loss, ...Object.values(grads)]);
    }
    assertSameState(
      await dp.getState(),
      localState(model, opt),
      "1 worker vs momentumUpdateThenMocoGrads",
    );
  } finally {
    dp.close();
    disposeOptimizerState(opt);
    disposeMomentumNetworks(model);
  }
  assertEquals(tf.memory().numTensors, n0);
});

Deno.test("two workers: mean of per-shard losses and gradients against all keys; copies identical", async () => {
  const n0 = tf.memory().numTensors;
  const N = 2, B = 8, b = B / N;
  const dp = await createDataParallel({ workers: N, vit, heads, optimizer, seed: 7 });
  const model = createMomentumNetworks(vit, heads, 7);
  try {
    const x1 = images(B, 1), x2 = images(B, 2);
    const r = await dp.step(x1, x2, { lr: LR, momentum: M });
    // Reference: the EMA update once (shard 1 then uses m = 1, which keeps the encoder as is),
    // keys of each shard, then each shard's loss against all keys, with its own BN statistics.
    const shards = [0, 1].map((w) => [x1, x2].map((x) => x.slice(w * b, b)) as tf.Tensor4D[]);
    momentumUpdate(model, M);
    const keys = shards.map(([s1, s2]) => [momentumEmbed(model, s1), momentumEmbed(model, s2)]);
    const k1 = tf.concat(keys.map((k) => k[0])) as tf.Tensor2D;
    const k2 = tf.concat(keys.map((k) => k[1])) as tf.Tensor2D;
    // Each shard's step with the keys of both shards (momentum 1: the encoder stays as updated).
    const perShard = shards.map(([s1, s2], w) =>
      momentumUpdateThenMocoGrads(model, s1, s2, {
        momentum: 1,
        gather: () => ({ all: [k1.clone(), k2.clone()], offset: w * b }),
      })
    );
    const refLoss = perShard.reduce((s, p) => s + p.loss.dataSync()[0], 0) / N;
    assertAlmostEquals(r.loss, refLoss, 1e-5);
    const mean = dp.lastGradients();
    for (const name of Object.keys(perShard[0].grads)) {
      const g0 = perShard[0].grads[name].dataSync(), g1 = perShard[1].grads[name].dataSync();
      const ref = g0.map((v, i) => (v + g1[i]) / 2);
      const tol = 1e-5 * Math.max(1, maxAbs(ref));
      assert(maxAbsDiff(mean[name], ref) <= tol, `${name}: ${maxAbsDiff(mean[name], ref)}`);
    }
    // Not the whole-batch loss: per-shard BN and 8 keys for 4 queries each.
    const wholeModel = createMomentumNetworks(vit, heads, 7);
    const whole = momentumUpdateThenMocoGrads(wholeModel, x1, x2, { momentum: M });
    assert(Math.abs(whole.loss.dataSync()[0] - r.loss) > 1e-4);
    disposeMomentumNetworks(wholeModel);
    tf.dispose([
      x1,
      x2,
      k1,
      k2,
      whole.loss,
      ...Object.values(whole.grads),
      ...shards.flat(),
      ...keys.flat(),
      ...perShard.flatMap((p) => [p.loss, ...Object.values(p.grads)]),
    ]);
    for (let s = 0; s < 2; s++) {
      const y1 = images(B, 30 + s), y2 = images(B, 40 + s);
      await dp.step(y1, y2, { lr: LR, momentum: M });
      tf.dispose([y1, y2]);
    }
    const [s0, s1] = [await dp.getState(0), await dp.getState(1)];
    assertEquals(s0.optimizerStep, 3);
    assertSameState(s0, s1, "worker 0 vs worker 1 after 3 steps");
  } finally {
    dp.close();
    disposeMomentumNetworks(model);
  }
  assertEquals(tf.memory().numTensors, n0);
});

Deno.test("worker errors reject with a message; close() leaves no workers or tensors", async () => {
  const n0 = tf.memory().numTensors;
  await assertRejects(
    () => createDataParallel({ workers: 2, vit: { ...vit, name: "vit_bogus" }, optimizer }),
    Error,
    "data-parallel worker",
  );
  const dp = await createDataParallel({ workers: 2, vit, heads, optimizer });
  const odd = images(7, 1);
  await assertRejects(() => dp.step(odd, odd, { lr: LR, momentum: M }), Error, "multiple of 2");
  // Images of the wrong size fail inside the workers (the patch embedding).
  const big = tf.zeros([4, 12, 12, 1]) as tf.Tensor4D;
  const err = await assertRejects(() => dp.step(big, big, { lr: LR, momentum: M }), Error);
  assert(/^data-parallel worker [01]: /.test(err.message), err.message);
  // The copies may now differ: every later call rejects with the same error.
  const x = images(4, 2);
  await assertRejects(() => dp.step(x, x, { lr: LR, momentum: M }), Error, "data-parallel worker");
  dp.close();
  dp.close();
  await assertRejects(() => dp.getState(), Error);
  tf.dispose([odd, big, x]);
  assertEquals(tf.memory().numTensors, n0);
});

const quiet = { print: () => {} };

function smoke(outDir: string, maxSteps: number, workers = 2) {
  return resolveConfig({
    preset: "smoke",
    backend: "wasm",
    workers,
    outDir,
    maxSteps,
    finalEval: "none",
    knnEvery: 100,
    checkpointEvery: 3,
  });
}

async function checkpointOf(dir: string): Promise<Record<string, Float32Array>> {
  const { tensors } = await readSafetensors(`${dir}/checkpoint.safetensors`);
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, toFloat32(t)]));
}

Deno.test("pretrain with 2 workers: runs, checkpoints, and a resumed run equals an uninterrupted one", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl-parallel-" });
  try {
    const n0 = tf.memory().numTensors;
    const whole = await pretrain(smoke(`${root}/whole`, 7), quiet);
    assertEquals(whole.steps, 7);
    const lines: string[] = [];
    await pretrain(smoke(`${root}/resumed`, 4), quiet);
    const resumed = await pretrain(smoke(`${root}/resumed`, 7), { print: (s) => lines.push(s) });
    assert(lines.some((l) => /resumed .* at step 4/.test(l)), lines.join("\n"));
    assert(lines.some((l) => /data-parallel: 2 workers/.test(l)), lines.join("\n"));
    assertEquals(resumed.steps, 7);
    const [a, b] = [await checkpointOf(`${root}/whole`), await checkpointOf(`${root}/resumed`)];
    assertEquals(Object.keys(a).sort(), Object.keys(b).sort());
    assert("optim.exp_avg.base_encoder.cls_token" in a);
    for (const k of Object.keys(a)) assertEquals(maxAbsDiff(a[k], b[k]), 0, k);
    const log = async (d: string) => (await Deno.readTextFile(`${d}/log.csv`)).split("\n");
    const [la, lb] = [await log(`${root}/whole`), await log(`${root}/resumed`)];
    const losses = (rows: string[]) => rows.slice(1).filter((r) => r).map((r) => r.split(",")[2]);
    assertEquals(losses(lb), losses(la));
    assertEquals(losses(la).length, 7);
    assertEquals(tf.memory().numTensors, n0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pretrain with 2 workers runs SimCLR and BYOL; an indivisible batch is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl-parallel-" });
  try {
    for (const framework of ["simclr", "byol"] as const) {
      const lines: string[] = [];
      const cfg = { ...smoke(`${root}/${framework}`, 3), framework };
      const res = await pretrain(cfg, { print: (l) => lines.push(l) });
      assertEquals(res.steps, 3);
      assert(lines.some((l) => /data-parallel: 2 workers/.test(l)), lines.join("\n"));
      const rows = (await Deno.readTextFile(`${root}/${framework}/log.csv`)).trim().split("\n");
      assertEquals(rows.length, 4, "header and 3 steps");
      assert(rows.slice(1).every((r) => Number.isFinite(Number(r.split(",")[2]))), "finite losses");
      const names = Object.keys(await checkpointOf(`${root}/${framework}`));
      assertEquals(names.some((n) => n.startsWith("momentum_encoder.")), framework === "byol");
    }
    const odd = { ...smoke(`${root}/b`, 1, 3) };
    await assertRejects(() => pretrain(odd, quiet), Error, "multiple of --workers");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("two workers of SimCLR and BYOL: the mean of each shard's own step", async () => {
  const N = 2, B = 8, b = B / N;
  for (const framework of ["simclr", "byol"] as const) {
    const n0 = tf.memory().numTensors;
    const dp = await createDataParallel({ workers: N, framework, vit, heads, optimizer, seed: 5 });
    const model = createFramework(framework, vit, heads, 5);
    try {
      const x1 = images(B, 3), x2 = images(B, 4);
      const r = await dp.step(x1, x2, { lr: LR, momentum: M });
      // Reference: each shard's step on one model; the target's EMA once (then m = 1 keeps it).
      const shards = [0, 1].map((w) => [x1, x2].map((x) => x.slice(w * b, b)) as tf.Tensor4D[]);
      const perShard = shards.map(([s1, s2], w) =>
        model.step(s1, s2, { momentum: w === 0 ? M : 1 })
      );
      const refLoss = perShard.reduce((sum, p) => sum + p.loss.dataSync()[0], 0) / N;
      assertAlmostEquals(r.loss, refLoss, 1e-5);
      const mean = dp.lastGradients();
      assertEquals(Object.keys(mean).sort(), Object.keys(perShard[0].grads).sort());
      for (const name of Object.keys(mean)) {
        const g0 = perShard[0].grads[name].dataSync(), g1 = perShard[1].grads[name].dataSync();
        const ref = g0.map((v, i) => (v + g1[i]) / 2);
        const tol = 1e-5 * Math.max(1, maxAbs(ref));
        assert(maxAbsDiff(mean[name], ref) <= tol, `${framework} ${name}`);
      }
      tf.dispose([
        x1,
        x2,
        ...shards.flat(),
        ...perShard.flatMap((p) => [p.loss, ...Object.values(p.grads)]),
      ]);
    } finally {
      dp.close();
      model.dispose();
    }
    assertEquals(tf.memory().numTensors, n0, framework);
  }
});

Deno.test("ViT-BN: running means averaged over workers equal the whole batch's; copies identical", async () => {
  const n0 = tf.memory().numTensors;
  const bnVit = { ...vit, mlpNorm: "batchnorm" as const };
  const dp = await createDataParallel({ workers: 2, vit: bnVit, heads, optimizer, seed: 2 });
  const model = createMomentumNetworks(bnVit, heads, 2);
  try {
    const x1 = images(8, 5), x2 = images(8, 6);
    await dp.step(x1, x2, { lr: LR, momentum: M });
    // The first BN sees per-image features: the mean of the shard means is the batch mean.
    const ref = momentumUpdateThenMocoGrads(model, x1, x2, { momentum: M });
    const name = "blocks.0.norm2.running_mean";
    const expected = model.backbone.buffers[name].dataSync();
    const got = (await dp.getState(1)).tensors[`base_encoder.${name}`].data;
    assert(maxAbs(expected) > 1e-3);
    assert(maxAbsDiff(got, expected) < 1e-5, `${maxAbsDiff(got, expected)}`);
    tf.dispose([x1, x2, ref.loss, ...Object.values(ref.grads)]);
    const y1 = images(8, 7), y2 = images(8, 8);
    await dp.step(y1, y2, { lr: LR, momentum: M });
    tf.dispose([y1, y2]);
    assertSameState(await dp.getState(0), await dp.getState(1), "ViT-BN workers");
  } finally {
    dp.close();
    disposeMomentumNetworks(model);
  }
  assertEquals(tf.memory().numTensors, n0);
});

Deno.test("pretrain with 2 workers rolls back a non-finite step to the checkpoint", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl-parallel-" });
  try {
    const cfg = { ...smoke(root, 5), onNan: "rollback" as const, injectNanAt: 4 };
    const lines: string[] = [];
    const r = await pretrain(cfg, { print: (s) => lines.push(s) });
    assertEquals(r.steps, 5);
    assert(lines.some((l) => /rolled back to the checkpoint at step 3/.test(l)), lines.join("\n"));
    const ckpt = await checkpointOf(root);
    for (const [k, v] of Object.entries(ckpt)) assert(v.every(Number.isFinite), k);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("bench --workers 2 --smoke: one step through the workers, recorded in the result", async () => {
  const backend = await initBackend({ backend: "wasm" });
  const r = await benchWorkload({ workload: "small28", backend, smoke: true, workers: 2 });
  assertEquals(r.workers, 2);
  assertEquals(r.mode, "step");
  assertEquals(r.tf_tensors_growth, 0);
  // At initialisation each of the two symmetric terms is near chance, 2T ln(8) with all 8 keys.
  assert(Math.abs(r.last_value - 2 * 2 * 0.2 * Math.log(8)) < 0.2, `${r.last_value}`);
});
