/**
 * The standard benchmark workloads (kept fixed, so numbers compare across commits and against the
 * PyTorch reference in `tests/reference/moco_step_torch.py`) and their analytic FLOP counts.
 *
 * | name | backbone | image | batch | heads |
 * |---|---|---|---|---|
 * | `small28` | dim 128, depth 6, heads 4, patch 7 | 28x28x1 | 128 | 1024 -> 256, T 0.2 |
 * | `tiny32` | dim 192, depth 12, heads 3, patch 4 | 32x32x3 | 64 | 1024 -> 256, T 0.2 |
 * | `vit_small224` | ViT-S/16 | 224x224x3 | 32 | 1024 -> 256, T 0.2 |
 *
 * A workload runs in one of two modes: `step`, a full MoCo v3 training step (both views through
 * the online encoder with backward, the momentum encoder forward, the symmetric loss, AdamW and
 * the EMA update), or `forward`, one backbone forward of the batch (what `vit_small224` measures
 * on a CPU).
 *
 * @example
 * ```ts
 * import { resolveWorkload, stepFlops } from "./workloads.ts";
 * const w = resolveWorkload("small28");
 * stepFlops(w, "step").total; // multiply-adds x 2 of one training step
 * ```
 * @module
 */
import { type ViTConfig, vitConfig, vitFlops } from "../model/vit.ts";
import { ConfigError } from "../core/errors.ts";

/** What a workload measures: a full training step, or one backbone forward. */
export type BenchMode = "step" | "forward";

/** One benchmark workload: a fixed backbone, batch and head/loss settings. */
export interface Workload {
  /** Key of {@link WORKLOADS}. */
  name: string;
  /** The resolved backbone config. */
  vit: ViTConfig;
  /** Images per step (per view). */
  batch: number;
  /** Projector/predictor hidden width. */
  hidden: number;
  /** Projector/predictor output width. */
  outDim: number;
  /** Softmax temperature of the loss. */
  temperature: number;
  /** Mode on a CPU backend (wasm, cpu, software WebGPU); GPUs always run `step`. */
  cpuMode: BenchMode;
}

type WorkloadSpec = Omit<Workload, "name" | "vit"> & {
  vit: Partial<ViTConfig> & { name: string };
};

const HEADS = { hidden: 1024, outDim: 256, temperature: 0.2 };

/** The standard workloads of the issue, by name. Keep them fixed. */
export const WORKLOAD_SPECS: Record<string, WorkloadSpec> = {
  small28: {
    vit: {
      name: "vit_mini",
      dim: 128,
      depth: 6,
      heads: 4,
      patchSize: 7,
      imageSize: 28,
      channels: 1,
    },
    batch: 128,
    ...HEADS,
    cpuMode: "step",
  },
  tiny32: {
    vit: {
      name: "vit_tiny",
      dim: 192,
      depth: 12,
      heads: 3,
      patchSize: 4,
      imageSize: 32,
      channels: 3,
    },
    batch: 64,
    ...HEADS,
    cpuMode: "step",
  },
  vit_small224: {
    vit: { name: "vit_small" },
    batch: 32,
    ...HEADS,
    cpuMode: "forward",
  },
};

/** Names of the standard workloads, in table order. */
export const WORKLOADS = Object.keys(WORKLOAD_SPECS);

/**
 * The workload called `name`, with its backbone config resolved. Throws {@link ConfigError}
 * listing the known names for an unknown one.
 */
export function resolveWorkload(name: string, overrides: { batch?: number } = {}): Workload {
  const spec = WORKLOAD_SPECS[name];
  if (!spec) {
    throw new ConfigError(`unknown workload "${name}": choose one of ${WORKLOADS.join(", ")}`);
  }
  const batch = overrides.batch ?? spec.batch;
  if (!(Number.isInteger(batch) && batch >= 2)) {
    throw new ConfigError(`batch must be an integer >= 2 (BatchNorm needs 2 rows), got ${batch}`);
  }
  return { ...spec, name, batch, vit: vitConfig(spec.vit) };
}

/** Analytic FLOPs (a multiply-add counts 2) of one step, by part. */
export interface FlopCount {
  /** Backbone matmuls (patch projection, qkv, attention, projection, MLP). */
  backbone: number;
  /** Projector and predictor matmuls. */
  heads: number;
  /** The loss's `q k^T` logits. */
  loss: number;
  /** Sum of the parts. */
  total: number;
}

/** Forward FLOPs per image of the projector (3 layers) and of the predictor (2 layers). */
export function headFlops(dim: number, hidden: number, outDim: number): {
  projector: number;
  predictor: number;
} {
  return {
    projector: 2 * (dim * hidden + hidden * hidden + hidden * outDim),
    predictor: 2 * (outDim * hidden + hidden * outDim),
  };
}

/**
 * Analytic FLOPs of one step of workload `w`. Matmuls only (norms, softmax, GELU, the optimiser and
 * the EMA are elementwise and ignored). `step`: the online branch (backbone, projector, predictor
 * and both losses, two views) counts 3x its forward (forward + backward), the momentum branch
 * (backbone, projector, two views) 1x. `forward`: one backbone forward of the batch.
 *
 * @example
 * ```ts
 * const f = stepFlops(resolveWorkload("tiny32"), "step");
 * const gflops = f.total / 1e9 / secondsPerStep;
 * ```
 */
export function stepFlops(
  w: Pick<Workload, "vit" | "batch" | "hidden" | "outDim">,
  mode: BenchMode,
): FlopCount {
  const B = w.batch;
  const bb = vitFlops(w.vit);
  if (mode === "forward") return { backbone: B * bb, heads: 0, loss: 0, total: B * bb };
  const { projector, predictor } = headFlops(w.vit.dim, w.hidden, w.outDim);
  const views = 2;
  const backbone = views * B * bb * (3 + 1);
  const heads = views * B * (3 * (projector + predictor) + projector);
  // ctr(q1, k2) + ctr(q2, k1): two [B, C] @ [C, B] products, forward and backward.
  const loss = 3 * 2 * (2 * B * B * w.outDim);
  return { backbone, heads, loss, total: backbone + heads + loss };
}
