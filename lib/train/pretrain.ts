/**
 * The pretraining loop, read top to bottom: config, data, model, optimiser, then a loop that
 * augments, steps, logs, monitors kNN accuracy and checkpoints at fixed intervals, and resumes
 * from the same checkpoint format.
 *
 * Reproducibility by construction: the data order of epoch e is a permutation seeded by
 * (seed, e) and the augmentation of step t is seeded by (seed, t), so a resumed run needs only
 * the step count and the tensors in the checkpoint to continue exactly where it stopped.
 *
 * A run directory holds `config.json` (the resolved config and versions), `log.csv` (one row per
 * iteration), `knn.csv` (monitor rows), `checkpoint.safetensors` (everything needed to resume)
 * and `backbone.safetensors` (timm names only, for evaluation and PyTorch).
 *
 * @example
 * ```ts
 * import { pretrain, resolveConfig } from "./pretrain.ts";
 * const result = await pretrain(resolveConfig({ preset: "smoke", outDir: "/tmp/run" }));
 * console.log(result.knnTop1);
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../backends/mod.ts";
import { type AugmentConfig, defaultAugmentConfig, twoViews } from "../data/augment.ts";
import { type Dataset, fixedSubset, getBatch, loadDataset, toFloatTensor } from "../data/mod.ts";
import { type ChannelStats, datasetStats } from "../eval/features.ts";
import { knnOfBackbone } from "../eval/knn.ts";
import { createFramework, type SslModel } from "../methods/mod.ts";
import { createRng, permutation } from "../core/rng.ts";
import { readSafetensors, toFloat32 } from "../io/safetensors.ts";
import { DiskFullError, writeFileAtomic } from "../io/atomic.ts";
import { lockRunDir, type RunLock } from "../io/lock.ts";
import { pathExists } from "../io/exists.ts";
import { vitConfig } from "../model/vit.ts";
import { ConfigError } from "../core/errors.ts";
import { createDataParallel, type DataParallel } from "../parallel/mod.ts";
import { assignArrays, readArrays } from "../parallel/protocol.ts";
import { assignTensors, CONFIG_KEY, saveBackbone, saveTensors } from "./checkpoint.ts";
import { checkSameConfig, type PretrainConfig } from "./config.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  loadOptimizerState,
  lrAt,
  momentumAt,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
  scaledLr,
} from "./optim.ts";
import {
  appendRows,
  KNN_COLUMNS,
  type KnnRow,
  LOG_COLUMNS,
  type LogRow,
  removeStaleTempFiles,
  RUN_FILES,
  truncateLogs,
} from "./rundir.ts";

export { resolveConfig, resumeConfig } from "./config.ts";
export type { PretrainConfig } from "./config.ts";

/** Training stopped on a non-finite loss or gradient; the message names the step and layer. */
export class DivergenceError extends Error {
  override name = "DivergenceError";
}

/** What {@link pretrain} returns. */
export interface PretrainResult {
  runDir: string;
  steps: number;
  /** The backend it ran on, as `initBackend` describes it ("wasm (SIMD, 1 thread)"). */
  backend: string;
  /** Final kNN top-1 / top-5 on the test split (percent), if the final evaluation ran. */
  knnTop1?: number;
  knnTop5?: number;
  /**
   * Why the run ended: `stopped` by `hooks.signal` (SIGINT/SIGTERM in the CLI) with a checkpoint
   * to resume from, or `done` (all epochs, or `maxSteps`, then the final evaluation).
   */
  status: "done" | "stopped";
}

/** Options that steer a run without being part of its config. */
export interface RunHooks {
  /** Prints progress (default: console). */
  print?: (line: string) => void;
  /** Live progress for notebooks: called after every step. */
  onStep?: (row: LogRow) => void;
  /** Called after every kNN monitor evaluation. */
  onKnn?: (row: KnnRow) => void;
  /** Set `.stop = true` to finish the current step, checkpoint and return. */
  signal?: { stop: boolean };
  /** Resume an existing run directory even if its config differs. */
  force?: boolean;
  /**
   * The lock of `cfg.outDir`, when the caller holds it already (an experiment run locks its
   * directory for training and evaluation). Default: {@link pretrain} takes it itself.
   */
  lock?: RunLock;
}

export type { KnnRow, LogRow } from "./rundir.ts";

/** Seeds derived from the run seed, so that each stream is a pure function of (seed, index). */
function subSeed(seed: number, stream: number, index: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(stream + 1, 0x85ebca77) ^
    Math.imul(index + 1, 0xc2b2ae3d)) >>> 0;
}

/** Loads the train and test splits a config names. */
export async function loadSplits(cfg: PretrainConfig): Promise<[Dataset, Dataset]> {
  const common = {
    name: cfg.dataset,
    root: cfg.dataRoot,
    imageSize: cfg.imageSize,
    channels: cfg.channels,
    seed: cfg.seed,
  } as const;
  return await Promise.all([
    loadDataset({ ...common, split: "train", n: cfg.syntheticSize }),
    loadDataset({
      ...common,
      split: "test",
      n: cfg.syntheticSize && Math.ceil(cfg.syntheticSize / 5),
    }),
  ]);
}

/** The backbone config a pretraining config implies for a dataset. */
export function backboneConfig(cfg: PretrainConfig, ds: Dataset) {
  return vitConfig({
    name: cfg.model,
    imageSize: ds.height,
    channels: ds.channels,
    patchSize: cfg.patchSize,
    dim: cfg.dim,
    depth: cfg.depth,
    heads: cfg.heads,
    posEmb: cfg.posEmb,
    pool: cfg.pool,
    mlpNorm: cfg.mlpNorm,
    freezePatchEmbed: cfg.freezePatchEmbed,
  });
}

/** Library versions and the git commit, recorded with every run. */
export async function versions(backend: string): Promise<Record<string, string>> {
  let commit = "unknown";
  try {
    // The commit of the code that runs, not of the working directory's repository.
    const cwd = new URL(".", import.meta.url);
    const out = await new Deno.Command("git", { args: ["rev-parse", "HEAD"], cwd, stderr: "null" })
      .output();
    if (out.success) commit = new TextDecoder().decode(out.stdout).trim();
  } catch { /* not a git checkout */ }
  return { deno: Deno.version.deno, tfjs: tf.version_core, backend, commit };
}

/** Group gradient norms for logging and for finding the first layer that went non-finite. */
function gradGroups(grads: Record<string, unknown>, depth: number): string[][] {
  const groups: string[][] = [[], ...Array.from({ length: depth }, () => []), []];
  for (const name of Object.keys(grads)) {
    const m = /^base_encoder\.blocks\.(\d+)\./.exec(name);
    if (name.startsWith("base_encoder.patch_embed.")) groups[0].push(name);
    else if (m) groups[1 + Number(m[1])].push(name);
    else groups[depth + 1].push(name);
  }
  return groups;
}

function groupLabel(i: number, depth: number): string {
  return i === 0 ? "patch_embed" : i <= depth ? `blocks.${i - 1}` : "heads";
}

/**
 * Runs (or resumes) a pretraining run. Resumes when `cfg.outDir` already holds a checkpoint;
 * refuses if that run's config differs (unless `hooks.force`), and refuses at once (a
 * `RunLockedError`) while another process holds the directory. A full disk ends the run with a
 * `DiskFullError` that says how to resume; the last checkpoint and the logs stay intact.
 */
export async function pretrain(cfg: PretrainConfig, hooks: RunHooks = {}): Promise<PretrainResult> {
  if (hooks.lock && hooks.lock.dir !== cfg.outDir) {
    throw new Error(`pretrain: the lock given is for ${hooks.lock.dir}, not ${cfg.outDir}`);
  }
  // One process per run directory: a second one is refused before it changes anything, here
  // when the directory exists, else where the run creates it (after the config is checked).
  let lock = hooks.lock ?? await lockRunDir(cfg.outDir, { create: false });
  const takeLock = async () => {
    lock ??= await lockRunDir(cfg.outDir);
  };
  try {
    return await pretrainLocked(cfg, hooks, takeLock);
  } catch (e) {
    if (!(e instanceof DiskFullError)) throw e;
    throw new DiskFullError(
      e.detail,
      e.path,
      `the last checkpoint and log of ${cfg.outDir} are intact: free some space, then resume ` +
        `with: deno task pretrain --resume ${cfg.outDir}`,
      { cause: e },
    );
  } finally {
    if (!hooks.lock) lock?.release();
  }
}

async function pretrainLocked(
  cfg: PretrainConfig,
  hooks: RunHooks,
  takeLock: () => Promise<void>,
): Promise<PretrainResult> {
  const print = hooks.print ?? ((s: string) => console.log(s));
  const signal = hooks.signal ?? { stop: false };
  // Data-parallel workers each run wasm or cpu: there, `auto` means wasm.
  const backend = cfg.workers > 1 && cfg.backend === "auto" ? "wasm" : cfg.backend;
  const backendInfo = await initBackend({
    backend,
    threads: cfg.threads || undefined,
    precision: cfg.precision,
  });
  print(`backend: ${backendInfo.summary}`);
  if (cfg.workers > 1) checkWorkers(cfg, backendInfo.name);

  // Data.
  const [train, test] = await loadSplits(cfg);
  const B = cfg.batchSize;
  if (train.length < B) {
    throw new ConfigError(
      `batch size ${B} is larger than the training set (${train.length} images): lower --batch`,
    );
  }
  const stepsPerEpoch = Math.floor(train.length / B);
  const totalSteps = cfg.epochs * stepsPerEpoch;
  const lastStep = cfg.maxSteps > 0 ? Math.min(cfg.maxSteps, totalSteps) : totalSteps;
  const stats = datasetStats(train);
  const aug = pretrainAugmentConfig(cfg, train, stats);

  // Model and optimiser.
  const vit = backboneConfig(cfg, train);
  const heads = { hidden: cfg.hidden, outDim: cfg.outDim, temperature: cfg.temperature };
  const ssl = createFramework(cfg.framework, vit, heads, cfg.seed);
  const peakLr = scaledLr(cfg.baseLr, B);
  const optCfg: OptimizerConfig = {
    name: cfg.optimizer,
    weightDecay: cfg.weightDecay,
    skipDecay: cfg.skipDecay,
  };
  const opt = createOptimizerState(optCfg, ssl.trainable());
  let stepper: Stepper | undefined;
  // The model and the optimiser state are freed however the run ends (done, stopped, error).
  try {
    const schedule = {
      peakLr,
      warmupSteps: Math.min(cfg.warmupEpochs * stepsPerEpoch, totalSteps - 1),
      totalSteps,
    };

    // Run directory: new, or resumed from its checkpoint.
    const dir = cfg.outDir;
    await takeLock(); // creates the directory
    const ckptPath = `${dir}/${RUN_FILES.checkpoint}`;
    const resolved = { ...cfg, backbone: vit, stepsPerEpoch, totalSteps, peakLr };
    const opened = await openRunDir(cfg, resolved, backendInfo.summary, ssl, opt, hooks);
    let { step, lrScale } = opened;
    if (opened.resumed) print(`resumed ${dir} at step ${step}/${lastStep}`);
    stepper = cfg.workers > 1
      ? await dataParallelStepper(cfg, vit, heads, optCfg, backendInfo, ssl, opt, print)
      : localStepper(ssl, opt, optCfg);

    let savedStep = -1;
    const save = async () => {
      await stepper!.pull();
      savedStep = step;
      await saveCheckpoint(dir, ssl, opt, { cfg, vit, step, lrScale });
    };
    const monitor = async (run: PretrainConfig, epoch: number, what: (r: KnnRow) => string) => {
      await stepper!.pull();
      const row = await knnMonitor(ssl, train, test, stats, run, step, epoch);
      await appendRows(`${dir}/${RUN_FILES.knn}`, KNN_COLUMNS, [row]);
      hooks.onKnn?.(row);
      print(what(row));
      return row;
    };
    /** After a non-finite step: roll back to the checkpoint with a lower lr, or stop. */
    const recover = async (lossValue: number, norms: number[], epoch: number) => {
      const badGroup = norms.findIndex((v) => !Number.isFinite(v));
      const where = badGroup >= 0 && badGroup <= vit.depth + 1
        ? `the gradient norm of ${groupLabel(badGroup, vit.depth)} went non-finite first`
        : "the loss is non-finite";
      const msg = `non-finite loss (${lossValue}) at step ${step} (epoch ${epoch}): ${where}`;
      if (cfg.onNan === "rollback" && await pathExists(ckptPath)) {
        ({ step, lrScale } = await restore(ssl, opt, ckptPath));
        await stepper!.push();
        lrScale *= cfg.nanLrFactor;
        savedStep = -1; // the checkpoint holds the old lr scale
        await truncateLogs(dir, step);
        print(`${msg}; rolled back to the checkpoint at step ${step} with lr x${lrScale}`);
        return;
      }
      throw new DivergenceError(
        `${msg}. The last good checkpoint is kept in ${ckptPath}. Lower --lr, raise --warmup, ` +
          "or run with --on-nan rollback.",
      );
    };

    // The loop: batch, step, log, monitor, checkpoint.
    const progress = progressPrinter(print, lastStep, stepsPerEpoch);
    const batches = batchOrder(cfg, train, stepsPerEpoch);
    const n0 = tf.memory().numTensors;
    // The fault injection fires once per call, so that a rollback can get past it.
    let injectAt = cfg.injectNanAt;
    while (step < lastStep && !signal.stop) {
      const t0 = performance.now();
      const epoch = Math.floor(step / stepsPerEpoch);
      const batch = batches(step);
      const lr = lrAt(step, schedule) * lrScale;
      const m = momentumAt(step, totalSteps, cfg.m0);
      const x = toFloatTensor(batch.images, B, train.height, train.width, train.channels);
      let [x1, x2] = twoViews(x, createRng(subSeed(cfg.seed, 1, step)), aug);
      x.dispose();
      if (injectAt === step) {
        // Fault injection for tests of the divergence guard: poison view 1 of this step.
        injectAt = -1;
        const poisoned = tf.mul(x1, NaN) as tf.Tensor4D;
        x1.dispose();
        x1 = poisoned;
      }
      const { loss, grads } = await stepper.grads(x1, x2, m);
      tf.dispose([x1, x2]);
      const norms = await gradNorms(grads, vit.depth);
      const finite = Number.isFinite(loss) && norms.every(Number.isFinite);
      await stepper.apply(grads, finite, lr);
      if (!finite) {
        await recover(loss, norms, epoch);
        continue;
      }

      const row: LogRow = {
        step,
        epoch,
        loss,
        lr,
        momentum: m,
        grad_patch: norms[0],
        grad_first_block: norms[1],
        grad_last_block: norms[vit.depth],
        grad_heads: norms[vit.depth + 1],
        grad_total: norms[vit.depth + 2],
        images_per_s: B / ((performance.now() - t0) / 1000),
      };
      step++;
      await appendRows(`${dir}/${RUN_FILES.log}`, LOG_COLUMNS, [row]);
      hooks.onStep?.(row);
      progress(row);
      if (cfg.checkTensorLeaks && tf.memory().numTensors !== n0) {
        throw new Error(`tensor leak: ${tf.memory().numTensors - n0} tensors after step ${step}`);
      }

      const endOfEpoch = step % stepsPerEpoch === 0;
      const knnDue = cfg.knnEvery > 0 ? step % cfg.knnEvery === 0 : endOfEpoch;
      if (knnDue && step < lastStep) {
        await monitor(
          cfg,
          Math.floor(step / stepsPerEpoch),
          (r) =>
            `knn @ step ${step}: top-1 ${r.top1.toFixed(2)}% top-5 ${r.top5.toFixed(2)}% ` +
            `(k=${r.k}, ${r.train_size} train / ${r.test_size} test)`,
        );
      }
      if (step % cfg.checkpointEvery === 0 || step === lastStep) await save();
    }

    const backend = backendInfo.summary;
    if (step < lastStep) {
      if (savedStep !== step) await save();
      print(
        `stopped at step ${step}/${lastStep}; checkpoint written. Resume with: ` +
          `deno task pretrain --resume ${dir}`,
      );
      return { runDir: dir, steps: step, backend, status: "stopped" };
    }

    // Final evaluation: kNN of the whole test split against the whole training split.
    let knnTop1: number | undefined, knnTop5: number | undefined;
    if (cfg.finalKnn) {
      const full = { ...cfg, knnTrainSize: 0, knnTestSize: 0 };
      const row = await monitor(
        full,
        Math.floor(step / stepsPerEpoch),
        (r) =>
          `final kNN (k=${r.k}, ${r.train_size} train images, ${r.test_size} test images): ` +
          `top-1 ${r.top1.toFixed(2)}%, top-5 ${r.top5.toFixed(2)}%`,
      );
      knnTop1 = row.top1;
      knnTop5 = row.top5;
    }
    print(`run directory: ${dir}`);
    return { runDir: dir, steps: step, backend, knnTop1, knnTop5, status: "done" };
  } finally {
    stepper?.close();
    ssl.dispose();
    disposeOptimizerState(opt);
  }
}

/**
 * Opens the run directory: resumes from its checkpoint (after checking that its config is the
 * same, and cutting the logs back to the checkpoint) and returns its step and lr scale, or starts
 * it afresh with a new config.json (step 0).
 */
async function openRunDir(
  cfg: PretrainConfig,
  resolved: Record<string, unknown>,
  backend: string,
  ssl: SslModel,
  opt: OptimizerState,
  hooks: RunHooks,
): Promise<{ step: number; lrScale: number; resumed: boolean }> {
  const dir = cfg.outDir;
  const ckptPath = `${dir}/${RUN_FILES.checkpoint}`;
  await removeStaleTempFiles(dir);
  if (await pathExists(ckptPath)) {
    await checkSameConfig(dir, cfg, hooks.force ?? false);
    const resumed = await restore(ssl, opt, ckptPath);
    await truncateLogs(dir, resumed.step);
    return { ...resumed, resumed: true };
  }
  // A fresh start: rows of an earlier attempt killed before its first checkpoint would
  // otherwise be followed by the same steps again.
  for (const log of [RUN_FILES.log, RUN_FILES.knn]) {
    await Deno.remove(`${dir}/${log}`).catch(() => {});
  }
  const json = JSON.stringify(
    { config: cfg, resolved, versions: await versions(backend) },
    null,
    2,
  );
  await writeFileAtomic(`${dir}/${RUN_FILES.config}`, new TextEncoder().encode(json + "\n"));
  return { step: 0, lrScale: 1, resumed: false };
}

/** Writes the training checkpoint (model, optimiser slots, step, lr scale) and the backbone. */
async function saveCheckpoint(
  dir: string,
  ssl: SslModel,
  opt: OptimizerState,
  at: {
    cfg: PretrainConfig;
    vit: ReturnType<typeof backboneConfig>;
    step: number;
    lrScale: number;
  },
): Promise<void> {
  const tensors = { ...ssl.state(), ...optimizerStateTensors(opt) };
  const meta = {
    format: "vitssl-checkpoint-v1",
    step: String(at.step),
    lr_scale: String(at.lrScale),
    optimizer_step: String(opt.step),
    config: JSON.stringify(at.cfg),
    [CONFIG_KEY]: JSON.stringify(at.vit),
  };
  await saveTensors(`${dir}/${RUN_FILES.checkpoint}`, tensors, meta);
  await saveBackbone(`${dir}/${RUN_FILES.backbone}`, ssl.backbone, { step: String(at.step) });
}

/** The images of step t: batch t mod E of epoch t div E, in a permutation seeded by the epoch. */
function batchOrder(cfg: PretrainConfig, train: Dataset, stepsPerEpoch: number) {
  const B = cfg.batchSize;
  let perm: Int32Array | undefined;
  let permEpoch = -1;
  return (step: number) => {
    const epoch = Math.floor(step / stepsPerEpoch);
    if (epoch !== permEpoch) {
      perm = permutation(train.length, createRng(subSeed(cfg.seed, 0, epoch)));
      permEpoch = epoch;
    }
    const i = step % stepsPerEpoch;
    return getBatch(train, perm!.subarray(i * B, (i + 1) * B));
  };
}

/**
 * One training step in two halves, on one process or on data-parallel workers, so that the loop
 * has one path: the loss and gradients, then the update (skipped after a non-finite step).
 */
interface Stepper {
  /** The method's step: loss and gradients by trainable name (the caller passes them on). */
  grads(
    x1: tf.Tensor4D,
    x2: tf.Tensor4D,
    momentum: number,
  ): Promise<{ loss: number; grads: Record<string, tf.Tensor> }>;
  /** Applies the gradients at `lr` if `ok`, and frees them. */
  apply(grads: Record<string, tf.Tensor>, ok: boolean, lr: number): Promise<void>;
  /** Copies the training state into `ssl` and `opt` (from worker 0; nothing to do locally). */
  pull(): Promise<void>;
  /** Copies `ssl` and `opt` into the workers (after a restore). */
  push(): Promise<void>;
  close(): void;
}

function localStepper(ssl: SslModel, opt: OptimizerState, optCfg: OptimizerConfig): Stepper {
  const params = ssl.trainable();
  return {
    async grads(x1, x2, momentum) {
      const { loss, grads } = ssl.step(x1, x2, { momentum });
      const [value] = await loss.data();
      loss.dispose();
      return { loss: value, grads };
    },
    apply(grads, ok, lr) {
      if (ok) applyGradients(params, grads, opt, optCfg, lr);
      tf.dispose(Object.values(grads));
      return Promise.resolve();
    },
    pull: () => Promise.resolve(),
    push: () => Promise.resolve(),
    close() {},
  };
}

/**
 * `--workers N`: the workers hold the training state and each runs the method's own step on its
 * shard; `ssl` and `opt` here are synced from worker 0 for checkpoints and kNN (pull), and
 * pushed to the workers after a restore (push).
 */
async function dataParallelStepper(
  cfg: PretrainConfig,
  vit: ReturnType<typeof backboneConfig>,
  heads: { hidden: number; outDim: number; temperature: number },
  optCfg: OptimizerConfig,
  backendInfo: { name: string; threads: number },
  ssl: SslModel,
  opt: OptimizerState,
  print: (s: string) => void,
): Promise<Stepper> {
  const dp: DataParallel = await createDataParallel({
    workers: cfg.workers,
    framework: ssl.name,
    vit,
    heads,
    optimizer: optCfg,
    seed: cfg.seed,
    backend: backendInfo.name as "wasm" | "cpu",
    threads: backendInfo.threads,
  });
  const shapes = Object.fromEntries(
    Object.entries(ssl.trainable()).map(([k, v]) => [k, v.shape]),
  );
  const allVars = () => ({
    ...ssl.state(),
    ...optimizerStateTensors(opt) as Record<string, tf.Variable>,
  });
  const stepper: Stepper = {
    async grads(x1, x2, momentum) {
      const r = await dp.grads(x1, x2, { momentum });
      const grads = Object.fromEntries(
        Object.entries(r.grads).map(([k, g]) => [k, tf.tensor(g, shapes[k])]),
      );
      return { loss: r.loss, grads };
    },
    async apply(grads, ok, lr) {
      tf.dispose(Object.values(grads));
      await dp.apply({ lr, apply: ok });
    },
    async pull() {
      const s = await dp.getState();
      assignArrays(allVars(), s.tensors, "data-parallel worker 0");
      opt.step = s.optimizerStep;
    },
    async push() {
      await dp.setState({ tensors: readArrays(allVars()), optimizerStep: opt.step });
    },
    close: () => dp.close(),
  };
  await stepper.push();
  print(`data-parallel: ${cfg.workers} workers, each ${dp.backend}`);
  return stepper;
}

/**
 * Gradient norms by group for the log and for finding the first layer that went non-finite:
 * patch projection, each block, heads, and the total (`depth + 3` values).
 */
async function gradNorms(grads: Record<string, tf.Tensor>, depth: number): Promise<number[]> {
  const norms = tf.tidy(() => {
    const parts = gradGroups(grads, depth).map((g) =>
      g.length ? tf.sum(tf.stack(g.map((n) => tf.sum(tf.square(grads[n]))))) : tf.scalar(0)
    );
    return tf.sqrt(tf.stack([...parts, tf.addN(parts)]));
  });
  const values = Array.from(await norms.data());
  norms.dispose();
  return values;
}

/** Refuses `workers > 1` where the data-parallel runner cannot run it. */
function checkWorkers(cfg: PretrainConfig, backend: string): void {
  if (backend !== "wasm" && backend !== "cpu") {
    throw new ConfigError(
      `--workers ${cfg.workers} runs each worker on wasm or cpu, but the backend is ${backend}: ` +
        "pass --backend wasm (or --workers 1)",
    );
  }
  if (cfg.batchSize % cfg.workers !== 0) {
    throw new ConfigError(
      `batch size ${cfg.batchSize} does not split across ${cfg.workers} workers: choose a ` +
        "--batch that is a multiple of --workers",
    );
  }
}

/**
 * The augmentation of a run: the paper's recipe at the dataset's size and statistics, with the
 * config's crop scale (`--crop-min`).
 *
 * @example
 * ```ts
 * pretrainAugmentConfig({ ...cfg, cropMin: 0.25 }, trainDs, datasetStats(trainDs)).scale; // [0.25, 1]
 * ```
 */
export function pretrainAugmentConfig(
  cfg: Pick<PretrainConfig, "cropMin">,
  train: Pick<Dataset, "height" | "channels">,
  stats: ChannelStats,
): AugmentConfig {
  return defaultAugmentConfig({
    outSize: train.height,
    channels: train.channels,
    mean: stats.mean,
    std: stats.std,
    cropMin: cfg.cropMin,
  });
}

/** Loads a training checkpoint into the model and optimiser; returns its step and lr scale. */
async function restore(
  ssl: SslModel,
  opt: OptimizerState,
  path: string,
): Promise<{ step: number; lrScale: number }> {
  const { tensors, metadata } = await readSafetensors(path);
  const state = ssl.state();
  const model: typeof tensors = {};
  const optim: Record<string, tf.Tensor> = {};
  for (const [k, t] of Object.entries(tensors)) {
    if (k.startsWith("optim.")) optim[k] = tf.tensor(toFloat32(t), t.shape);
    else model[k] = t;
  }
  try {
    assignTensors(state, model, path);
    loadOptimizerState(opt, optim, Number(metadata.optimizer_step));
  } finally {
    tf.dispose(Object.values(optim));
  }
  return { step: Number(metadata.step), lrScale: Number(metadata.lr_scale ?? 1) };
}

/** The kNN monitor: the online backbone on a fixed test subset against a fixed train bank. */
async function knnMonitor(
  ssl: SslModel,
  train: Dataset,
  test: Dataset,
  stats: ChannelStats,
  cfg: PretrainConfig,
  step: number,
  epoch: number,
): Promise<KnnRow> {
  const bank = fixedSubset(train, cfg.knnTrainSize);
  const queries = fixedSubset(test, cfg.knnTestSize);
  const res = await knnOfBackbone(ssl.backbone, bank, queries, { k: cfg.knnK, stats });
  return {
    step,
    epoch,
    top1: 100 * res.top1,
    top5: 100 * res.top5,
    k: cfg.knnK,
    train_size: bank.length,
    test_size: queries.length,
  };
}

/** A progress display: an in-place bar on a terminal, a plain line every 10 s elsewhere. */
function progressPrinter(
  print: (s: string) => void,
  lastStep: number,
  stepsPerEpoch: number,
): (row: LogRow) => void {
  const tty = print === console.log && Deno.stdout.isTerminal();
  const start = performance.now();
  let first = -1;
  let lastPrint = 0;
  return (row) => {
    if (first < 0) first = row.step;
    const done = row.step + 1;
    const elapsed = (performance.now() - start) / 1000;
    const rate = (done - first) / Math.max(elapsed, 1e-9);
    const eta = (lastStep - done) / Math.max(rate, 1e-9);
    const pct = done / lastStep;
    const epochs = Math.ceil(lastStep / stepsPerEpoch);
    const text = `epoch ${row.epoch + 1}/${epochs} step ${done}/${lastStep} loss ` +
      `${row.loss.toFixed(4)} lr ${row.lr.toExponential(2)} ${row.images_per_s.toFixed(0)} img/s ` +
      `ETA ${formatSeconds(eta)}`;
    if (tty) {
      const width = 24;
      const bar = "#".repeat(Math.round(pct * width)).padEnd(width, ".");
      Deno.stdout.writeSync(new TextEncoder().encode(`\r[${bar}] ${text}\x1b[K`));
      if (done === lastStep) Deno.stdout.writeSync(new TextEncoder().encode("\n"));
    } else if (elapsed - lastPrint >= 10 || done === lastStep || done === first + 1) {
      lastPrint = elapsed;
      print(text);
    }
  };
}

function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m >= 60
    ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`
    : `${m}m${String(sec).padStart(2, "0")}s`;
}
