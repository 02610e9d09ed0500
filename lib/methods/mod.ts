/**
 * The self-supervised methods behind one interface, so that the training loop, the data-parallel
 * workers, checkpoints and experiments treat MoCo v3, SimCLR, BYOL and SwAV alike: a registry of
 * one row per method. Each shares the ViT backbone, the MLP heads and the two-view machinery of
 * `two_view.ts`; only the loss (`losses.ts`) and the target (momentum network, SwAV's prototypes)
 * differ. A new method is a new file plus a row of {@link METHODS}.
 *
 * Every framework names its backbone `base_encoder.<timm name>` in its state, so checkpoints of
 * all four load with `loadBackbone`.
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
import type { ViT, ViTConfig } from "../model/vit.ts";
import { momentumUpdateThenMocoGrads } from "./mocov3.ts";
import { momentumUpdateThenByolGrads } from "./byol.ts";
import { createSimCLR, disposeSimCLR, simclrState, simclrStep, simclrTrainable } from "./simclr.ts";
import { createSwAV, disposeSwAV, swavState, swavStep, swavTrainable } from "./swav.ts";
import {
  createMomentumNetworks,
  disposeMomentumNetworks,
  type HeadConfig,
  type MomentumNetworks,
  momentumState,
  momentumTrainable,
  type StepOptions,
  type StepResult,
} from "./two_view.ts";

export type { HeadConfig };

import { type FrameworkName, FRAMEWORKS } from "./names.ts";

export { type FrameworkName, FRAMEWORKS };

/** One self-supervised model, as the training loop sees it. */
export interface SslModel {
  name: FrameworkName;
  /** The online backbone (what evaluation and the backbone checkpoint use). */
  backbone: ViT;
  /** Every tensor to checkpoint, by name. */
  state(): Record<string, tf.Variable>;
  /** The parameters the optimiser updates, by name (a subset of {@link SslModel.state}). */
  trainable(): Record<string, tf.Variable>;
  /**
   * Loss and gradients of one step on two views (not applied). It changes the model's state, in
   * this order: first the method's own update (MoCo v3 and BYOL: the momentum update of the
   * target, {@link momentumUpdateThenMocoGrads}; SwAV: the prototypes L2-normalised; SimCLR:
   * none), then, after the gradients, a ViT-BN backbone's running statistics
   * (`twoViewGradsThenBnUpdate`).
   */
  step(x1: tf.Tensor4D, x2: tf.Tensor4D, opts: StepOptions): StepResult;
  /** Frees every variable. */
  dispose(): void;
}

type Build = (
  vit: Partial<ViTConfig> & { name: string },
  heads: Partial<HeadConfig>,
  seed: number,
) => Omit<SslModel, "name">;

/** A method on the online/momentum networks (MoCo v3, BYOL): only its step differs. */
function momentumMethod(
  step: (m: MomentumNetworks, x1: tf.Tensor4D, x2: tf.Tensor4D, o: StepOptions) => StepResult,
): Build {
  return (vit, heads, seed) => {
    const m = createMomentumNetworks(vit, heads, seed);
    return {
      backbone: m.backbone,
      state: () => momentumState(m),
      trainable: () => momentumTrainable(m),
      step: (x1, x2, opts) => step(m, x1, x2, opts),
      dispose: () => disposeMomentumNetworks(m),
    };
  };
}

/** One row per method: how to build it behind the {@link SslModel} interface. */
export const METHODS: Record<FrameworkName, Build> = {
  mocov3: momentumMethod(momentumUpdateThenMocoGrads),
  simclr: (vit, heads, seed) => {
    const m = createSimCLR(vit, heads, seed);
    return {
      backbone: m.backbone,
      state: () => simclrState(m),
      trainable: () => simclrTrainable(m),
      step: (x1, x2, opts) => simclrStep(m, x1, x2, opts),
      dispose: () => disposeSimCLR(m),
    };
  },
  byol: momentumMethod(momentumUpdateThenByolGrads),
  swav: (vit, heads, seed) => {
    const m = createSwAV(vit, heads, seed);
    return {
      backbone: m.backbone,
      state: () => swavState(m),
      trainable: () => swavTrainable(m),
      step: (x1, x2, opts) => swavStep(m, x1, x2, opts),
      dispose: () => disposeSwAV(m),
    };
  },
};

/**
 * Builds a method by name around a new backbone (same `seed`, same initial backbone for all
 * four). SimCLR uses `hidden`, `outDim`, `temperature`; BYOL uses `hidden`, `outDim`; SwAV uses
 * `hidden`, `outDim`, `prototypes` (its temperature is fixed: `SWAV_LOSS`).
 */
export function createFramework(
  name: string,
  vit: Partial<ViTConfig> & { name: string },
  heads: Partial<HeadConfig>,
  seed: number,
): SslModel {
  if (!(FRAMEWORKS as readonly string[]).includes(name)) {
    throw new Error(`unknown framework "${name}": choose one of ${FRAMEWORKS.join(", ")}`);
  }
  return { name: name as FrameworkName, ...METHODS[name as FrameworkName](vit, heads, seed) };
}
