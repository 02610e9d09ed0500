/**
 * What crosses the thread boundary of the data-parallel runner: the messages between the data-parallel main thread (`mod.ts`) and its workers (`worker.ts`).
 * Every request gets exactly one reply, in order: the reply of its type, or `error`.
 *
 * One step is three requests per worker: `keys` (EMA update, keys of the shard), `grads` (loss
 * and gradients against the keys of all shards, written into the worker's shared gradient
 * buffer), `apply` (the mean gradient from the shared mean buffer, and the mean ViT-BN buffers).
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { MocoConfig } from "../methods/mocov3.ts";
import type { OptimizerConfig } from "../train/optim.ts";
import type { ViTConfig } from "../model/vit.ts";

/** A float32 array and its shape. */
export interface ShapedArray {
  shape: number[];
  data: Float32Array;
}

/** Names and shapes of what a step exchanges, in buffer order: gradients, then ViT-BN buffers. */
export interface Layout {
  /** Trainable parameters (`mocoTrainable` names and order). */
  params: { name: string; shape: number[] }[];
  /** ViT-BN running buffers of the online backbone (empty without `mlpNorm: "bn"`). */
  buffers: { name: string; shape: number[] }[];
}

/** Main thread to worker. */
export type Request =
  | {
    type: "init";
    rank: number;
    workers: number;
    vit: Partial<ViTConfig> & { name: string };
    moco: Partial<MocoConfig>;
    optimizer: OptimizerConfig;
    seed: number;
    backend: "wasm" | "cpu";
    threads: number;
  }
  | { type: "buffers"; grad: SharedArrayBuffer; mean: SharedArrayBuffer }
  | { type: "keys"; shape: number[]; x1: Float32Array; x2: Float32Array; momentum: number }
  | { type: "grads"; keyShape: [number, number]; k1: Float32Array; k2: Float32Array }
  | { type: "apply"; apply: boolean; lr: number }
  | { type: "getState" }
  | { type: "setState"; tensors: Record<string, ShapedArray>; optimizerStep: number };

/** Worker to main thread. */
export type Reply =
  | { type: "ready"; layout: Layout; backend: string }
  | { type: "ok" }
  | { type: "keys"; shape: [number, number]; k1: Float32Array; k2: Float32Array }
  | { type: "grads"; loss: number }
  | { type: "state"; tensors: Record<string, ShapedArray>; optimizerStep: number }
  | { type: "error"; message: string };

/**
 * Copies variables out as float32 arrays (each its own buffer, so it can be transferred).
 * @example
 * ```ts
 * const arrays = readArrays(mocoState(model)); // { "base_encoder.cls_token": { shape, data } ... }
 * ```
 */
export function readArrays(vars: Record<string, tf.Tensor>): Record<string, ShapedArray> {
  const out: Record<string, ShapedArray> = {};
  for (const [name, v] of Object.entries(vars)) {
    out[name] = { shape: v.shape.slice(), data: new Float32Array(v.dataSync()) };
  }
  return out;
}

/**
 * Assigns `arrays` into the variables of the same names. Throws, before changing anything, unless
 * both have exactly the same names and shapes; `where` names the source in the message.
 */
export function assignArrays(
  vars: Record<string, tf.Variable>,
  arrays: Record<string, ShapedArray>,
  where: string,
): void {
  const problems: string[] = [];
  for (const [name, v] of Object.entries(vars)) {
    const a = arrays[name];
    if (!a) problems.push(`missing ${name} [${v.shape}]`);
    else if (a.shape.join(",") !== v.shape.join(",") || a.data.length !== v.size) {
      problems.push(`${name}: got [${a.shape}] (${a.data.length} values), expected [${v.shape}]`);
    }
  }
  for (const name of Object.keys(arrays)) if (!(name in vars)) problems.push(`unexpected ${name}`);
  if (problems.length) {
    throw new Error(
      `${where}: the state does not match the model (${problems.length} problem(s)): ` +
        `${problems.slice(0, 5).join("; ")}. Pass the state of the same model and optimiser.`,
    );
  }
  tf.tidy(() => {
    for (const [name, v] of Object.entries(vars)) {
      v.assign(tf.tensor(arrays[name].data, v.shape, v.dtype));
    }
  });
}
