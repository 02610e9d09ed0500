/**
 * Data-parallel steps across Deno Web Workers, for every method: each worker has its own
 * single-threaded tfjs backend and a full copy of the model and optimiser state, and processes
 * `B / N` images of every batch. On a machine with N cores this runs the kernels that
 * tfjs-backend-wasm would run on one thread on N.
 *
 * One step, as the official multi-GPU MoCo v3 code:
 * 1. worker w runs the method's own step (`SslModel.step`) on its shard; MoCo v3's key gather
 *    (`concat_all_gather`) writes the shard's keys `[B/N, C]` into shared memory and waits at a
 *    barrier for the other workers, so each shard's queries see the keys of the whole batch, the
 *    positive of its query i being key `w * B/N + i`; SwAV gathers its prototype scores the same
 *    way, so that Sinkhorn's codes are those of the whole batch (`distributed_sinkhorn`); BYOL
 *    gathers nothing (no negatives), and SimCLR takes its negatives within the shard;
 * 2. each worker writes its gradients (and ViT-BN running buffers) into a SharedArrayBuffer;
 * 3. the main thread averages gradients, buffers and losses over the workers into a shared mean
 *    buffer; every worker applies the same optimiser update, so the copies stay bit-identical.
 *
 * One difference from the official code: BatchNorm in the projector and predictor normalises
 * each shard with its own batch statistics (per-GPU BN), where the official code uses SyncBN over
 * the whole batch. The loss is therefore not the single-process loss of the whole batch; with one
 * worker it is exactly that. ViT-BN running statistics (`mlpNorm: "batchnorm"`) are averaged over
 * the workers after every step (the mean of the shard means is the batch mean; the variance misses
 * the spread between shard means).
 *
 * @example
 * ```ts
 * import { createDataParallel } from "./parallel/mod.ts";
 * const dp = await createDataParallel({
 *   workers: 2, seed: 0, optimizer: { name: "adamw", weightDecay: 0.1 }, framework: "mocov3",
 *   vit: { name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 },
 *   heads: { hidden: 64, outDim: 16 },
 * });
 * const { loss } = await dp.step(x1, x2, { lr: 1e-3, momentum: 0.99 }); // x1, x2: [B, 8, 8, 1]
 * const state = await dp.getState(); // for a checkpoint
 * dp.close();
 * ```
 * @module
 */
import type * as tf from "@tensorflow/tfjs-core";
import type { FrameworkName, HeadConfig } from "../methods/mod.ts";
import { HEAD_DEFAULTS } from "../methods/two_view.ts";
import type { OptimizerConfig } from "../optim/optim.ts";
import type { ViTConfig } from "../model/vit.ts";
import type { Layout, Reply, Request, ShapedArray } from "./protocol.ts";

export { assignArrays, readArrays, type ShapedArray } from "./protocol.ts";

/** Options of {@link createDataParallel}. */
export interface DataParallelOptions {
  /** Number of workers N (>= 1); every batch size must be a multiple of N. */
  workers: number;
  /** The method (default `mocov3`). */
  framework?: FrameworkName;
  /** Backbone config (as `createFramework`). */
  vit: Partial<ViTConfig> & { name: string };
  /** Heads and loss (as `createFramework`). */
  heads?: Partial<HeadConfig>;
  /** Optimiser of every worker (`applyGradients`). */
  optimizer: OptimizerConfig;
  /** Model seed: all workers start from `createFramework(framework, vit, heads, seed)`. */
  seed?: number;
  /** Backend of every worker. Default `wasm`. */
  backend?: "wasm" | "cpu";
  /** Backend threads per worker (wasm). Default 1. */
  threads?: number;
}

/** Per-step settings: the schedule's values of this iteration. */
export interface DataParallelStepOptions {
  /** Learning rate of this update. */
  lr: number;
  /** EMA momentum of the key encoder for this iteration. */
  momentum: number;
  /** SwAV: zero the prototypes' gradient (the first epoch). Default false. */
  freezePrototypes?: boolean;
  /** Apply the update even if the loss or a gradient is non-finite. Default false. */
  applyNonFinite?: boolean;
}

/** What one data-parallel step reports. */
export interface DataParallelStepResult {
  /** The mean of the workers' losses (each the mean over its shard's queries). */
  loss: number;
  /** Whether the update was applied (false when non-finite, unless `applyNonFinite`). */
  applied: boolean;
}

/** The full training state of one worker, by checkpoint name (model and `optim.*` slots). */
export interface DataParallelState {
  tensors: Record<string, ShapedArray>;
  /** Updates applied so far (`OptimizerState.step`). */
  optimizerStep: number;
}

/** A running set of data-parallel workers; see the module doc. */
export interface DataParallel {
  /** Number of workers. */
  workers: number;
  /** The backend summary of worker 0 (e.g. "wasm (SIMD, 1 thread)"). */
  backend: string;
  /**
   * The first half of a step on views `x1, x2 [B, H, W, C]` (B a multiple of `workers`): the
   * method's step on every shard; returns the mean loss and the mean gradients by trainable name
   * (copies). Follow it with {@link DataParallel.apply}.
   */
  grads(
    x1: tf.Tensor4D,
    x2: tf.Tensor4D,
    opts: { momentum: number; freezePrototypes?: boolean },
  ): Promise<{ loss: number; grads: Record<string, Float32Array> }>;
  /** The second half of a step: every worker applies the mean gradient (if `apply`) at `lr`. */
  apply(opts: { lr: number; apply: boolean }): Promise<void>;
  /**
   * One whole step: {@link DataParallel.grads}, then {@link DataParallel.apply} unless the loss
   * or a gradient is non-finite.
   */
  step(
    x1: tf.Tensor4D,
    x2: tf.Tensor4D,
    opts: DataParallelStepOptions,
  ): Promise<DataParallelStepResult>;
  /** The mean gradient of the last step, by trainable name (copies). */
  lastGradients(): Record<string, Float32Array>;
  /** The state of worker `rank` (default 0; all workers hold the same). */
  getState(rank?: number): Promise<DataParallelState>;
  /** Sets the state of every worker (e.g. from a checkpoint); same names and shapes required. */
  setState(state: DataParallelState): Promise<void>;
  /** Terminates every worker; pending and later calls reject. Safe to call twice. */
  close(): void;
}

interface Pending {
  resolve: (r: Reply) => void;
  reject: (e: Error) => void;
}

/**
 * Starts `opts.workers` workers, each building the same model and optimiser state, and resolves
 * once all are ready; rejects (and terminates them) if any fails to start.
 *
 * @example
 * ```ts
 * const dp = await createDataParallel({ workers: 2, vit, heads, optimizer, seed: 0 });
 * try { await dp.step(x1, x2, { lr, momentum }); } finally { dp.close(); }
 * ```
 */
export async function createDataParallel(opts: DataParallelOptions): Promise<DataParallel> {
  const N = opts.workers;
  if (!(Number.isInteger(N) && N >= 1)) {
    throw new Error(`parallel: workers must be an integer >= 1; got ${N}`);
  }
  const backend = opts.backend ?? "wasm";
  if (backend !== "wasm" && backend !== "cpu") {
    throw new Error(`parallel: workers run on the wasm or cpu backend; got "${backend}"`);
  }
  const heads = opts.heads ?? {};
  const workers: Worker[] = [];
  const queues: Pending[][] = [];
  let failure: Error | undefined;

  const fail = (e: Error) => {
    failure ??= e;
    for (const q of queues) for (const p of q.splice(0)) p.reject(e);
    for (const w of workers) w.terminate();
  };
  const call = (rank: number, msg: Request, transfer: Transferable[] = []): Promise<Reply> => {
    if (failure) return Promise.reject(failure);
    return new Promise<Reply>((resolve, reject) => {
      queues[rank].push({ resolve, reject });
      workers[rank].postMessage(msg, transfer);
    });
  };
  /** Replies of the given type from every worker (or the first error, which stops them all). */
  const all = async <T extends Reply["type"]>(
    type: T,
    msg: (rank: number) => [Request, Transferable[]?],
  ): Promise<Extract<Reply, { type: T }>[]> => {
    const replies = await Promise.all(
      workers.map((_, r) => {
        const [m, t] = msg(r);
        return call(r, m, t);
      }),
    );
    return replies.map((r, rank) => {
      if (r.type !== type) {
        throw new Error(`parallel: worker ${rank} answered "${r.type}" where "${type}" was due`);
      }
      return r as Extract<Reply, { type: T }>;
    });
  };

  for (let rank = 0; rank < N; rank++) {
    const w = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    const q: Pending[] = [];
    w.onmessage = (e: MessageEvent<Reply>) => {
      const p = q.shift();
      if (!p) return;
      if (e.data.type === "error") {
        const err = new Error(`data-parallel worker ${rank}: ${e.data.message}`);
        p.reject(err);
        // A failed worker may be half-way through a step: the copies are no longer in sync.
        fail(err);
      } else p.resolve(e.data);
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault();
      fail(new Error(`data-parallel worker ${rank} crashed: ${e.message}`));
    };
    w.onmessageerror = () => fail(new Error(`data-parallel worker ${rank}: unreadable message`));
    workers.push(w);
    queues.push(q);
  }

  let layout: Layout;
  let backendSummary: string;
  let gradBufs: Float32Array[];
  let mean: Float32Array;
  let nParams = 0;
  try {
    const ready = await all("ready", (rank) => [{
      type: "init",
      rank,
      workers: N,
      framework: opts.framework ?? "mocov3",
      vit: opts.vit,
      heads,
      optimizer: opts.optimizer,
      seed: opts.seed ?? 0,
      backend,
      threads: opts.threads ?? 1,
    }]);
    layout = ready[0].layout;
    backendSummary = ready[0].backend;
    const size = (s: number[]) => s.reduce((a, b) => a * b, 1);
    nParams = layout.params.reduce((n, p) => n + size(p.shape), 0);
    const total = nParams + layout.buffers.reduce((n, p) => n + size(p.shape), 0);
    const sabs = workers.map(() => new SharedArrayBuffer(4 * total));
    const meanSab = new SharedArrayBuffer(4 * total);
    gradBufs = sabs.map((s) => new Float32Array(s));
    mean = new Float32Array(meanSab);
    const barrier = new SharedArrayBuffer(8);
    await all("ok", (rank) => [{ type: "buffers", grad: sabs[rank], mean: meanSab, barrier }]);
  } catch (e) {
    fail(e as Error);
    throw e;
  }

  let closed = false;
  // The widest rows a step gathers: keys [b, outDim] (MoCo v3), prototype scores [b, K] (SwAV).
  const allHeads = { ...HEAD_DEFAULTS, ...heads };
  const keyWidth = Math.max(allHeads.outDim, allHeads.prototypes);
  let gathered: SharedArrayBuffer | undefined;
  const dp: DataParallel = {
    workers: N,
    backend: backendSummary,
    async grads(x1, x2, stepOpts) {
      const [B, H, W, C] = x1.shape;
      if (x2.shape.join(",") !== x1.shape.join(",") || B % N !== 0) {
        throw new Error(
          `parallel.step: expected two views of the same shape [B, H, W, C] with B a multiple ` +
            `of ${N} workers; got [${x1.shape}] and [${x2.shape}]`,
        );
      }
      const b = B / N, per = b * H * W * C;
      // Room for two gathered sets [B, keyWidth] (MoCo v3's k1 and k2, SwAV's s1 and s2).
      const keyFloats = 2 * B * keyWidth;
      if (!gathered || gathered.byteLength < 4 * keyFloats) {
        gathered = new SharedArrayBuffer(4 * keyFloats);
      }
      const room = gathered;
      const [d1, d2] = await Promise.all([x1.data(), x2.data()]) as Float32Array[];
      const replies = await all("grads", (r) => {
        const s1 = d1.slice(r * per, (r + 1) * per), s2 = d2.slice(r * per, (r + 1) * per);
        return [
          {
            type: "step",
            shape: [b, H, W, C],
            x1: s1,
            x2: s2,
            momentum: stepOpts.momentum,
            freezePrototypes: stepOpts.freezePrototypes ?? false,
            gathered: room,
          },
          [s1.buffer, s2.buffer],
        ];
      });
      // Mean over workers, in worker order (the same sums whatever the timing).
      const total = mean.length;
      mean.set(gradBufs[0]);
      for (let r = 1; r < N; r++) {
        const g = gradBufs[r];
        for (let i = 0; i < total; i++) mean[i] += g[i];
      }
      if (N > 1) { for (let i = 0; i < total; i++) mean[i] /= N; }
      let loss = 0;
      for (const g of replies) loss += g.loss;
      return { loss: loss / N, grads: dp.lastGradients() };
    },
    async apply({ lr, apply }) {
      await all("ok", () => [{ type: "apply", apply, lr }]);
    },
    async step(x1, x2, stepOpts) {
      const { loss, grads } = await dp.grads(x1, x2, stepOpts);
      const finite = Number.isFinite(loss) &&
        Object.values(grads).every((g) => g.every(Number.isFinite));
      const applied = finite || !!stepOpts.applyNonFinite;
      await dp.apply({ lr: stepOpts.lr, apply: applied });
      return { loss, applied };
    },
    lastGradients() {
      const out: Record<string, Float32Array> = {};
      let off = 0;
      for (const { name, shape } of layout.params) {
        const n = shape.reduce((a, c) => a * c, 1);
        out[name] = mean.slice(off, off + n);
        off += n;
      }
      return out;
    },
    async getState(rank = 0) {
      if (!(Number.isInteger(rank) && rank >= 0 && rank < N)) {
        throw new Error(`parallel.getState: rank must be in 0..${N - 1}; got ${rank}`);
      }
      const r = await call(rank, { type: "getState" });
      if (r.type !== "state") throw new Error(`parallel: worker ${rank} answered "${r.type}"`);
      return { tensors: r.tensors, optimizerStep: r.optimizerStep };
    },
    async setState(state) {
      // Structured clone copies the arrays for each worker; the caller keeps its own.
      await all("ok", () => [{ type: "setState", ...state }]);
    },
    close() {
      if (closed) return;
      closed = true;
      fail(new Error("parallel: the workers were closed"));
    },
  };
  return dp;
}
