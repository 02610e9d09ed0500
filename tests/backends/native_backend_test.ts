// The `native` tfjs backend (lib/backends/native): its kernels against the `cpu` backend's on the
// same inputs, training steps bit-identical at 1, 2 and 3 threads with no tensor leaks, a smoke
// pretraining that matches `--backend cpu`, the fallback when the library cannot load, and the fused
// layers (linear, linearGelu, mlp, the heads' BatchNorm, a ViT block's two halves) against the ops
// they replace. Every in-process test of the library through tfjs lives in this file: some switch
// its process-wide precision, and `deno test --parallel` runs files side by side in one process.
import * as tf from "@tensorflow/tfjs-core";
import {
  assert,
  assertEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { BackendError, initBackend, withFp32Matmuls } from "../../lib/backends/mod.ts";
import { knnClassify } from "../../lib/eval/knn.ts";
import { broadcastPlan } from "../../lib/backends/native/backend.ts";
import { libraryName, openNative } from "../../lib/backends/native/ffi.ts";
import { privateLibraryCopy } from "../_helpers/native.ts";
import { createStepRunner } from "../../lib/bench/step.ts";
import { resolveWorkload } from "../../lib/bench/workloads.ts";
import { assertSameBits, values } from "../_helpers/numeric.ts";
import { fastPathCalls, registeredFastPaths, registerFastPaths } from "../../lib/backends/fused.ts";
import { FUSED_KERNELS } from "../../lib/backends/wasm/kernels.ts";
import { emaAssign, residualAttention, residualMlp } from "../../lib/model/layers.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
} from "../../lib/optim/optim.ts";

type Case = [string, () => tf.Tensor | tf.Tensor[]];

const t = (shape: number[], seed: number) =>
  tf.tensor(values(shape.reduce((p, q) => p * q, 1), seed), shape);

/** Every case on cpu and on native: values within float32 tolerance, same shapes and dtypes. */
async function compareWithCpu(cases: Case[], tol = 1e-5) {
  const run = async (backend: "cpu" | "native") => {
    await initBackend({ backend, threads: backend === "native" ? 2 : undefined });
    return cases.map(([, f]) => {
      const out = tf.tidy(f);
      const list = Array.isArray(out) ? out : [out];
      const r = list.map((o) => ({
        shape: o.shape,
        dtype: o.dtype,
        data: Array.from(o.dataSync()),
      }));
      tf.dispose(list);
      return r;
    });
  };
  const cpu = await run("cpu"), native = await run("native");
  cases.forEach(([name], i) => {
    assertEquals(native[i].length, cpu[i].length, name);
    native[i].forEach((o, j) => {
      assertEquals(o.shape, cpu[i][j].shape, `${name}: shape`);
      assertEquals(o.dtype, cpu[i][j].dtype, `${name}: dtype`);
      o.data.forEach((v, k) => {
        const w = cpu[i][j].data[k];
        if (!(Object.is(v, w) || Math.abs(v - w) <= tol * Math.max(1, Math.abs(w)))) {
          throw new Error(`${name}: output ${j}[${k}] is ${v} on native, ${w} on cpu`);
        }
      });
    });
  });
}

Deno.test("native backend: matmuls, elementwise ops, reductions and copies match cpu", async () => {
  await compareWithCpu([
    ["matMul 2d", () => tf.matMul(t([37, 65], 1), t([65, 33], 2))],
    ["matMul tA", () => tf.matMul(t([65, 37], 1), t([65, 33], 2), true, false)],
    ["matMul tB", () => tf.matMul(t([37, 65], 1), t([33, 65], 2), false, true)],
    ["matMul tA tB", () => tf.matMul(t([65, 37], 1), t([33, 65], 2), true, true)],
    ["matMul 3d x 2d", () => tf.matMul(t([3, 17, 40], 3), t([40, 9], 4))],
    ["matMul 3d tA x 2d", () => tf.matMul(t([3, 40, 17], 3), t([40, 9], 4), true)],
    ["matMul batched", () => tf.matMul(t([4, 17, 8], 5), t([4, 17, 8], 6), false, true)],
    ["matMul 2d x 3d", () => tf.matMul(t([17, 8], 5), t([4, 8, 17], 6))],
    ["matMul 4d", () => tf.matMul(t([2, 3, 5, 8], 5), t([2, 3, 8, 6], 6))],
    [
      "fused matMul",
      () =>
        tf.fused.matMul({
          a: t([9, 13], 1),
          b: t([13, 7], 2),
          bias: t([7], 3),
          activation: "relu",
        }),
    ],
    ["add bias", () => tf.add(t([2176 / 17, 17, 19], 7), t([19], 8))],
    ["sub column", () => tf.sub(t([5, 19], 7), t([5, 1], 8))],
    ["mul scalar", () => tf.mul(t([5, 19], 7), 3)],
    ["div 4d broadcast", () => tf.div(t([2, 3, 4, 5], 7), t([1, 3, 1, 5], 8).abs().add(1))],
    ["maximum", () => tf.maximum(t([6, 7], 1), t([7], 2))],
    ["squared difference", () => tf.squaredDifference(t([6, 7], 1), t([6, 7], 2))],
    ["5d broadcast (falls back)", () => tf.add(t([2, 1, 3, 1, 2], 1), t([1, 2, 1, 2, 1], 2))],
    [
      "int add (falls back)",
      () => tf.add(tf.tensor([1, 2, 3], [3], "int32"), tf.tensor([4], [1], "int32")),
    ],
    [
      "unary",
      () => [
        t([37], 1).neg(),
        t([37], 2).square(),
        t([37], 3).abs().sqrt(),
        t([37], 3).abs().add(0.1).rsqrt(),
        t([37], 4).relu(),
        t([37], 5).exp(),
        t([37], 7).step(0.5),
        t([37], 8).mul(3).floor(),
      ],
    ],
    ["sum leading", () => tf.sum(t([40, 3, 7], 9), [0, 1])],
    ["sum trailing keepDims", () => tf.sum(t([40, 3, 7], 9), [1, 2], true)],
    ["mean", () => [tf.mean(t([128, 1024], 9), 0), tf.mean(t([128, 33], 9), -1)]],
    ["sum middle (falls back)", () => tf.sum(t([4, 3, 7], 9), 1)],
    ["transpose 2d", () => tf.transpose(t([33, 65], 1))],
    ["transpose heads", () => tf.transpose(t([2, 17, 4, 8], 1), [0, 2, 1, 3])],
    [
      "transpose int",
      () => tf.transpose(tf.range(0, 24, 1, "int32").reshape([2, 3, 4]), [0, 2, 1]),
    ],
    ["transpose general (falls back)", () => tf.transpose(t([2, 3, 4], 1), [2, 0, 1])],
    ["concat", () => tf.concat([t([5, 1, 7], 1), t([5, 16, 7], 2)], 1)],
    ["split", () => tf.split(t([5, 12, 3], 1), [2, 4, 6], 1)],
    ["slice", () => tf.slice(t([5, 17, 8], 1), [0, 1, 0], [5, 16, 8])],
    ["slice 2 axes", () => tf.slice(t([5, 17, 8], 1), [1, 0, 2], [3, 1, 5])],
    ["gather rows", () => tf.gather(t([9, 7], 1), tf.tensor1d([8, 0, 3, 3], "int32"))],
    [
      "gather axis 1",
      () => tf.gather(t([3, 9, 4], 1), tf.tensor2d([[2, 0], [8, 2]], [2, 2], "int32"), 1),
    ],
    ["gather int32", () => tf.gather(tf.range(0, 12, 1, "int32").reshape([4, 3]), [3, 1], 0)],
    ["gather from a sliced view", () => tf.gather(tf.slice(t([6, 5], 2), [1, 0], [4, 5]), [3, 0])],
    ["tile unit axes", () => tf.tile(t([1, 1, 8], 1), [5, 3, 1])],
    ["tile (falls back)", () => tf.tile(t([2, 3], 1), [2, 2])],
    ["pad one axis", () => tf.pad(t([5, 1, 8], 1), [[0, 0], [2, 14], [0, 0]], 0.5)],
    ["pad two axes (falls back)", () => tf.pad(t([5, 2], 1), [[1, 0], [0, 3]])],
    ["pow", () => tf.pow(t([5, 7], 1).abs(), t([7], 2))],
    ["clip", () => tf.clipByValue(t([300], 1), -0.3, 0.4)],
    [
      "mirror pad reflect",
      () => tf.mirrorPad(t([2, 6, 5, 3], 1), [[0, 0], [2, 2], [1, 3], [0, 0]], "reflect"),
    ],
    ["mirror pad symmetric", () => tf.mirrorPad(t([4, 5], 1), [[1, 2], [3, 0]], "symmetric")],
    [
      "depthwise conv valid",
      () =>
        tf.depthwiseConv2d(
          t([2, 9, 8, 3], 1) as tf.Tensor4D,
          t([3, 1, 3, 1], 2) as tf.Tensor4D,
          1,
          "valid",
        ),
    ],
    [
      "depthwise conv one channel",
      () =>
        tf.depthwiseConv2d(
          t([2, 9, 8, 1], 1) as tf.Tensor4D,
          t([1, 5, 1, 1], 2) as tf.Tensor4D,
          1,
          "valid",
        ),
    ],
    [
      "depthwise conv same, strided, multiplier 2",
      () =>
        tf.depthwiseConv2d(
          t([2, 9, 8, 3], 1) as tf.Tensor4D,
          t([3, 3, 3, 2], 2) as tf.Tensor4D,
          2,
          "same",
        ),
    ],
    ["crop and resize", () =>
      tf.image.cropAndResize(
        t([2, 9, 8, 3], 1) as tf.Tensor4D,
        tf.tensor2d([[0.1, 0.2, 0.8, 0.9], [-0.2, 0, 1.1, 0.5], [0.3, 0.3, 0.3, 0.3]]),
        [0, 1, 1],
        [5, 4],
        "bilinear",
        0.25,
      )],
  ]);
});

Deno.test("native backend: float32 views of int32 and bool tensors compute exactly (a one-hot, an integer exponent)", async () => {
  // tfjs casts int32 and bool to float32 without copying: the float32 tensor keeps the integer
  // array. Each value is an exact float32 below 2^24; 2^24 + 1 is not, and must not be rounded
  // first (1.5 * (2^24 + 1) = 25165825.5 rounds once to 25165826; 1.5 * 2^24 gives 25165824).
  await initBackend({ backend: "native", threads: 2 });
  const x = [0.3, -1.7, 2.5, 1e-3, -0.0, 7];
  const ints = [0, 1, -3, 2 ** 24, -(2 ** 24), 5];
  const got = tf.tidy(() => ({
    mul: tf.mul(tf.tensor1d(ints, "int32"), tf.tensor1d(x)).arraySync() as number[],
    add: tf.add(tf.tensor1d(x), tf.tensor1d([1, 0, 1, 1, 0, 0], "bool")).arraySync() as number[],
    pow: tf.pow(tf.tensor1d(x), tf.scalar(2, "int32")).arraySync() as number[],
    big: tf.mul(tf.tensor1d([2 ** 24 + 1], "int32"), tf.tensor1d([1.5])).arraySync() as number[],
  }));
  const f = Math.fround;
  const xf = x.map(f);
  assertEquals(got.mul, xf.map((v, i) => f(v * ints[i])));
  assertEquals(got.add, xf.map((v, i) => f(v + [1, 0, 1, 1, 0, 0][i])));
  assertEquals(got.pow, xf.map((v) => f(v * v)));
  assertEquals(got.big, [25165826]);
});

Deno.test("native backend: x to the power 1 is x, bit for bit (the L2 norm's gradient)", async () => {
  // pow(x, 1) is exact, so the kernel copies: -0 stays -0, subnormals, infinities and NaN pass.
  await initBackend({ backend: "native", threads: 2 });
  const x = Float32Array.from({ length: 37 }, (_, i) => (i - 18) * 0.37);
  x.set([-0, 1e-40, -Infinity, Infinity, NaN, 3.4e38], 3);
  for (const e of [tf.scalar(1), tf.scalar(1, "int32")]) {
    const y = tf.tidy(() => tf.pow(tf.tensor1d(x), e).dataSync() as Float32Array);
    x.forEach((v, i) => assert(Object.is(y[i], v), `x[${i}] = ${v}: got ${y[i]}`));
    e.dispose();
  }
});

Deno.test("native backend: tensors move to and from other backends, reads are copies", async () => {
  await initBackend({ backend: "wasm" });
  const w = tf.tensor([1, 2, 3, 4], [2, 2]);
  await initBackend({ backend: "native", threads: 2 });
  const n = tf.matMul(w, w); // w moves to native
  assertEquals(Array.from(n.dataSync()), [7, 10, 15, 22]);
  const read = n.dataSync();
  read[0] = -1; // a copy: the tensor keeps its data
  assertEquals(n.dataSync()[0], 7);
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) tf.dispose(tf.tidy(() => tf.add(tf.matMul(n, w), 1))); // pooled buffers
  assertEquals(tf.memory().numTensors, before);
  await initBackend({ backend: "wasm" });
  assertEquals(Array.from(await n.data()), [7, 10, 15, 22]); // n moves to wasm
  tf.dispose([w, n]);
  await initBackend({ backend: "native" });
});

Deno.test("native backend: broadcastPlan collapses axes and gives broadcast axes stride 0", () => {
  assertEquals(Array.from(broadcastPlan([2176, 128], [128], [2176, 128])!), [
    1,
    1,
    2176,
    128,
    0,
    0,
    128,
    1,
    0,
    0,
    0,
    1,
  ]);
  assertEquals(Array.from(broadcastPlan([4, 5, 6], [4, 5, 6], [4, 5, 6])!), [
    1,
    1,
    1,
    120,
    0,
    0,
    0,
    1,
    0,
    0,
    0,
    1,
  ]);
  assertEquals(broadcastPlan([2, 1, 3, 1, 2], [1, 2, 1, 2, 1], [2, 2, 3, 2, 2]), undefined);
});

/** Runs `f` counting the native library's top-k calls that ran (not those that fell back). */
async function countTopk<T>(f: () => Promise<T>): Promise<[T, number]> {
  const lib = openNative(); // the object the backend calls
  const topk = lib.topk;
  let done = 0;
  lib.topk = (...a) => {
    const ok = topk(...a);
    if (ok) done++;
    return ok;
  };
  try {
    return [await f(), done];
  } finally {
    lib.topk = topk;
  }
}

Deno.test("native backend: TopK equals cpu's (ties, any rank, k = n), natively where it can", async () => {
  // 9 levels: many ties, which tfjs orders by index; -0 among them.
  const ties = (shape: number[], seed: number) =>
    tf.tensor(values(size(shape), seed).map((v) => Math.round(v * 4) / 4), shape);
  const size = (shape: number[]) => shape.reduce((p, q) => p * q, 1);
  const topk = (x: tf.Tensor, k: number, sorted = true) => {
    const { values, indices } = tf.topk(x, k, sorted);
    return [values, indices];
  };
  const native: Case[] = [
    ["topk ties", () => topk(ties([6, 50], 1), 7)],
    ["topk 3d, k = n", () => topk(ties([2, 3, 40], 2), 40)],
    ["topk 1d, k = 1", () => topk(t([100], 3), 1)],
    ["topk long rows", () => topk(t([40, 3000], 4), 200)],
  ];
  const [, ran] = await countTopk(() => compareWithCpu(native));
  assertEquals(ran, native.length, "native top-k calls");
  const fallback: Case[] = [
    ["topk k = 0", () => topk(t([6, 5], 5), 0)],
    ["topk unsorted", () => topk(ties([6, 50], 6), 7, false)],
    ["topk int32", () => topk(tf.tensor([3, 1, 2, 3, 1, 2], [2, 3], "int32"), 2)],
    ["topk NaN", () => topk(tf.tensor([[1, NaN, 2, 0], [0, 1, 2, 3]]), 2)],
    ["topk infinities", () => topk(tf.tensor([[Infinity, 1, Infinity, -Infinity]]), 3)],
  ];
  const [, ranFallback] = await countTopk(() => compareWithCpu(fallback));
  assertEquals(ranFallback, 0, "these run on the JS kernel");
});

Deno.test("native backend: kNN accuracy equals cpu's", async () => {
  // 10 class centres plus noise, D 16: accuracies far from chance and from 1. The similarities
  // differ between the backends by rounding only, too little to reorder these neighbours.
  const D = 16, C = 10, centres = values(C * D, 1);
  const set = (n: number, seed: number) => {
    const noise = values(n * D, seed), labels = Int32Array.from({ length: n }, (_, i) => i % C);
    const features = noise.map((v, i) =>
      centres[labels[Math.floor(i / D)] * D + (i % D)] + 1.2 * v
    );
    return { features, labels, dim: D };
  };
  const train = set(3000, 2), test = set(600, 3);
  const run = async (backend: "cpu" | "native") => {
    await initBackend({ backend, threads: backend === "native" ? 2 : undefined });
    return await knnClassify(train, test, { k: [1, 20, 200], numClasses: C });
  };
  const cpu = await run("cpu");
  const [native, ran] = await countTopk(() => run("native"));
  assert(ran > 0, "the native top-k ran");
  assertEquals(native, cpu);
  assert(cpu.every((r) => r.top1 > 0.2 && r.top1 < 0.95), JSON.stringify(cpu));
});

Deno.test("native backend: MoCo v3 steps are bit-identical at 1, 2 and 3 threads, and leak nothing", async () => {
  const w = resolveWorkload("small28", { batch: 8 });
  const x = [0, 1, 2, 3].map((i) => values(8 * 28 * 28, i + 1));
  const losses: number[][] = [];
  for (const threads of [1, 2, 3]) {
    await initBackend({ backend: "native", threads });
    const xs = x.map((v) => tf.tensor4d(v, [8, 28, 28, 1]));
    const runner = createStepRunner(w, "step", 0);
    const seen: number[] = [];
    await runner.run(xs[0], xs[1]);
    const before = tf.memory();
    for (let s = 0; s < 3; s++) seen.push(await runner.run(xs[(s % 2) * 2], xs[(s % 2) * 2 + 1]));
    const after = tf.memory();
    assertEquals(after.numTensors, before.numTensors, `tensors leaked at ${threads} threads`);
    assertEquals(after.numBytes, before.numBytes, `bytes leaked at ${threads} threads`);
    losses.push(seen);
    runner.dispose();
    tf.dispose(xs);
  }
  assert(losses[0].every(Number.isFinite));
  assertEquals(losses[1], losses[0], "2 threads differ from 1");
  assertEquals(losses[2], losses[0], "3 threads differ from 1");
});

async function pretrain(backend: string, dir: string, threads?: number) {
  const args = [
    "run",
    "-A",
    "lib/cli/pretrain.ts",
    "--preset",
    "smoke",
    "--backend",
    backend,
    "--out",
    dir,
    "--max-steps",
    "6",
  ];
  if (threads) args.push("--threads", String(threads));
  const out = await new Deno.Command(Deno.execPath(), { args, stdout: "piped", stderr: "piped" })
    .output();
  const err = new TextDecoder().decode(out.stderr);
  assert(out.success, `pretrain --backend ${backend} failed:\n${err}`);
  const rows = (await Deno.readTextFile(`${dir}/log.csv`)).trim().split("\n");
  const head = rows[0].split(",");
  const col = (name: string) => rows.slice(1).map((r) => Number(r.split(",")[head.indexOf(name)]));
  const lossText = rows.slice(1).map((r) => r.split(",")[head.indexOf("loss")]).join(",");
  return { loss: col("loss"), grad: col("grad_total"), lossText };
}

Deno.test("native backend: a smoke pretraining matches cpu, and is the same at 1 and 3 threads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-native-" });
  try {
    const native = await pretrain("native", `${dir}/native`);
    const cpu = await pretrain("cpu", `${dir}/cpu`);
    assertEquals(native.loss.length, 6);
    native.loss.forEach((l, i) =>
      assert(
        Math.abs(l - cpu.loss[i]) <= 1e-5 * Math.abs(cpu.loss[i]),
        `loss ${i}: ${l} vs ${cpu.loss[i]}`,
      )
    );
    native.grad.forEach((g, i) =>
      assert(
        Math.abs(g - cpu.grad[i]) <= 1e-4 * Math.abs(cpu.grad[i]),
        `grad ${i}: ${g} vs ${cpu.grad[i]}`,
      )
    );
    // One thread and three give the same run, to the bit: losses and the saved backbone.
    const one = await pretrain("native", `${dir}/one`, 1);
    const three = await pretrain("native", `${dir}/three`, 3);
    assertEquals(three.lossText, one.lossText);
    assertEquals(
      await Deno.readFile(`${dir}/three/backbone.safetensors`),
      await Deno.readFile(`${dir}/one/backbone.safetensors`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("native backend: a missing library gives a clear error, and auto falls back", async () => {
  const code = `
    import { initBackend } from "${new URL("../../lib/backends/mod.ts", import.meta.url).href}";
    try { await initBackend({ backend: "native" }); console.log("STARTED"); }
    catch (e) { console.log("ERROR " + e.name + ": " + e.message); }
    const a = await initBackend({ backend: "auto" });
    console.log("AUTO " + a.name + " | " + a.skipped.join(" | "));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    env: { VITSSL_NATIVE_LIB: "/nonexistent/libvitssl_native.so" },
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertStringIncludes(
    text,
    "ERROR BackendError: the native library /nonexistent/libvitssl_native.so is missing",
  );
  assertStringIncludes(text, "build.sh");
  assert(/AUTO (wasm|webgpu|tensorflow) /.test(text), text);
  // On a machine with a GPU backend, auto stops before it tries native.
  if (/AUTO wasm /.test(text)) {
    assertStringIncludes(text, "native: the native library /nonexistent");
  }
  assertEquals(libraryName("darwin", "aarch64").name, undefined);
  assertStringIncludes(
    libraryName("darwin", "aarch64").reason!,
    "no native library for darwin-aarch64",
  );
  assertEquals(libraryName("linux", "x86_64").name, "libvitssl_native.linux-x86_64.so");
  await assertRejects(
    () => initBackend({ backend: "native", threads: 0 }),
    BackendError,
    "threads",
  );
  assertEquals(openNative().path.endsWith("libvitssl_native.linux-x86_64.so"), true);
});

const BF16_TEST =
  "native backend: precision bf16 rounds every matmul's inputs, steps stay thread-independent";
Deno.test(BF16_TEST, async () => {
  if (Deno.env.get("VITSSL_BF16_CHILD") !== "1") {
    // The precision is a process-wide switch of the loaded library, and `deno test --parallel`
    // runs other test files in this process: the test runs in a child process, on a private
    // copy of the library, so that the files beside it keep float32 products.
    const copy = await privateLibraryCopy("vitssl-native-bf16-child-");
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "test",
        "-A",
        "--unstable-webgpu",
        "--filter",
        BF16_TEST,
        new URL(import.meta.url).pathname,
      ],
      env: { VITSSL_BF16_CHILD: "1", VITSSL_NATIVE_LIB: copy },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, text);
    assertStringIncludes(text, "1 passed");
    return;
  }
  // 1 + 3 * 2^-8 is a tie between bf16 neighbours 1 + 2^-7 and 1 + 2^-6: to even, 1 + 2^-6.
  const x = 1 + 3 * 2 ** -8, rounded = 1 + 2 ** -6;
  const products = () =>
    tf.tidy(() =>
      [
        tf.matMul(tf.tensor2d([[x]]), tf.tensor2d([[1]])).dataSync()[0],
        tf.matMul(tf.tensor3d([[[1]], [[x]]]), tf.tensor3d([[[x]], [[1]]])).dataSync()[1],
        tf.fused.matMul({
          a: tf.tensor2d([[x]]),
          b: tf.tensor2d([[1]]),
          bias: tf.tensor1d([0]),
          activation: "relu",
        }),
      ].map((v) => typeof v === "number" ? v : (v as tf.Tensor).dataSync()[0])
    );
  try {
    await initBackend({ backend: "native", threads: 2, precision: "bf16" });
    assertEquals(products(), [rounded, rounded, rounded]);
    await initBackend({ backend: "native", threads: 2 });
    assertEquals(products(), [x, x, x]);

    const w = resolveWorkload("small28", { batch: 8 });
    const xs = [0, 1].map((i) => tf.tensor4d(values(8 * 28 * 28, i + 1), [8, 28, 28, 1]));
    const run = async (threads: number, precision: "fp32" | "bf16") => {
      await initBackend({ backend: "native", threads, precision });
      const runner = createStepRunner(w, "step", 0);
      await runner.run(xs[0], xs[1]);
      const before = tf.memory();
      const loss = [await runner.run(xs[0], xs[1]), await runner.run(xs[1], xs[0])];
      assertEquals(tf.memory().numTensors, before.numTensors, `tensors leaked (${precision})`);
      runner.dispose();
      return loss;
    };
    const bf = await run(1, "bf16");
    assert(bf.every(Number.isFinite));
    assertEquals(await run(2, "bf16"), bf, "bf16: 2 threads differ from 1");
    assertEquals(await run(3, "bf16"), bf, "bf16: 3 threads differ from 1");
    const fp = await run(2, "fp32");
    // Mixed precision moves the loss (its inputs are rounded), by far less than the loss itself.
    bf.forEach((l, i) => {
      assert(l !== fp[i] && Math.abs(l - fp[i]) < 0.05 * Math.abs(fp[i]), `${l} vs ${fp[i]}`);
    });
    tf.dispose(xs);

    await assertRejects(
      () => initBackend({ backend: "wasm", precision: "bf16" }),
      BackendError,
      "--precision bf16 runs only on the native backend, not wasm",
    );
    await assertRejects(
      () => initBackend({ backend: "native", precision: "fp16" as "bf16" }),
      BackendError,
      'unknown precision "fp16"',
    );
    // auto: bf16 exactly where /proc/cpuinfo lists AVX512-BF16; float32 on other backends.
    const hasBf16 = /\bavx512_bf16\b/.test(await Deno.readTextFile("/proc/cpuinfo"));
    const auto = await initBackend({ backend: "native", threads: 2, precision: "auto" });
    assertEquals(auto.precision, hasBf16 ? "bf16" : "fp32");
    assertEquals(products(), hasBf16 ? [rounded, rounded, rounded] : [x, x, x]);
    assertEquals((await initBackend({ backend: "wasm", precision: "auto" })).precision, "fp32");
    // Evaluation: float32 products inside withFp32Matmuls, bf16 again after it.
    await initBackend({ backend: "native", threads: 2, precision: "bf16" });
    assertEquals(await withFp32Matmuls(() => Promise.resolve(products())), [x, x, x]);
    assertEquals(products(), [rounded, rounded, rounded]);
  } finally {
    await initBackend({ backend: "native", threads: 2 });
  }
});

Deno.test("native backend: pretrain --precision bf16 records it; on wasm, or unknown, exits 2 with one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-native-bf16-" });
  const pretrainCli = async (...extra: string[]) => {
    const args = ["run", "-A", "lib/cli/pretrain.ts", "--preset", "smoke", "--max-steps", "2"];
    const out = await new Deno.Command(Deno.execPath(), {
      args: [...args, ...extra],
      stdout: "piped",
      stderr: "piped",
    }).output();
    return { code: out.code, err: new TextDecoder().decode(out.stderr) };
  };
  try {
    const ok = await pretrainCli("--backend", "native", "--precision", "bf16", "--out", dir);
    assertEquals(ok.code, 0, ok.err);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assertEquals(saved.config.precision, "bf16");
    const rows = (await Deno.readTextFile(`${dir}/log.csv`)).trim().split("\n");
    assertEquals(rows.length, 3);
    for (
      const [extra, line] of [
        [["--backend", "wasm", "--precision", "bf16"], "runs only on the native backend"],
        [["--precision", "bf17"], 'unknown --precision "bf17": did you mean bf16?'],
      ] as const
    ) {
      const bad = await pretrainCli(...extra, "--out", `${dir}/bad`);
      assertEquals(bad.code, 2, bad.err);
      assertStringIncludes(bad.err, line);
      assertEquals(bad.err.trim().split("\n").filter((l) => l.startsWith("error")).length, 1);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("native backend: without AVX512-BF16 (VITSSL_NATIVE_ISA=avx2), bf16 is emulated and says so in one line", async () => {
  const code = `
    import * as tf from "@tensorflow/tfjs-core";
    import { initBackend } from "${new URL("../../lib/backends/mod.ts", import.meta.url).href}";
    const info = await initBackend({ backend: "native", precision: "bf16", threads: 2 });
    const y = tf.matMul(tf.tensor2d([[1 + 3 * 2 ** -8]]), tf.tensor2d([[1]])).dataSync()[0];
    console.log("DEVICE " + info.device + " | " + (y === 1 + 2 ** -6 ? "ROUNDED" : "NOT " + y));
  `;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--ext=ts", code],
    env: { VITSSL_NATIVE_ISA: "avx2" },
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout),
    stderr = new TextDecoder().decode(out.stderr);
  assertStringIncludes(stdout, "DEVICE C, avx2, bf16-emulated | ROUNDED", stderr);
  const notice = stderr.split("\n").filter((l) => l.includes("emulated bf16"));
  assertEquals(notice.length, 1, stderr);
  assertStringIncludes(notice[0], "native: no AVX512-BF16 (this CPU lacks it");
});

Deno.test("native backend: gather copies the indexed rows (by hand), an index out of range throws", async () => {
  await initBackend({ backend: "native", threads: 2 });
  // x[i, j] = 10 i + j, made by a native kernel (so its buffer is pooled).
  const x = tf.tidy(() => tf.add(tf.mul(tf.range(0, 4).reshape([4, 1]), 10), tf.range(0, 3)));
  const g = tf.gather(x, tf.tensor1d([3, 1, 3], "int32"));
  assertEquals(g.shape, [3, 3]);
  assertEquals(Array.from(g.dataSync()), [30, 31, 32, 10, 11, 12, 30, 31, 32]);
  const cols = tf.gather(x, tf.tensor1d([2, 0], "int32"), 1);
  assertEquals(Array.from(cols.dataSync()), [2, 0, 12, 10, 22, 20, 32, 30]);
  assertThrows(() => tf.gather(x, tf.tensor1d([4], "int32")), Error, "not in [0, 3]");
  tf.dispose([x, g, cols]);
});

Deno.test("native library: a worker's end leaves it loaded, so its pool's threads are never orphaned", async () => {
  // In a child process, on a private copy (the only holder of that file): a worker opens it and
  // starts the pool, the worker ends (Deno closes its libraries), the child opens it again.
  const copy = await privateLibraryCopy("vitssl-native-nodelete-");
  const dir = await Deno.makeTempDir({ prefix: "vitssl-nodelete-" });
  const ffi = new URL("../../lib/backends/native/ffi.ts", import.meta.url).href;
  await Deno.writeTextFile(
    `${dir}/worker.ts`,
    `import { openNative } from "${ffi}";
     openNative().setThreads(2);
     self.postMessage("ready");`,
  );
  await Deno.writeTextFile(
    `${dir}/main.ts`,
    `import { openNative } from "${ffi}";
     const mapped = () => Deno.readTextFileSync("/proc/self/maps").includes(${
      JSON.stringify(copy)
    });
     const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
     await new Promise((r) => (w.onmessage = r));
     w.terminate();
     await new Promise((r) => setTimeout(r, 300));
     const lib = openNative();
     console.log(JSON.stringify({ mapped: mapped(), threads: lib.threads() }));`,
  );
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", `${dir}/main.ts`],
      env: { VITSSL_NATIVE_LIB: copy },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout);
    assertEquals(out.code, 0, text + new TextDecoder().decode(out.stderr));
    // Unloaded, a fresh copy would start at 1 thread, the old pool's thread asleep in it.
    assertEquals(JSON.parse(text.trim().split("\n").at(-1)!), { mapped: true, threads: 2 });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// A pre-norm ViT block's two halves on the native backend (lib/model/layers.ts: residualAttention,
// x + proj(attention(qkv(layerNorm(x)))), and residualMlp, x + fc2(gelu(fc1(layerNorm(x))))), each
// one custom gradient whose backward adds the residual's gradient in LayerNorm's gradient kernel:
// the block's value and the gradients of its input and all twelve weights equal, bit for bit, the
// same block composed of the separately tested layers (layerNorm, linear, multiHeadAttention, mlp,
// with the engine summing the residual's gradient), in float32 and bf16 (with and without the qkv
// bias), without leaked tensors; with the attention probabilities asked for, the composition runs
// and returns them. Where the CPU has bf16 instructions, the fused MLP keeps gelu(fc1) as bf16
// (asserted by the kernel's output dtype); the composition's linearGelu keeps float32, so the
// comparison checks that storage too.
const [B, T, D, heads] = [3, 5, 16, 4];
const param = (shape: number[], seed: number, scale = 1) =>
  tf.tensor(values(shape.reduce((p, q) => p * q, 1), seed).map((v) => v * scale), shape);

/** The block's value and its 13 gradients (x, then the weights in `names` order) as arrays. */
function block(x: tf.Tensor3D, w: Record<string, tf.Tensor>, dy: tf.Tensor): Float32Array[] {
  const names = Object.keys(w);
  const f = (xx: tf.Tensor, ...ws: tf.Tensor[]) => {
    const p = Object.fromEntries(names.map((n, i) => [n, ws[i]]));
    const [h] = residualAttention(
      xx as tf.Tensor3D,
      {
        normW: p.n1w,
        normB: p.n1b,
        eps: 1e-6,
        qkvW: p.qkvW,
        qkvB: p.qkvB,
        projW: p.projW,
        projB: p.projB,
      },
      heads,
      0.5,
      false,
    );
    return residualMlp(h, {
      normW: p.n2w,
      normB: p.n2b,
      eps: 1e-6,
      w1: p.w1,
      b1: p.b1,
      w2: p.w2,
      b2: p.b2,
    });
  };
  const y = tf.tidy(() => f(x, ...names.map((n) => w[n])));
  const grads = tf.grads(f)([x, ...names.map((n) => w[n])], dy);
  const out = [y, ...grads].map((g) => g.dataSync() as Float32Array);
  tf.dispose([y, ...grads]);
  return out;
}

Deno.test("native block: the fused attention and MLP halves equal the composed layers bit for bit, with gradients", async () => {
  // Both precisions; in bf16 also without the qkv projection's bias (timm's qkv_bias=False).
  for (const [precision, qkvBias] of [["fp32", true], ["bf16", true], ["bf16", false]] as const) {
    await initBackend({ backend: "native", threads: 2, precision });
    const x = param([B, T, D], 1) as tf.Tensor3D, dy = param([B * T, D], 2);
    const w: Record<string, tf.Tensor> = {
      n1w: param([D], 3, 0.2).add(1),
      n1b: param([D], 4, 0.1),
      qkvW: param([3 * D, D], 5, 0.3),
      qkvB: param([3 * D], 6, 0.1),
      projW: param([D, D], 7, 0.3),
      projB: param([D], 8, 0.1),
      n2w: param([D], 9, 0.2).add(1),
      n2b: param([D], 10, 0.1),
      w1: param([4 * D, D], 11, 0.3),
      b1: param([4 * D], 12, 0.1),
      w2: param([D, 4 * D], 13, 0.2),
      b2: param([D], 14, 0.1),
    };
    if (!qkvBias) {
      w.qkvB.dispose();
      delete w.qkvB;
    }
    const before = tf.memory().numTensors;
    const calls = fastPathCalls();
    const fused = block(x, w, dy);
    const after = fastPathCalls();
    assert(after.residualAttention >= calls.residualAttention + 2, "attention half not fused");
    assert(after.residualMlp >= calls.residualMlp + 2, "MLP half not fused");
    // fc1's GELU as the fused MLP asks for it: bf16 (two a word) where the CPU rounds in hardware.
    const [g, pre] = tf.engine().runKernel(FUSED_KERNELS.linearGelu, { x: dy, w: w.w1 }, {
      hasBias: 0,
      bf16Out: 1,
    }) as tf.Tensor[];
    const hardware = precision === "bf16" && openNative().bf16Supported() !== "bf16-emulated";
    assertEquals(
      [g.dtype, g.shape],
      hardware ? ["int32", [B * T, 2 * D]] : ["float32", [B * T, 4 * D]],
    );
    tf.dispose([g, pre]);
    // The same block with the two halves' fast paths off: the layers they are made of (and fc1's
    // GELU in float32: linearGelu, then linear).
    const saved = registeredFastPaths("native");
    registerFastPaths("native", {
      ...saved,
      residualAttention: undefined,
      residualMlp: undefined,
      mlp: undefined,
    });
    try {
      const composed = block(x, w, dy);
      assertEquals(fastPathCalls().residualMlp, after.residualMlp, "the composition was fused");
      ["y", "dx", ...Object.keys(w).map((n) => "d" + n)].forEach((n, i) =>
        assertSameBits(`${precision} qkv bias ${qkvBias} ${n}`, fused[i], composed[i])
      );
    } finally {
      registerFastPaths("native", saved);
    }
    assertEquals(tf.memory().numTensors, before, "leaked tensors");
    // Asking for the attention probabilities takes the composition, which returns them.
    const [h, probs] = residualAttention(
      x,
      {
        normW: w.n1w,
        normB: w.n1b,
        eps: 1e-6,
        qkvW: w.qkvW,
        projW: w.projW,
      },
      heads,
      0.5,
      true,
    );
    assertEquals(probs?.shape, [B, heads, T, T]);
    const rows = tf.sum(probs!, -1).dataSync();
    for (const s of rows) assert(Math.abs(s - 1) < 1e-5, `probabilities sum to ${s}`);
    tf.dispose([h, probs!, x, dy, ...Object.values(w)]);
  }
});

Deno.test("native linear: the layer's fast path on the native backend equals matMul + add, with gradients", async () => {
  const { initBackend } = await import("../../lib/backends/mod.ts");
  const { fastPathCalls } = await import("../../lib/backends/fused.ts");
  const { linear } = await import("../../lib/model/layers.ts");
  await initBackend({ backend: "native" });
  const x = tf.tensor2d(values(37 * 29, 1), [37, 29]),
    w = tf.tensor2d(values(19 * 29, 2), [19, 29]);
  const b = tf.tensor1d(values(19, 3)), dy = tf.tensor2d(values(37 * 19, 4), [37, 19]);
  const r = tf.tensor2d(values(37 * 19, 5), [37, 19]);
  const before = tf.memory().numTensors, calls = fastPathCalls().linear;
  // With and without the residual; each: y, then the gradients of x, w, b (and the residual).
  for (const withRes of [false, true]) {
    const [fused, plain] = [true, false].map((useFast) => {
      const f = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor, rr: tf.Tensor) => {
        if (useFast) {
          return linear(xx as tf.Tensor2D, ww, bb, withRes ? rr as tf.Tensor2D : undefined);
        }
        const y = tf.add(tf.matMul(xx as tf.Tensor2D, ww as tf.Tensor2D, false, true), bb);
        return withRes ? tf.add(rr, y) : y;
      };
      const y = tf.tidy(() => f(x, w, b, r));
      const grads = tf.grads((xx, ww, bb, rr) => tf.add(f(xx, ww, bb, rr), tf.mul(rr, 0)))(
        [x, w, b, r],
        dy,
      );
      const out = [y, ...grads].map((t) => t.dataSync() as Float32Array);
      tf.dispose([y, ...grads]);
      return out;
    });
    ["y", "dx", "dw", "db", "dres"].forEach((n, i) =>
      assertSameBits(`${n} (residual ${withRes})`, fused[i], plain[i])
    );
  }
  // The residual's gradient is dy itself (plus the zero path that keeps it in the graph).
  assert(fastPathCalls().linear >= calls + 4, "the fast path was not taken");
  // fc1 + GELU in one kernel: value and gradients equal the unfused gelu(linear) ops.
  const { linearGelu } = await import("../../lib/model/layers.ts");
  const { gelu } = await import("../../lib/model/layers.ts");
  const geluCalls = fastPathCalls().linearGelu;
  const [fusedG, plainG] = [true, false].map((useFast) => {
    const f = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) =>
      useFast ? linearGelu(xx as tf.Tensor2D, ww, bb) : gelu(
        tf.add(tf.matMul(xx as tf.Tensor2D, ww as tf.Tensor2D, false, true), bb),
      );
    const y = tf.tidy(() => f(x, w, b));
    const grads = tf.grads((xx, ww, bb) => f(xx, ww, bb))([x, w, b], dy);
    const out = [y, ...grads].map((t) => t.dataSync() as Float32Array);
    tf.dispose([y, ...grads]);
    return out;
  });
  assert(fastPathCalls().linearGelu >= geluCalls + 2, "the linearGelu fast path was not taken");
  ["y", "dx", "dw", "db"].forEach((n, i) => assertSameBits(`gelu ${n}`, fusedG[i], plainG[i]));
  // The whole MLP with its residual, r + fc2(gelu(fc1(x))), in one custom gradient: value and
  // gradients equal the unfused ops (matMul, add and the GELU layer) bit for bit.
  const { mlp } = await import("../../lib/model/layers.ts");
  const w2 = tf.tensor2d(values(29 * 19, 8), [29, 19]), b2 = tf.tensor1d(values(29, 9));
  const dyM = tf.tensor2d(values(37 * 29, 10), [37, 29]),
    rM = tf.tensor2d(values(37 * 29, 11), [37, 29]);
  const mlpCalls = fastPathCalls().mlp;
  for (const withBias of [true, false]) {
    const [fusedM, plainM] = [true, false].map((useFast) => {
      const f = (
        xx: tf.Tensor,
        w1: tf.Tensor,
        c1: tf.Tensor,
        ww2: tf.Tensor,
        c2: tf.Tensor,
        rr: tf.Tensor,
      ) => {
        const [bb1, bb2] = withBias ? [c1, c2] : [undefined, undefined];
        if (useFast) return mlp(xx as tf.Tensor2D, w1, bb1, ww2, bb2, rr as tf.Tensor2D);
        const lin = (a: tf.Tensor, ww: tf.Tensor, bb?: tf.Tensor) => {
          const p = tf.matMul(a as tf.Tensor2D, ww as tf.Tensor2D, false, true);
          return bb ? tf.add(p, bb) : p;
        };
        return tf.add(rr, lin(gelu(lin(xx, w1, bb1)), ww2, bb2));
      };
      const args = [x, w, b, w2, b2, rM];
      const y = tf.tidy(() => f(x, w, b, w2, b2, rM));
      // The biases stay in the graph (times 0) when the layers have none.
      const grads = tf.grads((xx, w1, c1, ww2, c2, rr) =>
        tf.add(f(xx, w1, c1, ww2, c2, rr), tf.mul(tf.sum(tf.add(c1, tf.sum(c2))), 0))
      )(args, dyM);
      const out = [y, ...grads].map((t) => t.dataSync() as Float32Array);
      tf.dispose([y, ...grads]);
      return out;
    });
    ["y", "dx", "dw1", "db1", "dw2", "db2", "dres"].forEach((n, i) =>
      assertSameBits(`mlp ${n} (biases ${withBias})`, fusedM[i], plainM[i])
    );
  }
  assert(fastPathCalls().mlp >= mlpCalls + 4, "the mlp fast path was not taken");
  tf.dispose([w2, b2, dyM, rM]);
  // The class token of every image: value and gradient equal tf.tile's, the gradient in one kernel.
  const { expandBatch } = await import("../../lib/model/layers.ts");
  const cls = tf.tensor3d(values(29, 6), [1, 1, 29]),
    dyc = tf.tensor3d(values(37 * 29, 7), [37, 1, 29]);
  const expandCalls = fastPathCalls().expandBatch;
  const [fusedE, plainE] = [true, false].map((useFast) => {
    const f = (c: tf.Tensor) => useFast ? expandBatch(c, 37) : tf.tile(c, [37, 1, 1]);
    const y = tf.tidy(() => f(cls));
    const [g] = tf.grads((c) => f(c))([cls], dyc);
    const out = [y, g].map((t) => t.dataSync() as Float32Array);
    tf.dispose([y, g]);
    return out;
  });
  assert(fastPathCalls().expandBatch >= expandCalls + 2, "the expandBatch fast path was not taken");
  ["y", "dcls"].forEach((n, i) => assertSameBits(`expandBatch ${n}`, fusedE[i], plainE[i]));
  assertEquals(tf.memory().numTensors, before + 2);
  tf.dispose([x, w, b, dy, r, cls, dyc]);
  assertEquals(tf.memory().numTensors, before - 5);
});

Deno.test("native BatchNorm: the heads' fast path on the native backend equals the unfused ops, with gradients", async () => {
  const { initBackend } = await import("../../lib/backends/mod.ts");
  const { fastPathCalls } = await import("../../lib/backends/fused.ts");
  const { batchNorm, BN_EPS } = await import("../../lib/model/layers.ts");
  await initBackend({ backend: "native" });
  const [M, D] = [37, 45];
  const x = tf.tensor2d(values(M * D, 11).map((v) => 3 * v + 1), [M, D]);
  const w = tf.tensor1d(values(D, 12)), b = tf.tensor1d(values(D, 13));
  const dy = tf.tensor2d(values(M * D, 14), [M, D]);
  const before = tf.memory().numTensors, calls = fastPathCalls().batchNorm;
  for (const affine of [true, false]) {
    const [fused, plain] = [true, false].map((useFast) => {
      // The unfused ops are those of batchNorm's own fallback (tf.moments, biased variance).
      const f = (xx: tf.Tensor, ww: tf.Tensor, bb: tf.Tensor) => {
        if (useFast) return batchNorm(xx as tf.Tensor2D, affine ? { weight: ww, bias: bb } : {}).y;
        const { mean, variance } = tf.moments(xx, 0);
        const y = tf.mul(tf.sub(xx, mean), tf.rsqrt(tf.add(variance, BN_EPS)));
        return affine ? tf.add(tf.mul(y, ww), bb) : y;
      };
      const y = tf.tidy(() => f(x, w, b));
      // w and b reach the loss through a zero product when there is no affine transform.
      const grads = tf.grads((xx, ww, bb) =>
        tf.add(tf.sum(tf.mul(f(xx, ww, bb), dy)), tf.sum(tf.mul(tf.add(ww, bb), 0)))
      )([x, w, b]);
      const out = [y, ...grads].map((t) => t.dataSync() as Float32Array);
      tf.dispose([y, ...grads]);
      return out;
    });
    // Float32 sums in another order: a few units in the last place of values of size 1-10.
    ["y", "dx", "dw", "db"].forEach((n, i) => {
      for (let j = 0; j < fused[i].length; j++) {
        const err = Math.abs(fused[i][j] - plain[i][j]);
        assert(err <= 1e-5 * (1 + Math.abs(plain[i][j])), `${n}[${j}] (affine ${affine}): ${err}`);
      }
    });
  }
  assert(fastPathCalls().batchNorm >= calls + 4, "the batchNorm fast path was not taken");
  assertEquals(tf.memory().numTensors, before);
  tf.dispose([x, w, b, dy]);
});

Deno.test("native optimiser: AdamW and the EMA update every parameter in place, as float32 by hand, and step aside for shared data", async () => {
  await initBackend({ backend: "native", threads: 2 });
  const cfg = { name: "adamw" as const, weightDecay: 0.05, skipDecay: true };
  // A matrix (decays), a bias (skipDecay: no decay), a vector over several pool chunks.
  const shapes: Record<string, number[]> = { "w": [37, 5], "b": [5], "long.weight": [2, 20000] };
  const names = Object.keys(shapes);
  const init = names.map((n, i) => values(shapes[n].reduce((p, q) => p * q, 1), i + 1));
  const grad = names.map((n, i) => values(shapes[n].reduce((p, q) => p * q, 1), i + 11));
  const params = Object.fromEntries(
    names.map((n, i) => [n, tf.variable(tf.tensor(init[i], shapes[n]))]),
  );
  const state = createOptimizerState(cfg, params);
  const before = tf.memory().numTensors, calls0 = fastPathCalls().adamwInPlace;
  const lrs = [0.1, 0.05, 0.02];
  for (const lr of lrs) {
    const grads = Object.fromEntries(names.map((n, i) => [n, tf.tensor(grad[i], shapes[n])]));
    applyGradients(params, grads, state, cfg, lr);
    tf.dispose(Object.values(grads));
  }
  // The first step runs per tensor (the variables hold the arrays they were made from), the
  // next two in place; no tensor is left behind.
  assertEquals(fastPathCalls().adamwInPlace - calls0, 2);
  assertEquals(tf.memory().numTensors, before);
  // torch.optim.AdamW by hand, one float32 rounding per operation (lib/optim/optim.ts's order).
  const f = Math.fround;
  names.forEach((n, j) => {
    const decay = n !== "b";
    const p = Float32Array.from(init[j]), m = new Float32Array(p.length);
    const v = new Float32Array(p.length), g = Float32Array.from(grad[j]);
    lrs.forEach((lr, s) => {
      const t = s + 1, bc1 = 1 - 0.9 ** t, sbc2 = f(Math.sqrt(1 - 0.999 ** t));
      for (let i = 0; i < p.length; i++) {
        m[i] = f(m[i] + f(f(g[i] - m[i]) * f(0.1)));
        v[i] = f(f(v[i] * f(0.999)) + f(f(g[i] * g[i]) * f(1 - 0.999)));
        const denom = f(f(f(Math.sqrt(v[i])) / sbc2) + f(1e-8));
        const pd = decay ? f(p[i] * f(1 - lr * 0.05)) : p[i];
        p[i] = f(pd - f(f(m[i] / denom) * f(lr / bc1)));
      }
    });
    assertSameBits(n, params[n].dataSync() as Float32Array, p);
  });
  // A tensor sharing a variable's data (a reshape keeps the same data): no in-place update, the
  // variable still gets its new value, the other tensor keeps the old one.
  const alias = tf.reshape(params.w, [-1]);
  const old = (alias.dataSync() as Float32Array).slice();
  const grads = Object.fromEntries(names.map((n, i) => [n, tf.tensor(grad[i], shapes[n])]));
  const calls1 = fastPathCalls().adamwInPlace;
  applyGradients(params, grads, state, cfg, 0.01);
  assertEquals(fastPathCalls().adamwInPlace, calls1);
  assertSameBits("alias", alias.dataSync() as Float32Array, old);
  assert(params.w.dataSync()[0] !== old[0]);
  // The EMA: t = 0.9 t + 0.1 s on every pair, in place from the second update on.
  const target = { w: tf.variable(tf.tensor(init[0], shapes.w)) };
  const emaCalls = fastPathCalls().emaInPlace;
  const tw = Float32Array.from(init[0]), sw = params.w.dataSync();
  for (let k = 0; k < 2; k++) {
    emaAssign([{ t: target.w, s: params.w }], 0.9);
    for (let i = 0; i < tw.length; i++) tw[i] = f(f(tw[i] * f(0.9)) + f(sw[i] * f(1 - 0.9)));
  }
  assertEquals(fastPathCalls().emaInPlace - emaCalls, 1);
  assertSameBits("ema", target.w.dataSync() as Float32Array, tw);
  tf.dispose([alias, ...Object.values(grads), ...Object.values(params), target.w]);
  disposeOptimizerState(state);
});
