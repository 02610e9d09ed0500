// The `native` tfjs backend (lib/backends/native): its kernels against the `cpu` backend's on the
// same inputs, training steps bit-identical at 1, 2 and 3 threads with no tensor leaks, a smoke
// pretraining that matches `--backend cpu`, and the fallback when the library cannot load.
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
import { values } from "../_helpers/numeric.ts";

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
