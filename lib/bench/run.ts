/**
 * Runs one benchmark workload on the active backend and returns one flat record (the JSON line
 * that `deno task bench` prints): training-step throughput and achieved GFLOP/s, memory (peak RSS,
 * `tf.memory()` and its growth over the timed steps), the augmentation pipeline's and the data
 * loader's throughput alone, and optionally a per-kernel profile of one step.
 *
 * The step's inputs are pre-augmented float32 views (two pairs, alternated), so augmentation is
 * timed separately; the images are the seeded synthetic dataset at the workload's size, so nothing
 * is downloaded.
 *
 * @example
 * ```ts
 * import { initBackend } from "../backends/mod.ts";
 * import { benchWorkload } from "./run.ts";
 * const backend = await initBackend({ backend: "wasm" });
 * const r = await benchWorkload({ workload: "small28", backend, seconds: 10 });
 * console.log(JSON.stringify(r)); // {"workload":"small28","images_per_s":...}
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { BackendInfo, Precision } from "../backends/mod.ts";
import { type AugmentConfig, defaultAugmentConfig, twoViews } from "../data/augment.ts";
import { type Dataset, getBatch, syntheticDataset, toFloatTensor } from "../data/mod.ts";
import { createRng, permutation } from "../core/rng.ts";
import { openNative } from "../backends/native/ffi.ts";
import { cpuLabel, readCpu } from "./cpu.ts";
import { loadAverage, median, peakRss, quantile, resetPeakRss, timeLoop } from "./measure.ts";
import { profileStep, type StepProfile } from "./profile.ts";
import { createParallelStepRunner, createStepRunner } from "./step.ts";
import { ConfigError } from "../core/errors.ts";
import { type BenchMode, resolveWorkload, stepFlops, type Workload } from "./workloads.ts";

/** Options of {@link benchWorkload}. */
export interface BenchOptions {
  /** A name of `WORKLOADS`. */
  workload: string;
  /** The started backend (from `initBackend`). */
  backend: BackendInfo;
  /** The matmul precision the backend was started with (recorded only). Default `fp32`. */
  precision?: Precision;
  /** `step` or `forward`; default {@link defaultMode}. */
  mode?: BenchMode;
  /** Override the workload's batch (for memory checks on small machines; not for the table). */
  batch?: number;
  /** Minimum timed seconds of steps. Default 10. */
  seconds?: number;
  /** Untimed warm-up steps. Default 2. */
  warmup?: number;
  /** Minimum timed steps. Default 3. */
  minSteps?: number;
  /** Maximum timed steps (with `minSteps`, a fixed count: `--steps 200`). */
  maxSteps?: number;
  /** Minimum seconds of the augmentation and loader measurements each. Default 3. */
  auxSeconds?: number;
  /** Also profile one step per kernel. Default false. */
  profile?: boolean;
  /** Smoke run: batch <= 8, 1 warm-up, 1 timed step, 1 augmentation and loader batch. */
  smoke?: boolean;
  /** Model and data seed. Default 0. */
  seed?: number;
  /**
   * Data-parallel Deno workers of the step (`parallel/mod.ts`), each on its own single backend
   * (wasm or cpu); 1 (the default) runs the step in this thread.
   */
  workers?: number;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
}

/** One workload's measurements (the JSON line of `deno task bench --json`). */
export interface BenchResult {
  workload: string;
  mode: BenchMode;
  backend: string;
  device: string;
  /** The CPU, named with its family, model and matrix instructions ({@link cpuLabel}). */
  cpu: string;
  /** Matmul precision: `fp32` or `bf16` (see `initBackend`). */
  precision: Precision;
  threads: number;
  /** Data-parallel workers of the step (1: the step runs in the main thread). */
  workers: number;
  batch: number;
  warmup_steps: number;
  steps: number;
  seconds: number;
  /** Training images (each seen in two views) per second: batch * steps / seconds. */
  images_per_s: number;
  ms_per_step: number;
  ms_per_step_median: number;
  /** The fast and the slow tenth of the step times (10th and 90th percentiles), ms. */
  ms_per_step_p10: number;
  ms_per_step_p90: number;
  /** Analytic FLOPs of one step (matmuls; a multiply-add counts 2); see `stepFlops`. */
  flops_per_step: number;
  gflops_per_s: number;
  /**
   * On the native backend, this CPU's multiply-add peak for the run's matrix products (float32
   * FMAs, or bf16 dot products), measured on registers at the run's thread count just before the
   * steps (`NativeLib.peakGflops`), GFLOP/s; null elsewhere.
   */
  peak_gflops: number | null;
  /** The same for float32 (what attention multiplies in, in both precisions); null elsewhere. */
  peak_fp32_gflops: number | null;
  /** Peak resident memory of the process during this workload (Linux VmHWM), bytes. */
  peak_rss_bytes: number;
  /** `tf.memory().numBytes` after the timed steps. */
  tf_bytes: number;
  /** Change of `tf.memory().numBytes` over the timed steps (0 when nothing leaks). */
  tf_bytes_growth: number;
  tf_tensors: number;
  tf_tensors_growth: number;
  /** Augmentation alone (both views of a batch), input images per second. */
  augment_images_per_s: number;
  /** Data loader alone (gather a shuffled batch, bytes to a float tensor), images per second. */
  loader_images_per_s: number;
  /** The loss (step) or feature sum (forward) of the last step, as a sanity check. */
  last_value: number;
  /** 1-minute load average before and after (the machine may be shared). */
  load_avg_start: number | null;
  load_avg_end: number | null;
  smoke: boolean;
  deno: string;
  tfjs: string;
  /** With `profile`: the per-kernel profile of one step. */
  profile?: StepProfile;
}

/** The software WebGPU adapters, which run on the CPU. */
const SOFTWARE_ADAPTER = /llvmpipe|lavapipe|swiftshader|software/i;

/**
 * Whether a started backend runs on a GPU: tensorflow with CUDA (backend.ts says "CPU only" in
 * the device when libtensorflow found no GPU), or WebGPU on a hardware adapter.
 */
export function isGpuBackend(b: BackendInfo): boolean {
  if (b.name === "tensorflow") return !/CPU only/i.test(b.device);
  return b.name === "webgpu" && !SOFTWARE_ADAPTER.test(b.device);
}

/** The mode a workload runs in on a backend: `step` on GPUs, the workload's `cpuMode` elsewhere. */
export function defaultMode(w: Workload, b: BackendInfo): BenchMode {
  return isGpuBackend(b) ? "step" : w.cpuMode;
}

/** Loader throughput: shuffled `getBatch` + `toFloatTensor`, input images per second. */
export async function benchLoader(
  ds: Dataset,
  batch: number,
  opts: { seconds: number; minIters: number; seed?: number },
): Promise<number> {
  const rng = createRng(opts.seed ?? 0);
  const t = await timeLoop(async () => {
    const idx = permutation(ds.length, rng).subarray(0, batch);
    const x = toFloatTensor(getBatch(ds, idx).images, batch, ds.height, ds.width, ds.channels);
    await x.data();
    x.dispose();
  }, { warmup: 1, minSeconds: opts.seconds, minIters: opts.minIters });
  return (batch * t.iters) / t.seconds;
}

/** Augmentation throughput: `twoViews` of a ready float batch, input images per second. */
export async function benchAugment(
  x: tf.Tensor4D,
  aug: AugmentConfig,
  opts: { seconds: number; minIters: number; seed?: number },
): Promise<number> {
  const rng = createRng(opts.seed ?? 0);
  const t = await timeLoop(async () => {
    const views = twoViews(x, rng, aug);
    await Promise.all(views.map((v) => v.data()));
    tf.dispose(views);
  }, { warmup: 1, minSeconds: opts.seconds, minIters: opts.minIters });
  return (x.shape[0] * t.iters) / t.seconds;
}

/**
 * Workers of a step when `--workers` is not given: on wasm and cpu with one thread, training steps
 * run data-parallel on one Deno worker per core (the largest divisor of the batch not above
 * `navigator.hardwareConcurrency`), the fastest way to use this machine's cores; otherwise
 * (forward mode, threaded wasm, a GPU backend, `--profile`, `--smoke`) in the main thread.
 */
export function defaultWorkers(
  mode: BenchMode,
  backend: string,
  threads: number,
  mainThreadOnly: boolean,
  batch: number,
  cores = navigator.hardwareConcurrency ?? 1,
): number {
  if (mode !== "step" || mainThreadOnly || threads !== 1) return 1;
  if (backend !== "wasm" && backend !== "cpu") return 1;
  for (let n = Math.min(cores, batch); n > 1; n--) if (batch % n === 0) return n;
  return 1;
}

/** Runs one workload (see the module doc) on the active backend. */
export async function benchWorkload(opts: BenchOptions): Promise<BenchResult> {
  const log = opts.log ?? (() => {});
  const smoke = opts.smoke ?? false;
  const base = resolveWorkload(opts.workload, { batch: opts.batch });
  const w = smoke ? { ...base, batch: Math.min(base.batch, 8) } : base;
  const mode = opts.mode ?? defaultMode(w, opts.backend);
  const seed = opts.seed ?? 0;
  const warmup = smoke ? 1 : opts.warmup ?? 2;
  const seconds = smoke ? 0 : opts.seconds ?? 10;
  const minSteps = smoke ? 1 : opts.minSteps ?? 3;
  const maxSteps = smoke ? 1 : opts.maxSteps;
  const aux = { seconds: smoke ? 0 : opts.auxSeconds ?? 3, minIters: 1, seed };
  const B = w.batch, S = w.vit.imageSize, C = w.vit.channels;
  const loadStart = loadAverage();

  // Data, augmentation and loader throughput.
  const ds = syntheticDataset({ n: 2 * B, imageSize: S, channels: C as 1 | 3, seed });
  const aug = defaultAugmentConfig({ outSize: S, channels: C });
  const loaderIps = await benchLoader(ds, B, aux);
  const batches = [0, 1].map((i) =>
    toFloatTensor(getBatch(ds, range(i * B, B)).images, B, S, S, C)
  );
  const augmentIps = await benchAugment(batches[0], aug, aux);
  log(
    `${w.name}: loader ${loaderIps.toFixed(0)} img/s, augmentation ${augmentIps.toFixed(1)} img/s`,
  );
  // Two pre-augmented pairs of views, alternated by the timed steps.
  const views = batches.map((x, i) => twoViews(x, createRng(seed + 1 + i), aug));
  tf.dispose(batches);

  // The timed steps.
  const workers = opts.workers ??
    defaultWorkers(mode, opts.backend.name, opts.backend.threads, !!opts.profile || smoke, B);
  if (workers > 1 && mode !== "step") {
    throw new ConfigError(`workers > 1 runs training steps only; got mode "${mode}"`);
  }
  if (workers > 1 && opts.profile) {
    throw new ConfigError("--profile sees the main thread only: drop it or --workers");
  }
  const be = opts.backend.name;
  if (workers > 1 && be !== "wasm" && be !== "cpu") {
    throw new ConfigError(`workers > 1 runs on the wasm or cpu backend; got "${be}"`);
  }
  const runner = workers > 1
    ? await createParallelStepRunner(w, workers, seed, be as "wasm" | "cpu", opts.backend.threads)
    : createStepRunner(w, mode, seed);
  let k = 0, last = NaN;
  const step = async () => {
    const [x1, x2] = views[k++ % views.length];
    last = await runner.run(x1, x2);
  };
  for (let i = 0; i < warmup; i++) await step();
  const native = opts.backend.name === "native" && !smoke ? openNative() : null;
  const gemm = native?.precision();
  const peak = native?.peakGflops(gemm!) ?? null;
  // Float32 products, and the emulated bf16 path's (float32 multiply-adds), have that peak.
  const peakFp32 = gemm === "fp32" || gemm === "bf16-emulated"
    ? peak
    : native?.peakGflops("fp32") ?? null;
  resetPeakRss();
  const mem0 = tf.memory();
  const t = await timeLoop(step, {
    warmup: 0,
    minSeconds: seconds,
    minIters: minSteps,
    maxIters: maxSteps,
    onIter: (i, ms) => log(`${w.name} ${mode} step ${i + 1}: ${ms.toFixed(0)} ms`),
  });
  const mem1 = tf.memory();
  const rss = peakRss();
  const profile = opts.profile ? await profileStep(step) : undefined;
  runner.dispose();
  tf.dispose(views.flat());

  const flops = stepFlops(w, mode).total;
  const msPerStep = (1000 * t.seconds) / t.iters;
  return {
    workload: w.name,
    mode,
    backend: opts.backend.name,
    device: opts.backend.device,
    cpu: cpuLabel(readCpu()),
    precision: opts.precision ?? "fp32",
    threads: opts.backend.threads,
    workers,
    batch: B,
    warmup_steps: warmup,
    steps: t.iters,
    seconds: round(t.seconds, 3),
    images_per_s: round((B * t.iters) / t.seconds, 2),
    ms_per_step: round(msPerStep, 1),
    ms_per_step_median: round(median(t.iterMs), 1),
    ms_per_step_p10: round(quantile(t.iterMs, 0.1), 1),
    ms_per_step_p90: round(quantile(t.iterMs, 0.9), 1),
    flops_per_step: flops,
    gflops_per_s: round(flops / 1e6 / msPerStep, 2),
    peak_gflops: peak === null ? null : round(peak, 1),
    peak_fp32_gflops: peakFp32 === null ? null : round(peakFp32, 1),
    peak_rss_bytes: rss,
    tf_bytes: mem1.numBytes,
    tf_bytes_growth: mem1.numBytes - mem0.numBytes,
    tf_tensors: mem1.numTensors,
    tf_tensors_growth: mem1.numTensors - mem0.numTensors,
    augment_images_per_s: round(augmentIps, 1),
    loader_images_per_s: round(loaderIps, 0),
    last_value: last,
    load_avg_start: loadStart,
    load_avg_end: loadAverage(),
    smoke,
    deno: Deno.version.deno,
    tfjs: tf.version_core,
    ...(profile ? { profile } : {}),
  };
}

function range(start: number, n: number): number[] {
  return Array.from({ length: n }, (_, i) => start + i);
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
