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
 * iteration), `knn.csv` (monitor rows: kNN, and the online probe's top-1 where the run has one,
 * lib/train/online_probe.ts), `checkpoint.safetensors` (everything needed to resume)
 * and `backbone.safetensors` (timm names only, for evaluation and PyTorch); under
 * `--on-nan rollback` also `checkpoint.prev.safetensors` and `rollbacks.csv`.
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
import {
  type Dataset,
  fixedSubset,
  getBatch,
  loadDataset,
  splitLine,
  toFloatTensor,
} from "../data/mod.ts";
import { type ChannelStats, datasetStats } from "../data/stats.ts";
import { knnOfBackbone } from "../eval/knn.ts";
import { type FinalReport, finalReport, finalReportLines } from "../eval/final_report.ts";
import { createFramework, type SslModel } from "../methods/mod.ts";
import { createRng, permutation } from "../core/rng.ts";
import { readSafetensors, toFloat32 } from "../io/safetensors.ts";
import { DiskFullError, formatBytes, writeFileAtomic } from "../io/atomic.ts";
import { lockRunDir, type RunLock } from "../io/lock.ts";
import { pathExists } from "../io/exists.ts";
import { createViT, vitConfig } from "../model/vit.ts";
import { ConfigError, UserError } from "../core/errors.ts";
import { StoppedError, type StopSignal } from "../core/stop.ts";
import { createDataParallel, type DataParallel } from "../parallel/mod.ts";
import { assignArrays, readArrays } from "../parallel/protocol.ts";
import {
  assignTensors,
  CheckpointError,
  CONFIG_KEY,
  saveBackbone,
  saveTensors,
} from "./checkpoint.ts";
import { checkSameConfig, type PretrainConfig, savedRunConfig } from "./config.ts";
import {
  createOnlineProbe,
  disposeOnlineProbe,
  loadProbeTensors,
  type OnlineProbe,
  PROBE_PREFIX,
  probeAccuracy,
  probeStep,
  probeTensors,
} from "./online_probe.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  loadOptimizerState,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
} from "../optim/optim.ts";
import { lrAt, momentumAt, scaledLr } from "../optim/schedule.ts";
import {
  appendRows,
  keepPreviousCheckpoint,
  knnColumns,
  type KnnRow,
  LOG_COLUMNS,
  type LogRow,
  readRunLogs,
  removeStaleTempFiles,
  ROLLBACK_COLUMNS,
  type RollbackRow,
  RUN_FILES,
  truncateLogs,
  truncateRollbacks,
  truncateRows,
} from "./rundir.ts";

export { resolveConfig, resumeConfig } from "./config.ts";
export type { PretrainConfig } from "./config.ts";

/**
 * Training stopped on a non-finite loss or gradient (or `--on-nan rollback` ran out of rollbacks);
 * the message says what went non-finite, at which step, and what to change.
 */
export class DivergenceError extends UserError {
  override name = "DivergenceError";
  /** Exit code 1: the input was fine; the run could not go on. */
  override exitCode = 1;
}

/** What {@link pretrain} returns. */
export interface PretrainResult {
  runDir: string;
  steps: number;
  /** The backend it ran on, as `initBackend` describes it ("wasm (SIMD, 1 thread)"). */
  backend: string;
  /** Final kNN top-1 / top-5 on the test split (percent), if the final evaluation ran it. */
  knnTop1?: number;
  knnTop5?: number;
  /** Final linear-probe top-1 on the test split (percent), if the final evaluation ran it. */
  linearTop1?: number;
  /** The final report (backbone, random init, raw pixels), unless `finalEval` is `none`. */
  report?: FinalReport;
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
  /**
   * Set `.stop = true` to finish the current step (or kNN monitor batch), checkpoint and return
   * `stopped`; during the final kNN it throws a `StoppedError` (the checkpoint is written).
   */
  signal?: StopSignal;
  /** Resume an existing run directory even if its config differs. */
  force?: boolean;
  /**
   * Where the final report caches its random-init and raw-pixel baselines (default
   * `data/cache/baselines`; `null`: computed every time).
   */
  baselineCacheDir?: string | null;
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

/**
 * Loads the train and test splits a config names (train first, so that its errors come first).
 * For an ImageFolder it prints one line with the split used: its `train/` and `test/` folders, or
 * the held-out part of an unsplit tree (`splitRule`, lib/data/imagefolder.ts).
 *
 * @example
 * ```ts
 * const [train, test] = await loadSplits(resolveConfig({ preset: "smoke" }));
 * ```
 */
export async function loadSplits(
  cfg: PretrainConfig,
  print: (line: string) => void = () => {},
): Promise<[Dataset, Dataset]> {
  const common = {
    name: cfg.dataset,
    root: cfg.dataRoot,
    imageSize: cfg.imageSize,
    channels: cfg.channels,
    seed: cfg.seed,
  } as const;
  const train = await loadDataset({ ...common, split: "train", n: cfg.syntheticSize });
  const test = await loadDataset({
    ...common,
    split: "test",
    n: cfg.syntheticSize && Math.ceil(cfg.syntheticSize / 5),
  });
  const line = splitLine(train, test, cfg.dataRoot);
  if (line) print(line);
  return [train, test];
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

/** Names of {@link gradNorms}' values: patch_embed, blocks.0, ..., heads, total. */
function groupLabel(i: number, depth: number): string {
  if (i === 0) return "patch_embed";
  if (i <= depth) return `blocks.${i - 1}`;
  return i === depth + 1 ? "heads" : "total";
}

/**
 * What went non-finite in a step, as facts: the loss (with its value) and/or the gradient norm
 * (with the first group, in forward order, whose norm is non-finite), and the matching row fields.
 */
function nonFinite(loss: number, norms: number[], depth: number) {
  const lossBad = !Number.isFinite(loss);
  const bad = norms.findIndex((v) => !Number.isFinite(v));
  const group = bad < 0 ? "" : groupLabel(bad, depth);
  const grad = group === "total"
    ? "the total gradient norm (the norm of every group is finite)"
    : `the gradient norm of ${group} (the first such group in forward order)`;
  const text = !lossBad
    ? `${grad} is non-finite; the loss is finite`
    : group
    ? `the loss (${loss}) and ${grad} are non-finite`
    : `the loss is non-finite (${loss})`;
  const what: RollbackRow["nonfinite"] = lossBad ? (group ? "loss+gradient" : "loss") : "gradient";
  return { text, what, group };
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
    throw new DiskFullError(e.detail, e.path, await diskFullAdvice(cfg.outDir, e), {
      cause: e,
      bytes: e.bytes,
    });
  } finally {
    if (!hooks.lock) lock?.release();
  }
}

/**
 * What to do after a full disk, from what the run directory holds: with a checkpoint, that it and
 * the log are intact, how much the next checkpoint needs (the checkpoint and backbone files are
 * written beside the old ones before they replace them) and the resume command; without one, that
 * there is nothing to resume yet, and how large the checkpoint that failed was.
 */
async function diskFullAdvice(dir: string, e: DiskFullError): Promise<string> {
  const size = (name: string) => Deno.stat(`${dir}/${name}`).then((s) => s.size, () => undefined);
  const ckpt = await size(RUN_FILES.checkpoint);
  if (ckpt === undefined) {
    const need = e.path.endsWith(RUN_FILES.checkpoint) && e.bytes
      ? ` (the checkpoint needs about ${formatBytes(e.bytes)})`
      : "";
    return `no checkpoint was written yet, so there is nothing to resume: free some space${need}, ` +
      "then run the same command again";
  }
  const next = ckpt + ((await size(RUN_FILES.backbone)) ?? 0);
  return `the last checkpoint and the log of ${dir} are intact: free about ${formatBytes(next)} ` +
    "(a checkpoint and backbone are written beside the old ones before replacing them), then " +
    `resume with: deno task pretrain --resume ${dir}`;
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
  const [train, test] = await loadSplits(cfg, print);
  cfg = { ...cfg, onlineProbe: await onlineProbeSetting(cfg, train) };
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
  const heads = {
    hidden: cfg.hidden,
    outDim: cfg.outDim,
    temperature: cfg.temperature,
    prototypes: cfg.prototypes,
  };
  const ssl = createFramework(cfg.framework, vit, heads, cfg.seed);
  const peakLr = scaledLr(cfg.baseLr, B);
  const optCfg: OptimizerConfig = {
    name: cfg.optimizer,
    weightDecay: cfg.weightDecay,
    skipDecay: cfg.skipDecay,
  };
  const opt = createOptimizerState(optCfg, ssl.trainable());
  // The online probe: its own seed stream (2), so the backbone and the data do not change.
  const probe = cfg.onlineProbe
    ? createOnlineProbe(vit.dim, train.classes.length, subSeed(cfg.seed, 2, 0))
    : undefined;
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
    const split = train.splitRule ? { split: train.splitRule } : {};
    const prevPath = `${dir}/${RUN_FILES.previousCheckpoint}`;
    const resolved = {
      ...cfg,
      precision: backendInfo.precision,
      backbone: vit,
      stepsPerEpoch,
      totalSteps,
      peakLr,
      ...split,
    };
    const opened = await openRunDir(cfg, resolved, backendInfo.summary, ssl, opt, probe, hooks);
    let { step, lrScale } = opened;
    const { rollbackSteps } = opened;
    if (opened.resumed) {
      const after = rollbackSteps.length
        ? `, lr x${lrScale} after ${rollbackSteps.length} rollback(s)`
        : "";
      print(`resumed ${dir} at step ${step}/${lastStep}${after}`);
    }
    stepper = cfg.workers > 1
      ? await dataParallelStepper(cfg, vit, heads, optCfg, backendInfo, ssl, opt, print)
      : localStepper(ssl, opt, optCfg);

    // The steps of checkpoint.safetensors and checkpoint.prev.safetensors (-1: none; undefined:
    // not read yet), the rollback targets.
    let savedStep = -1;
    let ckptStep = opened.resumed ? step : -1;
    let prevStep = opened.resumed ? undefined : -1;
    /** Writes the checkpoint of `step`; under rollback the one it replaces is kept as prev. */
    const write = async (keepPrevious: boolean) => {
      if (keepPrevious && cfg.onNan === "rollback" && ckptStep >= 0 && ckptStep !== step) {
        await keepPreviousCheckpoint(dir);
        prevStep = ckptStep;
      }
      await saveCheckpoint(dir, ssl, opt, probe, { cfg, vit, step, lrScale, rollbackSteps });
      savedStep = ckptStep = step;
    };
    const save = async () => {
      await stepper!.pull();
      await write(true);
    };
    // Under rollback, a fresh run keeps its initial state: a divergence before the first
    // checkpoint can go back to step 0.
    if (cfg.onNan === "rollback" && !opened.resumed) await save();
    const monitor = async (run: PretrainConfig, epoch: number, what: (r: KnnRow) => string) => {
      await stepper!.pull();
      const row = await knnMonitor(ssl, train, test, stats, run, step, epoch, signal, probe);
      await appendRows(`${dir}/${RUN_FILES.knn}`, knnColumns(probe !== undefined), [row]);
      hooks.onKnn?.(row);
      print(what(row));
      return row;
    };
    /**
     * After a non-finite step: roll back (to the newest checkpoint before this step; to the
     * oldest kept one when the run diverges again before passing the step of the last
     * rollback), with the lr scale times --nan-lr-factor, or stop with a DivergenceError.
     */
    const recover = async (lossValue: number, norms: number[], epoch: number) => {
      const bad = nonFinite(lossValue, norms, vit.depth);
      const at = `step ${step + 1}/${lastStep} (epoch ${epoch + 1})`;
      const fact = `non-finite values at ${at}: ${bad.text}`;
      const last = ckptStep >= 0 && await pathExists(ckptPath)
        ? ` The last checkpoint (step ${ckptStep}) is ${ckptPath}.`
        : " No checkpoint was written.";
      // The gradient of a step does not depend on the lr; that of the first step on nothing else.
      if (step === 0) {
        throw new DivergenceError(
          `${fact}. The first step does not depend on the lr: check the data and the model flags.`,
        );
      }
      const change = `Lower --lr (now ${cfg.baseLr}) or raise --warmup (now ${cfg.warmupEpochs})`;
      if (cfg.onNan !== "rollback") {
        throw new DivergenceError(`${fact}.${last} ${change}, or run with --on-nan rollback.`);
      }
      if (rollbackSteps.length >= cfg.maxRollbacks) {
        const n = rollbackSteps.length;
        const tried = n === 0
          ? "--max-rollbacks 0 allows no rollback"
          : `${n} rollback(s) (the cap, --max-rollbacks ${cfg.maxRollbacks}) were made, at ` +
            `step(s) ${rollbackSteps.map((s) => s + 1).join(", ")}; the lr is now x${lrScale}`;
        throw new DivergenceError(
          `${fact}. ${tried}.${last} ${change}, or allow more with --max-rollbacks.`,
        );
      }
      prevStep ??= (await pathExists(prevPath))
        ? Number((await readSafetensors(prevPath)).metadata.step)
        : -1;
      // Older first; a checkpoint of this very step gives the same non-finite step at any lr.
      const targets = [{ path: prevPath, at: prevStep }, { path: ckptPath, at: ckptStep }]
        .filter((t) => t.at >= 0 && t.at < step);
      const again = rollbackSteps.length > 0 && step <= rollbackSteps[rollbackSteps.length - 1];
      const target = again ? targets[0] : targets[targets.length - 1];
      if (!target) {
        throw new DivergenceError(
          `${fact}; there is no checkpoint before this step to roll back to.${last} ${change}.`,
        );
      }
      const badStep = step;
      step = (await restore(ssl, opt, probe, target.path)).step;
      await stepper!.push();
      lrScale *= cfg.nanLrFactor;
      rollbackSteps.push(badStep);
      await truncateLogs(dir, step);
      const row: RollbackRow = {
        step: badStep,
        epoch,
        nonfinite: bad.what,
        loss: lossValue,
        grad_group: bad.group,
        restored_step: step,
        lr_scale: lrScale,
      };
      // The row first: a resume keeps as many rows as its checkpoint records rollbacks.
      await appendRows(`${dir}/${RUN_FILES.rollbacks}`, ROLLBACK_COLUMNS, [row]);
      await write(false); // the restored state, with the new lr scale and rollback count
      print(
        `rolled back to the checkpoint at step ${step} with lr x${lrScale} (rollback ` +
          `${rollbackSteps.length} of at most ${cfg.maxRollbacks}): ${fact}`,
      );
    };

    /**
     * The kNN monitor, if one is due after `step` updates (every `knnEvery` steps, else every
     * epoch; the final kNN replaces the one at the last step). False if a stop interrupted it.
     */
    const monitorIfDue = async (): Promise<boolean> => {
      const due = cfg.knnEvery > 0 ? step % cfg.knnEvery === 0 : step % stepsPerEpoch === 0;
      if (!due || step === 0 || step >= lastStep) return true;
      try {
        await monitor(
          cfg,
          Math.floor(step / stepsPerEpoch),
          (r) =>
            `knn @ step ${step}: top-1 ${r.top1.toFixed(2)}% top-5 ${r.top5.toFixed(2)}% ` +
            `(k=${r.k}, ${r.train_size} train / ${r.test_size} test)` +
            (r.probe_top1 === undefined ? "" : `; online probe top-1 ${r.probe_top1.toFixed(2)}%`),
        );
        return true;
      } catch (e) {
        if (!(e instanceof StoppedError)) throw e;
        print(`the kNN monitor of step ${step} was stopped; a resumed run measures it first`);
        return false;
      }
    };
    // A run stopped during the kNN monitor of its checkpoint's step measures it now.
    if (opened.resumed && !(await readRunLogs(dir)).knn.some((r) => r.step === step)) {
      await monitorIfDue();
    }

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
      // SwAV's prototypes are frozen for the first epoch (the official freeze_prototypes_niters).
      const { loss, grads, features } = await stepper.grads(x1, x2, {
        momentum: m,
        freezePrototypes: epoch < 1,
        features: probe !== undefined,
      });
      tf.dispose([x1, x2]);
      const norms = await gradNorms(grads, vit.depth);
      const finite = Number.isFinite(loss) && norms.every(Number.isFinite);
      await stepper.apply(grads, finite, lr);
      // The online probe learns from view 1's detached features of this step (not after a
      // non-finite step, which is rolled back or stops the run).
      if (features) {
        if (probe && finite) probeStep(probe, features, batch.labels).dispose();
        features.dispose();
      }
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

      if (!(await monitorIfDue())) break;
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

    // Final evaluation: the final report on the whole splits (kNN-20 and / or the linear probe,
    // beside random init and raw pixels). The checkpoint of the last step is written by now
    // (above, or by the run that is resumed).
    let report: FinalReport | undefined;
    if (cfg.finalEval !== "none") {
      await stepper.pull();
      // Resumed after it finished: measured again, its earlier row replaced (one row per step).
      await truncateRows(`${dir}/${RUN_FILES.knn}`, [knnColumns(false), knnColumns(true)], step);
      try {
        report = await finalReport(ssl.backbone, () => createViT(vit, cfg.seed), train, test, {
          what: cfg.finalEval,
          stats,
          datasetKey: JSON.stringify({
            dataset: cfg.dataset,
            root: cfg.dataRoot,
            split: train.splitRule,
            size: [train.height, train.width, train.channels],
            ...(cfg.dataset === "synthetic" ? { n: cfg.syntheticSize, seed: cfg.seed } : {}),
          }),
          baselineKey: JSON.stringify({ vit, seed: cfg.seed }),
          k: cfg.knnK,
          cacheDir: hooks.baselineCacheDir,
          signal,
          print,
        });
      } catch (e) {
        if (!(e instanceof StoppedError)) throw e;
        throw new StoppedError(
          e.phase,
          `stopped during the final evaluation, at ${e.phase}; training is complete and its ` +
            `checkpoint (step ${step}) is in ${dir}: run the final evaluation again with ` +
            `deno task pretrain --resume ${dir}, or evaluate with deno task eval --checkpoint ` +
            `${dir}/${RUN_FILES.backbone}`,
          { cause: e },
        );
      }
      const [trained] = report.rows;
      if (trained.knn_top1 !== undefined) {
        const row: KnnRow = {
          step,
          epoch: Math.floor(step / stepsPerEpoch),
          top1: trained.knn_top1,
          top5: trained.knn_top5!,
          k: report.k,
          train_size: report.trainSize,
          test_size: report.testSize,
        };
        await appendRows(`${dir}/${RUN_FILES.knn}`, knnColumns(probe !== undefined), [row]);
        hooks.onKnn?.(row);
      }
      await writeFileAtomic(
        `${dir}/${RUN_FILES.final}`,
        new TextEncoder().encode(JSON.stringify({ step, ...report }, null, 2) + "\n"),
      );
      for (const line of finalReportLines(report)) print(line);
    }
    const [trained] = report?.rows ?? [];
    print(`run directory: ${dir}`);
    return {
      runDir: dir,
      steps: step,
      backend,
      knnTop1: trained?.knn_top1,
      knnTop5: trained?.knn_top5,
      linearTop1: trained?.linear_top1,
      report,
      status: "done",
    };
  } finally {
    stepper?.close();
    ssl.dispose();
    disposeOptimizerState(opt);
    if (probe) disposeOnlineProbe(probe);
  }
}

/**
 * Whether a run trains the online probe: `cfg.onlineProbe` when set (refused, in one line, on
 * data without labels: fewer than two classes); unset, what a resumed run recorded (runs made
 * before the probe had none), else on where the data has labels and the run uses one process.
 */
async function onlineProbeSetting(cfg: PretrainConfig, train: Dataset): Promise<boolean> {
  const labelled = train.classes.length >= 2;
  if (cfg.onlineProbe === true && !labelled) {
    throw new ConfigError(
      `--online-probe needs labels, but the training data has ${train.classes.length} class ` +
        `(${train.classes.join(", ") || "none"}): pass --no-online-probe`,
    );
  }
  if (cfg.onlineProbe !== undefined) return cfg.onlineProbe;
  if (await pathExists(`${cfg.outDir}/${RUN_FILES.checkpoint}`)) {
    try {
      const saved = JSON.parse(await Deno.readTextFile(`${cfg.outDir}/${RUN_FILES.config}`));
      return savedRunConfig(saved.config).onlineProbe ?? false;
    } catch { /* checkSameConfig reports an unreadable config.json */ }
  }
  return labelled && cfg.workers === 1;
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
  probe: OnlineProbe | undefined,
  hooks: RunHooks,
): Promise<{ step: number; lrScale: number; rollbackSteps: number[]; resumed: boolean }> {
  const dir = cfg.outDir;
  const ckptPath = `${dir}/${RUN_FILES.checkpoint}`;
  await removeStaleTempFiles(dir);
  if (await pathExists(ckptPath)) {
    await checkSameConfig(dir, cfg, hooks.force ?? false);
    const resumed = await restore(ssl, opt, probe, ckptPath);
    await truncateLogs(dir, resumed.step);
    await truncateRollbacks(dir, resumed.rollbackSteps.length);
    return { ...resumed, resumed: true };
  }
  // A fresh start: rows of an earlier attempt killed before its first checkpoint would
  // otherwise be followed by the same steps again.
  for (
    const file of [RUN_FILES.log, RUN_FILES.knn, RUN_FILES.rollbacks, RUN_FILES.previousCheckpoint]
  ) {
    await Deno.remove(`${dir}/${file}`).catch(() => {});
  }
  const json = JSON.stringify(
    { config: cfg, resolved, versions: await versions(backend) },
    null,
    2,
  );
  await writeFileAtomic(`${dir}/${RUN_FILES.config}`, new TextEncoder().encode(json + "\n"));
  return { step: 0, lrScale: 1, rollbackSteps: [], resumed: false };
}

/**
 * Writes the training checkpoint (model, optimiser slots, the online probe and its slots, step,
 * lr scale, the steps of the rollbacks so far) and the backbone.
 */
async function saveCheckpoint(
  dir: string,
  ssl: SslModel,
  opt: OptimizerState,
  probe: OnlineProbe | undefined,
  at: {
    cfg: PretrainConfig;
    vit: ReturnType<typeof backboneConfig>;
    step: number;
    lrScale: number;
    rollbackSteps: number[];
  },
): Promise<void> {
  const tensors = {
    ...ssl.state(),
    ...optimizerStateTensors(opt),
    ...(probe ? probeTensors(probe) : {}),
  };
  const meta = {
    format: "vitssl-checkpoint-v1",
    step: String(at.step),
    lr_scale: String(at.lrScale),
    rollback_steps: at.rollbackSteps.join(","),
    optimizer_step: String(opt.step),
    ...(probe ? { online_probe_optimizer_step: String(probe.opt.step) } : {}),
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
  /**
   * The method's step: loss and gradients by trainable name (the caller passes them on), and with
   * `features` view 1's detached backbone features (the caller disposes them; one process only).
   */
  grads(
    x1: tf.Tensor4D,
    x2: tf.Tensor4D,
    opts: { momentum: number; freezePrototypes: boolean; features?: boolean },
  ): Promise<{ loss: number; grads: Record<string, tf.Tensor>; features?: tf.Tensor2D }>;
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
    async grads(x1, x2, opts) {
      const { loss, grads, features } = ssl.step(x1, x2, opts);
      const [value] = await loss.data();
      loss.dispose();
      return { loss: value, grads, features };
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
  heads: { hidden: number; outDim: number; temperature: number; prototypes: number },
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
    async grads(x1, x2, { features: _, ...opts }) {
      const r = await dp.grads(x1, x2, opts);
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

/**
 * Loads a training checkpoint into the model, optimiser and online probe; returns its step, lr
 * scale and the (0-based) steps of the rollbacks before it.
 */
async function restore(
  ssl: SslModel,
  opt: OptimizerState,
  probe: OnlineProbe | undefined,
  path: string,
): Promise<{ step: number; lrScale: number; rollbackSteps: number[] }> {
  const { tensors, metadata } = await readSafetensors(path);
  const state = ssl.state();
  const model: typeof tensors = {};
  const optim: Record<string, tf.Tensor> = {};
  const probed: typeof tensors = {};
  for (const [k, t] of Object.entries(tensors)) {
    if (k.startsWith("optim.")) optim[k] = tf.tensor(toFloat32(t), t.shape);
    else if (k.startsWith(PROBE_PREFIX)) probed[k] = t;
    else model[k] = t;
  }
  if (!probe && Object.keys(probed).length) {
    throw new CheckpointError(
      `${path} holds an online probe (the run used --online-probe): resume it with --online-probe`,
    );
  }
  try {
    assignTensors(state, model, path);
    loadOptimizerState(opt, optim, Number(metadata.optimizer_step));
    if (probe) {
      loadProbeTensors(probe, probed, Number(metadata.online_probe_optimizer_step), path);
    }
  } finally {
    tf.dispose(Object.values(optim));
  }
  return {
    step: Number(metadata.step),
    lrScale: Number(metadata.lr_scale ?? 1),
    rollbackSteps: metadata.rollback_steps ? metadata.rollback_steps.split(",").map(Number) : [],
  };
}

/**
 * The kNN monitor: the online backbone on a fixed test subset against a fixed train bank, and the
 * online probe's top-1 on that subset.
 */
async function knnMonitor(
  ssl: SslModel,
  train: Dataset,
  test: Dataset,
  stats: ChannelStats,
  cfg: PretrainConfig,
  step: number,
  epoch: number,
  signal: StopSignal,
  probe?: OnlineProbe,
): Promise<KnnRow> {
  const bank = fixedSubset(train, cfg.knnTrainSize);
  const queries = fixedSubset(test, cfg.knnTestSize);
  const res = await knnOfBackbone(ssl.backbone, bank, queries, { k: cfg.knnK, stats, signal });
  const row: KnnRow = {
    step,
    epoch,
    top1: 100 * res.top1,
    top5: 100 * res.top5,
    k: cfg.knnK,
    train_size: bank.length,
    test_size: queries.length,
  };
  // The online probe on the same test subset's features.
  if (probe) row.probe_top1 = 100 * (await probeAccuracy(probe, res.queryFeatures)).top1;
  return row;
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
  let ran = 0; // steps run by this process (a rollback repeats steps)
  let lastPrint = 0;
  return (row) => {
    if (first < 0) first = row.step;
    ran++;
    const done = row.step + 1;
    const elapsed = (performance.now() - start) / 1000;
    const rate = ran / Math.max(elapsed, 1e-9);
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
