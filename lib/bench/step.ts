/**
 * The timed unit of the benchmark: one MoCo v3 training step (`step` mode) or one backbone
 * forward (`forward` mode) on pre-augmented views, built from the project's own modules so that
 * the benchmark measures exactly what `deno task pretrain` runs.
 *
 * A step is: `momentumUpdateThenMocoGrads` (EMA update of the momentum encoder, keys of both
 * views, both views through the online encoder with backward, the symmetric loss), then AdamW
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
import { momentumUpdateThenMocoGrads } from "../methods/mocov3.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  momentumTrainable,
} from "../methods/two_view.ts";
import {
  applyGradients,
  createOptimizerState,
  disposeOptimizerState,
  type OptimizerConfig,
} from "../optim/optim.ts";
import { scaledLr } from "../optim/schedule.ts";
import { createDataParallel } from "../parallel/mod.ts";
import { createViT, disposeViT, vitForward } from "../model/vit.ts";
import { ConfigError } from "../core/errors.ts";
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

/** The optimiser of every benchmark step. */
const BENCH_OPTIMIZER: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };

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
  const model = createMomentumNetworks(w.vit, {
    hidden: w.hidden,
    outDim: w.outDim,
    temperature: w.temperature,
  }, seed);
  const params = momentumTrainable(model);
  const opt = createOptimizerState(BENCH_OPTIMIZER, params);
  const optCfg = BENCH_OPTIMIZER;
  const lr = scaledLr(1.5e-4, w.batch);
  return {
    mode,
    async run(x1, x2) {
      const { loss, grads } = momentumUpdateThenMocoGrads(model, x1, x2, {
        momentum: BENCH_MOMENTUM,
      });
      applyGradients(params, grads, opt, optCfg, lr);
      tf.dispose(Object.values(grads));
      const [v] = await loss.data();
      loss.dispose();
      return v;
    },
    dispose() {
      disposeOptimizerState(opt);
      disposeMomentumNetworks(model);
    },
  };
}

/**
 * The `step` unit of workload `w` run data-parallel by `workers` Deno workers (see
 * `parallel/mod.ts`), each on its own `backend` with `threads` threads: the same step (same
 * model, seed, optimiser, lr, momentum), with the batch split across the workers.
 *
 * @example
 * ```ts
 * const runner = await createParallelStepRunner(resolveWorkload("small28"), 2);
 * const loss = await runner.run(x1, x2);
 * runner.dispose(); // terminates the workers
 * ```
 */
export async function createParallelStepRunner(
  w: Workload,
  workers: number,
  seed = 0,
  backend: "wasm" | "cpu" = "wasm",
  threads = 1,
): Promise<StepRunner> {
  if (w.batch % workers !== 0) {
    throw new ConfigError(
      `batch ${w.batch} of ${w.name} does not split across ${workers} workers: choose --workers ` +
        "that divides the batch (or --batch)",
    );
  }
  const dp = await createDataParallel({
    workers,
    vit: w.vit,
    heads: { hidden: w.hidden, outDim: w.outDim, temperature: w.temperature },
    optimizer: BENCH_OPTIMIZER,
    seed,
    backend,
    threads,
  });
  const lr = scaledLr(1.5e-4, w.batch);
  return {
    mode: "step",
    run: async (x1, x2) => (await dp.step(x1, x2, { lr, momentum: BENCH_MOMENTUM })).loss,
    dispose: () => dp.close(),
  };
}
