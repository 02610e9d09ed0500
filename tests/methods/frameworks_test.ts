import { assert, assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../../lib/backends/mod.ts";
import { byolLoss, createBYOL, momentumUpdateThenByolGrads } from "../../lib/methods/byol.ts";
import { createFramework, FRAMEWORKS } from "../../lib/methods/mod.ts";
import { ntXentLoss } from "../../lib/methods/simclr.ts";
import { disposeMomentumNetworks } from "../../lib/methods/two_view.ts";
import { createRng } from "../../lib/core/rng.ts";

await initBackend({ backend: "cpu" });

// ---------- plain-JS references (nothing here calls lib/) ----------

function normalize(v: number[]): number[] {
  const n = Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  return v.map((x) => x / n);
}

function dot(a: number[], b: number[]): number {
  return a.reduce((s, x, i) => s + x * b[i], 0);
}

/** NT-Xent from its definition: loops over the 2B rows, the denominator skips j = i. */
function ntXentRef(z1: number[][], z2: number[][], T: number): number {
  const z = [...z1, ...z2].map(normalize);
  const n = z.length, B = z1.length;
  let total = 0;
  for (let i = 0; i < n; i++) {
    const pos = (i + B) % n;
    let denom = 0;
    for (let j = 0; j < n; j++) if (j !== i) denom += Math.exp(dot(z[i], z[j]) / T);
    total += -Math.log(Math.exp(dot(z[i], z[pos]) / T) / denom);
  }
  return total / n;
}

/** Mean over rows of ||p/|p| - z/|z|||^2. */
function byolRef(p: number[][], z: number[][]): number {
  let total = 0;
  for (let b = 0; b < p.length; b++) {
    const d = normalize(p[b]).map((x, i) => x - normalize(z[b])[i]);
    total += dot(d, d);
  }
  return total / p.length;
}

function randomRows(rows: number, cols: number, seed: number): number[][] {
  const rng = createRng(seed);
  return Array.from({ length: rows }, () => Array.from({ length: cols }, () => rng.normal()));
}

function scalarOf(f: () => tf.Scalar): number {
  const t = f();
  const v = t.dataSync()[0];
  t.dispose();
  return v;
}

// ---------- losses ----------

Deno.test("ntXentLoss: B = 1 gives 0 (the only other row is the positive; self masked)", () => {
  const v = scalarOf(() => ntXentLoss(tf.tensor2d([[1, 2]]), tf.tensor2d([[-3, 0.5]]), 0.2));
  assertAlmostEquals(v, 0, 1e-6);
});

Deno.test("ntXentLoss: orthogonal pairs by hand: log(1 + 2 exp(-1/T))", () => {
  // z = e1, e2, e1, e2: every row has s = 1/T with its pair and 0 with the 2 negatives.
  const T = 0.5;
  const v = scalarOf(() =>
    ntXentLoss(tf.tensor2d([[1, 0], [0, 3]]), tf.tensor2d([[2, 0], [0, 1]]), T)
  );
  assertAlmostEquals(v, Math.log(1 + 2 * Math.exp(-1 / T)), 1e-5);
  assertAlmostEquals(v, 0.2395447, 1e-5);
});

Deno.test("ntXentLoss: random 2B embeddings match the plain-JS definition", () => {
  for (const [B, C, T] of [[3, 4, 0.2], [5, 3, 0.5]]) {
    const z1 = randomRows(B, C, 10 + B), z2 = randomRows(B, C, 20 + B);
    const v = scalarOf(() => ntXentLoss(tf.tensor2d(z1), tf.tensor2d(z2), T));
    assertAlmostEquals(v, ntXentRef(z1, z2, T), 1e-4);
  }
});

Deno.test("byolLoss: by hand (orthogonal 2, aligned 0, opposite 4) and against plain JS", () => {
  const v = scalarOf(() => byolLoss(tf.tensor2d([[1, 0], [3, 4]]), tf.tensor2d([[0, 2], [6, 8]])));
  assertAlmostEquals(v, (2 + 0) / 2, 1e-6);
  assertAlmostEquals(
    scalarOf(() => byolLoss(tf.tensor2d([[1, 1]]), tf.tensor2d([[-2, -2]]))),
    4,
    1e-6,
  );
  const p = randomRows(6, 5, 1), z = randomRows(6, 5, 2);
  assertAlmostEquals(scalarOf(() => byolLoss(tf.tensor2d(p), tf.tensor2d(z))), byolRef(p, z), 1e-5);
});

// ---------- one step of every framework ----------

const VIT = { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 };
const HEADS = { hidden: 16, outDim: 8, temperature: 0.2, prototypes: 6 };

function views(B: number): [tf.Tensor4D, tf.Tensor4D] {
  const r = createRng(7);
  const make = () =>
    tf.tensor4d(Float32Array.from({ length: B * 64 }, () => r.normal()), [B, 8, 8, 1]);
  return [make(), make()];
}

for (const name of FRAMEWORKS) {
  for (const mlpNorm of ["layernorm", "batchnorm"] as const) {
    Deno.test(`${name} (${mlpNorm}): one step: finite loss, grads of all trainables, no leak`, () => {
      const ssl = createFramework(name, { ...VIT, mlpNorm }, HEADS, 0);
      const [x1, x2] = views(4);
      const before = tf.memory().numTensors;
      const { loss, grads } = ssl.step(x1, x2, { momentum: 0.9 });
      const lv = loss.dataSync()[0];
      assert(Number.isFinite(lv) && lv > 0, `loss ${lv}`);
      const trainable = ssl.trainable();
      assertEquals(Object.keys(grads).sort(), Object.keys(trainable).sort());
      for (const [k, g] of Object.entries(grads)) {
        assertEquals(g.shape, trainable[k].shape, k);
        const gv = g.dataSync();
        assert(gv.every(Number.isFinite), `non-finite gradient for ${k}`);
      }
      // Every trainable parameter is in the checkpoint state under the same name.
      const state = ssl.state();
      for (const k of Object.keys(trainable)) assert(state[k] === trainable[k], k);
      if (mlpNorm === "batchnorm") {
        const rm = state["base_encoder.blocks.0.norm2.running_mean"].dataSync();
        assert(rm.some((v) => v !== 0), "ViT-BN running mean was not updated");
      }
      tf.dispose([loss, ...Object.values(grads)]);
      assertEquals(tf.memory().numTensors, before);
      tf.dispose([x1, x2]);
      ssl.dispose();
    });
  }
}

// SwAV's codes are targets without gradient, so its gradient is not the derivative of its loss
// value: tests/methods/swav_test.ts checks it against the swapped prediction with fixed codes.
for (const name of FRAMEWORKS.filter((n) => n !== "swav")) {
  Deno.test(`${name}: gradients match central finite differences of the step's loss`, () => {
    // Checks that each gradient lands under its own name (same-shaped siblings included).
    // Momentum 1 keeps any target fixed between the loss evaluations.
    const ssl = createFramework(name, VIT, HEADS, 1);
    const [x1, x2] = views(4);
    const run = () => {
      const { loss, grads } = ssl.step(x1, x2, { momentum: 1 });
      const out = { loss: loss.dataSync()[0], grads: { ...grads } };
      loss.dispose();
      return out;
    };
    const { grads } = run();
    const eps = 1e-2;
    for (const k of ["base_encoder.blocks.0.norm1.bias", "base_encoder.head.0.weight"]) {
      const v = ssl.trainable()[k];
      const g = grads[k].dataSync()[1];
      const at = (d: number) => {
        const orig = v.dataSync().slice();
        const moved = orig.slice();
        moved[1] += d;
        tf.tidy(() => v.assign(tf.tensor(moved, v.shape)));
        const { loss, grads: gs } = run();
        tf.dispose(Object.values(gs));
        tf.tidy(() => v.assign(tf.tensor(orig, v.shape)));
        return loss;
      };
      const fd = (at(eps) - at(-eps)) / (2 * eps);
      assertAlmostEquals(g, fd, 1e-3 + 0.05 * Math.abs(fd), `${k}: grad ${g}, finite diff ${fd}`);
    }
    tf.dispose([x1, x2, ...Object.values(grads)]);
    ssl.dispose();
  });
}

Deno.test("simclr: no momentum encoder, no predictor; backbone and projector names", () => {
  const ssl = createFramework("simclr", VIT, HEADS, 0);
  const names = Object.keys(ssl.state());
  assert(names.every((k) => k.startsWith("base_encoder.")), names.join(", "));
  assert(names.some((k) => k.startsWith("base_encoder.head.0.weight")));
  assert(names.includes("base_encoder.patch_embed.proj.weight"));
  assert(!names.some((k) => /momentum|predictor/.test(k)));
  ssl.dispose();
});

Deno.test("simclr, byol and swav start from the same backbone as mocov3 for the same seed", () => {
  const models = FRAMEWORKS.map((n) => createFramework(n, VIT, HEADS, 3));
  const w = models.map((m) => Array.from(m.backbone.params["blocks.0.attn.qkv.weight"].dataSync()));
  assertEquals(w[1], w[0]);
  assertEquals(w[2], w[0]);
  assertEquals(w[3], w[0]);
  models.forEach((m) => m.dispose());
});

Deno.test("byol: after a step target = m * target + (1 - m) * online (online unchanged)", () => {
  const model = createBYOL(VIT, HEADS, 0);
  // Make online and target differ, so the EMA is visible.
  tf.tidy(() => {
    for (const v of Object.values(model.backbone.params)) v.assign(tf.add(v, 0.5));
    for (const v of Object.values(model.projector.params)) v.assign(tf.mul(v, -1));
  });
  const snap = (vars: Record<string, tf.Variable>) =>
    Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, Array.from(v.dataSync())]));
  const online = { ...snap(model.backbone.params), ...snap(model.projector.params) };
  const target0 = {
    ...snap(model.momentumBackbone.params),
    ...snap(model.momentumProjector.params),
  };
  const m = 0.75;
  const [x1, x2] = views(4);
  const { loss, grads } = momentumUpdateThenByolGrads(model, x1, x2, { momentum: m });
  tf.dispose([loss, ...Object.values(grads), x1, x2]);
  const target1 = {
    ...snap(model.momentumBackbone.params),
    ...snap(model.momentumProjector.params),
  };
  assertEquals(Object.keys(target1).sort(), Object.keys(online).sort());
  for (const [k, t] of Object.entries(target1)) {
    t.forEach((v, i) => assertAlmostEquals(v, m * target0[k][i] + (1 - m) * online[k][i], 1e-5));
  }
  assertEquals({ ...snap(model.backbone.params), ...snap(model.projector.params) }, online);
  disposeMomentumNetworks(model);
});

Deno.test("byol: MoCo's names (predictor, momentum encoder with its projector)", () => {
  const ssl = createFramework("byol", VIT, HEADS, 0);
  const names = Object.keys(ssl.state());
  assert(names.includes("predictor.0.weight"));
  assert(names.includes("momentum_encoder.head.0.weight"));
  assert(names.includes("momentum_encoder.patch_embed.proj.weight"));
  assert(!Object.keys(ssl.trainable()).some((k) => k.startsWith("momentum_encoder.")));
  ssl.dispose();
});

Deno.test("createFramework: an unknown name lists the choices", () => {
  assertThrows(() => createFramework("dino", VIT, HEADS, 0), Error, "mocov3, simclr, byol, swav");
});
