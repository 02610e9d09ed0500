/**
 * The pretraining loop, read top to bottom: backend, data, model and optimiser, the run directory
 * (new, or resumed from its checkpoint), then a loop that augments, steps, logs, monitors kNN
 * accuracy and checkpoints at fixed intervals, and at the end the final report. The pieces it
 * calls live in the files named for them: what a run is built from (`setup.ts`), one step on one
 * process or on workers (`stepper.ts`), gradient norms (`grad_norms.ts`), the kNN monitor
 * (`monitor.ts`), checkpoints and rollback (`run_checkpoints.ts`, `run_dir_state.ts`), the
 * progress line (`progress.ts`), the final report (`final_eval.ts`) and what a full disk says
 * (`disk_full.ts`).
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
import { twoViews } from "../data/augment.ts";
import { toFloatTensor } from "../data/mod.ts";
import { datasetStats } from "../data/stats.ts";
import type { FinalReport } from "../eval/final_report.ts";
import { createFramework } from "../methods/mod.ts";
import { createRng } from "../core/rng.ts";
import { DiskFullError } from "../io/atomic.ts";
import { lockRunDir, type RunLock } from "../io/lock.ts";
import { ConfigError } from "../core/errors.ts";
import type { StopSignal } from "../core/stop.ts";
import {
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
} from "../optim/optim.ts";
import { lrAt, momentumAt, scaledLr } from "../optim/schedule.ts";
import type { PretrainConfig } from "./config.ts";
import { diskFullAdvice } from "./disk_full.ts";
import { finalEvaluation } from "./final_eval.ts";
import { gradNorms } from "./grad_norms.ts";
import { knnMonitor } from "./monitor.ts";
import { createOnlineProbe, disposeOnlineProbe, probeStep } from "./online_probe.ts";
import { progressPrinter } from "./progress.ts";
import { runCheckpoints } from "./run_checkpoints.ts";
import { openRunDir, type RunPosition, type TrainingState } from "./run_dir_state.ts";
import {
  appendRows,
  type KnnRow,
  LOG_COLUMNS,
  type LogRow,
  readRunLogs,
  RUN_FILES,
} from "./rundir.ts";
import {
  backboneConfig,
  batchOrder,
  checkWorkers,
  loadSplits,
  onlineProbeSetting,
  pretrainAugmentConfig,
  subSeed,
} from "./setup.ts";
import { dataParallelStepper, localStepper, type Stepper } from "./stepper.ts";

export { resolveConfig, resumeConfig } from "./config.ts";
export type { PretrainConfig } from "./config.ts";
export type { KnnRow, LogRow } from "./rundir.ts";

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

/**
 * Runs (or resumes) a pretraining run. Resumes when `cfg.outDir` already holds a checkpoint;
 * refuses if that run's config differs (unless `hooks.force`), and refuses at once (a
 * `RunLockedError`) while another process holds the directory. A full disk ends the run with a
 * `DiskFullError` that says how to resume; the last checkpoint and the logs stay intact.
 *
 * @example
 * ```ts
 * const { status, steps } = await pretrain(cfg, { signal }); // "stopped" once signal.stop is set
 * ```
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

/** The run itself; `takeLock` locks the run directory where the run creates it. */
async function pretrainLocked(
  cfg: PretrainConfig,
  hooks: RunHooks,
  takeLock: () => Promise<void>,
): Promise<PretrainResult> {
  const print = hooks.print ?? ((s: string) => console.log(s));
  const signal = hooks.signal ?? { stop: false };
  // Backend. Data-parallel workers each run wasm or cpu: there, `auto` means wasm.
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

  // Model and optimiser; the online probe has its own seed stream (2), so the backbone and the
  // data do not change with it.
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
  const probe = cfg.onlineProbe
    ? createOnlineProbe(vit.dim, train.classes.length, subSeed(cfg.seed, 2, 0))
    : undefined;
  const state: TrainingState = { ssl, opt, probe };
  const schedule = {
    peakLr,
    warmupSteps: Math.min(cfg.warmupEpochs * stepsPerEpoch, totalSteps - 1),
    totalSteps,
  };
  let stepper: Stepper | undefined;
  // The model and the optimiser state are freed however the run ends (done, stopped, error).
  try {
    // Run directory: new, or resumed from its checkpoint.
    const dir = cfg.outDir;
    await takeLock(); // creates the directory
    const resolved = {
      ...cfg,
      precision: backendInfo.precision,
      backbone: vit,
      stepsPerEpoch,
      totalSteps,
      peakLr,
      ...(train.splitRule ? { split: train.splitRule } : {}),
    };
    const opened = await openRunDir(cfg, resolved, backendInfo.summary, state, !!hooks.force);
    const run: RunPosition = {
      step: opened.step,
      lrScale: opened.lrScale,
      rollbackSteps: opened.rollbackSteps,
    };
    if (opened.resumed) {
      const after = run.rollbackSteps.length
        ? `, lr x${run.lrScale} after ${run.rollbackSteps.length} rollback(s)`
        : "";
      print(`resumed ${dir} at step ${run.step}/${lastStep}${after}`);
    }
    stepper = cfg.workers > 1
      ? await dataParallelStepper(cfg, vit, heads, optCfg, backendInfo, ssl, opt, print)
      : localStepper(ssl, opt, optCfg);
    const checkpoints = runCheckpoints({
      cfg,
      vit,
      state,
      position: run,
      resumed: opened.resumed,
      stepper,
      lastStep,
      print,
    });
    // Under rollback, a fresh run keeps its initial state: a divergence before the first
    // checkpoint can go back to step 0.
    if (cfg.onNan === "rollback" && !opened.resumed) await checkpoints.save();
    const monitorIfDue = knnMonitor({
      cfg,
      state,
      train,
      test,
      stats,
      stepsPerEpoch,
      lastStep,
      signal,
      pull: () => stepper!.pull(),
      onKnn: hooks.onKnn,
      print,
    });
    // A run stopped during the kNN monitor of its checkpoint's step measures it now.
    if (opened.resumed && !(await readRunLogs(dir)).knn.some((r) => r.step === run.step)) {
      await monitorIfDue(run.step);
    }

    // The loop: batch, step, log, monitor, checkpoint.
    const progress = progressPrinter(print, lastStep, stepsPerEpoch);
    const batches = batchOrder(cfg, train, stepsPerEpoch);
    const n0 = tf.memory().numTensors;
    // The fault injection fires once per call, so that a rollback can get past it.
    let injectAt = cfg.injectNanAt;
    while (run.step < lastStep && !signal.stop) {
      const t0 = performance.now();
      const step = run.step;
      const epoch = Math.floor(step / stepsPerEpoch);
      const batch = batches(step);
      const lr = lrAt(step, schedule) * run.lrScale;
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
        await checkpoints.recover(loss, norms, epoch); // rolls back, or throws DivergenceError
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
      run.step++;
      await appendRows(`${dir}/${RUN_FILES.log}`, LOG_COLUMNS, [row]);
      hooks.onStep?.(row);
      progress(row);
      if (cfg.checkTensorLeaks && tf.memory().numTensors !== n0) {
        throw new Error(
          `tensor leak: ${tf.memory().numTensors - n0} tensors after step ${run.step}`,
        );
      }

      if (!(await monitorIfDue(run.step))) break;
      if (run.step % cfg.checkpointEvery === 0 || run.step === lastStep) await checkpoints.save();
    }

    // Stopped: the checkpoint of this step, and how to resume.
    const steps = run.step;
    if (steps < lastStep) {
      if (checkpoints.savedStep !== steps) await checkpoints.save();
      print(
        `stopped at step ${steps}/${lastStep}; checkpoint written. Resume with: ` +
          `deno task pretrain --resume ${dir}`,
      );
      return { runDir: dir, steps, backend: backendInfo.summary, status: "stopped" };
    }

    // Done: the final report on the whole splits (kNN-20 and / or the linear probe, beside random
    // init and raw pixels). The checkpoint of the last step is written by now (above, or by the
    // run that is resumed).
    let report: FinalReport | undefined;
    if (cfg.finalEval !== "none") {
      await stepper.pull();
      report = await finalEvaluation({
        cfg,
        what: cfg.finalEval,
        state,
        vit,
        train,
        test,
        stats,
        step: steps,
        stepsPerEpoch,
        baselineCacheDir: hooks.baselineCacheDir,
        signal,
        onKnn: hooks.onKnn,
        print,
      });
    }
    const [trained] = report?.rows ?? [];
    print(`run directory: ${dir}`);
    return {
      runDir: dir,
      steps,
      backend: backendInfo.summary,
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
