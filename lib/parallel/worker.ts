/**
 * One data-parallel worker (a Deno Web Worker started by `mod.ts`): its own tfjs backend, a full
 * copy of the method's model and optimiser state, and shard `rank` of every batch. It runs the
 * method's own step, whose key gather meets the other workers at a barrier in shared memory
 * (`concat_all_gather`). It answers the requests of `protocol.ts` one at a time, in order; any
 * exception becomes an `error` reply.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../backends/mod.ts";
import { createFramework, type SslModel } from "../methods/mod.ts";
import type { Gather } from "../methods/two_view.ts";
import {
  applyGradients,
  createOptimizerState,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
} from "../optim/optim.ts";
import {
  assignArrays,
  barrier,
  type Layout,
  readArrays,
  type Reply,
  type Request,
} from "./protocol.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(msg: Reply, transfer?: Transferable[]): void;
}
const scope = self as unknown as WorkerScope;

let rank = 0;
let workers = 1;
let model: SslModel | undefined;
let params: Record<string, tf.Variable> = {};
let opt: OptimizerState | undefined;
let optCfg: OptimizerConfig | undefined;
let layout: Layout = { params: [], buffers: [] };
let gradView: Float32Array | undefined;
let meanView: Float32Array | undefined;
let barrierCtrl: Int32Array | undefined;

function need<T>(x: T | undefined, what: string): T {
  if (x === undefined) throw new Error(`worker ${rank}: ${what} before init`);
  return x;
}

/** Every tensor a checkpoint holds: model state and optimiser slots (`optim.*`). */
function allState(): Record<string, tf.Variable> {
  return {
    ...need(model, "state").state(),
    ...optimizerStateTensors(need(opt, "state")) as Record<string, tf.Variable>,
  };
}

/**
 * concat_all_gather over the workers: each writes its keys `[b, C]` into its rows of the shared
 * buffer, waits for all, and reads the keys of every shard `[N * b, C]`.
 */
function shardGather(room: Float32Array): Gather {
  return (keys) => {
    const [b, C] = keys[0].shape;
    const rows = workers * b;
    if (keys.length * rows * C > room.length) {
      throw new Error(`worker ${rank}: ${keys.length} key sets [${rows}, ${C}] do not fit`);
    }
    keys.forEach((k, j) => room.set(k.dataSync() as Float32Array, (j * rows + rank * b) * C));
    barrier(need(barrierCtrl, "gather"), workers);
    const all = keys.map((_, j) =>
      tf.tensor2d(room.slice(j * rows * C, (j + 1) * rows * C), [rows, C])
    );
    return { all, offset: rank * b };
  };
}

async function handle(msg: Request): Promise<[Reply, Transferable[]]> {
  switch (msg.type) {
    case "init": {
      rank = msg.rank;
      workers = msg.workers;
      const info = await initBackend({ backend: msg.backend, threads: msg.threads });
      model = createFramework(msg.framework, msg.vit, msg.heads, msg.seed);
      params = model.trainable();
      optCfg = msg.optimizer;
      opt = createOptimizerState(optCfg, params);
      layout = {
        params: Object.entries(params).map(([name, v]) => ({ name, shape: v.shape.slice() })),
        buffers: Object.entries(model.backbone.buffers).map(([name, v]) => ({
          name,
          shape: v.shape.slice(),
        })),
      };
      return [{ type: "ready", layout, backend: info.summary }, []];
    }
    case "buffers":
      gradView = new Float32Array(msg.grad);
      meanView = new Float32Array(msg.mean);
      barrierCtrl = new Int32Array(msg.barrier);
      return [{ type: "ok" }, []];
    case "step": {
      const m = need(model, "step");
      const out = need(gradView, "step");
      const shape = msg.shape as [number, number, number, number];
      const x1 = tf.tensor4d(msg.x1, shape), x2 = tf.tensor4d(msg.x2, shape);
      const gather = shardGather(new Float32Array(msg.gathered));
      let result;
      try {
        result = m.step(x1, x2, {
          momentum: msg.momentum,
          freezePrototypes: msg.freezePrototypes,
          gather,
        });
      } finally {
        tf.dispose([x1, x2]);
      }
      const { loss, grads } = result;
      try {
        let off = 0;
        for (const { name } of layout.params) {
          const g = grads[name];
          if (!g) throw new Error(`worker ${rank}: no gradient for trainable "${name}"`);
          out.set(g.dataSync() as Float32Array, off);
          off += g.size;
        }
        for (const { name } of layout.buffers) {
          const b = m.backbone.buffers[name];
          out.set(b.dataSync() as Float32Array, off);
          off += b.size;
        }
        return [{ type: "grads", loss: loss.dataSync()[0] }, []];
      } finally {
        tf.dispose([loss, ...Object.values(grads)]);
      }
    }
    case "apply": {
      const m = need(model, "apply");
      const mean = need(meanView, "apply");
      let off = 0;
      const grads: Record<string, tf.Tensor> = {};
      for (const { name, shape } of layout.params) {
        const n = params[name].size;
        // Read during applyGradients only (the cpu backend keeps the array it is given).
        if (msg.apply) grads[name] = tf.tensor(mean.subarray(off, off + n), shape);
        off += n;
      }
      try {
        if (msg.apply) {
          applyGradients(params, grads, need(opt, "apply"), need(optCfg, "apply"), msg.lr);
        }
      } finally {
        tf.dispose(Object.values(grads));
      }
      // The mean ViT-BN running statistics, also after a skipped update: workers stay identical.
      tf.tidy(() => {
        for (const { name, shape } of layout.buffers) {
          const b = m.backbone.buffers[name];
          b.assign(tf.tensor(mean.slice(off, off + b.size), shape));
          off += b.size;
        }
      });
      return [{ type: "ok" }, []];
    }
    case "getState": {
      const tensors = readArrays(allState());
      const transfer = Object.values(tensors).map((t) => t.data.buffer as ArrayBuffer);
      return [{ type: "state", tensors, optimizerStep: need(opt, "state").step }, transfer];
    }
    case "setState": {
      assignArrays(allState(), msg.tensors, `data-parallel worker ${rank} setState`);
      need(opt, "setState").step = msg.optimizerStep;
      return [{ type: "ok" }, []];
    }
  }
}

// Requests are handled strictly one after another, even though `init` awaits.
let queue: Promise<void> = Promise.resolve();
scope.onmessage = (e) => {
  queue = queue.then(async () => {
    try {
      const [reply, transfer] = await handle(e.data);
      scope.postMessage(reply, transfer);
    } catch (err) {
      const message = err instanceof Error ? `${err.message}` : String(err);
      scope.postMessage({ type: "error", message });
    }
  });
};
