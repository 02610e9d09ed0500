/**
 * Tests of SwAV (lib/methods/swav.ts) and its losses (lib/methods/losses.ts): Sinkhorn-Knopp and
 * the swapped prediction against float64 loops written here (and values by hand), the gradient by
 * finite differences, codes without gradient, one step recomputed in float64 from the model's
 * projections (loss and prototype gradient), the prototypes normalised every step and frozen on
 * request, two data-parallel workers against a per-shard reference with the whole batch's scores,
 * and pretraining: prototypes frozen for the first epoch, a resumed run bit-identical to an
 * uninterrupted one (through the wasm backend's fused kernels), two workers, and the batch rule.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import {
  l2normalize,
  sinkhorn,
  stopGradient,
  swappedPrediction,
} from "../../lib/methods/losses.ts";
import {
  createSwAV,
  disposeSwAV,
  PROTOTYPES,
  prototypeScores,
  SWAV_LOSS,
  swavStep,
} from "../../lib/methods/swav.ts";
import { mlpForward } from "../../lib/model/heads.ts";
import { vitForward } from "../../lib/model/vit.ts";
import { createDataParallel } from "../../lib/parallel/mod.ts";
import { createRng } from "../../lib/core/rng.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { readSafetensors, toFloat32 } from "../../lib/io/safetensors.ts";
import { fastPathCalls } from "../../lib/backends/fused.ts";
import { maxAbsDiff } from "../_helpers/numeric.ts";

// The data-parallel workers run wasm; so does everything here.
await initBackend({ backend: "wasm" });

// ---------- float64 references (nothing here calls lib/) ----------

type M = number[][];

/** SwAV's distributed_sinkhorn, in float64, on scores [B, K] (returns [B, K]). */
function sinkhornRef(s: M, eps: number, iters: number): M {
  const B = s.length, K = s[0].length;
  let q = s.map((r) => r.map((v) => Math.exp(v / eps)));
  const total = q.flat().reduce((a, b) => a + b, 0);
  q = q.map((r) => r.map((v) => v / total));
  for (let it = 0; it < iters; it++) {
    for (let k = 0; k < K; k++) {
      let col = 0;
      for (let b = 0; b < B; b++) col += q[b][k];
      for (let b = 0; b < B; b++) q[b][k] /= col * K;
    }
    for (let b = 0; b < B; b++) {
      const row = q[b].reduce((a, v) => a + v, 0);
      q[b] = q[b].map((v) => v / (row * B));
    }
  }
  return q.map((r) => r.map((v) => v * B));
}

function softmaxRow(r: number[], T: number): number[] {
  const m = Math.max(...r.map((v) => v / T));
  const e = r.map((v) => Math.exp(v / T - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / z);
}

/** -1/2 mean_b [q2 . log softmax(s1/T) + q1 . log softmax(s2/T)], float64. */
function swappedRef(s1: M, s2: M, q1: M, q2: M, T: number): number {
  const ce = (q: M, s: M) =>
    s.reduce((acc, r, b) => {
      const p = softmaxRow(r, T);
      return acc + q[b].reduce((a, v, k) => a + v * Math.log(p[k]), 0);
    }, 0) / s.length;
  return -0.5 * (ce(q2, s1) + ce(q1, s2));
}

/** d loss / d s1 with the codes fixed: -1/(2 B T) (q2 - softmax(s1/T)), float64. */
function gradRef(s1: M, q2: M, T: number): M {
  const B = s1.length;
  return s1.map((r, b) => {
    const p = softmaxRow(r, T);
    return r.map((_, k) => -(q2[b][k] - p[k]) / (2 * B * T));
  });
}

function rows(B: number, K: number, seed: number, scale = 1): M {
  const rng = createRng(seed);
  return Array.from({ length: B }, () => Array.from({ length: K }, () => scale * rng.normal()));
}

function cosines(B: number, K: number, seed: number): M {
  // Scores in [-1, 1] like the model's (cosines of unit vectors).
  return rows(B, K, seed).map((r) => r.map((v) => Math.tanh(v)));
}

function arr(t: tf.Tensor): M {
  const out = t.arraySync() as M;
  t.dispose();
  return out;
}

function assertClose(a: M, b: M, tol: number, what: string): void {
  assertEquals([a.length, a[0].length], [b.length, b[0].length], what);
  a.forEach((r, i) =>
    r.forEach((v, j) =>
      assertAlmostEquals(v, b[i][j], tol, `${what}[${i}][${j}]: ${v} vs ${b[i][j]}`)
    )
  );
}

// ---------- Sinkhorn ----------

Deno.test("sinkhorn: by hand, a balanced 2x2 is only row-normalised", () => {
  // exp([[1, 0], [0, 1]]) = [[e, 1], [1, e]] has equal column and row sums already, so the
  // codes are each row normalised: e / (e + 1) = 0.7310586 and 1 / (e + 1).
  const q = arr(sinkhorn(tf.tensor2d([[1, 0], [0, 1]]), 1, 3));
  const e = Math.E;
  assertClose(q, [[e / (e + 1), 1 / (e + 1)], [1 / (e + 1), e / (e + 1)]], 1e-6, "q");
  assertAlmostEquals(q[0][0], 0.7310586, 1e-6);
});

Deno.test("sinkhorn: matches the float64 loop (eps 0.05, 3 iterations); rows sum to 1", () => {
  for (const [B, K, seed] of [[6, 4, 1], [4, 7, 2], [16, 5, 3]]) {
    const s = cosines(B, K, seed);
    const q = arr(sinkhorn(tf.tensor2d(s), 0.05, 3));
    assertClose(q, sinkhornRef(s, 0.05, 3), 1e-4, `B ${B} K ${K}`);
    q.forEach((r, b) => assertAlmostEquals(r.reduce((a, v) => a + v, 0), 1, 1e-5, `row ${b}`));
  }
});

Deno.test("sinkhorn: with enough iterations every column sums to B / K (equipartition)", () => {
  // (At epsilon 0.05 the scaling converges slowly; epsilon 0.25 converges within 100 rounds.)
  const B = 12, K = 4;
  const q = arr(sinkhorn(tf.tensor2d(cosines(B, K, 5)), 0.25, 100));
  for (let k = 0; k < K; k++) {
    const col = q.reduce((a, r) => a + r[k], 0);
    assertAlmostEquals(col, B / K, 1e-3, `column ${k}`);
  }
  // Without the iterations the columns of these scores are far from equal (the test can fail).
  const q0 = arr(sinkhorn(tf.tensor2d(cosines(B, K, 5)), 0.25, 0));
  const cols0 = [0, 1, 2, 3].map((k) => q0.reduce((a, r) => a + r[k], 0));
  assert(cols0.some((c) => Math.abs(c - B / K) > 0.1), `${cols0}`);
});

// ---------- swapped prediction ----------

Deno.test("swappedPrediction: ln K at uniform scores (by hand), float64 loop on random ones", () => {
  const K = 5, q = rows(3, K, 1).map((r) => softmaxRow(r, 1));
  const zeros = tf.zeros([3, K]) as tf.Tensor2D, qt = tf.tensor2d(q);
  const v = swappedPrediction(zeros, zeros, qt, qt, 0.1);
  assertAlmostEquals(v.dataSync()[0], Math.log(K), 1e-5);
  tf.dispose([zeros, qt, v]);

  const s1 = cosines(4, 6, 2), s2 = cosines(4, 6, 3);
  const q1 = sinkhornRef(s1, 0.05, 3), q2 = sinkhornRef(s2, 0.05, 3);
  const t = [s1, s2, q1, q2].map((m) => tf.tensor2d(m));
  const loss = swappedPrediction(t[0], t[1], t[2], t[3], 0.1);
  assertAlmostEquals(loss.dataSync()[0], swappedRef(s1, s2, q1, q2, 0.1), 1e-4);
  tf.dispose([...t, loss]);
});

Deno.test("swappedPrediction: gradient in the scores matches float64 finite differences", () => {
  const T = 0.1, B = 4, K = 5;
  const s1 = cosines(B, K, 7), s2 = cosines(B, K, 8);
  const q1 = sinkhornRef(s1, 0.05, 3), q2 = sinkhornRef(s2, 0.05, 3);
  const [tq1, tq2, ts2] = [q1, q2, s2].map((m) => tf.tensor2d(m));
  const g = tf.grad((x: tf.Tensor) =>
    swappedPrediction(x as tf.Tensor2D, ts2 as tf.Tensor2D, tq1, tq2, T)
  );
  const ts1 = tf.tensor2d(s1);
  const grad = arr(g(ts1));
  const h = 1e-6;
  const fd = s1.map((r, i) =>
    r.map((_, j) => {
      const at = (d: number) => {
        const m = s1.map((row) => row.slice());
        m[i][j] += d;
        return swappedRef(m, s2, q1, q2, T);
      };
      return (at(h) - at(-h)) / (2 * h);
    })
  );
  assertClose(grad, fd, 1e-4, "d loss / d s1");
  // And the closed form.
  assertClose(grad, gradRef(s1, q2, T), 1e-4, "closed form");
  tf.dispose([tq1, tq2, ts2, ts1]);
});

Deno.test("stopGradient: codes from sinkhorn(stopGradient(s)) carry no gradient", () => {
  const T = 0.1, B = 5, K = 4;
  const s1 = cosines(B, K, 11), s2 = cosines(B, K, 12);
  const [t1, t2] = [s1, s2].map((m) => tf.tensor2d(m));
  const f = (a: tf.Tensor, b: tf.Tensor) => {
    const [x, y] = [a as tf.Tensor2D, b as tf.Tensor2D];
    return swappedPrediction(x, y, sinkhorn(stopGradient(x)), sinkhorn(stopGradient(y)), T);
  };
  const [g1, g2] = tf.grads(f)([t1, t2]);
  const q1 = sinkhornRef(s1, 0.05, 3), q2 = sinkhornRef(s2, 0.05, 3);
  assertClose(arr(g1), gradRef(s1, q2, T), 1e-4, "d/ds1");
  assertClose(arr(g2), gradRef(s2, q1, T), 1e-4, "d/ds2");
  const z = tf.grad((x: tf.Tensor) => tf.sum(stopGradient(x)))(t1);
  assertEquals(Array.from(z.dataSync()), new Array(B * K).fill(0));
  tf.dispose([t1, t2, z]);
});

// ---------- the step ----------

const VIT = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1, dim: 16, depth: 1 };
const HEADS = { hidden: 16, outDim: 8, prototypes: 6 };

function images(B: number, seed: number): tf.Tensor4D {
  const rng = createRng(seed);
  return tf.tensor4d(Float32Array.from({ length: B * 64 }, () => rng.normal()), [B, 8, 8, 1]);
}

/** Unit rows in float64. */
function normRows(m: M): M {
  return m.map((r) => {
    const n = Math.sqrt(r.reduce((a, v) => a + v * v, 0));
    return r.map((v) => v / n);
  });
}

function matMulT(a: M, b: M): M {
  return a.map((r) => b.map((c) => r.reduce((s, v, i) => s + v * c[i], 0)));
}

Deno.test("swavStep: loss and prototype gradient recomputed in float64; prototypes normalised", () => {
  const model = createSwAV(VIT, HEADS, 0);
  const B = 8, T = SWAV_LOSS.temperature;
  const x1 = images(B, 1), x2 = images(B, 2);
  const C0 = model.prototypes.arraySync() as M;
  // The initial prototypes are not unit rows (PyTorch's Linear init): the step normalises them.
  assert(C0.some((r) => Math.abs(Math.hypot(...r) - 1) > 0.1));
  const n0 = tf.memory().numTensors;
  const { loss, grads } = swavStep(model, x1, x2, { momentum: 0 });
  const C = normRows(C0);
  assertClose(model.prototypes.arraySync() as M, C, 1e-6, "prototypes after the step");
  // The projections, from the model's own networks (tested elsewhere); the rest here.
  const z = [x1, x2].map((x) =>
    arr(
      tf.tidy(() =>
        l2normalize(
          mlpForward(model.projector, vitForward(model.backbone, x, { training: true }).features),
        )
      ),
    )
  );
  const s = z.map((zz) => matMulT(zz, C));
  const q = s.map((ss) => sinkhornRef(ss, SWAV_LOSS.epsilon, SWAV_LOSS.sinkhornIterations));
  assertAlmostEquals(loss.dataSync()[0], swappedRef(s[0], s[1], q[0], q[1], T), 1e-4);
  // d loss / d C = sum over views of (d loss / d s)^T z, with the codes fixed.
  const d1 = gradRef(s[0], q[1], T), d2 = gradRef(s[1], q[0], T);
  const K = C.length, D = C[0].length;
  const gRef = Array.from({ length: K }, (_, k) =>
    Array.from({ length: D }, (_, c) => {
      let acc = 0;
      for (let b = 0; b < B; b++) acc += d1[b][k] * z[0][b][c] + d2[b][k] * z[1][b][c];
      return acc;
    }));
  assertClose(arr(grads[PROTOTYPES].clone()), gRef, 1e-4, "prototype gradient");
  tf.dispose([loss, ...Object.values(grads)]);
  assertEquals(tf.memory().numTensors, n0, "no leak");

  // freezePrototypes: the prototypes' gradient is zero, every other gradient the same (from the
  // same prototypes: normalising unit rows again may move their last bits).
  const P = model.prototypes.clone();
  const free = swavStep(model, x1, x2, { momentum: 0 });
  model.prototypes.assign(P);
  const frozen = swavStep(model, x1, x2, { momentum: 0, freezePrototypes: true });
  P.dispose();
  assertEquals(Array.from(frozen.grads[PROTOTYPES].dataSync()), new Array(K * D).fill(0));
  assert(free.grads[PROTOTYPES].dataSync().some((v) => v !== 0));
  for (const k of Object.keys(free.grads)) {
    if (k !== PROTOTYPES) assertEquals(frozen.grads[k].dataSync(), free.grads[k].dataSync(), k);
  }
  tf.dispose([
    free.loss,
    frozen.loss,
    ...Object.values(free.grads),
    ...Object.values(frozen.grads),
  ]);
  tf.dispose([x1, x2]);
  disposeSwAV(model);
});

Deno.test("two SwAV workers: per-shard steps whose codes come from the whole batch's scores", async () => {
  const N = 2, B = 8, b = B / N, seed = 5;
  const n0 = tf.memory().numTensors;
  const optimizer = { name: "adamw" as const, weightDecay: 0.1 };
  const dp = await createDataParallel({
    workers: N,
    framework: "swav",
    vit: VIT,
    heads: HEADS,
    optimizer,
    seed,
  });
  const model = createSwAV(VIT, HEADS, seed);
  try {
    const x1 = images(B, 3), x2 = images(B, 4);
    const r = await dp.grads(x1, x2, { momentum: 0 });
    tf.tidy(() => model.prototypes.assign(l2normalize(model.prototypes as tf.Tensor2D)));
    const shards = [0, 1].map((w) => [x1, x2].map((x) => x.slice(w * b, b)) as tf.Tensor4D[]);
    // Each shard's scores (its own projector BN batch), concatenated in shard order.
    const scores = shards.map((views) =>
      views.map((x) =>
        tf.tidy(() =>
          prototypeScores(model, vitForward(model.backbone, x, { training: true }).features)
        )
      )
    );
    const all = [0, 1].map((v) => tf.concat([scores[0][v], scores[1][v]]) as tf.Tensor2D);
    const perShard = shards.map(([s1, s2], w) =>
      swavStep(model, s1, s2, {
        momentum: 0,
        gather: () => ({ all: all.map((t) => t.clone()), offset: w * b }),
      })
    );
    const refLoss = perShard.reduce((sum, p) => sum + p.loss.dataSync()[0], 0) / N;
    assertAlmostEquals(r.loss, refLoss, 1e-5);
    // The codes differ from a shard's own Sinkhorn: the gather matters (the test can fail).
    const own = shards.map(([s1, s2]) => swavStep(model, s1, s2, { momentum: 0 }));
    const ownLoss = own.reduce((sum, p) => sum + p.loss.dataSync()[0], 0) / N;
    assert(Math.abs(ownLoss - refLoss) > 1e-3, `${ownLoss} vs ${refLoss}`);
    for (const name of Object.keys(r.grads)) {
      const g0 = perShard[0].grads[name].dataSync(), g1 = perShard[1].grads[name].dataSync();
      const ref = g0.map((v, i) => (v + g1[i]) / 2);
      const tol = 1e-5 * Math.max(1, ...Array.from(ref, Math.abs));
      assert(maxAbsDiff(r.grads[name], ref) <= tol, name);
    }
    // Frozen prototypes through the workers.
    const f = await dp.grads(x1, x2, { momentum: 0, freezePrototypes: true });
    assert(f.grads[PROTOTYPES].every((v) => v === 0));
    assert(r.grads[PROTOTYPES].some((v) => v !== 0));
    tf.dispose([
      x1,
      x2,
      ...shards.flat(),
      ...scores.flat(),
      ...all,
      ...[...perShard, ...own].flatMap((p) => [p.loss, ...Object.values(p.grads)]),
    ]);
  } finally {
    dp.close();
    disposeSwAV(model);
  }
  assertEquals(tf.memory().numTensors, n0);
});

// ---------- pretraining ----------

const quiet = { print: () => {} };

function smoke(outDir: string, over: Record<string, unknown> = {}) {
  return resolveConfig({
    preset: "smoke",
    framework: "swav",
    backend: "wasm",
    outDir,
    finalEval: "none",
    knnEvery: 100,
    ...over,
  });
}

async function checkpointOf(dir: string): Promise<Record<string, Float32Array>> {
  const { tensors } = await readSafetensors(`${dir}/checkpoint.safetensors`);
  return Object.fromEntries(Object.entries(tensors).map(([k, t]) => [k, toFloat32(t)]));
}

/** Rows of `[K * D]` as unit vectors. */
function directions(w: Float32Array, D: number): M {
  return normRows(
    Array.from({ length: w.length / D }, (_, k) => Array.from(w.slice(k * D, (k + 1) * D))),
  );
}

Deno.test("pretrain swav: prototypes frozen in epoch 1, learned after; resume is bit-exact", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl-swav-" });
  try {
    const n0 = tf.memory().numTensors;
    const cfg = smoke(`${root}/whole`);
    const stepsPerEpoch = Math.floor(cfg.syntheticSize! / cfg.batchSize);
    const total = cfg.epochs * stepsPerEpoch;
    const init = createSwAV({ name: "vit_nano" }, {
      hidden: cfg.hidden,
      outDim: cfg.outDim,
      prototypes: cfg.prototypes,
    }, cfg.seed);
    const C0 = normRows(init.prototypes.arraySync() as M);
    disposeSwAV(init);

    // Within the first epoch the prototypes only change length (AdamW's decay), not direction.
    const part = await pretrain(smoke(`${root}/part`, { maxSteps: stepsPerEpoch - 1 }), quiet);
    assertEquals(part.steps, stepsPerEpoch - 1);
    const early = await checkpointOf(`${root}/part`);
    assertClose(directions(early[PROTOTYPES], cfg.outDim), C0, 1e-5, "epoch-1 prototypes");

    const calls0 = fastPathCalls();
    const whole = await pretrain(cfg, quiet);
    assertEquals(whole.steps, total);
    // The backend's fused kernels ran (wasm: attention, LayerNorm, GELU, AdamW).
    const calls = fastPathCalls();
    for (const k of ["attention", "layerNorm", "gelu", "adamw"] as const) {
      assert(calls[k] > calls0[k], `fused ${k} not taken`);
    }
    const a = await checkpointOf(`${root}/whole`);
    const moved = Math.max(
      ...directions(a[PROTOTYPES], cfg.outDim).flatMap((r, k) =>
        r.map((v, c) => Math.abs(v - C0[k][c]))
      ),
    );
    // 10x what the frozen epoch allows (1e-5 above): the prototypes trained in epoch 2.
    assert(moved > 1e-4, `prototypes learned after epoch 1 (moved ${moved})`);

    // Resume the part run (stopped inside the frozen epoch) to the end: the same as whole.
    const resumed = await pretrain(smoke(`${root}/part`), quiet);
    assertEquals(resumed.steps, total);
    const b = await checkpointOf(`${root}/part`);
    assertEquals(Object.keys(b).sort(), Object.keys(a).sort());
    assert(PROTOTYPES in a && `optim.exp_avg.${PROTOTYPES}` in a, Object.keys(a).join(", "));
    for (const k of Object.keys(a)) assertEquals(maxAbsDiff(a[k], b[k]), 0, k);
    const losses = async (d: string) =>
      (await Deno.readTextFile(`${d}/log.csv`)).trim().split("\n").slice(1).map((r) =>
        r.split(",")[2]
      );
    assertEquals(await losses(`${root}/part`), await losses(`${root}/whole`));
    assertEquals(tf.memory().numTensors, n0);
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("pretrain swav with 2 workers runs; a batch below the prototypes is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "vitssl-swav-" });
  try {
    const res = await pretrain(smoke(`${root}/dp`, { workers: 2, maxSteps: 3 }), quiet);
    assertEquals(res.steps, 3);
    const rowsOut = (await Deno.readTextFile(`${root}/dp/log.csv`)).trim().split("\n");
    assertEquals(rowsOut.length, 4, "header and 3 steps");
    assert(
      rowsOut.slice(1).every((r) => Number.isFinite(Number(r.split(",")[2]))),
      "finite losses",
    );
    assert(PROTOTYPES in await checkpointOf(`${root}/dp`));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
  assertThrows(
    () => resolveConfig({ preset: "smoke", framework: "swav", batchSize: 8 }),
    Error,
    "--framework swav needs --batch >= --prototypes (got 8 < 16",
  );
  // The other methods have no such rule.
  assertEquals(resolveConfig({ preset: "smoke", batchSize: 8 }).batchSize, 8);
});
