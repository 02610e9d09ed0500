/**
 * The checkpoints a run writes as it goes, and what happens after a non-finite step: with
 * `--on-nan rollback`, going back to a checkpoint before it (the newest; the oldest kept one when
 * the run diverges again before passing the step of the last rollback) with the lr scaled by
 * `--nan-lr-factor`, keeping the checkpoint it replaces as `checkpoint.prev.safetensors`;
 * otherwise, or once `--max-rollbacks` is used up, a {@link DivergenceError} that says what went
 * non-finite, where, and what to change.
 *
 * @example
 * ```ts
 * import { runCheckpoints } from "./run_checkpoints.ts";
 * const checkpoints = runCheckpoints({ cfg, vit, state, position, resumed, stepper, lastStep, print });
 * if (!finite) await checkpoints.recover(loss, norms, epoch); // rolls back, or throws
 * if (position.step % cfg.checkpointEvery === 0) await checkpoints.save();
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import { pathExists } from "../io/exists.ts";
import { readSafetensors } from "../io/safetensors.ts";
import type { ViTConfig } from "../model/vit.ts";
import type { PretrainConfig } from "./config.ts";
import { groupLabel } from "./grad_norms.ts";
import { restore, type RunPosition, saveCheckpoint, type TrainingState } from "./run_dir_state.ts";
import {
  appendRows,
  keepPreviousCheckpoint,
  ROLLBACK_COLUMNS,
  type RollbackRow,
  RUN_FILES,
  truncateLogs,
} from "./rundir.ts";
import type { Stepper } from "./stepper.ts";

/**
 * Training stopped on a non-finite loss or gradient (or `--on-nan rollback` ran out of rollbacks);
 * the message says what went non-finite, at which step, and what to change.
 *
 * @example
 * ```ts
 * throw new DivergenceError("non-finite values at step 12/100 (epoch 1): ... Lower --lr ...");
 * ```
 */
export class DivergenceError extends UserError {
  override name = "DivergenceError";
  /** Exit code 1: the input was fine; the run could not go on. */
  override exitCode = 1;
}

/**
 * What went non-finite in a step, as facts: the loss (with its value) and/or the gradient norm
 * (with the first group, in forward order, whose norm is non-finite), and the matching row fields.
 *
 * @example
 * ```ts
 * nonFinite(NaN, [1, 2, 3, 4, 5], 2).text; // "the loss is non-finite (NaN)"
 * ```
 */
export function nonFinite(loss: number, norms: number[], depth: number) {
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
 * A run's checkpoints as its loop writes them ({@link RunCheckpoints.save}) and the rollback to
 * one of them after a non-finite step ({@link RunCheckpoints.recover}).
 *
 * @example
 * ```ts
 * if (checkpoints.savedStep !== position.step) await checkpoints.save();
 * ```
 */
export interface RunCheckpoints {
  /**
   * Pulls the training state (from the data-parallel workers) and writes the checkpoint of the
   * current step; under rollback the one it replaces is kept as the previous checkpoint.
   */
  save(): Promise<void>;
  /** The step of the last checkpoint this process wrote (-1: none yet). */
  readonly savedStep: number;
  /**
   * After a non-finite step: rolls back (to the newest checkpoint before this step; to the oldest
   * kept one when the run diverges again before passing the step of the last rollback), with the
   * lr scale times --nan-lr-factor, or stops with a {@link DivergenceError}.
   */
  recover(loss: number, norms: number[], epoch: number): Promise<void>;
}

/** What {@link runCheckpoints} works on; it moves `position` (step, lr scale, rollbacks). */
export interface RunCheckpointsOptions {
  cfg: PretrainConfig;
  vit: ViTConfig;
  state: TrainingState;
  /** Where the run stands; the loop and a rollback both move it. */
  position: RunPosition;
  /** Whether the run was resumed from its checkpoint (which is then the checkpoint of `step`). */
  resumed: boolean;
  stepper: Stepper;
  lastStep: number;
  print: (line: string) => void;
}

/**
 * The checkpoints of the run in `cfg.outDir`, starting from its opened position.
 *
 * @example
 * ```ts
 * const checkpoints = runCheckpoints({ cfg, vit, state, position, resumed, stepper, lastStep, print });
 * await checkpoints.save();
 * ```
 */
export function runCheckpoints(o: RunCheckpointsOptions): RunCheckpoints {
  const { cfg, vit, state, position: pos, stepper, lastStep, print } = o;
  const dir = cfg.outDir;
  const ckptPath = `${dir}/${RUN_FILES.checkpoint}`;
  const prevPath = `${dir}/${RUN_FILES.previousCheckpoint}`;
  // The steps of checkpoint.safetensors and checkpoint.prev.safetensors (-1: none; undefined:
  // not read yet), the rollback targets.
  let savedStep = -1;
  let ckptStep = o.resumed ? pos.step : -1;
  let prevStep = o.resumed ? undefined : -1;
  /** Writes the checkpoint of `step`; under rollback the one it replaces is kept as prev. */
  const write = async (keepPrevious: boolean) => {
    if (keepPrevious && cfg.onNan === "rollback" && ckptStep >= 0 && ckptStep !== pos.step) {
      await keepPreviousCheckpoint(dir);
      prevStep = ckptStep;
    }
    await saveCheckpoint(dir, state, {
      cfg,
      vit,
      step: pos.step,
      lrScale: pos.lrScale,
      rollbackSteps: pos.rollbackSteps,
    });
    savedStep = ckptStep = pos.step;
  };

  const recover = async (lossValue: number, norms: number[], epoch: number) => {
    const { step, rollbackSteps } = pos;
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
          `step(s) ${rollbackSteps.map((s) => s + 1).join(", ")}; the lr is now x${pos.lrScale}`;
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
    pos.step = (await restore(state, target.path)).step;
    await stepper.push();
    pos.lrScale *= cfg.nanLrFactor;
    rollbackSteps.push(badStep);
    await truncateLogs(dir, pos.step);
    const row: RollbackRow = {
      step: badStep,
      epoch,
      nonfinite: bad.what,
      loss: lossValue,
      grad_group: bad.group,
      restored_step: pos.step,
      lr_scale: pos.lrScale,
    };
    // The row first: a resume keeps as many rows as its checkpoint records rollbacks.
    await appendRows(`${dir}/${RUN_FILES.rollbacks}`, ROLLBACK_COLUMNS, [row]);
    await write(false); // the restored state, with the new lr scale and rollback count
    print(
      `rolled back to the checkpoint at step ${pos.step} with lr x${pos.lrScale} (rollback ` +
        `${rollbackSteps.length} of at most ${cfg.maxRollbacks}): ${fact}`,
    );
  };

  return {
    async save() {
      await stepper.pull();
      await write(true);
    },
    get savedStep() {
      return savedStep;
    },
    recover,
  };
}
