/**
 * One evaluation of a backbone under the paper's protocols (kNN, linear probe, fine-tuning),
 * with the baselines every result reads against (raw pixels, the same backbone at random
 * initialisation), each appending rows to the results table. `deno task eval` and the
 * notebooks call {@link evaluate}.
 *
 * @example
 * ```ts
 * import { evaluate } from "./run.ts";
 * const rows = await evaluate({ checkpoint: "data/runs/x/backbone.safetensors", protocols: ["knn"] });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { loadBackbone } from "../train/checkpoint.ts";
import { type Dataset, type DatasetName, loadDataset } from "../data/mod.ts";
import {
  checkpointCacheKey,
  datasetStats,
  extractFeatures,
  type FeatureSet,
  rawPixelFeatures,
  type Readout,
} from "./features.ts";
import { createViT, disposeViT, type ViT } from "../model/vit.ts";
import { defaultWarmupEpochs, finetune } from "./finetune.ts";
import { KNN_TEMPERATURE, knnClassify } from "./knn.ts";
import { linearProbe } from "./linear.ts";
import { appendResult, type EvalRow, RESULTS_FILE } from "./results.ts";
import type { StopSignal } from "../core/stop.ts";

/** The protocols {@link evaluate} runs. */
export const PROTOCOLS = ["knn", "linear", "finetune"] as const;
/** A protocol name. */
export type Protocol = typeof PROTOCOLS[number];

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /** A backbone or training checkpoint (safetensors); absent: only baselines. */
  checkpoint?: string;
  /** Name prefix to strip (e.g. `module.base_encoder.`); auto-detected by default. */
  prefix?: string;
  protocols?: Protocol[];
  dataset?: DatasetName;
  dataRoot?: string;
  /** Run id recorded in the table (default: the checkpoint's directory name). */
  runId?: string;
  /** Also evaluate raw pixels and the same backbone at random init. */
  baselines?: boolean;
  /** kNN neighbour counts. Default [20, 200]. */
  k?: number[];
  /**
   * Features of kNN and the linear probe (`extractFeatures`); default `pooled`, MoCo v3's class
   * token. Recorded in the rows' params when not `pooled`; raw pixels ignore it.
   */
  readout?: Readout;
  /** Linear-probe epochs (paper: 90) and lr. */
  linearEpochs?: number;
  linearLr?: number;
  /** Fine-tuning epochs, lr, and training images used (0: all). */
  finetuneEpochs?: number;
  finetuneLr?: number;
  finetuneTrainSize?: number;
  /** Fine-tuning warmup epochs (default: 5, at most a tenth of the epochs). */
  finetuneWarmup?: number;
  /** Feature cache directory. Default `data/cache/features`. */
  cacheDir?: string;
  resultsFile?: string;
  /** Backend name recorded in the table. */
  backend?: string;
  print?: (line: string) => void;
  /**
   * Checked between batches of every phase: once `stop` is set, a `StoppedError` is thrown; the
   * rows of the protocols that finished before are appended already, the stopped one adds none.
   */
  signal?: StopSignal;
}

/** Runs the protocols and baselines; appends and returns the rows (accuracies as fractions). */
export async function evaluate(opts: EvaluateOptions): Promise<EvalRow[]> {
  const print = opts.print ?? ((s: string) => console.log(s));
  const protocols = opts.protocols ?? ["knn", "linear"];
  const dataset = opts.dataset ?? "fmnist";
  const resultsFile = opts.resultsFile ?? RESULTS_FILE;
  const cacheDir = opts.cacheDir ?? "data/cache/features";
  const backend = opts.backend ?? tf.getBackend();
  const [train, test] = await Promise.all(
    (["train", "test"] as const).map((split) =>
      loadDataset({ name: dataset, split, root: opts.dataRoot })
    ),
  );
  const stats = datasetStats(train);
  const readout = opts.readout ?? "pooled";
  const rows: EvalRow[] = [];
  const record = async (row: Omit<EvalRow, "dataset" | "backend">) => {
    const full = { ...row, dataset, backend };
    await appendResult(full, resultsFile);
    rows.push(full);
    print(
      `${row.run_id.padEnd(24)} ${row.protocol.padEnd(10)} top-1 ${(100 * row.top1).toFixed(2)}% ` +
        `top-5 ${(100 * row.top5).toFixed(2)}% (${row.seconds.toFixed(1)} s)`,
    );
  };

  const runFeatures = async (
    runId: string,
    checkpoint: string,
    tr: FeatureSet,
    te: FeatureSet,
    readoutParam: { readout?: Readout } = {},
  ) => {
    if (protocols.includes("knn")) {
      print(`${runId}: kNN of ${te.labels.length} test against ${tr.labels.length} train rows...`);
      const t0 = performance.now();
      const res = await knnClassify(tr, te, {
        k: opts.k ?? [20, 200],
        temperature: KNN_TEMPERATURE,
        signal: opts.signal,
      });
      const seconds = (performance.now() - t0) / 1000;
      for (const r of res) {
        await record({
          run_id: runId,
          checkpoint,
          protocol: `knn-${r.k}`,
          params: { k: r.k, temperature: KNN_TEMPERATURE, ...readoutParam },
          top1: r.top1,
          top5: r.top5,
          seconds,
        });
      }
    }
    if (protocols.includes("linear")) {
      const epochs = opts.linearEpochs ?? 90;
      const lr = opts.linearLr ?? 0.1;
      print(`${runId}: linear probe, ${epochs} epochs...`);
      const res = await linearProbe(tr, te, { epochs, lr, signal: opts.signal });
      await record({
        run_id: runId,
        checkpoint,
        protocol: "linear",
        params: { epochs, lr, batch: 256, momentum: 0.9, ...readoutParam },
        top1: res.top1,
        top5: res.top5,
        seconds: res.seconds,
      });
    }
  };

  const runBackbone = async (runId: string, checkpoint: string, model: ViT, cacheKey?: string) => {
    const feats = async (ds: Dataset) =>
      await extractFeatures(model, ds, {
        mean: stats.mean,
        std: stats.std,
        cacheDir: cacheKey ? cacheDir : undefined,
        cacheKey,
        readout,
        signal: opts.signal,
      });
    if (protocols.includes("knn") || protocols.includes("linear")) {
      const param = readout === "pooled" ? {} : { readout };
      await runFeatures(runId, checkpoint, await feats(train), await feats(test), param);
    }
    if (protocols.includes("finetune")) {
      const epochs = opts.finetuneEpochs ?? 5;
      const lr = opts.finetuneLr ?? 1e-3;
      const n = opts.finetuneTrainSize ?? 0;
      const warmup = opts.finetuneWarmup ?? defaultWarmupEpochs(epochs);
      const sub = n > 0 && n < train.length
        ? {
          ...train,
          length: n,
          images: train.images.subarray(0, n * imageSize(train)),
          labels: train.labels.subarray(0, n),
        }
        : train;
      print(`${runId}: fine-tuning, ${epochs} epochs on ${sub.length} images...`);
      const res = await finetune(model, sub, test, {
        epochs,
        lr,
        warmupEpochs: warmup,
        mean: stats.mean,
        std: stats.std,
        signal: opts.signal,
      });
      await record({
        run_id: runId,
        checkpoint,
        protocol: "finetune",
        params: { epochs, lr, warmup, train_size: sub.length },
        top1: res.top1,
        top5: res.top5,
        seconds: res.seconds,
      });
    }
  };

  let config: ViT["config"] | undefined;
  if (opts.checkpoint) {
    const model = await loadBackbone(opts.checkpoint, { prefix: opts.prefix });
    config = model.config;
    const runId = opts.runId ?? runIdOf(opts.checkpoint);
    try {
      await runBackbone(runId, opts.checkpoint, model, await checkpointCacheKey(opts.checkpoint));
    } finally {
      disposeViT(model);
    }
  }
  if (opts.baselines) {
    const raw = [rawPixelFeatures(train), rawPixelFeatures(test)];
    const t0 = performance.now();
    await runFeatures("raw-pixels", "", raw[0], raw[1]);
    print(`raw-pixel baseline: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    if (config) {
      const random = createViT(config, 0);
      try {
        await runBackbone(`random-init:${config.name}`, "", random);
      } finally {
        disposeViT(random);
      }
    }
  }
  return rows;
}

function imageSize(ds: Dataset): number {
  return ds.height * ds.width * ds.channels;
}

/** The run id of a checkpoint: its directory's name (`data/runs/x/backbone.safetensors` -> x). */
export function runIdOf(checkpoint: string): string {
  const parts = checkpoint.split(/[\\/]/).filter(Boolean);
  return parts.length > 1 ? parts[parts.length - 2] : parts[0] ?? "checkpoint";
}
