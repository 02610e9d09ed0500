/**
 * The one place where a backend's fused kernels meet the model: a registry of optional fast
 * paths, per tfjs backend name. A backend that has fused kernels registers them here when it
 * installs them (`lib/backends/wasm/kernels.ts` for `wasm`); the layer primitives of `layers.ts` and the
 * optimiser ask {@link fastPath} for the active backend's and fall back to plain tfjs ops where
 * there is none, or where it declines (returns `undefined`, e.g. for an input it does not cover).
 * Model, method and optimiser code never name a backend.
 *
 * Every fast path that returns a result is counted ({@link fastPathCalls}), so a test can check
 * that the route it means to test was taken.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { fastPath, registerFastPaths } from "./fused.ts";
 * registerFastPaths("cpu", { gelu: (x) => tf.mul(x, tf.sigmoid(tf.mul(x, 1.702))) });
 * const y = fastPath("gelu")?.(tf.ones([2])); // the active backend's, if it registered one
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Coefficients of one AdamW update (see {@link FastPaths.adamw}). */
export interface AdamWCoefficients {
  /** 1 - beta1. */
  c1m: number;
  /** beta2. */
  b2: number;
  /** 1 - beta2. */
  c2: number;
  /** sqrt(1 - beta2^t). */
  sbc2: number;
  eps: number;
  /** 1 - lr * wd, applied when `hasDecay`. */
  decay: number;
  /** lr / (1 - beta1^t). */
  step: number;
  hasDecay: boolean;
}

/**
 * Fast paths a backend may provide; each returns `undefined` where it does not apply (then the
 * caller runs its plain tfjs ops). Each must compute what its caller's plain ops compute.
 */
export interface FastPaths {
  /** LayerNorm over the last axis: `x [..., D]`, `gamma, beta [D]` -> `[..., D]`. */
  layerNorm?: (
    x: tf.Tensor,
    gamma: tf.Tensor,
    beta: tf.Tensor,
    eps: number,
  ) => tf.Tensor | undefined;
  /**
   * A linear layer `x [M, K] @ w^T + b` with `w [N, K]`, optional `b [N]` and an optional residual
   * `res [M, N]` added after it -> `[M, N]`: the bias and the residual added in the product's
   * output pass and the bias gradient summed in the weight gradient's product; the same values
   * as `matMul`, `add(y, b)` and `add(res, y)`.
   */
  linear?: (
    x: tf.Tensor2D,
    w: tf.Tensor,
    b?: tf.Tensor,
    res?: tf.Tensor2D,
  ) => tf.Tensor2D | undefined;
  /** `gelu(x @ w^T + b)` (fc1 and its GELU; `b` optional), GELU in the product's output pass. */
  linearGelu?: (x: tf.Tensor2D, w: tf.Tensor, b?: tf.Tensor) => tf.Tensor2D | undefined;
  /**
   * A ViT MLP, `res + fc2(gelu(fc1(x)))` (`w1 [H, D]`, `w2 [D, H]`, biases and `res [M, D]`
   * optional): the forward of `linearGelu` then `linear`, and a backward that applies GELU's
   * gradient in fc2's input-gradient product (the same values as the two layers' gradients).
   */
  mlp?: (
    x: tf.Tensor2D,
    w1: tf.Tensor,
    b1: tf.Tensor | undefined,
    w2: tf.Tensor,
    b2: tf.Tensor | undefined,
    res?: tf.Tensor2D,
  ) => tf.Tensor2D | undefined;
  /**
   * A pre-norm ViT block's attention half, `x + proj(attention(qkv(layerNorm(x))))` for
   * `x [B, T, D]` -> `[B * T, D]` (see `residualAttention` in `layers.ts`), in one custom gradient
   * whose backward adds the residual's gradient to LayerNorm's itself.
   */
  residualAttention?: (
    x: tf.Tensor3D,
    p: ResidualAttentionParams,
    heads: number,
    scale: number,
  ) => tf.Tensor2D | undefined;
  /**
   * A pre-norm ViT block's MLP half, `x + fc2(gelu(fc1(layerNorm(x))))` for `x [M, D]`, in one
   * custom gradient (GELU's gradient in fc2's input-gradient product, the residual's gradient
   * added to LayerNorm's).
   */
  residualMlp?: (x: tf.Tensor2D, p: ResidualMlpParams) => tf.Tensor2D | undefined;
  /**
   * BatchNorm over the rows of `x [M, D]` with this batch's statistics (training mode), optional
   * affine `weight, bias [D]`: `y [M, D]` and the `mean`, biased `variance [D]` it used (see
   * `batchNorm` in `layers.ts`).
   */
  batchNorm?: (
    x: tf.Tensor2D,
    weight: tf.Tensor | undefined,
    bias: tf.Tensor | undefined,
    eps: number,
  ) => { y: tf.Tensor2D; mean: tf.Tensor1D; variance: tf.Tensor1D } | undefined;
  /** Exact (erf) GELU, same shape as `x`. */
  gelu?: (x: tf.Tensor) => tf.Tensor | undefined;
  /**
   * Multi-head self-attention of `qkv [B * T, 3D]`: `[out [B * T, D], probs [B, heads, T, T]]`,
   * probs only `withProbs` (see `multiHeadAttention` in `layers.ts`).
   */
  attention?: (
    qkv: tf.Tensor2D,
    batch: number,
    heads: number,
    scale: number,
    withProbs: boolean,
  ) => [tf.Tensor2D, tf.Tensor4D | undefined] | undefined;
  /**
   * `x [1, ...]` repeated `batch` times along axis 0 (`tf.tile`, PyTorch's `expand`), its
   * gradient bit-identical to `tf.tile`'s.
   */
  expandBatch?: (x: tf.Tensor, batch: number) => tf.Tensor | undefined;
  /** `t * m + s * (1 - m)`, bit-identical to those two products and a sum; shape of `t`. */
  ema?: (t: tf.Tensor, s: tf.Tensor, m: number) => tf.Tensor | undefined;
  /**
   * One AdamW update of `p` with gradient `g` and moments `m`, `v` (all one shape):
   * `[p1, m1, v1]`, bit-identical to the unfused ops of `applyGradients` (`lib/optim/optim.ts`).
   */
  adamw?: (
    p: tf.Tensor,
    g: tf.Tensor,
    m: tf.Tensor,
    v: tf.Tensor,
    c: AdamWCoefficients,
  ) => [tf.Tensor, tf.Tensor, tf.Tensor] | undefined;
  /**
   * {@link FastPaths.adamw} on every parameter at once, in place (each `p`, `m`, `v` keeps its
   * tensor and gets the new values; `c.decay` applies where an item's `hasDecay`): `true` when
   * done, `undefined` (nothing changed) where the backend cannot write them in place, e.g. a
   * tensor whose data another tensor shares. The same values as `adamw` per parameter.
   */
  adamwInPlace?: (items: AdamWItem[], c: Omit<AdamWCoefficients, "hasDecay">) => true | undefined;
  /** {@link FastPaths.ema} on every pair at once, in place: `t = t * m + s * (1 - m)`, as `adamwInPlace`. */
  emaInPlace?: (pairs: { t: tf.Tensor; s: tf.Tensor }[], m: number) => true | undefined;
}

/** One parameter of {@link FastPaths.adamwInPlace}: its value, gradient, moments and decay. */
export interface AdamWItem {
  p: tf.Tensor;
  g: tf.Tensor;
  m: tf.Tensor;
  v: tf.Tensor;
  hasDecay: boolean;
}

/** The weights of a block's attention half: its LayerNorm, the qkv and output projections. */
export interface ResidualAttentionParams {
  normW: tf.Tensor;
  normB: tf.Tensor;
  eps: number;
  qkvW: tf.Tensor;
  qkvB?: tf.Tensor;
  projW: tf.Tensor;
  projB?: tf.Tensor;
}

/** The weights of a block's MLP half: its LayerNorm, fc1 `[H, D]` and fc2 `[D, H]`. */
export interface ResidualMlpParams {
  normW: tf.Tensor;
  normB: tf.Tensor;
  eps: number;
  w1: tf.Tensor;
  b1?: tf.Tensor;
  w2: tf.Tensor;
  b2?: tf.Tensor;
}

/** The names of the fast paths. */
export type FastPathName = keyof FastPaths;

const NAMES: readonly FastPathName[] = [
  "linear",
  "linearGelu",
  "mlp",
  "residualAttention",
  "residualMlp",
  "layerNorm",
  "batchNorm",
  "gelu",
  "attention",
  "expandBatch",
  "ema",
  "adamw",
  "adamwInPlace",
  "emaInPlace",
];
const registry = new Map<string, FastPaths>();
const registered = new Map<string, FastPaths>();
const calls: Record<FastPathName, number> = {
  linear: 0,
  linearGelu: 0,
  mlp: 0,
  residualAttention: 0,
  residualMlp: 0,
  layerNorm: 0,
  batchNorm: 0,
  gelu: 0,
  attention: 0,
  expandBatch: 0,
  ema: 0,
  adamw: 0,
  adamwInPlace: 0,
  emaInPlace: 0,
};

/**
 * Registers `paths` as the fast paths of the tfjs backend `backendName` (replacing what it had).
 * Each is wrapped to count the calls that return a result.
 *
 * @example
 * ```ts
 * registerFastPaths("wasm", { ema: (t, s, m) => tf.engine().runKernel("VitsslEma", { t, s }, { mom: m }) as tf.Tensor });
 * ```
 */
export function registerFastPaths(backendName: string, paths: FastPaths): void {
  const counted: Record<string, unknown> = {};
  for (const name of NAMES) {
    const fn = paths[name] as ((...args: unknown[]) => unknown) | undefined;
    if (!fn) continue;
    counted[name] = (...args: unknown[]) => {
      const out = fn(...args);
      if (out !== undefined) calls[name]++;
      return out;
    };
  }
  registry.set(backendName, counted as FastPaths);
  registered.set(backendName, { ...paths });
}

/**
 * The fast paths `backendName` registered last (as given to {@link registerFastPaths}; empty if
 * none), to put back after changing them.
 *
 * @example
 * ```ts
 * const saved = registeredFastPaths("native");
 * registerFastPaths("native", { ...saved, gelu: undefined });
 * // ... then: registerFastPaths("native", saved);
 * ```
 */
export function registeredFastPaths(backendName: string): FastPaths {
  return { ...registered.get(backendName) };
}

/**
 * The active backend's fast path `name`, or `undefined` if it registered none.
 *
 * @example
 * ```ts
 * const y = fastPath("gelu")?.(x) ?? plainGelu(x);
 * ```
 */
export function fastPath<K extends FastPathName>(name: K): FastPaths[K] | undefined {
  return registry.get(tf.getBackend())?.[name];
}

/**
 * How many calls of each fast path returned a result since the process started (on any
 * backend): tests read it before and after to see that a route was taken.
 *
 * @example
 * ```ts
 * const before = fastPathCalls().gelu;
 * gelu(x);
 * const tookFused = fastPathCalls().gelu === before + 1;
 * ```
 */
export function fastPathCalls(): Readonly<Record<FastPathName, number>> {
  return { ...calls };
}
