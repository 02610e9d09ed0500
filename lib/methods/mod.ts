/**
 * Self-supervised frameworks behind one interface, so that the training loop, checkpoints and
 * experiments treat MoCo v3, SimCLR and BYOL alike. Each shares the ViT backbone, the MLP heads
 * of `heads.ts` and the augmentation; only the loss and the target network differ.
 *
 * Every framework names its backbone `base_encoder.<timm name>` in its state, so checkpoints of
 * all three load with `loadBackbone`.
 *
 * @example
 * ```ts
 * import { createFramework } from "./mod.ts";
 * const ssl = createFramework("mocov3", { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16, temperature: 0.2 }, 0);
 * ```
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";
import {
  createMoCo,
  disposeMoCo,
  type MocoConfig,
  mocoState,
  mocoStep,
  mocoTrainable,
  type StepOptions,
  type StepResult,
} from "./mocov3.ts";
import type { ViT, ViTConfig } from "../model/vit.ts";
import { byolStep, createBYOL } from "./byol.ts";
import { createSimCLR, disposeSimCLR, simclrState, simclrStep, simclrTrainable } from "./simclr.ts";

/** The framework names {@link createFramework} accepts. */
export const FRAMEWORKS = ["mocov3", "simclr", "byol"] as const;
/** A framework name. */
export type FrameworkName = typeof FRAMEWORKS[number];

/** Head and loss settings shared by the frameworks (each uses the fields it needs). */
export type HeadConfig = MocoConfig;

/** One self-supervised model, as the training loop sees it. */
export interface SslModel {
  name: FrameworkName;
  /** The online backbone (what evaluation and the backbone checkpoint use). */
  backbone: ViT;
  /** Every tensor to checkpoint, by name. */
  state(): Record<string, tf.Variable>;
  /** The parameters the optimiser updates, by name (a subset of {@link SslModel.state}). */
  trainable(): Record<string, tf.Variable>;
  /** Loss and gradients of one step on two views; updates momentum targets first if any. */
  step(x1: tf.Tensor4D, x2: tf.Tensor4D, opts: StepOptions): StepResult;
  /** Frees every variable. */
  dispose(): void;
}

/**
 * Builds a framework by name around a new backbone (same `seed`, same initial backbone for all
 * three). SimCLR uses `hidden`, `outDim`, `temperature`; BYOL uses `hidden`, `outDim`.
 */
export function createFramework(
  name: string,
  vit: Partial<ViTConfig> & { name: string },
  heads: Partial<HeadConfig>,
  seed: number,
): SslModel {
  if (name === "mocov3") {
    const moco = createMoCo(vit, heads, seed);
    return {
      name,
      backbone: moco.backbone,
      state: () => mocoState(moco),
      trainable: () => mocoTrainable(moco),
      step: (x1, x2, opts) => mocoStep(moco, x1, x2, opts),
      dispose: () => disposeMoCo(moco),
    };
  }
  if (name === "simclr") {
    const simclr = createSimCLR(vit, heads, seed);
    return {
      name,
      backbone: simclr.backbone,
      state: () => simclrState(simclr),
      trainable: () => simclrTrainable(simclr),
      // No target network: the momentum of the step options is unused.
      step: (x1, x2) => simclrStep(simclr, x1, x2),
      dispose: () => disposeSimCLR(simclr),
    };
  }
  if (name === "byol") {
    const byol = createBYOL(vit, heads, seed);
    return {
      name,
      backbone: byol.backbone,
      state: () => mocoState(byol),
      trainable: () => mocoTrainable(byol),
      step: (x1, x2, opts) => byolStep(byol, x1, x2, opts),
      dispose: () => disposeMoCo(byol),
    };
  }
  throw new Error(`unknown framework "${name}": choose one of ${FRAMEWORKS.join(", ")}`);
}
