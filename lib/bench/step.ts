/**
 * The timed unit of the benchmark: one MoCo v3 training step (`step` mode) or one backbone
 * forward (`forward` mode) on pre-augmented views, built from the project's own modules so that
 * the benchmark measures exactly what `deno task pretrain` runs.
 *
 * A step is: `mocoStep` (EMA update of the momentum encoder, keys of both views, both views
 * through the online encoder with backward, the symmetric loss), then AdamW
 * (`applyGradients`), then reading the loss back (which waits for an asynchronous backend).
 *
 * @example
 * ```ts
 * import { createStepRunner } from "./step.ts";
 * import { resolveWorkload } from "./workloads.ts";
 * const runner = createStepRunner(resolveWorkload("small28"), "step");
 * const loss = await runner.run(x1, x2); // x1, x2: [128, 28, 28, 1]
 * runner.dispose();
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { createMoCo, disposeMoCo, mocoStep, mocoTrainable } from "../moco.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
  scaledLr,
} from "../optim.ts";
import { createViT, disposeViT, vitForward } from "../vit.ts";
import type { BenchMode, Workload } from "./workloads.ts";

/** A built model that runs the timed unit; {@link StepRunner.dispose} frees everything. */
export interface StepRunner {
  mode: BenchMode;
  /**
   * Runs one step on views `x1, x2 [B, H, W, C]` (forward mode uses `x1` only) and resolves to
   * the loss (step) or the sum of the features (forward), read back from the backend.
   */
  run(x1: tf.Tensor4D, x2: tf.Tensor4D): Promise<number>;
  /** Frees the model and the optimiser state. */
  dispose(): void;
}

/** The EMA momentum of every benchmark step (the paper's m0). */
export const BENCH_MOMENTUM = 0.99;

/** Builds the model (and optimiser) of workload `w` for `mode`, seeded by `seed`. */
export function createStepRunner(w: Workload, mode: BenchMode, seed = 0): StepRunner {
  if (mode === "forward") {
    const model = createViT(w.vit, seed);
    return {
      mode,
      async run(x1) {
        const s = tf.tidy(() => tf.sum(vitForward(model, x1).features));
        const [v] = await s.data();
        s.dispose();
        return v;
      },
      dispose: () => disposeViT(model),
    };
  }
  const model = createMoCo(w.vit, {
    hidden: w.hidden,
    outDim: w.outDim,
    temperature: w.temperature,
  }, seed);
  const params = mocoTrainable(model);
  const optCfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
  const opt = createOptimizerState(optCfg, params);
  const lr = scaledLr(1.5e-4, w.batch);
  return {
    mode,
    async run(x1, x2) {
      const { loss, grads } = mocoStep(model, x1, x2, { momentum: BENCH_MOMENTUM });
      applyGradients(params, grads, opt, optCfg, lr);
      tf.dispose(Object.values(grads));
      const [v] = await loss.data();
      loss.dispose();
      return v;
    },
    dispose() {
      disposeOptimizerState(opt);
      disposeMoCo(model);
    },
  };
}
