/**
 * What every method shares: two views of a batch through one backbone, the gradients of a loss of
 * their features ({@link twoViewGradsThenBnUpdate}), the online/momentum networks of MoCo v3 and
 * BYOL ({@link createMomentumNetworks}, {@link momentumUpdate}, {@link momentumEmbed}), and the
 * hook by which a data-parallel shard sees the keys of every shard ({@link Gather}).
 *
 * @example
 * ```ts
 * import { createMomentumNetworks, momentumEmbed, momentumUpdate } from "./two_view.ts";
 * const nets = createMomentumNetworks({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   { hidden: 64, outDim: 16 }, 0);
 * momentumUpdate(nets, 0.99);
 * const k = momentumEmbed(nets, x); // [B, 16], no gradient
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { buildMlp, type Mlp, mlpForward } from "../model/heads.ts";
import { emaAssign } from "../model/layers.ts";
import { createRng, type Rng } from "../core/rng.ts";
import {
  createViT,
  trainableParams,
  updateBnBuffers,
  type ViT,
  type ViTConfig,
  vitForward,
} from "../model/vit.ts";

/**
 * `concat_all_gather` of the official code: the rows of `keys` from every data-parallel shard,
 * concatenated in shard order (`[N * B, C]` each), and the row where this shard's own rows start.
 * One process gathers nothing: {@link localGather}.
 */
export type Gather = (keys: tf.Tensor2D[]) => { all: tf.Tensor2D[]; offset: number };

/** The gather of a single process: the keys themselves, offset 0. */
export const localGather: Gather = (keys) => ({ all: keys, offset: 0 });

/** Options of one training step. */
export interface StepOptions {
  /** Momentum coefficient m of this iteration (see optim.ts `momentumAt`). */
  momentum: number;
  /** How a data-parallel shard sees the keys of every shard (default {@link localGather}). */
  gather?: Gather;
  /** SwAV: zero the prototypes' gradient this step (the first epoch). Ignored by the others. */
  freezePrototypes?: boolean;
  /**
   * Also return the online backbone's pooled features of view 1 from the step's own forward
   * pass (`StepResult.features`, detached), e.g. for an online linear probe. It changes no value
   * and no gradient of the step. Default false.
   */
  features?: boolean;
}

/** Loss and gradients of one step; the caller applies and disposes them. */
export interface StepResult {
  loss: tf.Scalar;
  /** Gradients by checkpoint name (the method's trainable parameters). */
  grads: Record<string, tf.Tensor>;
  /**
   * With `StepOptions.features`: the online backbone's pooled features of view 1 `[B, D]`
   * (training mode, as the loss saw them), outside the gradient; the caller disposes them.
   */
  features?: tf.Tensor2D;
}

/** Projector and predictor widths, the temperature of a contrastive loss, SwAV's prototypes. */
export interface HeadConfig {
  /** Hidden width of projector and predictor (4096 in the paper). */
  hidden: number;
  /** Output width of projector and predictor (256 in the paper). */
  outDim: number;
  /** Softmax temperature T (0.2 for ViT in MoCo v3); unused by BYOL and SwAV (fixed 0.1). */
  temperature: number;
  /** SwAV's number of prototypes K (3000 in SwAV on ImageNet); unused by the others. */
  prototypes: number;
}

/** The paper's head and loss settings (and SwAV's ImageNet prototype count). */
export const HEAD_DEFAULTS: HeadConfig = {
  hidden: 4096,
  outDim: 256,
  temperature: 0.2,
  prototypes: 3000,
};

/** Copies variables into new non-trainable variables with the same values. */
export function cloneVariables(vars: Record<string, tf.Variable>): Record<string, tf.Variable> {
  return Object.fromEntries(
    // Under tidy, so that the clone is freed (the variable keeps its own reference to the data).
    Object.entries(vars).map(([k, v]) => [k, tf.tidy(() => tf.variable(v.clone(), false))]),
  );
}

/** A frozen copy of a backbone (same config and values), for momentum encoders. */
export function cloneViT(model: ViT): ViT {
  return {
    config: model.config,
    params: cloneVariables(model.params),
    frozen: new Set(Object.keys(model.params)),
    buffers: cloneVariables(model.buffers),
  };
}

/** The 3-layer projector (MoCo v3's, also SimCLR's here) on features of width `inDim`. */
export function buildProjector(inDim: number, heads: HeadConfig, rng: Rng): Mlp {
  return buildMlp(
    { numLayers: 3, inDim, hidden: heads.hidden, outDim: heads.outDim },
    rng,
    "base_encoder.head.",
  );
}

/**
 * The networks of MoCo v3 and BYOL: online backbone, projector and predictor, and the momentum
 * copies of backbone and projector.
 */
export interface MomentumNetworks {
  config: HeadConfig;
  backbone: ViT;
  projector: Mlp;
  predictor: Mlp;
  momentumBackbone: ViT;
  momentumProjector: Mlp;
}

/**
 * Builds the online networks around a new backbone (from `seed`; heads from `seed + 1`) and the
 * momentum encoder as an exact copy.
 */
export function createMomentumNetworks(
  vit: Partial<ViTConfig> & { name: string },
  config: Partial<HeadConfig> = {},
  seed = 0,
): MomentumNetworks {
  const cfg = { ...HEAD_DEFAULTS, ...config };
  const backbone = createViT(vit, seed);
  const rng = createRng(seed + 1);
  const projector = buildProjector(backbone.config.dim, cfg, rng);
  const predictor = buildMlp(
    { numLayers: 2, inDim: cfg.outDim, hidden: cfg.hidden, outDim: cfg.outDim },
    rng,
    "predictor.",
  );
  return {
    config: cfg,
    backbone,
    projector,
    predictor,
    momentumBackbone: cloneViT(backbone),
    momentumProjector: { ...projector, params: cloneVariables(projector.params) },
  };
}

/**
 * Every tensor of the networks by checkpoint name, as the official code names them (without its
 * `module.` prefix): `base_encoder.<timm name>`, `base_encoder.head.*` (projector),
 * `predictor.*`, `momentum_encoder.*`; BN buffers included.
 */
export function momentumState(model: MomentumNetworks): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  const add = (prefix: string, vars: Record<string, tf.Variable>) => {
    for (const [k, v] of Object.entries(vars)) out[prefix + k] = v;
  };
  add("base_encoder.", { ...model.backbone.params, ...model.backbone.buffers });
  add("", model.projector.params);
  add("", model.predictor.params);
  add("momentum_encoder.", {
    ...model.momentumBackbone.params,
    ...model.momentumBackbone.buffers,
  });
  for (const [k, v] of Object.entries(model.momentumProjector.params)) {
    out[k.replace(/^base_encoder\./, "momentum_encoder.")] = v;
  }
  return out;
}

/** Frees every variable of the networks. */
export function disposeMomentumNetworks(model: MomentumNetworks): void {
  tf.dispose(Object.values(momentumState(model)));
}

/** The parameters the optimiser updates (online backbone, projector, predictor), by name. */
export function momentumTrainable(model: MomentumNetworks): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [k, v] of Object.entries(trainableParams(model.backbone))) {
    out["base_encoder." + k] = v;
  }
  return { ...out, ...model.projector.params, ...model.predictor.params };
}

/** EMA update of a target from a source with the same keys: t = m t + (1 - m) s. */
export function emaUpdate(
  target: Record<string, tf.Variable>,
  source: Record<string, tf.Tensor>,
  m: number,
  rename: (k: string) => string = (k) => k,
): void {
  emaAssign(Object.entries(target).map(([k, t]) => ({ t, s: source[rename(k)] })), m);
}

/** The momentum update: momentum backbone and projector = m * themselves + (1 - m) * online. */
export function momentumUpdate(model: MomentumNetworks, m: number): void {
  emaUpdate(model.momentumBackbone.params, model.backbone.params, m);
  emaUpdate(model.momentumProjector.params, model.projector.params, m);
}

/** The momentum encoder's embedding of a view `x [B, H, W, C]`: `[B, outDim]`, no gradient. */
export function momentumEmbed(model: MomentumNetworks, x: tf.Tensor4D): tf.Tensor2D {
  return tf.tidy(() =>
    mlpForward(
      model.momentumProjector,
      vitForward(model.momentumBackbone, x, { training: true }).features,
    )
  );
}

/** The online prediction of backbone features `h [B, D]`: predictor(projector(h)), `[B, outDim]`. */
export function predict(model: MomentumNetworks, h: tf.Tensor2D): tf.Tensor2D {
  return mlpForward(model.predictor, mlpForward(model.projector, h));
}

/**
 * Gradients of `loss(h1, h2)` with respect to `trainable`, where `h1, h2 [B, D]` are the
 * backbone features of the two views `x1, x2 [B, H, W, C]` (training mode), by the names of
 * `trainable`; then, as its one side effect, the BN update: with a ViT-BN backbone
 * (`mlpNorm: "batchnorm"`), the backbone's running statistics move towards the mean of the two
 * views' batch statistics ({@link updateBnBuffers}, after the gradients; what PyTorch's forward
 * in training mode does). A LayerNorm backbone changes nothing. Shared by every method. With
 * `opts.features` it also returns `h1` ({@link StepResult.features}), kept from the same forward
 * pass.
 *
 * @example
 * ```ts
 * const { loss, grads } = twoViewGradsThenBnUpdate(vit, trainableParams(vit), x1, x2,
 *   (h1, h2) => tf.mean(tf.square(tf.sub(h1, h2))) as tf.Scalar);
 * ```
 */
export function twoViewGradsThenBnUpdate(
  backbone: ViT,
  trainable: Record<string, tf.Variable>,
  x1: tf.Tensor4D,
  x2: tf.Tensor4D,
  loss: (h1: tf.Tensor2D, h2: tf.Tensor2D) => tf.Scalar,
  opts: Pick<StepOptions, "features"> = {},
): StepResult {
  const names = new Map(Object.entries(trainable).map(([k, v]) => [v.name, k]));
  const bn: NonNullable<ReturnType<typeof vitForward>["bnStats"]> = [];
  let features: tf.Tensor2D | undefined;
  const { value, grads } = tf.variableGrads(() => {
    const [h1, h2] = [x1, x2].map((x, view) => {
      const out = vitForward(backbone, x, { training: true });
      if (view === 0 && opts.features) features = tf.keep(out.features);
      for (const s of out.bnStats ?? []) {
        bn.push({ name: s.name, mean: tf.keep(s.mean), variance: tf.keep(s.variance) });
      }
      return out.features;
    });
    return loss(h1, h2);
  }, Object.values(trainable));
  if (bn.length) {
    const half = bn.length / 2;
    const tokens = x1.shape[0] * ((backbone.config.imageSize / backbone.config.patchSize) ** 2 + 1);
    tf.tidy(() => {
      const stats = bn.slice(0, half).map((s, i) => ({
        name: s.name,
        mean: tf.div(tf.add(s.mean, bn[half + i].mean), 2) as tf.Tensor1D,
        variance: tf.div(tf.add(s.variance, bn[half + i].variance), 2) as tf.Tensor1D,
      }));
      updateBnBuffers(backbone, stats, tokens);
    });
    tf.dispose(bn.flatMap((s) => [s.mean, s.variance]));
  }
  const named: Record<string, tf.Tensor> = {};
  for (const [vname, g] of Object.entries(grads)) named[names.get(vname)!] = g;
  return { loss: value, grads: named, ...(features ? { features } : {}) };
}
