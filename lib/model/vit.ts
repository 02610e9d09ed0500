/**
 * The Vision Transformer backbone of MoCo v3, on tfjs-core ops with explicit parameters.
 *
 * Parameters carry timm's names and layouts (`patch_embed.proj.weight` is a conv kernel
 * `[D, C, p, p]`, linear weights are `[out, in]`), so a backbone moves to and from PyTorch
 * unchanged. Sizes are data: add a row to {@link VIT_CONFIGS} to add a model.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { createViT, vitForward } from "./vit.ts";
 * const model = createViT({ name: "vit_micro", imageSize: 28, patchSize: 7, channels: 1 }, 0);
 * const x = tf.zeros([2, 28, 28, 1]) as tf.Tensor4D;
 * const { features } = vitForward(model, x); // [2, 64]
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { ConfigError } from "../core/errors.ts";
import {
  batchNorm,
  expandBatch,
  initNormal,
  initUniform,
  layerNorm,
  linear,
  mlp,
  residualAttention,
  residualMlp,
  xavierUniform,
} from "./layers.ts";
import { createRng } from "../core/rng.ts";

/** How tokens learn where they are. */
export type PosEmb = "sincos" | "learned" | "none";

/** Everything that defines a ViT backbone. */
export interface ViTConfig {
  /** The preset this config came from (a key of {@link VIT_CONFIGS}). */
  name: string;
  imageSize: number;
  patchSize: number;
  channels: number;
  /** Token width D. */
  dim: number;
  depth: number;
  heads: number;
  mlpRatio: number;
  /** `sincos` is the paper's fixed 2D table; `learned` is timm's; `none` adds nothing. */
  posEmb: PosEmb;
  /** `cls`: class token after the final LN; `mean`: mean of patch tokens without the final LN. */
  pool: "cls" | "mean";
  /** `batchnorm` is ViT-BN: BatchNorm instead of LayerNorm before the MLP of every block. */
  mlpNorm: "layernorm" | "batchnorm";
  /** The paper's stability trick: keep the patch projection at its random init. */
  freezePatchEmbed: boolean;
  lnEps: number;
}

type Size = Pick<ViTConfig, "dim" | "depth" | "heads" | "patchSize" | "imageSize" | "channels">;

/**
 * Model sizes: the paper's four (image 224) and small presets for CPU work.
 * `vit_tiny` and smaller default to 32x32 RGB; override `imageSize`, `patchSize`, `channels`.
 */
export const VIT_CONFIGS: Record<string, Size> = {
  vit_small: { dim: 384, depth: 12, heads: 12, patchSize: 16, imageSize: 224, channels: 3 },
  vit_base: { dim: 768, depth: 12, heads: 12, patchSize: 16, imageSize: 224, channels: 3 },
  vit_large: { dim: 1024, depth: 24, heads: 16, patchSize: 16, imageSize: 224, channels: 3 },
  vit_huge: { dim: 1280, depth: 32, heads: 16, patchSize: 14, imageSize: 224, channels: 3 },
  vit_tiny: { dim: 192, depth: 12, heads: 3, patchSize: 4, imageSize: 32, channels: 3 },
  vit_mini: { dim: 128, depth: 6, heads: 4, patchSize: 4, imageSize: 32, channels: 3 },
  vit_micro: { dim: 64, depth: 4, heads: 4, patchSize: 4, imageSize: 32, channels: 3 },
  vit_nano: { dim: 32, depth: 2, heads: 2, patchSize: 4, imageSize: 32, channels: 3 },
};

/**
 * Resolves a preset name plus overrides into a full, validated config.
 * Throws {@link ConfigError} for an unknown preset, a patch size that does not divide the image
 * size, or a width that the head count does not divide.
 *
 * @example
 * ```ts
 * const cfg = vitConfig({ name: "vit_micro", imageSize: 28, patchSize: 7, channels: 1 }); // dim 64
 * ```
 */
export function vitConfig(overrides: Partial<ViTConfig> & { name: string }): ViTConfig {
  const base = VIT_CONFIGS[overrides.name];
  if (!base) {
    throw new ConfigError(
      `unknown model "${overrides.name}": choose one of ${Object.keys(VIT_CONFIGS).join(", ")}`,
    );
  }
  const cfg: ViTConfig = {
    mlpRatio: 4,
    posEmb: "sincos",
    pool: "cls",
    mlpNorm: "layernorm",
    freezePatchEmbed: false,
    lnEps: 1e-6,
    ...base,
    ...Object.fromEntries(Object.entries(overrides).filter(([, v]) => v !== undefined)),
  } as ViTConfig;
  for (const k of ["imageSize", "patchSize", "channels", "dim", "depth", "heads"] as const) {
    if (!Number.isInteger(cfg[k]) || cfg[k] <= 0) {
      throw new ConfigError(`${k} must be a positive integer, got ${cfg[k]}`);
    }
  }
  if (cfg.imageSize % cfg.patchSize !== 0) {
    throw new ConfigError(
      `image size ${cfg.imageSize} is not divisible by patch size ${cfg.patchSize}: choose a ` +
        `patch size that divides it (${divisors(cfg.imageSize).join(", ")}) or resize the images`,
    );
  }
  if (cfg.dim % cfg.heads !== 0) {
    throw new ConfigError(
      `width ${cfg.dim} is not divisible by ${cfg.heads} heads: choose heads among ` +
        divisors(cfg.dim).filter((d) => d <= 32).join(", "),
    );
  }
  if (cfg.posEmb === "sincos" && cfg.dim % 4 !== 0) {
    throw new ConfigError(
      `the 2D sin-cos position embedding needs a width divisible by 4, got ${cfg.dim}: choose ` +
        `a width that is a multiple of 4 or posEmb "learned" / "none"`,
    );
  }
  if (!["sincos", "learned", "none"].includes(cfg.posEmb)) {
    throw new ConfigError(`posEmb must be sincos, learned or none, got "${cfg.posEmb}"`);
  }
  if (!["cls", "mean"].includes(cfg.pool)) {
    throw new ConfigError(`pool must be cls or mean, got "${cfg.pool}"`);
  }
  if (!["layernorm", "batchnorm"].includes(cfg.mlpNorm)) {
    throw new ConfigError(`mlpNorm must be layernorm or batchnorm, got "${cfg.mlpNorm}"`);
  }
  return cfg;
}

function divisors(n: number): number[] {
  const out: number[] = [];
  for (let d = 1; d <= n; d++) if (n % d === 0) out.push(d);
  return out;
}

/**
 * Number of patch tokens N = (imageSize / patchSize)^2.
 *
 * @example
 * ```ts
 * numPatches(vitConfig({ name: "vit_micro", imageSize: 28, patchSize: 7 })); // 16
 * ```
 */
export function numPatches(cfg: ViTConfig): number {
  return (cfg.imageSize / cfg.patchSize) ** 2;
}

/** A backbone: config, named parameters in timm layout, and BN running statistics. */
export interface ViT {
  config: ViTConfig;
  /**
   * Every weight, by timm name, including frozen ones (`pos_embed` when sin-cos): frozen ones are
   * variables with `trainable` false, which {@link countParams} skips unless `includeFrozen`.
   */
  params: Record<string, tf.Variable>;
  /** Names of parameters that get no gradient (sin-cos table, frozen patch projection). */
  frozen: Set<string>;
  /** Non-learned state: BatchNorm running mean/var of ViT-BN (`blocks.i.norm2.running_mean`). */
  buffers: Record<string, tf.Variable>;
}

/**
 * The fixed 2D sin-cos position embedding of the paper (Chen, Xie, He 2021, Sec. 5), as the
 * `pos_embed` parameter holds it: `[1, N + 1, D]` flattened into a Float32Array, **with the class
 * token's row first**. Row 0 is all zeros (the class token gets no position); patch (r, c) of the
 * `gridSize` x `gridSize` grid (row-major, patch i = r * gridSize + c) is row `1 + i`. Drop the
 * first `dim` values (`.subarray(dim)`) for the N patch rows alone. With d = D/4 and
 * omega_k = 1 / temperature^(k/d), patch (r, c) gets
 * [sin(r omega), cos(r omega), sin(c omega), cos(c omega)] (the official
 * `build_2d_sincos_position_embedding`, whose "w" half varies along rows).
 *
 * @example
 * ```ts
 * const table = sincosPosEmbedWithCls(4, 64); // 17 rows of 64: [1, 17, 64] flattened
 * table.subarray(64, 128); // patch (0, 0); row 0 (values 0..63) is the class token's zeros
 * ```
 */
export function sincosPosEmbedWithCls(
  gridSize: number,
  dim: number,
  temperature = 10000,
): Float32Array {
  const d = dim / 4;
  const out = new Float32Array((gridSize * gridSize + 1) * dim);
  for (let r = 0; r < gridSize; r++) {
    for (let c = 0; c < gridSize; c++) {
      const row = (1 + r * gridSize + c) * dim;
      for (let k = 0; k < d; k++) {
        const omega = 1 / Math.pow(temperature, k / d);
        out[row + k] = Math.sin(r * omega);
        out[row + d + k] = Math.cos(r * omega);
        out[row + 2 * d + k] = Math.sin(c * omega);
        out[row + 3 * d + k] = Math.cos(c * omega);
      }
    }
  }
  return out;
}

/**
 * Builds a ViT with the paper's initialisation, reproducible from `seed`.
 * Patch projection uniform(+-sqrt(6 / (C p p + D))), bias 0; linears xavier-uniform with zero
 * bias, the qkv weight as three separate D x D blocks; class token normal(1e-6); learned position
 * embedding normal(0.02) truncated at 2 std.
 *
 * @example
 * ```ts
 * const vit = createViT({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 }, 0);
 * ```
 */
export function createViT(config: Partial<ViTConfig> & { name: string }, seed = 0): ViT {
  const cfg = vitConfig(config);
  const rng = createRng(seed);
  const { dim: D, channels: C, patchSize: p } = cfg;
  const N = numPatches(cfg);
  const hidden = Math.round(D * cfg.mlpRatio);
  const t: Record<string, tf.Tensor> = {};
  const frozen = new Set<string>();

  t["cls_token"] = initNormal([1, 1, D], 1e-6, rng);
  if (cfg.posEmb === "sincos") {
    t["pos_embed"] = tf.tensor(sincosPosEmbedWithCls(cfg.imageSize / p, D), [1, N + 1, D]);
    frozen.add("pos_embed");
  } else if (cfg.posEmb === "learned") {
    t["pos_embed"] = initNormal([1, N + 1, D], 0.02, rng, 2);
  }
  t["patch_embed.proj.weight"] = initUniform([D, C, p, p], Math.sqrt(6 / (C * p * p + D)), rng);
  t["patch_embed.proj.bias"] = tf.zeros([D]);
  if (cfg.freezePatchEmbed) {
    frozen.add("patch_embed.proj.weight");
    frozen.add("patch_embed.proj.bias");
  }
  const buffers: Record<string, tf.Tensor> = {};
  for (let i = 0; i < cfg.depth; i++) {
    const b = `blocks.${i}.`;
    t[b + "norm1.weight"] = tf.ones([D]);
    t[b + "norm1.bias"] = tf.zeros([D]);
    const q = xavierUniform(D, D, rng), k = xavierUniform(D, D, rng), v = xavierUniform(D, D, rng);
    t[b + "attn.qkv.weight"] = tf.concat([q, k, v], 0);
    tf.dispose([q, k, v]);
    t[b + "attn.qkv.bias"] = tf.zeros([3 * D]);
    t[b + "attn.proj.weight"] = xavierUniform(D, D, rng);
    t[b + "attn.proj.bias"] = tf.zeros([D]);
    t[b + "norm2.weight"] = tf.ones([D]);
    t[b + "norm2.bias"] = tf.zeros([D]);
    if (cfg.mlpNorm === "batchnorm") {
      buffers[b + "norm2.running_mean"] = tf.zeros([D]);
      buffers[b + "norm2.running_var"] = tf.ones([D]);
    }
    t[b + "mlp.fc1.weight"] = xavierUniform(hidden, D, rng);
    t[b + "mlp.fc1.bias"] = tf.zeros([hidden]);
    t[b + "mlp.fc2.weight"] = xavierUniform(D, hidden, rng);
    t[b + "mlp.fc2.bias"] = tf.zeros([D]);
  }
  if (cfg.pool === "cls") {
    t["norm.weight"] = tf.ones([D]);
    t["norm.bias"] = tf.zeros([D]);
  }
  return {
    config: cfg,
    params: toVariables(t, frozen),
    frozen,
    buffers: toVariables(buffers, new Set(Object.keys(buffers))),
  };
}

/**
 * Wraps tensors as variables (disposing the originals); names in `frozen` are non-trainable.
 *
 * @example
 * ```ts
 * const vars = toVariables({ w: tf.ones([2, 3]) }, new Set()); // vars.w trainable
 * ```
 */
export function toVariables(
  t: Record<string, tf.Tensor>,
  frozen: Set<string>,
): Record<string, tf.Variable> {
  const out: Record<string, tf.Variable> = {};
  for (const [name, x] of Object.entries(t)) {
    out[name] = tf.variable(x, !frozen.has(name));
    x.dispose();
  }
  return out;
}

/**
 * The parameters that receive gradients (all but {@link ViT.frozen}), by name.
 *
 * @example
 * ```ts
 * const params = trainableParams(vit); // without pos_embed when sin-cos
 * ```
 */
export function trainableParams(model: ViT): Record<string, tf.Variable> {
  return Object.fromEntries(
    Object.entries(model.params).filter(([name]) => !model.frozen.has(name)),
  );
}

/** Options of {@link countParams}. */
export interface CountParamsOptions {
  /**
   * Also count frozen tensors (a `tf.Variable` with `trainable` false: the fixed sin-cos
   * `pos_embed`, a frozen patch projection, the copies of a momentum encoder). Default false.
   */
  includeFrozen?: boolean;
}

/**
 * Number of trainable scalars in a set of parameters: the tensors that get gradients, as
 * PyTorch's `sum(p.numel() for p in model.parameters() if p.requires_grad)` counts them. A
 * `tf.Variable` whose `trainable` is false (see {@link ViT.frozen}) is skipped unless
 * `includeFrozen`; a plain tensor always counts. So a sin-cos ViT-S/16 counts 21,590,016, and
 * 21,665,664 (with its 197 x 384 table) with `includeFrozen`.
 *
 * @example
 * ```ts
 * countParams(vit.params); // what the optimiser trains (same as countParams(trainableParams(vit)))
 * countParams(vit.params, { includeFrozen: true }); // every tensor, the sin-cos table included
 * ```
 */
export function countParams(
  params: Record<string, tf.Tensor>,
  opts: CountParamsOptions = {},
): number {
  return Object.values(params)
    .filter((p) => opts.includeFrozen || !(p instanceof tf.Variable) || p.trainable)
    .reduce((s, p) => s + p.size, 0);
}

/**
 * Frees every variable of a model.
 *
 * @example
 * ```ts
 * disposeViT(vit);
 * ```
 */
export function disposeViT(model: ViT): void {
  tf.dispose(Object.values(model.params));
  tf.dispose(Object.values(model.buffers));
}

/** Options of {@link vitForward}. */
export interface ForwardOptions {
  /** Training mode: ViT-BN uses batch statistics and reports them in `bnStats`. */
  training?: boolean;
  /** Also return every token after the final norm, `[B, N + 1, D]`. */
  returnTokens?: boolean;
  /** Also return each block's attention probabilities, `[B, heads, N + 1, N + 1]`. */
  returnAttention?: boolean;
}

/** What {@link vitForward} returns. */
export interface ForwardResult {
  /** The backbone output `[B, D]`: class token after the final LN, or the mean patch token. */
  features: tf.Tensor2D;
  tokens?: tf.Tensor3D;
  attention?: tf.Tensor4D[];
  /** ViT-BN in training: the batch mean/var of each block's norm2 (to update running stats). */
  bnStats?: { name: string; mean: tf.Tensor1D; variance: tf.Tensor1D }[];
}

/**
 * Splits `[B, H, W, C]` images into flattened patches `[B, N, C * p * p]`, each patch flattened
 * in (channel, row, column) order, the order of a conv kernel `[D, C, p, p]`.
 *
 * @example
 * ```ts
 * const patches = patchify(tf.zeros([2, 28, 28, 1]) as tf.Tensor4D, 7); // [2, 16, 49]
 * ```
 */
export function patchify(x: tf.Tensor4D, p: number): tf.Tensor3D {
  const [B, H, W, C] = x.shape;
  const gh = H / p, gw = W / p;
  const t = tf.transpose(tf.reshape(x, [B, gh, p, gw, p, C]), [0, 1, 3, 5, 2, 4]);
  return tf.reshape(t, [B, gh * gw, C * p * p]);
}

/**
 * Runs the backbone on normalised images `x [B, H, W, C]` and returns the features `[B, D]`
 * (and, when asked, all tokens and attention maps). Call inside `tf.tidy`.
 *
 * @example
 * ```ts
 * const { features } = tf.tidy(() => vitForward(vit, x)); // x [B, H, W, C] -> [B, D]
 * ```
 */
export function vitForward(model: ViT, x: tf.Tensor4D, opts: ForwardOptions = {}): ForwardResult {
  const cfg = model.config;
  const P = model.params;
  const [B, H, W, C] = x.shape;
  if (H !== cfg.imageSize || W !== cfg.imageSize || C !== cfg.channels) {
    throw new ConfigError(
      `input is ${H}x${W}x${C} but the model expects ${cfg.imageSize}x${cfg.imageSize}x` +
        `${cfg.channels}: convert the images to that size and those channels (loadDataset's ` +
        "imageSize and channels; --image-size and --channels on the command line)",
    );
  }
  const D = cfg.dim, heads = cfg.heads, hd = D / heads;
  const N = numPatches(cfg), T = N + 1;
  const p = cfg.patchSize;

  const wPatch = tf.reshape(P["patch_embed.proj.weight"], [D, C * p * p]);
  const patches = tf.reshape(patchify(x, p), [B * N, C * p * p]) as tf.Tensor2D;
  let h: tf.Tensor = tf.reshape(linear(patches, wPatch, P["patch_embed.proj.bias"]), [B, N, D]);
  h = tf.concat([expandBatch(P["cls_token"], B), h], 1);
  if (P["pos_embed"]) h = tf.add(h, P["pos_embed"]);

  const attention: tf.Tensor4D[] = [];
  const bnStats: ForwardResult["bnStats"] = [];
  const scale = 1 / Math.sqrt(hd);
  for (let i = 0; i < cfg.depth; i++) {
    const b = `blocks.${i}.`;
    const x0 = h;
    // One tidy per block: without a gradient tape its intermediates are freed as soon as the
    // block is done (a deep forward would otherwise hold every block's activations at once);
    // under a tape, tfjs keeps its own copies of what backprop needs.
    const out = tf.tidy(() => {
      const stats: NonNullable<ForwardResult["bnStats"]> = [];
      // Attention: x + proj(softmax(q k^T / sqrt(hd)) v), all heads at once.
      const [h2, probs] = residualAttention(
        x0 as tf.Tensor3D,
        {
          normW: P[b + "norm1.weight"],
          normB: P[b + "norm1.bias"],
          eps: cfg.lnEps,
          qkvW: P[b + "attn.qkv.weight"],
          qkvB: P[b + "attn.qkv.bias"],
          projW: P[b + "attn.proj.weight"],
          projB: P[b + "attn.proj.bias"],
        },
        heads,
        scale,
        !!opts.returnAttention,
      );
      // MLP: x + fc2(gelu(fc1(norm2(x)))).
      const [w1, b1, w2, b2] = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"].map((n) =>
        P[b + "mlp." + n]
      );
      const m = cfg.mlpNorm === "batchnorm"
        ? mlp(
          // norm2 reads x through a reshape of its own (see residualMlp).
          blockBatchNorm(model, b + "norm2", tf.reshape(h2, h2.shape), !!opts.training, stats),
          w1,
          b1,
          w2,
          b2,
          h2,
        )
        : residualMlp(h2, {
          normW: P[b + "norm2.weight"],
          normB: P[b + "norm2.bias"],
          eps: cfg.lnEps,
          w1,
          b1,
          w2,
          b2,
        });
      const kept: tf.Tensor[] = [tf.reshape(m, [B, T, D])];
      if (opts.returnAttention) kept.push(probs!);
      if (stats.length) kept.push(stats[0].mean, stats[0].variance);
      return kept;
    });
    h = out[0];
    if (opts.returnAttention) attention.push(out[1] as tf.Tensor4D);
    if (out.length > (opts.returnAttention ? 2 : 1)) {
      const [mean, variance] = out.slice(-2) as tf.Tensor1D[];
      bnStats.push({ name: b + "norm2", mean, variance });
    }
  }

  let features: tf.Tensor2D;
  let tokens: tf.Tensor3D | undefined;
  if (cfg.pool === "cls") {
    const out = layerNorm(h, P["norm.weight"], P["norm.bias"], cfg.lnEps) as tf.Tensor3D;
    features = tf.reshape(tf.slice(out, [0, 0, 0], [B, 1, D]), [B, D]);
    tokens = out;
  } else {
    features = tf.mean(tf.slice(h, [0, 1, 0], [B, N, D]), 1) as tf.Tensor2D;
    tokens = h as tf.Tensor3D;
  }
  const result: ForwardResult = { features };
  if (opts.returnTokens) result.tokens = tokens;
  if (opts.returnAttention) result.attention = attention;
  if (opts.training && cfg.mlpNorm === "batchnorm") result.bnStats = bnStats;
  return result;
}

/**
 * ViT-BN's norm2 on `x [B * T, D]` -> `[B * T, D]`: the shared {@link batchNorm} with this
 * block's affine parameters, over batch statistics in training (recorded in `stats` for the
 * running averages) and the running statistics otherwise.
 */
function blockBatchNorm(
  model: ViT,
  name: string,
  x: tf.Tensor2D,
  training: boolean,
  stats: NonNullable<ForwardResult["bnStats"]>,
): tf.Tensor2D {
  const weight = model.params[name + ".weight"], bias = model.params[name + ".bias"];
  if (!training) {
    const running = {
      mean: model.buffers[name + ".running_mean"],
      variance: model.buffers[name + ".running_var"],
    };
    return batchNorm(x, { weight, bias, stats: running }).y;
  }
  const { y, mean, variance } = batchNorm(x, { weight, bias });
  stats.push({ name, mean, variance });
  return y;
}

/**
 * Updates ViT-BN running statistics from a training forward's `bnStats` (PyTorch's momentum 0.1,
 * unbiased variance over `count` rows). No-op for LayerNorm models.
 *
 * @example
 * ```ts
 * const out = vitForward(vit, x, { training: true });
 * updateBnBuffers(vit, out.bnStats, x.shape[0] * 17); // B images of 17 tokens
 * ```
 */
export function updateBnBuffers(
  model: ViT,
  stats: ForwardResult["bnStats"],
  count: number,
  momentum = 0.1,
): void {
  if (!stats) return;
  tf.tidy(() => {
    for (const { name, mean, variance } of stats) {
      const rm = model.buffers[name + ".running_mean"];
      const rv = model.buffers[name + ".running_var"];
      const unbiased = tf.mul(variance, count / Math.max(1, count - 1));
      rm.assign(tf.add(tf.mul(rm, 1 - momentum), tf.mul(mean, momentum)));
      rv.assign(tf.add(tf.mul(rv, 1 - momentum), tf.mul(unbiased, momentum)));
    }
  });
}

/**
 * Analytic forward FLOPs per image (a multiply-add counts 2): patch projection, qkv, attention
 * scores and mixing, output projection and MLP of every block. Norms and softmax are ignored.
 *
 * @example
 * ```ts
 * vitFlops(vitConfig({ name: "vit_small" })); // about 9.2e9 (4.6 GMACs)
 * ```
 */
export function vitFlops(cfg: ViTConfig): number {
  const D = cfg.dim, N = numPatches(cfg), T = N + 1;
  const hidden = Math.round(D * cfg.mlpRatio);
  const patch = 2 * N * cfg.channels * cfg.patchSize ** 2 * D;
  const block = 2 * T * D * 3 * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * hidden;
  return patch + cfg.depth * block;
}
