/**
 * What crosses the thread boundary of the data-parallel runner: the messages between the
 * data-parallel main thread (`mod.ts`) and its workers (`worker.ts`). Every request gets exactly
 * one reply, in order: the reply of its type, or `error`.
 *
 * One step is two requests per worker: `step` (the method's own step on the worker's shard, whose
 * key gather meets the other workers at a barrier on shared memory; its gradients go into the
 * worker's shared gradient buffer), then `apply` (the mean gradient from the shared mean buffer,
 * and the mean ViT-BN buffers).
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import type { FrameworkName, HeadConfig } from "../methods/mod.ts";
import type { OptimizerConfig } from "../optim/optim.ts";
import type { ViTConfig } from "../model/vit.ts";

/** A float32 array and its shape. */
export interface ShapedArray {
  shape: number[];
  data: Float32Array;
}

/** Names and shapes of what a step exchanges, in buffer order: gradients, then ViT-BN buffers. */
export interface Layout {
  /** Trainable parameters (the method's `trainable()` names and order). */
  params: { name: string; shape: number[] }[];
  /** ViT-BN running buffers of the online backbone (empty without `mlpNorm: "batchnorm"`). */
  buffers: { name: string; shape: number[] }[];
}

/** Main thread to worker. */
export type Request =
  | {
    type: "init";
    rank: number;
    workers: number;
    framework: FrameworkName;
    vit: Partial<ViTConfig> & { name: string };
    heads: Partial<HeadConfig>;
    optimizer: OptimizerConfig;
    seed: number;
    backend: "wasm" | "cpu";
    threads: number;
  }
  | {
    type: "buffers";
    grad: SharedArrayBuffer;
    mean: SharedArrayBuffer;
    barrier: SharedArrayBuffer;
  }
  | {
    type: "step";
    shape: number[];
    x1: Float32Array;
    x2: Float32Array;
    momentum: number;
    /** SwAV: zero the prototypes' gradient (first epoch). */
    freezePrototypes: boolean;
    /** Room for the gathered keys of every shard (float32). */
    gathered: SharedArrayBuffer;
  }
  | { type: "apply"; apply: boolean; lr: number }
  | { type: "getState" }
  | { type: "setState"; tensors: Record<string, ShapedArray>; optimizerStep: number };

/** Worker to main thread. */
export type Reply =
  | { type: "ready"; layout: Layout; backend: string }
  | { type: "ok" }
  | { type: "grads"; loss: number }
  | { type: "state"; tensors: Record<string, ShapedArray>; optimizerStep: number }
  | { type: "error"; message: string };

/**
 * Waits until all `workers` have arrived (a sense-reversing barrier on `ctrl = [arrived,
 * generation]` in shared memory; blocks the worker thread, which only workers may do).
 *
 * @example
 * ```ts
 * const ctrl = new Int32Array(new SharedArrayBuffer(8)); // shared by the N workers
 * barrier(ctrl, N); // in each worker: returns once all N have called it
 * ```
 */
export function barrier(ctrl: Int32Array, workers: number): void {
  const generation = Atomics.load(ctrl, 1);
  if (Atomics.add(ctrl, 0, 1) === workers - 1) {
    Atomics.store(ctrl, 0, 0);
    Atomics.add(ctrl, 1, 1);
    Atomics.notify(ctrl, 1);
  } else {
    while (Atomics.load(ctrl, 1) === generation) Atomics.wait(ctrl, 1, generation);
  }
}

/**
 * Copies variables out as float32 arrays (each its own buffer, so it can be transferred).
 * @example
 * ```ts
 * const arrays = readArrays(momentumState(model));
 * // { "base_encoder.cls_token": { shape, data } ... }
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
