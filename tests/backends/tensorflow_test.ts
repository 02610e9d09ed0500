/**
 * The `tensorflow` backend (tfjs-node-gpu, libtensorflow) against the `cpu` backend: the same
 * ViT forward and the same MoCo v3 step on fixed weights and inputs must agree.
 *
 * Where libtensorflow is not installed (`deno task setup-gpu` not run, or no internet when it
 * ran) the comparisons are registered as ignored, with the reason printed, so that JUnit shows
 * them as skipped. The harness itself is checked on every machine by running the same comparison
 * between `wasm` and `cpu`.
 */
import { assert, assertEquals } from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { BackendError, type BackendName, initBackend } from "../../lib/backends/mod.ts";
import { createFramework } from "../../lib/methods/mod.ts";
import { createRng } from "../../lib/core/rng.ts";
import { createViT, disposeViT, vitForward } from "../../lib/model/vit.ts";

// The wasm module and a native binding stay loaded for the whole process, by design.
const opts = { sanitizeOps: false, sanitizeResources: false };

type Compute = Exclude<BackendName, "auto">;

/** `undefined` if the tensorflow backend starts in this process, else why it does not. */
async function tensorflowUnavailable(): Promise<string | undefined> {
  try {
    const info = await initBackend({ backend: "tensorflow" });
    const gpu = (tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice;
    console.log(`tensorflow backend: ${info.summary}; GPU in use: ${gpu ?? "unknown"}`);
    return undefined;
  } catch (e) {
    if (!(e instanceof BackendError)) throw e;
    return e.message;
  } finally {
    await initBackend({ backend: "cpu" });
  }
}

const why = await tensorflowUnavailable();
if (why) console.log(`tensorflow_backend_test: tensorflow comparisons skipped: ${why}`);

/** The ViT of the comparisons: vit_nano on 28x28 gray images, 16 patches of 7x7. */
const VIT = { name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1 } as const;
const B = 6;

/** Fixed inputs `[B, 28, 28, 1]`: standard normal numbers from a seeded stream. */
function fixedImages(seed: number): Float32Array {
  const rng = createRng(seed);
  return Float32Array.from({ length: B * 28 * 28 }, () => rng.normal());
}

/** Backbone features `[B, D]` of a seeded ViT on fixed inputs, computed on `backend`. */
async function featuresOn(backend: Compute): Promise<Float32Array> {
  await initBackend({ backend });
  const n0 = tf.memory().numTensors;
  const model = createViT(VIT, 3);
  const f = tf.tidy(() => {
    const x = tf.tensor4d(fixedImages(11), [B, 28, 28, 1]);
    return vitForward(model, x).features;
  });
  const out = await f.data() as Float32Array;
  f.dispose();
  disposeViT(model);
  assertEquals(tf.memory().numTensors, n0, `tensors leaked on ${backend}`);
  return out;
}

/** Loss and every gradient of one MoCo v3 step (fixed weights and views) on `backend`. */
async function mocoStepOn(
  backend: Compute,
): Promise<{ loss: number; grads: Record<string, Float32Array> }> {
  await initBackend({ backend });
  const n0 = tf.memory().numTensors;
  const ssl = createFramework("mocov3", VIT, { hidden: 32, outDim: 16, temperature: 0.2 }, 5);
  const x1 = tf.tensor4d(fixedImages(21), [B, 28, 28, 1]);
  const x2 = tf.tensor4d(fixedImages(22), [B, 28, 28, 1]);
  const { loss, grads } = ssl.step(x1, x2, { momentum: 0.99 });
  const out: Record<string, Float32Array> = {};
  for (const [k, g] of Object.entries(grads)) out[k] = await g.data() as Float32Array;
  const [l] = await loss.data();
  tf.dispose([x1, x2, loss, ...Object.values(grads)]);
  ssl.dispose();
  assertEquals(tf.memory().numTensors, n0, `tensors leaked on ${backend}`);
  return { loss: l, grads: out };
}

/**
 * Asserts that `a` matches the reference `ref` elementwise within `atol + rtol * |ref|`, and
 * that the relative error of the whole vector is below `rtol`. Loose enough for TF32 matmuls on
 * an Ampere or Hopper GPU (10-bit mantissa), far too tight for a wrong kernel.
 */
function assertClose(a: Float32Array, ref: Float32Array, what: string, rtol = 1e-2, atol = 1e-4) {
  assertEquals(a.length, ref.length, `${what}: length`);
  let diff2 = 0, ref2 = 0, worst = 0, at = -1;
  for (let i = 0; i < a.length; i++) {
    assert(Number.isFinite(a[i]), `${what}[${i}] is ${a[i]}`);
    const d = Math.abs(a[i] - ref[i]);
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
    const excess = d - (atol + rtol * Math.abs(ref[i]));
    if (excess > worst) [worst, at] = [excess, i];
  }
  assert(at < 0, `${what}[${at}]: ${a[at]} vs reference ${ref[at]}`);
  assert(Math.sqrt(diff2) <= rtol * Math.sqrt(ref2) + atol, `${what}: relative error too large`);
}

/** Runs both comparisons of `backend` against `cpu`. */
async function compareWithCpu(backend: Compute): Promise<void> {
  const ref = await featuresOn("cpu");
  const got = await featuresOn(backend);
  // Not trivially equal: the features vary across the batch and are O(1) after the final LN.
  assert(ref.some((v) => Math.abs(v) > 0.1), "features are all near zero");
  assert(ref.slice(0, 32).some((v, i) => Math.abs(v - ref[32 + i]) > 1e-3), "rows identical");
  assertClose(got, ref, `features on ${backend}`);

  const s0 = await mocoStepOn("cpu");
  const s1 = await mocoStepOn(backend);
  assert(Number.isFinite(s0.loss) && s0.loss > 0, `cpu loss ${s0.loss}`);
  assert(Math.abs(s1.loss - s0.loss) <= 1e-3 * s0.loss, `loss ${s1.loss} vs cpu ${s0.loss}`);
  assertEquals(Object.keys(s1.grads).sort(), Object.keys(s0.grads).sort());
  for (const k of Object.keys(s0.grads)) {
    // A whole-tensor check with a small absolute floor: single entries near zero may differ.
    const a = s1.grads[k], r = s0.grads[k];
    let d2 = 0, r2 = 0;
    for (let i = 0; i < r.length; i++) [d2, r2] = [d2 + (a[i] - r[i]) ** 2, r2 + r[i] ** 2];
    assert(
      Math.sqrt(d2) <= 2e-2 * Math.sqrt(r2) + 1e-6,
      `gradient ${k} on ${backend}: |diff| ${Math.sqrt(d2)} vs |cpu| ${Math.sqrt(r2)}`,
    );
  }
  await initBackend({ backend: "cpu" });
}

Deno.test({
  ...opts,
  name: "harness: wasm matches cpu on the ViT forward and a MoCo step (checks the comparison)",
  fn: () => compareWithCpu("wasm"),
});

Deno.test({
  ...opts,
  name: "harness: the comparison rejects a perturbed result",
  fn: async () => {
    const ref = await featuresOn("cpu");
    const bad = ref.map((v, i) => (i === 7 ? v + 0.05 : v));
    let threw = false;
    try {
      assertClose(bad, ref, "perturbed");
    } catch {
      threw = true;
    }
    assert(threw, "a 0.05 change in one feature must fail the comparison");
  },
});

Deno.test({
  ...opts,
  ignore: why !== undefined,
  name: "tensorflow: ViT forward and MoCo step match the cpu backend",
  fn: () => compareWithCpu("tensorflow"),
});

Deno.test({
  ...opts,
  ignore: why === undefined,
  name: "tensorflow missing: the error names setup-gpu, libtensorflow 2.9.1, CUDA 11.2, cuDNN 8.1",
  fn: async () => {
    await initBackend({ backend: "cpu" });
    let message = "";
    try {
      await initBackend({ backend: "tensorflow" });
    } catch (e) {
      message = (e as Error).message;
    }
    for (const s of ["deno task setup-gpu", "libtensorflow 2.9.1", "CUDA 11.2", "cuDNN 8.1"]) {
      assert(message.includes(s), `expected "${s}" in: ${message}`);
    }
    assertEquals(tf.getBackend(), "cpu");
  },
});
