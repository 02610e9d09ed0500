/**
 * Optimisers (AdamW, LAMB, SGD with momentum) on tfjs ops; their schedules (warmup + cosine
 * learning rate, cosine EMA momentum) are in `schedule.ts`.
 *
 * Parameters are `Record<string, tf.Variable>` with timm names; gradients are
 * `Record<string, tf.Tensor>` holding only the trainable names. A parameter without a gradient is
 * frozen: it is never touched, not even by weight decay, and its optimiser slots stay as they are.
 *
 * The update runs entirely on the backend (no `dataSync`): per-step coefficients (bias
 * corrections, learning rate) are JS numbers turned into a handful of scalar tensors shared by all
 * parameters, and each parameter costs a short fixed chain of elementwise kernels (see
 * {@link applyGradients}).
 *
 * @example
 * ```ts
 * import { lrAt, scaledLr } from "./schedule.ts";
 * const cfg: OptimizerConfig = { name: "adamw", weightDecay: 0.1 };
 * const state = createOptimizerState(cfg, params);
 * const peakLr = scaledLr(1.5e-4, 256);
 * for (let it = 0; it < total; it++) {
 *   const lr = lrAt(it, { peakLr, warmupSteps: 40 * itersPerEpoch, totalSteps: total });
 *   const grads = computeGrads(); // Record<string, tf.Tensor>, trainable names only
 *   applyGradients(params, grads, state, cfg, lr);
 *   tf.dispose(grads);
 * }
 * disposeOptimizerState(state);
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { fastPath } from "../backends/fused.ts";

/** Optimisers that {@link applyGradients} implements. */
export type OptimizerName = "adamw" | "lamb" | "sgd";

/**
 * Optimiser settings. Defaults: betas [0.9, 0.999]; eps 1e-8 (adamw) or 1e-6 (lamb); momentum 0.9
 * (sgd, as in MoCo v3's linear probe; 0 turns the buffer off); skipDecay false (MoCo v3 decays
 * every parameter); maxGradNorm none.
 */
export interface OptimizerConfig {
  /** `adamw` (torch.optim.AdamW), `lamb` (timm's Lamb) or `sgd` (torch.optim.SGD). */
  name: OptimizerName;
  /** Moment decay rates (adamw, lamb). Default [0.9, 0.999]. */
  betas?: [number, number];
  /** Added to sqrt(v_hat) (adamw, lamb). Default 1e-8 for adamw, 1e-6 for lamb. */
  eps?: number;
  /** Weight decay: decoupled for adamw, added to the update for lamb, L2 in the gradient for sgd. */
  weightDecay: number;
  /** SGD momentum (PyTorch semantics, no dampening, no Nesterov). Default 0.9. */
  momentum?: number;
  /**
   * Skip weight decay (and, for lamb, the trust ratio) on biases, norm parameters (any parameter
   * with rank <= 1), `cls_token`, `dist_token` and `pos_embed`. Default false.
   */
  skipDecay?: boolean;
  /**
   * If set, all gradients are divided by max(1, globalNorm / maxGradNorm) before the update
   * (timm's Lamb does this with 1.0 by default; torch AdamW and SGD never do). Default: no clipping.
   */
  maxGradNorm?: number;
}

/**
 * Optimiser state: the number of updates applied so far and the slot variables, named
 * `<kind>/<param>` with kind `exp_avg`, `exp_avg_sq` (adamw, lamb) or `momentum_buffer` (sgd with
 * momentum > 0). Slots are non-trainable variables created once by {@link createOptimizerState}.
 */
export interface OptimizerState {
  /** Updates applied so far (the bias-correction step t of the next update is step + 1). */
  step: number;
  /** Slot variables, each shaped like its parameter. */
  slots: Record<string, tf.Variable>;
}

/** An {@link OptimizerConfig} with every default filled in. */
export type ResolvedOptimizerConfig = Required<Omit<OptimizerConfig, "maxGradNorm">> & {
  maxGradNorm?: number;
};

/** Fill in the defaults of `cfg` and check its values; throws on an unknown name or a bad value. */
export function resolveOptimizerConfig(cfg: OptimizerConfig): ResolvedOptimizerConfig {
  if (!["adamw", "lamb", "sgd"].includes(cfg.name)) {
    throw new Error(
      `optim: unknown optimiser "${cfg.name}"; expected one of "adamw", "lamb", "sgd"`,
    );
  }
  const r: ResolvedOptimizerConfig = {
    name: cfg.name,
    betas: cfg.betas ?? [0.9, 0.999],
    eps: cfg.eps ?? (cfg.name === "lamb" ? 1e-6 : 1e-8),
    weightDecay: cfg.weightDecay,
    momentum: cfg.momentum ?? 0.9,
    skipDecay: cfg.skipDecay ?? false,
    maxGradNorm: cfg.maxGradNorm,
  };
  const bad = (what: string, v: unknown) => {
    throw new Error(`optim: ${what} must be ${v}; got ${JSON.stringify(cfg)}`);
  };
  if (!(r.weightDecay >= 0)) bad("weightDecay", "a number >= 0");
  if (!(r.betas[0] >= 0 && r.betas[0] < 1 && r.betas[1] >= 0 && r.betas[1] < 1)) {
    bad("betas", "two numbers in [0, 1)");
  }
  if (!(r.eps >= 0)) bad("eps", "a number >= 0");
  if (!(r.momentum >= 0)) bad("momentum", "a number >= 0");
  if (r.maxGradNorm !== undefined && !(r.maxGradNorm > 0)) bad("maxGradNorm", "a number > 0");
  return r;
}

/** Parameter names (last dot-separated part) that `skipDecay` excludes whatever their rank. */
const NO_DECAY_LEAVES = new Set(["cls_token", "dist_token", "pos_embed"]);

/**
 * Whether weight decay applies to parameter `name` of shape `shape` under `cfg`. Without
 * `skipDecay` every parameter decays (MoCo v3's setting); with it, rank <= 1 parameters (biases,
 * LayerNorm/BatchNorm weights) and `cls_token`, `dist_token`, `pos_embed` (also under a prefix such
 * as `base.pos_embed`) do not. Ignores the value of `weightDecay`.
 *
 * @example
 * ```ts
 * decays("blocks.0.norm1.weight", [384], { name: "adamw", weightDecay: 0.1, skipDecay: true }); // false
 * ```
 */
export function decays(
  name: string,
  shape: number[],
  cfg: Pick<OptimizerConfig, "skipDecay">,
): boolean {
  if (!cfg.skipDecay) return true;
  if (shape.length <= 1) return false;
  const leaf = name.slice(name.lastIndexOf(".") + 1);
  return !NO_DECAY_LEAVES.has(leaf);
}

/** The slot kinds an optimiser keeps per parameter. */
function slotKinds(cfg: ResolvedOptimizerConfig): string[] {
  if (cfg.name === "sgd") return cfg.momentum > 0 ? ["momentum_buffer"] : [];
  return ["exp_avg", "exp_avg_sq"];
}

/**
 * Create the optimiser state: zero slots for every parameter in `params` (pass only the trainable
 * ones to save memory; slots of parameters that never get a gradient stay zero). Dispose with
 * {@link disposeOptimizerState}.
 *
 * @example
 * ```ts
 * const state = createOptimizerState({ name: "adamw", weightDecay: 0.1 }, params);
 * ```
 */
export function createOptimizerState(
  cfg: OptimizerConfig,
  params: Record<string, tf.Variable | tf.Tensor>,
): OptimizerState {
  const c = resolveOptimizerConfig(cfg);
  const slots: Record<string, tf.Variable> = {};
  for (const kind of slotKinds(c)) {
    for (const [name, p] of Object.entries(params)) {
      // No explicit variable name: tfjs names are global and must be unique across states.
      slots[`${kind}/${name}`] = tf.tidy(() => tf.variable(tf.zerosLike(p), false));
    }
  }
  return { step: 0, slots };
}

/** Dispose every slot variable of `state`. */
export function disposeOptimizerState(state: OptimizerState): void {
  for (const v of Object.values(state.slots)) v.dispose();
  state.slots = {};
}

function sameShape(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Throws unless every gradient has a parameter of the same shape and the slots it needs. */
function checkGrads(
  params: Record<string, tf.Variable>,
  grads: Record<string, tf.Tensor>,
  state: OptimizerState,
  kinds: string[],
): void {
  for (const [name, g] of Object.entries(grads)) {
    const p = params[name];
    if (p === undefined) {
      throw new Error(
        `optim: a gradient is named "${name}" but no parameter has that name; ` +
          `pass gradients keyed by parameter name (parameters: ${
            Object.keys(params).slice(0, 5).join(", ")
          }...)`,
      );
    }
    if (!sameShape(p.shape, g.shape)) {
      throw new Error(
        `optim: gradient "${name}" has shape [${g.shape}] but the parameter has [${p.shape}]`,
      );
    }
    for (const kind of kinds) {
      if (!state.slots[`${kind}/${name}`]) {
        throw new Error(
          `optim: parameter "${name}" has a gradient but no "${kind}" slot; ` +
            `include it in the params given to createOptimizerState`,
        );
      }
    }
  }
}

/**
 * One optimiser update, in place (`Variable.assign`), of every parameter that has a gradient in
 * `grads`; parameters without one (frozen) are left untouched, decay included. Increments
 * `state.step`. Disposes all its temporaries but not `grads` (the caller owns them). No host sync.
 *
 * With t = state.step + 1, g the gradient, p the parameter, wd the weight decay (0 where
 * {@link decays} is false), bc1 = 1 - beta1^t, bc2 = 1 - beta2^t:
 * - `adamw` (torch.optim.AdamW, amsgrad off): p -= lr * wd * p; m = lerp(m, g, 1 - beta1);
 *   v = beta2 v + (1 - beta2) g^2; p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps).
 *   About 14 kernels per parameter.
 * - `lamb` (timm.optim.Lamb with its defaults bias_correction, grad_averaging, coupled decay,
 *   trust_clip off, always_adapt off; its max_grad_norm=1.0 is `maxGradNorm`, off unless set):
 *   m, v as adamw; u = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps) + wd * p; if wd > 0 for this
 *   parameter, u *= r with r = ||p|| / ||u|| (r = 1 when either norm is 0), otherwise r = 1 (so
 *   skipped parameters, and every parameter when weightDecay is 0, get a plain Adam step);
 *   p -= lr * u. About 28 kernels per decayed parameter.
 * - `sgd` (torch.optim.SGD, dampening 0, nesterov off): d = g + wd * p; b = momentum * b + d
 *   (b starts at 0, so the first step gives b = d exactly as PyTorch's clone); p -= lr * b.
 *
 * Bias correction uses the shared step count, which equals PyTorch's per-parameter count whenever
 * the set of parameters that receive gradients does not change during a run.
 *
 * @example
 * ```ts
 * const { value, grads } = tf.variableGrads(lossFn, trainableList); // grads keyed by var name
 * applyGradients(params, gradsByParamName, state, cfg, lrAt(it, sched));
 * ```
 */
export function applyGradients(
  params: Record<string, tf.Variable>,
  grads: Record<string, tf.Tensor>,
  state: OptimizerState,
  cfg: OptimizerConfig,
  lr: number,
): void {
  const c = resolveOptimizerConfig(cfg);
  if (!(Number.isFinite(lr) && lr >= 0)) {
    throw new Error(`optim: lr must be a finite number >= 0; got ${lr}`);
  }
  const kinds = slotKinds(c);
  checkGrads(params, grads, state, kinds);
  const names = Object.keys(grads);
  const t = state.step + 1;
  if (names.length === 0) {
    state.step = t;
    return;
  }
  const [b1, b2] = c.betas;
  tf.tidy(() => {
    // One scalar tensor per coefficient per step, shared by all parameters.
    const cache = new Map<number, tf.Scalar>();
    const s = (x: number): tf.Scalar => {
      let v = cache.get(x);
      if (!v) cache.set(x, v = tf.scalar(x));
      return v;
    };
    let clipDiv: tf.Tensor | null = null;
    if (c.maxGradNorm !== undefined) {
      const norm = globalNorm(names.map((n) => grads[n]));
      clipDiv = tf.maximum(tf.div(norm, s(c.maxGradNorm)), s(1));
    }
    const bc1 = 1 - Math.pow(b1, t);
    const sqrtBc2 = Math.sqrt(1 - Math.pow(b2, t));
    const coefficients = (wd: number) => ({
      c1m: 1 - b1,
      b2,
      c2: 1 - b2,
      sbc2: sqrtBc2,
      eps: c.eps,
      decay: 1 - lr * wd,
      step: lr / bc1,
      hasDecay: wd > 0,
    });
    const clipped: Record<string, tf.Tensor> = {};
    for (const name of names) clipped[name] = clipDiv ? tf.div(grads[name], clipDiv) : grads[name];
    // AdamW on every parameter in one kernel, in place, where the backend can: the same values.
    if (c.name === "adamw") {
      const items = names.map((name) => ({
        p: params[name] as tf.Tensor,
        g: clipped[name],
        m: state.slots[`exp_avg/${name}`] as tf.Tensor,
        v: state.slots[`exp_avg_sq/${name}`] as tf.Tensor,
        hasDecay: decays(name, params[name].shape, c) && c.weightDecay > 0,
      }));
      if (fastPath("adamwInPlace")?.(items, coefficients(c.weightDecay))) return;
    }
    for (const name of names) {
      const p = params[name];
      const g = clipped[name];
      const wd = decays(name, p.shape, c) ? c.weightDecay : 0;
      if (c.name === "sgd") {
        const d = wd > 0 ? tf.add(g, tf.mul(p, s(wd))) : g;
        let step = d;
        if (c.momentum > 0) {
          const buf = state.slots[`momentum_buffer/${name}`];
          step = tf.add(tf.mul(buf, s(c.momentum)), d);
          buf.assign(step);
        }
        p.assign(tf.sub(p, tf.mul(step, s(lr))));
        continue;
      }
      const m = state.slots[`exp_avg/${name}`];
      const v = state.slots[`exp_avg_sq/${name}`];
      const fused = c.name === "adamw" && fastPath("adamw")?.(p, g, m, v, coefficients(wd));
      if (fused) {
        // One kernel where the backend has it, the same float32 operations as below.
        m.assign(fused[1]);
        v.assign(fused[2]);
        p.assign(fused[0]);
        continue;
      }
      // lerp as PyTorch computes it for weight < 0.5: m + w (g - m).
      const m1 = tf.add(m, tf.mul(tf.sub(g, m), s(1 - b1)));
      const v1 = tf.add(tf.mul(v, s(b2)), tf.mul(tf.square(g), s(1 - b2)));
      const denom = tf.add(tf.div(tf.sqrt(v1), s(sqrtBc2)), s(c.eps));
      m.assign(m1);
      v.assign(v1);
      if (c.name === "adamw") {
        const decayed = wd > 0 ? tf.mul(p, s(1 - lr * wd)) : p;
        p.assign(tf.sub(decayed, tf.mul(tf.div(m1, denom), s(lr / bc1))));
        continue;
      }
      // lamb
      let u = tf.div(tf.div(m1, s(bc1)), denom);
      let scale: tf.Tensor = s(lr);
      if (wd > 0) {
        u = tf.add(u, tf.mul(p, s(wd)));
        const pn = tf.sqrt(tf.sum(tf.square(p)));
        const un = tf.sqrt(tf.sum(tf.square(u)));
        const ok = tf.logicalAnd(tf.greater(pn, s(0)), tf.greater(un, s(0)));
        const ratio = tf.where(ok, tf.div(pn, un), s(1));
        scale = tf.mul(ratio, s(lr));
      }
      p.assign(tf.sub(p, tf.mul(u, scale)));
    }
  });
  state.step = t;
}

/**
 * Global L2 norm of a set of tensors, sqrt(sum over tensors of sum(x^2)), as a scalar tensor
 * (`[]`) that the caller disposes; 0 for an empty set. No host sync.
 *
 * @example
 * ```ts
 * const n = globalNorm(grads); console.log(n.dataSync()[0]); n.dispose();
 * ```
 */
export function globalNorm(tensors: tf.Tensor[] | Record<string, tf.Tensor>): tf.Scalar {
  const list = Array.isArray(tensors) ? tensors : Object.values(tensors);
  return tf.tidy(() => {
    if (list.length === 0) return tf.scalar(0);
    const sq = list.map((x) => tf.sum(tf.square(x)));
    return tf.sqrt(sq.length === 1 ? sq[0] : tf.addN(sq)) as tf.Scalar;
  });
}

/** Checkpoint prefix of optimiser slots: `optim.<kind>.<param>`. */
const CKPT_PREFIX = "optim.";

/**
 * The slots of `state` under checkpoint names `optim.<kind>.<param>` (e.g.
 * `optim.exp_avg.blocks.0.attn.qkv.weight`). The values are the state's own variables: read them,
 * do not dispose them. Save `state.step` separately.
 */
export function optimizerStateTensors(state: OptimizerState): Record<string, tf.Tensor> {
  const out: Record<string, tf.Tensor> = {};
  for (const [key, v] of Object.entries(state.slots)) {
    const slash = key.indexOf("/");
    out[`${CKPT_PREFIX}${key.slice(0, slash)}.${key.slice(slash + 1)}`] = v;
  }
  return out;
}

/**
 * Restore `state` from a checkpoint: assign every `optim.<kind>.<param>` tensor of `tensors` into
 * the matching slot (copying; `tensors` stay the caller's) and set `state.step = step`. Keys that
 * do not start with `optim.` are ignored. Throws, before changing anything, if a slot has no
 * tensor, a tensor has no slot (another optimiser or other parameters) or a shape differs.
 */
export function loadOptimizerState(
  state: OptimizerState,
  tensors: Record<string, tf.Tensor>,
  step: number,
): void {
  if (!(Number.isInteger(step) && step >= 0)) {
    throw new Error(`optim: checkpoint step must be an integer >= 0; got ${step}`);
  }
  const wanted = optimizerStateTensors(state);
  for (const key of Object.keys(tensors)) {
    if (key.startsWith(CKPT_PREFIX) && !(key in wanted)) {
      throw new Error(
        `optim: checkpoint tensor "${key}" matches no slot of this optimiser state; ` +
          `was it saved with another optimiser or other parameters?`,
      );
    }
  }
  for (const [key, slot] of Object.entries(wanted)) {
    const t = tensors[key];
    if (!t) {
      throw new Error(
        `optim: checkpoint lacks "${key}"; resume with the optimiser and parameters it was saved ` +
          `with, or start the optimiser fresh`,
      );
    }
    if (!sameShape(t.shape, slot.shape)) {
      throw new Error(
        `optim: checkpoint "${key}" has shape [${t.shape}], expected [${slot.shape}]`,
      );
    }
  }
  for (const [key, slot] of Object.entries(wanted)) {
    const v = slot as tf.Variable;
    tf.tidy(() => v.assign(tf.cast(tensors[key], v.dtype)));
  }
  state.step = step;
}
