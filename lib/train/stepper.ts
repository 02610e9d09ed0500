/**
 * One training step in two halves, on one process or on data-parallel workers, so that the
 * training loop has one path: the loss and gradients ({@link Stepper.grads}), then the update
 * ({@link Stepper.apply}, skipped after a non-finite step).
 *
 * @example
 * ```ts
 * import { localStepper } from "./stepper.ts";
 * const stepper = localStepper(ssl, opt, optCfg);
 * const { loss, grads } = await stepper.grads(x1, x2, { momentum: 0.99, freezePrototypes: false });
 * await stepper.apply(grads, Number.isFinite(loss), lr);
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { SslModel } from "../methods/mod.ts";
import type { ViTConfig } from "../model/vit.ts";
import {
  applyGradients,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
} from "../optim/optim.ts";
import { createDataParallel, type DataParallel } from "../parallel/mod.ts";
import { assignArrays, readArrays } from "../parallel/protocol.ts";
import type { PretrainConfig } from "./config.ts";

/**
 * One training step in two halves, on one process or on data-parallel workers.
 *
 * @example
 * ```ts
 * const { loss, grads, features } = await stepper.grads(x1, x2, { momentum, freezePrototypes, features: true });
 * await stepper.apply(grads, Number.isFinite(loss), lr);
 * ```
 */
export interface Stepper {
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

/**
 * The step on this process: `ssl.step`, then the optimiser's update of `ssl`'s trainables.
 *
 * @example
 * ```ts
 * const stepper = localStepper(ssl, opt, { name: "adamw", weightDecay: 0.1 });
 * ```
 */
export function localStepper(
  ssl: SslModel,
  opt: OptimizerState,
  optCfg: OptimizerConfig,
): Stepper {
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
 * pushed to the workers after a restore (push). Prints one line with the workers' backend.
 *
 * @example
 * ```ts
 * const stepper = await dataParallelStepper(cfg, vit, heads, optCfg, backendInfo, ssl, opt, print);
 * ```
 */
export async function dataParallelStepper(
  cfg: PretrainConfig,
  vit: ViTConfig,
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
