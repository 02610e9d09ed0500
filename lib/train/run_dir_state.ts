/**
 * A run's training state in its run directory: opening the directory (resuming from its
 * checkpoint, or starting afresh with a new `config.json`), writing the checkpoint and the
 * backbone, and restoring a checkpoint into the model, the optimiser and the online probe.
 *
 * A checkpoint holds every tensor of the run (model, momentum networks, optimiser slots, online
 * probe) and, in its metadata, where the run stands ({@link RunPosition}): the step, the lr scale
 * and the steps of the rollbacks so far; with the data order and augmentation seeded by (seed,
 * step), that is all a resumed run needs to continue exactly.
 *
 * @example
 * ```ts
 * import { openRunDir, saveCheckpoint } from "./run_dir_state.ts";
 * const opened = await openRunDir(cfg, resolved, backend, { ssl, opt, probe }, false);
 * await saveCheckpoint(cfg.outDir, { ssl, opt, probe }, { cfg, vit, ...opened });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { writeFileAtomic } from "../io/atomic.ts";
import { pathExists } from "../io/exists.ts";
import { readSafetensors, toFloat32 } from "../io/safetensors.ts";
import type { SslModel } from "../methods/mod.ts";
import type { ViTConfig } from "../model/vit.ts";
import { loadOptimizerState, type OptimizerState, optimizerStateTensors } from "../optim/optim.ts";
import {
  assignTensors,
  CheckpointError,
  CONFIG_KEY,
  saveBackbone,
  saveTensors,
} from "./checkpoint.ts";
import { checkSameConfig, type PretrainConfig } from "./config.ts";
import { loadProbeTensors, type OnlineProbe, PROBE_PREFIX, probeTensors } from "./online_probe.ts";
import { removeStaleTempFiles, RUN_FILES, truncateLogs, truncateRollbacks } from "./rundir.ts";
import { versions } from "./versions.ts";

/**
 * The tensors a checkpoint holds: the method's model, its optimiser state and, where the run
 * trains one, the online probe.
 *
 * @example
 * ```ts
 * const state: TrainingState = { ssl, opt, probe };
 * ```
 */
export interface TrainingState {
  ssl: SslModel;
  opt: OptimizerState;
  probe?: OnlineProbe;
}

/**
 * Where a run stands, as its checkpoint records it: updates done, the lr scale (below 1 after
 * rollbacks) and the (0-based) steps whose non-finite values caused each rollback.
 *
 * @example
 * ```ts
 * const fresh: RunPosition = { step: 0, lrScale: 1, rollbackSteps: [] };
 * ```
 */
export interface RunPosition {
  step: number;
  lrScale: number;
  rollbackSteps: number[];
}

/**
 * Opens the run directory: resumes from its checkpoint (after checking that its config is the
 * same, unless `force`, and cutting the logs back to the checkpoint) and returns its position, or
 * starts it afresh with a new config.json (the config, the `resolved` one and the versions; step
 * 0).
 *
 * @example
 * ```ts
 * const { step, resumed } = await openRunDir(cfg, resolved, backendInfo.summary, state, false);
 * ```
 */
export async function openRunDir(
  cfg: PretrainConfig,
  resolved: Record<string, unknown>,
  backend: string,
  state: TrainingState,
  force: boolean,
): Promise<RunPosition & { resumed: boolean }> {
  const dir = cfg.outDir;
  const ckptPath = `${dir}/${RUN_FILES.checkpoint}`;
  await removeStaleTempFiles(dir);
  if (await pathExists(ckptPath)) {
    await checkSameConfig(dir, cfg, force);
    const resumed = await restore(state, ckptPath);
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
 *
 * @example
 * ```ts
 * await saveCheckpoint(dir, { ssl, opt, probe }, { cfg, vit, step: 100, lrScale: 1, rollbackSteps: [] });
 * ```
 */
export async function saveCheckpoint(
  dir: string,
  { ssl, opt, probe }: TrainingState,
  at: RunPosition & { cfg: PretrainConfig; vit: ViTConfig },
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

/**
 * Loads a training checkpoint into the model, optimiser and online probe; returns its step, lr
 * scale and the (0-based) steps of the rollbacks before it. A checkpoint with an online probe is
 * refused (a `CheckpointError`) by a run without one.
 *
 * @example
 * ```ts
 * const { step } = await restore({ ssl, opt, probe }, `${dir}/checkpoint.safetensors`);
 * ```
 */
export async function restore(
  { ssl, opt, probe }: TrainingState,
  path: string,
): Promise<RunPosition> {
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
