/**
 * One data-parallel worker (a Deno Web Worker started by `mod.ts`): its own tfjs backend, a full
 * MoCo v3 model and optimiser state, and shard `rank` of every batch. It answers the requests of
 * `protocol.ts` one at a time, in order; any exception becomes an `error` reply.
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { initBackend } from "../backend.ts";
import {
  contrastiveLoss,
  createMoCo,
  type MoCo,
  mocoState,
  mocoTrainable,
  momentumTargets,
  onlineGrads,
} from "../methods/mocov3.ts";
import {
  applyGradients,
  createOptimizerState,
  type OptimizerConfig,
  type OptimizerState,
  optimizerStateTensors,
} from "../train/optim.ts";
import { assignArrays, type Layout, readArrays, type Reply, type Request } from "./protocol.ts";

interface WorkerScope {
  onmessage: ((e: MessageEvent<Request>) => void) | null;
  postMessage(msg: Reply, transfer?: Transferable[]): void;
}
const scope = self as unknown as WorkerScope;

let rank = 0;
let model: MoCo | undefined;
let params: Record<string, tf.Variable> = {};
let opt: OptimizerState | undefined;
let optCfg: OptimizerConfig | undefined;
let layout: Layout = { params: [], buffers: [] };
let gradView: Float32Array | undefined;
let meanView: Float32Array | undefined;
/** This step's shard of both views, kept from `keys` to `apply`. */
let views: [tf.Tensor4D, tf.Tensor4D] | undefined;

function need<T>(x: T | undefined, what: string): T {
  if (x === undefined) throw new Error(`worker ${rank}: ${what} before init`);
  return x;
}

/** Every tensor a checkpoint holds: model state and optimiser slots (`optim.*`). */
function allState(): Record<string, tf.Variable> {
  return {
    ...mocoState(need(model, "state")),
    ...optimizerStateTensors(need(opt, "state")) as Record<string, tf.Variable>,
  };
}

function dropViews(): void {
  if (views) tf.dispose(views);
  views = undefined;
}

async function handle(msg: Request): Promise<[Reply, Transferable[]]> {
  switch (msg.type) {
    case "init": {
      rank = msg.rank;
      const info = await initBackend({ backend: msg.backend, threads: msg.threads });
      model = createMoCo(msg.vit, msg.moco, msg.seed);
      params = mocoTrainable(model);
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
      return [{ type: "ok" }, []];
    case "keys": {
      const m = need(model, "keys");
      dropViews();
      const shape = msg.shape as [number, number, number, number];
      views = [tf.tensor4d(msg.x1, shape), tf.tensor4d(msg.x2, shape)];
      const [k1, k2] = momentumTargets(m, views[0], views[1], msg.momentum);
      const d1 = new Float32Array(k1.dataSync()), d2 = new Float32Array(k2.dataSync());
      const kshape = k1.shape.slice() as [number, number];
      tf.dispose([k1, k2]);
      return [{ type: "keys", shape: kshape, k1: d1, k2: d2 }, [d1.buffer, d2.buffer]];
    }
    case "grads": {
      const m = need(model, "grads");
      const out = need(gradView, "grads");
      if (!views) throw new Error(`worker ${rank}: grads without the keys request of this step`);
      const [x1, x2] = views;
      const k1 = tf.tensor2d(msg.k1, msg.keyShape), k2 = tf.tensor2d(msg.k2, msg.keyShape);
      // The positives of this shard's queries are its own keys inside the gathered ones.
      const offset = rank * x1.shape[0];
      const T = m.config.temperature;
      const { loss, grads } = onlineGrads(
        m,
        x1,
        x2,
        k1,
        k2,
        (q, k) => contrastiveLoss(q, k, T, offset),
      );
      tf.dispose([k1, k2]);
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
      dropViews();
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
