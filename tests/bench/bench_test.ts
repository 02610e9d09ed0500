/**
 * Tests of the benchmark harness (lib/bench/): the analytic FLOP count against a hand count, the
 * fixed workloads, the timing loop's counting, the step runner's tensor hygiene, and a `--smoke`
 * run of the CLI (seconds) whose JSON line must carry every field, consistent with itself.
 * No timing asserts: the machine is shared.
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { cpuLabel, readCpu } from "../../lib/bench/cpu.ts";
import { median, quantile, spreadNote, timeLoop } from "../../lib/bench/measure.ts";
import { kernelFlops, profileStep, profileTable, shapesLabel } from "../../lib/bench/profile.ts";
import { defaultMode, defaultWorkers } from "../../lib/bench/run.ts";
import { createStepRunner } from "../../lib/bench/step.ts";
import { benchTable, parseLines } from "../../lib/bench/table.ts";
import { headFlops, resolveWorkload, stepFlops, type Workload } from "../../lib/bench/workloads.ts";
import { vitConfig } from "../../lib/model/vit.ts";

await initBackend({ backend: "cpu" });

/** dim 8, depth 1, heads 2, patch 2 on 4x4x1 images: N = 4 patches, T = 5 tokens, MLP 32. */
const tiny: Workload = {
  name: "tiny-test",
  vit: vitConfig({
    name: "vit_nano",
    dim: 8,
    depth: 1,
    heads: 2,
    patchSize: 2,
    imageSize: 4,
    channels: 1,
  }),
  batch: 3,
  hidden: 16,
  outDim: 4,
  temperature: 0.2,
  cpuMode: "step",
};

Deno.test("stepFlops matches a hand count of a small config", () => {
  // Backbone forward per image (multiply-add = 2):
  //   patch projection 4 patches x (1*2*2 -> 8): 2*4*4*8            =  256
  //   qkv 5 tokens x (8 -> 24): 2*5*8*24                            = 1920
  //   scores q k^T and mixing p v: 2 * (2*5*5*8)                    =  800
  //   attention projection 5 x (8 -> 8): 2*5*8*8                    =  640
  //   MLP 5 x (8 -> 32 -> 8): 2 * (2*5*8*32)                        = 5120
  const backbone = 256 + 1920 + 800 + 640 + 5120; // 8736
  // Projector 8 -> 16 -> 16 -> 4: 2*(128 + 256 + 64) = 896; predictor 4 -> 16 -> 4: 2*(64 + 64) = 256.
  assertEquals(headFlops(8, 16, 4), { projector: 896, predictor: 256 });
  // Online branch (x3 for forward + backward) and momentum branch (x1), 2 views x 3 images.
  const perImageView = 3 * (backbone + 896 + 256) + (backbone + 896); // 29664 + 9632 = 39296
  const lossFlops = 3 * 2 * (2 * 3 * 3 * 4); // two [3, 4] @ [4, 3] logits, x3 = 432
  const f = stepFlops(tiny, "step");
  assertEquals(f.backbone, 2 * 3 * 4 * backbone);
  assertEquals(f.loss, lossFlops);
  assertEquals(f.total, 2 * 3 * perImageView + lossFlops); // 236208
  assertEquals(f.total, 236208);
  assertEquals(f.backbone + f.heads + f.loss, f.total);
  // Forward mode: one backbone forward of the batch.
  assertEquals(stepFlops(tiny, "forward").total, 3 * 8736);
});

Deno.test("the standard workloads are the issue's fixed configs", () => {
  const s = resolveWorkload("small28");
  assertEquals(
    [s.vit.dim, s.vit.depth, s.vit.heads, s.vit.patchSize, s.vit.imageSize, s.vit.channels],
    [128, 6, 4, 7, 28, 1],
  );
  assertEquals([s.batch, s.hidden, s.outDim, s.temperature, s.cpuMode], [
    128,
    1024,
    256,
    0.2,
    "step",
  ]);
  const t = resolveWorkload("tiny32");
  assertEquals(
    [t.vit.dim, t.vit.depth, t.vit.heads, t.vit.patchSize, t.vit.imageSize, t.vit.channels],
    [192, 12, 3, 4, 32, 3],
  );
  assertEquals(t.batch, 64);
  const v = resolveWorkload("vit_small224");
  assertEquals([v.vit.dim, v.vit.depth, v.vit.heads, v.vit.patchSize, v.vit.imageSize], [
    384,
    12,
    12,
    16,
    224,
  ]);
  assertEquals([v.batch, v.cpuMode], [32, "forward"]);
  // ViT-S/16 forward is about 4.6 G multiply-adds per image (the usual "4.6 GFLOPs" figure).
  assertAlmostEquals(stepFlops(v, "forward").total / 2 / 32 / 1e9, 4.6, 0.05);
  assertEquals(resolveWorkload("tiny32", { batch: 4 }).batch, 4);
});

Deno.test("vit_small224 runs a forward on CPUs (software WebGPU included) and a step on GPUs", () => {
  const w = resolveWorkload("vit_small224");
  const b = (name: "wasm" | "cpu" | "webgpu" | "tensorflow", device: string) => ({
    name,
    device,
    threads: 1,
    summary: "",
    skipped: [],
    precision: "fp32" as const,
  });
  assertEquals(defaultMode(w, b("wasm", "SIMD")), "forward");
  assertEquals(defaultMode(w, b("webgpu", "llvmpipe (LLVM 15.0.6, 256 bits)")), "forward");
  assertEquals(defaultMode(w, b("webgpu", "NVIDIA H100")), "step");
  assertEquals(defaultMode(w, b("tensorflow", "libtensorflow 2.9.1, CUDA GPU")), "step");
  assertEquals(
    defaultMode(w, b("tensorflow", "libtensorflow 2.9.1, CPU only: CUDA libraries not found")),
    "forward",
  );
  assertEquals(defaultMode(resolveWorkload("small28"), b("wasm", "SIMD")), "step");
});

Deno.test("defaultWorkers: one worker per core for single-threaded CPU steps, else the main thread", () => {
  assertEquals(defaultWorkers("step", "wasm", 1, false, 128, 2), 2);
  assertEquals(defaultWorkers("step", "cpu", 1, false, 6, 4), 3); // the largest divisor <= cores
  assertEquals(defaultWorkers("step", "wasm", 1, false, 7, 2), 1);
  assertEquals(defaultWorkers("step", "wasm", 2, false, 128, 2), 1); // threaded wasm
  assertEquals(defaultWorkers("forward", "wasm", 1, false, 32, 2), 1);
  assertEquals(defaultWorkers("step", "webgpu", 1, false, 128, 2), 1);
  assertEquals(defaultWorkers("step", "wasm", 1, true, 128, 2), 1); // --profile, --smoke
  assertEquals(defaultWorkers("step", "wasm", 1, false, 128, 1), 1);
});

Deno.test("benchTable divides images/s by the mean PyTorch images/s of the same workload", () => {
  const line = (backend: string, ips: number, batch = 128) =>
    JSON.stringify({
      workload: "small28",
      mode: "step",
      backend,
      threads: 1,
      batch,
      steps: 3,
      images_per_s: ips,
      ms_per_step: (1000 * batch) / ips,
      gflops_per_s: 1,
      peak_gflops: null,
      peak_fp32_gflops: null,
      peak_rss_bytes: 2 ** 30,
      load_avg_start: 1,
      load_avg_end: null,
    });
  const text = [line("pytorch", 40), "progress line", line("pytorch", 60), line("wasm", 25)]
    .concat([line("wasm", 5, 8)]).join("\n");
  const rows = parseLines(text);
  assertEquals(rows.length, 4);
  const table = benchTable(rows).split("\n");
  // 25 / mean(40, 60) = 0.5; the batch-8 run has no PyTorch row of its batch.
  assertStringIncludes(
    table[4],
    "| wasm | 1 | 1 | 3 | 25.0 | 5120 | 1.00 | 0.50 | 1.00 GiB | 1.0 / ? |",
  );
  assertStringIncludes(table[5], "| 8 | wasm |");
  assertStringIncludes(table[5], "| - |");
  assertStringIncludes(table[2], "| pytorch | - | 1 |");
});

Deno.test("timeLoop counts warm-up and timed iterations", async () => {
  let calls = 0;
  const t = await timeLoop(async () => {
    calls++;
    await Promise.resolve();
  }, { warmup: 2, minSeconds: 0, minIters: 5, maxIters: 5 });
  assertEquals([calls, t.iters, t.iterMs.length], [7, 5, 5]);
  assert(t.seconds >= 0);
  assertEquals(median([3, 1, 2]), 2);
  assertEquals(median([4, 1, 3, 2]), 2.5);
});

Deno.test("quantile interpolates between order statistics, as numpy does by default", () => {
  // Sorted 10, 20, 30, 40: position q * 3. numpy.quantile([10, 20, 30, 40], [0, 0.1, 0.5, 0.9, 1])
  // = 10, 13, 25, 37, 40.
  const xs = [40, 10, 30, 20];
  assertEquals([0, 0.1, 0.5, 0.9, 1].map((q) => quantile(xs, q)), [10, 13, 25, 37, 40]);
  assertEquals(xs, [40, 10, 30, 20]); // not sorted in place
  assertEquals(quantile([7], 0.9), 7);
  // Eleven steps 100, 110, ..., 200: the 10th percentile is the second, the 90th the tenth.
  const steps = Array.from({ length: 11 }, (_, i) => 200 - 10 * i);
  assertEquals([quantile(steps, 0.1), quantile(steps, 0.9)], [110, 190]);
});

Deno.test("spreadNote speaks only when the slow tenth of the steps is 15% slower than the fast", () => {
  assertEquals(spreadNote(200, 212), null);
  assertEquals(spreadNote(200, 229.9), null);
  assertEquals(
    spreadNote(200, 260)?.startsWith("step times uneven: p10 200 ms, p90 260 ms (x1.30)"),
    true,
  );
  assertEquals(spreadNote(200, 230) !== null, true);
  assertEquals(spreadNote(200, 215, 1.05) !== null, true);
  assertEquals(spreadNote(NaN, NaN), null);
});

Deno.test("profileTable prints the top rows as Markdown, with the share of a peak", () => {
  const rows = [
    { kernel: "BatchMatMul", calls: 3, ms: 30, pct: 75, gflops: 2.5 },
    { kernel: "Add", calls: 9, ms: 10, pct: 25 },
  ];
  assertEquals(profileTable(rows, 2).split("\n"), [
    "| kernel | calls | ms | % | GFLOP/s |",
    "|---|---:|---:|---:|---:|",
    "| BatchMatMul | 3 | 30.0 | 75.0 | 2.5 |",
    "| Add | 9 | 10.0 | 25.0 |  |",
  ]);
  // 2.5 of a 10 GFLOP/s peak: 25%.
  assertEquals(profileTable(rows, 2, () => 10).split("\n"), [
    "| kernel | calls | ms | % | GFLOP/s | % of peak |",
    "|---|---:|---:|---:|---:|---:|",
    "| BatchMatMul | 3 | 30.0 | 75.0 | 2.5 | 25 |",
    "| Add | 9 | 10.0 | 25.0 |  |  |",
  ]);
  // A kernel whose peak is unknown gets no share.
  assertEquals(
    profileTable(rows, 1, () => null).split("\n")[2],
    "| BatchMatMul | 3 | 30.0 | 75.0 | 2.5 |  |",
  );
});

Deno.test("kernelFlops: the products' multiply-adds from their shapes, by hand", () => {
  // [2176, 128] @ [512, 128]^T -> [2176, 512]: 2 * 2176 * 512 * 128 multiply-adds.
  assertEquals(kernelFlops("BatchMatMul", [[2176, 128]], [[2176, 512]]), 2 * 2176 * 512 * 128);
  // x^T @ dy of a linear layer: [2176, 128]^T @ [2176, 512] -> [128, 512], inner 2176.
  assertEquals(kernelFlops("BatchMatMul", [[2176, 128]], [[128, 512]]), 2 * 128 * 512 * 2176);
  // Attention scores [B, H, T, hd] @ [B, H, T, hd]^T -> [B, H, T, T], inner hd.
  assertEquals(
    kernelFlops("BatchMatMul", [[8, 4, 17, 32]], [[8, 4, 17, 17]]),
    2 * 8 * 4 * 17 * 17 * 32,
  );
  assertEquals(kernelFlops("Add", [[4, 4], [4, 4]], [[4, 4]]), 0);
  // The fused layers of small28 (M = 128 images x 17 tokens = 2176, D = 128, MLP 512): fc2
  // reads GELU's output stored as bf16 (int32 [2176, 256]) with w [128, 512], bias and residual.
  assertEquals(
    kernelFlops("VitsslLinear", [[2176, 256], [128, 512], [128], [2176, 128]], [[2176, 128]]),
    2 * 2176 * 128 * 512,
  );
  // fc1 + GELU: outputs gelu(h) (bf16, [2176, 256]) and h [2176, 512].
  assertEquals(
    kernelFlops("VitsslLinearGelu", [[2176, 64], [512, 128], [512]], [[2176, 256], [2176, 512]]),
    2 * 2176 * 512 * 128,
  );
  // fc2's gradient from dy [2176, 128]: dx = dy @ w (2176 x 128 x 512) and dw = dy^T @ x, as many.
  assertEquals(
    kernelFlops(
      "VitsslLinearGrad",
      [[2176, 128], [2176, 256], [128, 512], [2176, 512]],
      [[2176, 512], [128, 512], [128]],
    ),
    2 * (2 * 2176 * 128 * 512),
  );
  // Attention of 128 images, 4 heads of 32, T = 17: Q K^T and P V, each 128 * 4 * 17 * 17 * 32
  // multiply-adds; the gradient: dV, dP, dQ, dK.
  const headProducts = 2 * 128 * 4 * 17 * 17 * 32;
  assertEquals(
    kernelFlops("VitsslAttention", [[2176, 384]], [[2176, 128], [128, 4, 17, 17]]),
    2 * headProducts,
  );
  assertEquals(
    kernelFlops("VitsslAttentionGrad", [[2176, 128], [2176, 384], [128, 4, 17, 17]], [[2176, 384]]),
    4 * headProducts,
  );
  assertEquals(kernelFlops("VitsslLayerNorm", [[2176, 128], [128], [128]], [[2176, 128]]), 0);
});

Deno.test("shapesLabel: a kernel of many inputs keeps a one-line label with their count", () => {
  assertEquals(shapesLabel(["64x192", "192"]), "64x192 · 192");
  assertEquals(shapesLabel(["a", "b", "c"], 3), "a · b · c");
  assertEquals(shapesLabel(["a", "b", "c", "d"], 3), "a · b · c · ... (4 inputs)");
  // The in-place AdamW of tiny32 takes 4 tensors per parameter: 600 inputs, one short label.
  const label = shapesLabel(Array.from({ length: 600 }, () => "192x768"));
  assertEquals(
    label,
    "192x768 · 192x768 · 192x768 · 192x768 · 192x768 · 192x768 · ... (600 inputs)",
  );
});

Deno.test("profileStep counts a custom gradient's kernels once, not its scope around them", async () => {
  // tf.customGrad's forward is profiled (named after the enclosing scope) around the kernels it runs: one
  // Square and one Sum here, each timed on its own. Without the filter the scope's row and its
  // time would be counted beside them.
  const f = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => ({
    value: tf.sum(tf.square(args[0] as tf.Tensor)),
    gradFunc: (dy: tf.Tensor) => tf.mul(dy, args[0] as tf.Tensor),
  }));
  const x = tf.ones([64, 64]);
  const p = await profileStep(() => {
    tf.dispose(f(x));
    return Promise.resolve();
  });
  x.dispose();
  assertEquals(p.byKernel.map((r) => r.kernel).sort(), ["Square", "Sum"]);
  assertEquals(p.kernels, 2);
  assertAlmostEquals(p.kernelMs, p.byKernel.reduce((s, r) => s + r.ms, 0), 1e-9);
});

Deno.test("a benchmark step leaves no tensors behind and learns", async () => {
  const x1 = tf.randomNormal([3, 4, 4, 1], 0, 1, "float32", 1) as tf.Tensor4D;
  const x2 = tf.randomNormal([3, 4, 4, 1], 0, 1, "float32", 2) as tf.Tensor4D;
  for (const mode of ["step", "forward"] as const) {
    const before = tf.memory().numTensors;
    const runner = createStepRunner(tiny, mode, 0);
    const during = tf.memory().numTensors;
    const values = [];
    for (let i = 0; i < 3; i++) values.push(await runner.run(x1, x2));
    assertEquals(tf.memory().numTensors, during, `${mode}: tensors leaked per step`);
    runner.dispose();
    assertEquals(tf.memory().numTensors, before, `${mode}: tensors left after dispose`);
    assert(values.every(Number.isFinite));
    // A training step changes the weights, so the same views give a new loss; a forward does not.
    if (mode === "step") assert(values[2] !== values[0]);
    else assertEquals(values[2], values[0]);
  }
  tf.dispose([x1, x2]);
});

async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", "lib/cli/bench.ts", ...args],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

Deno.test("deno task bench --smoke prints one complete JSON line", async () => {
  const r = await runCli([
    "--smoke",
    "--json",
    "--profile",
    "--workload",
    "small28",
    "--backend",
    "wasm",
  ]);
  assertEquals(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assertEquals(lines.length, 1, r.stdout);
  const j = JSON.parse(lines[0]);
  for (
    const k of [
      "images_per_s",
      "ms_per_step",
      "flops_per_step",
      "gflops_per_s",
      "peak_rss_bytes",
      "tf_bytes",
      "tf_bytes_growth",
      "augment_images_per_s",
      "loader_images_per_s",
      "threads",
    ]
  ) {
    assertEquals(typeof j[k], "number", `field ${k}`);
  }
  assertEquals([j.workload, j.mode, j.backend, j.threads, j.batch, j.steps, j.smoke], [
    "small28",
    "step",
    "wasm",
    1,
    8,
    1,
    true,
  ]);
  // The small28 step at batch 8, from the same hand-checked formula: 2 views x 8 images.
  assertEquals(j.flops_per_step, stepFlops(resolveWorkload("small28", { batch: 8 }), "step").total);
  assertAlmostEquals(j.images_per_s, (8 * j.steps) / j.seconds, 0.05 * j.images_per_s);
  assertAlmostEquals(j.gflops_per_s, j.flops_per_step / 1e6 / j.ms_per_step, 0.01 * j.gflops_per_s);
  // One timed step: its own median, fast tenth and slow tenth.
  assertEquals([j.ms_per_step_p10, j.ms_per_step_p90], [
    j.ms_per_step_median,
    j.ms_per_step_median,
  ]);
  assert(j.images_per_s > 0 && j.augment_images_per_s > 0 && j.loader_images_per_s > 0);
  assert(j.peak_rss_bytes > 1e7, `peak RSS ${j.peak_rss_bytes}`);
  assert(j.tf_bytes > 0);
  assertEquals([j.tf_bytes_growth, j.tf_tensors_growth], [0, 0]);
  // The profile: every kernel of the step, matmuls among them, shares summing to 100%.
  const p = j.profile;
  const mm = p.byKernel.find((row: { kernel: string }) => row.kernel === "BatchMatMul");
  assert(mm && mm.calls > 0 && mm.ms > 0 && mm.gflops > 0, JSON.stringify(p.byKernel.slice(0, 3)));
  const pct = p.byKernel.reduce((s: number, row: { pct: number }) => s + row.pct, 0);
  assertAlmostEquals(pct, 100, 1e-6);
  assertEquals(
    p.byKernel.reduce((s: number, row: { calls: number }) => s + row.calls, 0),
    p.kernels,
  );
});

Deno.test("deno task bench --pytorch without PyTorch: one line, and the bench's own result", async () => {
  const r = await runCli([
    "--smoke",
    "--workload",
    "small28",
    "--backend",
    "wasm",
    "--pytorch",
    "--python",
    "/no/such/python3",
  ]);
  assertEquals(r.code, 0, r.stderr);
  const skipped = r.stderr.split("\n").filter((l) => l.startsWith("PyTorch skipped:"));
  assertEquals(skipped.length, 1, r.stderr);
  assertStringIncludes(skipped[0], "no /no/such/python3 to run PyTorch beside vitssl (apt-get");
  assertStringIncludes(r.stdout, "small28 [step, fp32] on wasm");
  // The CPU is named beside the speed.
  assertStringIncludes(r.stdout, cpuLabel(readCpu()));
  const usage = await runCli(["--smoke", "--rounds", "2"]);
  assertEquals(usage.code, 2, usage.stderr);
  assertStringIncludes(usage.stderr, "--rounds alternates vitssl with PyTorch: add --pytorch");
});

Deno.test("bench rejects an unknown workload and a misspelled flag", async () => {
  const w = await runCli(["--workload", "small32", "--smoke"]);
  assertEquals(w.code, 2);
  assertStringIncludes(w.stderr, 'unknown --workload "small32": did you mean small28?');
  assertStringIncludes(w.stderr, "small28, tiny32, vit_small224");
  const f = await runCli(["--workloads", "small28"]);
  assertEquals(f.code, 2);
  assertStringIncludes(f.stderr, "did you mean --workload?");
});
