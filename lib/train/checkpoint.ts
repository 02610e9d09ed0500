/**
 * Checkpoints as safetensors files with timm's weight names.
 *
 * Two kinds of file:
 * - a **backbone** file (`backbone.safetensors`): exactly timm's `VisionTransformer.state_dict()`
 *   names and layouts, loadable in PyTorch with `timm.create_model(...).load_state_dict(
 *   safetensors.torch.load_file(path), strict=False)` (the classifier head is absent);
 * - a **training** checkpoint (`checkpoint.safetensors`): every tensor of the run under the
 *   official MoCo v3 names (`base_encoder.*`, `predictor.*`, `momentum_encoder.*`) plus optimiser
 *   slots (`optim.*`), and the step and resolved config in the metadata.
 *
 * {@link loadBackbone} reads either kind, official MoCo v3 checkpoints (PyTorch's `.pth.tar` as
 * released, via lib/io/pth.ts, or converted to safetensors; their `module.base_encoder.` prefix
 * is stripped and the projector head dropped) and timm state dicts (`.pth` or safetensors),
 * checks every name and shape, and lists all mismatches in one error. Files are written atomically (temp file, fsync, rename), and
 * {@link saveTensors} refuses to write non-finite weights.
 *
 * @example
 * ```ts
 * import { createViT } from "../model/vit.ts";
 * import { loadBackbone, saveBackbone } from "./checkpoint.ts";
 * const model = createViT({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 });
 * await saveBackbone("/tmp/b.safetensors", model);
 * const again = await loadBackbone("/tmp/b.safetensors"); // config from the file's metadata
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { AtomicWriteOptions } from "../io/atomic.ts";
import {
  readSafetensors,
  type SafeTensor,
  SafetensorsError,
  toFloat32,
  writeSafetensors,
} from "../io/safetensors.ts";
import { readPth } from "../io/pth.ts";
import {
  createViT,
  disposeViT,
  sincosPosEmbedWithCls,
  type ViT,
  type ViTConfig,
  vitConfig,
} from "../model/vit.ts";
import { ConfigError, UserError } from "../core/errors.ts";

/** A checkpoint does not fit the model it is loaded into; the message lists every mismatch. */
export class CheckpointError extends UserError {
  override name = "CheckpointError";
}

/** Metadata key holding the backbone config as JSON. */
export const CONFIG_KEY = "vitssl.vit_config";

/**
 * Writes tensors to a safetensors file atomically. Refuses (throws {@link CheckpointError},
 * leaving any previous file intact) when a float tensor holds NaN or Inf, naming the tensors.
 * A failed write (a full disk) also leaves any previous file intact; `options.writer` replaces
 * the write, for tests that simulate one.
 */
export async function saveTensors(
  path: string,
  tensors: Record<string, tf.Tensor>,
  metadata: Record<string, string> = {},
  options: AtomicWriteOptions = {},
): Promise<void> {
  const out: Record<string, SafeTensor> = {};
  const bad: string[] = [];
  for (const [name, t] of Object.entries(tensors)) {
    if (t.dtype === "int32") {
      out[name] = { dtype: "I32", shape: t.shape, data: (await t.data()) as Int32Array };
      continue;
    }
    const data = (await t.data()) as Float32Array;
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i])) {
        bad.push(name);
        break;
      }
    }
    out[name] = { dtype: "F32", shape: t.shape, data };
  }
  if (bad.length) {
    throw new CheckpointError(
      `refusing to write ${path}: non-finite values in ${bad.slice(0, 10).join(", ")}` +
        (bad.length > 10 ? ` and ${bad.length - 10} more` : "") +
        "; the previous checkpoint is kept",
    );
  }
  await writeSafetensors(path, out, metadata, options);
}

/** The backbone's tensors by timm name (parameters and BN buffers). */
export function backboneTensors(model: ViT): Record<string, tf.Tensor> {
  return { ...model.params, ...model.buffers };
}

/** Saves a backbone in timm's names and layouts, with its config in the metadata. */
export async function saveBackbone(
  path: string,
  model: ViT,
  metadata: Record<string, string> = {},
): Promise<void> {
  await saveTensors(path, backboneTensors(model), {
    ...metadata,
    [CONFIG_KEY]: JSON.stringify(model.config),
  });
}

/** Prefixes under which a training checkpoint stores things that are not the backbone. */
const NON_BACKBONE = /^(momentum_encoder\.|predictor\.|optim\.|head\.|fc_norm\.)/;

/** Options of {@link loadBackbone}. */
export interface LoadBackboneOptions {
  /**
   * Config of the model to build; by default read from the file's metadata, else inferred from
   * the tensor shapes (heads from a MoCo v3 checkpoint's `arch`, else dim / 64, unless given
   * here).
   */
  config?: Partial<ViTConfig>;
  /**
   * Prefix to strip from names (e.g. `module.base_encoder.` of the official code); names
   * without it are ignored. By default `module.base_encoder.`, `base_encoder.` or `module.` is
   * stripped when present.
   */
  prefix?: string;
}

/**
 * Whether `path` is read as a PyTorch checkpoint (`.pth`, `.pth.tar`, `.pt`, `.tar`, `.ckpt`)
 * rather than as safetensors.
 *
 * @example
 * ```ts
 * isPthPath("vit-s-300ep.pth.tar"); // true
 * ```
 */
export function isPthPath(path: string): boolean {
  return /\.(pth|pt|tar|ckpt)$/i.test(path);
}

/**
 * Loads a backbone from a timm-named safetensors file (ours, timm's, or an official MoCo v3
 * checkpoint converted to safetensors) or PyTorch checkpoint ({@link isPthPath}: the official
 * `.pth.tar`, a timm state dict). Throws {@link CheckpointError} listing every missing,
 * unexpected or mis-shaped tensor.
 */
export async function loadBackbone(path: string, opts: LoadBackboneOptions = {}): Promise<ViT> {
  const { tensors, metadata } = isPthPath(path) ? await readPth(path) : await readSafetensors(path);
  const prefix = opts.prefix ?? detectPrefix(Object.keys(tensors));
  const named: Record<string, SafeTensor> = {};
  for (const [k, v] of Object.entries(tensors)) {
    if (prefix && !k.startsWith(prefix)) continue;
    const name = k.slice(prefix.length);
    if (NON_BACKBONE.test(name) || name.endsWith("num_batches_tracked")) continue;
    named[name] = v;
  }
  if (Object.keys(named).length === 0) {
    throw new CheckpointError(
      `${path} holds no backbone tensors` + (prefix ? ` under the prefix "${prefix}"` : "") +
        `; its first names are ${Object.keys(tensors).slice(0, 5).join(", ")}: pass the right ` +
        "prefix (--prefix) or another file",
    );
  }
  let config: Partial<ViTConfig> & { name: string };
  try {
    const fromMeta = metadata[CONFIG_KEY] ? JSON.parse(metadata[CONFIG_KEY]) : undefined;
    const given = opts.config ?? {};
    // A config that names its preset is used as is; otherwise the given fields refine the
    // inferred ones (before validation, so that e.g. `heads` can fix an inferred default).
    const base = fromMeta ?? (given.name ? {} : inferConfig(named, path, given, metadata.arch));
    config = { ...base, ...given } as ViTConfig;
    vitConfig(config);
  } catch (e) {
    if (e instanceof ConfigError || e instanceof SyntaxError) {
      throw new CheckpointError(`${path}: cannot build a model for it: ${e.message}`);
    }
    throw e;
  }
  const model = createViT(config, 0);
  try {
    assignTensors({ ...model.params, ...model.buffers }, named, path);
  } catch (e) {
    disposeViT(model);
    throw e;
  }
  return model;
}

function detectPrefix(names: string[]): string {
  for (const p of ["module.base_encoder.", "base_encoder.", "module."]) {
    if (names.some((n) => n.startsWith(p + "blocks."))) return p;
  }
  return "";
}

/** Heads of the official MoCo v3 ViTs (vits.py) by `arch`: 12 for ViT-S, unlike timm's 6. */
const MOCO_V3_HEADS: Record<string, number> = {
  vit_small: 12,
  vit_base: 12,
  vit_large: 16,
  vit_huge: 16,
};

/**
 * Infers a config from timm tensor shapes, with the `given` fields taking precedence: heads from
 * a MoCo v3 `arch` (the checkpoint's), else dim / 64 (at least 1); the MLP ratio from the MLP;
 * `posEmb` "sincos" when `pos_embed` is the paper's fixed table (to 1e-3, so also in float16).
 */
function inferConfig(
  t: Record<string, SafeTensor>,
  path: string,
  given: Partial<ViTConfig>,
  arch?: string,
): ViTConfig {
  const w = t["patch_embed.proj.weight"];
  if (!w && t["patch_embed.proj.0.weight"]) {
    throw new CheckpointError(
      `${path}: its patch embedding is a convolutional stem (moco-v3's vit_conv_*), which ` +
        "vitssl's ViT does not have; use a checkpoint of vit_small or vit_base",
    );
  }
  if (!w || w.shape.length !== 4) {
    throw new CheckpointError(
      `${path}: no patch_embed.proj.weight [D, C, p, p] to infer the model from; pass a ` +
        "config with its preset name (config: { name, imageSize, patchSize, channels, ... })",
    );
  }
  const [dim, channels, patchSize] = w.shape;
  let depth = 0;
  for (const k of Object.keys(t)) {
    const m = /^blocks\.(\d+)\./.exec(k);
    if (m) depth = Math.max(depth, Number(m[1]) + 1);
  }
  const pos = t["pos_embed"];
  const tokens = pos ? pos.shape[1] - 1 : NaN;
  const grid = Math.round(Math.sqrt(tokens));
  if ((!pos || grid * grid !== tokens) && given.imageSize === undefined) {
    throw new CheckpointError(
      `${path}: cannot infer the image size (no square pos_embed); pass config.imageSize`,
    );
  }
  // The MLP ratio where fc1 and fc2 agree on the hidden width (else the default, so that a
  // mismatch is reported against it).
  const [fc1, fc2] = [t["blocks.0.mlp.fc1.weight"], t["blocks.0.mlp.fc2.weight"]];
  const hidden = fc1 && fc2 && fc1.shape[0] === fc2.shape[1] ? fc1.shape[0] : undefined;
  const archHeads = arch !== undefined && Object.hasOwn(MOCO_V3_HEADS, arch)
    ? MOCO_V3_HEADS[arch]
    : undefined;
  return vitConfig({
    name: "vit_base",
    dim,
    channels,
    patchSize,
    depth,
    imageSize: grid * patchSize,
    heads: archHeads ?? Math.max(1, dim / 64),
    ...(hidden ? { mlpRatio: hidden / dim } : {}),
    posEmb: pos ? (isSincos(pos, grid, dim) ? "sincos" : "learned") : "none",
    pool: t["norm.weight"] ? "cls" : "mean",
    mlpNorm: t["blocks.0.norm2.running_mean"] ? "batchnorm" : "layernorm",
    ...given,
  });
}

/** Whether a `pos_embed` tensor is the fixed 2D sin-cos table of a `grid` x `grid` image. */
function isSincos(pos: SafeTensor, grid: number, dim: number): boolean {
  if (dim % 4 !== 0 || pos.shape.length !== 3 || pos.shape[2] !== dim) return false;
  if (pos.shape[1] !== grid * grid + 1 || !["F32", "F16", "BF16", "F64"].includes(pos.dtype)) {
    return false;
  }
  const table = sincosPosEmbedWithCls(grid, dim);
  const values = toFloat32(pos);
  return values.every((v, i) => Math.abs(v - table[i]) <= 1e-3);
}

/**
 * Copies loaded tensors into variables with the same names, after checking that every variable
 * has a tensor of the same shape and nothing is left over. Lists all mismatches in one
 * {@link CheckpointError}.
 */
export function assignTensors(
  vars: Record<string, tf.Variable>,
  loaded: Record<string, SafeTensor>,
  source: string,
): void {
  const problems: string[] = [];
  for (const [name, v] of Object.entries(vars)) {
    const t = loaded[name];
    if (!t) problems.push(`missing ${name} ${fmt(v.shape)}`);
    else if (fmt(t.shape) !== fmt(v.shape)) {
      problems.push(`${name}: file has ${fmt(t.shape)}, model expects ${fmt(v.shape)}`);
    }
  }
  for (const name of Object.keys(loaded)) {
    if (!(name in vars)) problems.push(`unexpected ${name} ${fmt(loaded[name].shape)}`);
  }
  if (problems.length) {
    throw new CheckpointError(
      `${source} does not match the model (${problems.length} problem(s)); is it from another ` +
        `architecture or config?\n  ${problems.slice(0, 30).join("\n  ")}` +
        (problems.length > 30 ? `\n  ... and ${problems.length - 30} more` : "") +
        "\nBuild the model with the config the file was saved with (the run's config.json; " +
        "loadBackbone reads it from the file's metadata), or use a checkpoint of this model.",
    );
  }
  for (const [name, v] of Object.entries(vars)) {
    const t = loaded[name];
    let data: Float32Array | Int32Array;
    try {
      data = v.dtype === "int32" ? (t.data as Int32Array) : toFloat32(t);
    } catch (e) {
      throw new SafetensorsError(source, `${name}: ${(e as Error).message}`);
    }
    tf.tidy(() => v.assign(tf.tensor(data, v.shape, v.dtype)));
  }
}

function fmt(shape: number[]): string {
  return `[${shape.join(", ")}]`;
}
