/**
 * One evaluation of a backbone under the paper's protocols (kNN, linear probe, fine-tuning),
 * with the baselines every result reads against (raw pixels, the same backbone at random
 * initialisation), each appending rows to the results table. `deno task eval` and the
 * notebooks call {@link evaluate}.
 *
 * @example
 * ```ts
 * import { evaluate } from "./eval_run.ts";
 * const rows = await evaluate({ checkpoint: "data/runs/x/backbone.safetensors", protocols: ["knn"] });
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { CheckpointError, isPthPath, loadBackbone } from "../train/checkpoint.ts";
import { RUN_FILES } from "../train/rundir.ts";
import { pathExists } from "../io/exists.ts";
import { ConfigError } from "../core/errors.ts";
import { type Dataset, type DatasetName, loadDataset, splitLine } from "../data/mod.ts";
import {
  checkpointCacheKey,
  extractFeatures,
  type FeatureSet,
  rawPixelFeatures,
  type Readout,
} from "../eval/features.ts";
import { datasetStats } from "../data/stats.ts";
import { createViT, disposeViT, type ViT } from "../model/vit.ts";
import { defaultWarmupEpochs, finetune } from "../eval/finetune.ts";
import { KNN_TEMPERATURE, knnClassify } from "../eval/knn.ts";
import { linearProbe } from "../eval/linear.ts";
import { appendResult, type EvalRow, RESULTS_FILE } from "../eval/results.ts";
import {
  checkUmapPoints,
  type FeatureMapOptions,
  UMAP_DEFAULTS,
  writeCheckpointMaps,
} from "../viz/umap.ts";
import type { StopSignal } from "../core/stop.ts";

/** The protocols {@link evaluate} runs. */
export const PROTOCOLS = ["knn", "linear", "finetune"] as const;
/** A protocol name. */
export type Protocol = typeof PROTOCOLS[number];

/** Options of {@link evaluate}. */
export interface EvaluateOptions {
  /**
   * A backbone or training checkpoint (safetensors), or a run directory (its
   * `backbone.safetensors`, see {@link checkpointFile}); absent: only baselines.
   */
  checkpoint?: string;
  /** Name prefix to strip (e.g. `module.base_encoder.`); auto-detected by default. */
  prefix?: string;
  protocols?: Protocol[];
  dataset?: DatasetName;
  dataRoot?: string;
  /** Resize the dataset's images to this square size (default: their own size). */
  imageSize?: number;
  /** Convert the dataset's images to 1 or 3 channels (default: their own). */
  channels?: 1 | 3;
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
  /**
   * Also draw UMAP maps of the checkpoint's test features beside its random initialisation
   * (`writeCheckpointMaps`: a stratified sample, default 5,000 images, with `readout`), written
   * next to the checkpoint; `true` for the defaults. Needs `checkpoint`.
   */
  umap?: boolean | FeatureMapOptions;
  print?: (line: string) => void;
  /**
   * Checked between batches of every phase: once `stop` is set, a `StoppedError` is thrown; the
   * rows of the protocols that finished before are appended already, the stopped one adds none.
   */
  signal?: StopSignal;
}

/** Runs the protocols and baselines; appends and returns the rows (accuracies as fractions). */
export async function evaluate(opts: EvaluateOptions): Promise<EvalRow[]> {
  // The backbone first, so that the data is loaded with its channel count (an RGB checkpoint,
  // such as the official MoCo v3 ViT-S, sees gray images as RGB) and a bad file fails early.
  const print = opts.print ?? ((s: string) => console.log(s));
  const checkpoint = opts.checkpoint && await checkpointFile(opts.checkpoint, print);
  const model = checkpoint ? await loadBackbone(checkpoint, { prefix: opts.prefix }) : undefined;
  try {
    return await evaluateBackbone({ ...opts, checkpoint: checkpoint || undefined }, model);
  } finally {
    if (model) disposeViT(model);
  }
}

/** {@link evaluate} with the checkpoint's backbone loaded (`undefined` without a checkpoint). */
async function evaluateBackbone(
  opts: EvaluateOptions,
  model: ViT | undefined,
): Promise<EvalRow[]> {
  const print = opts.print ?? ((s: string) => console.log(s));
  const protocols = opts.protocols ?? ["knn", "linear"];
  const dataset = opts.dataset ?? "fmnist";
  const resultsFile = opts.resultsFile ?? RESULTS_FILE;
  const cacheDir = opts.cacheDir ?? "data/cache/features";
  const backend = opts.backend ?? tf.getBackend();
  // One split after the other, so that the train split's errors come first. The images are
  // converted to the checkpoint's size and channels (gray images reach an RGB model as RGB)
  // unless --image-size / --channels say otherwise.
  const load = (split: "train" | "test") =>
    loadDataset({
      name: dataset,
      split,
      root: opts.dataRoot,
      imageSize: opts.imageSize ?? model?.config.imageSize,
      channels: opts.channels ?? model?.config.channels as 1 | 3 | undefined,
    });
  const train = await load("train");
  const test = await load("test");
  const line = splitLine(train, test, opts.dataRoot);
  if (line) print(line);
  if (model && (opts.imageSize === undefined || opts.channels === undefined)) {
    print(
      `data: ${dataset} read at ${train.height}x${train.width}x${train.channels}, the ` +
        "checkpoint's input (--image-size and --channels override)",
    );
  }
  // An ImageFolder's rows say which split they were measured on.
  const splitParam = train.splitRule ? { split: train.splitRule } : {};
  const stats = datasetStats(train);
  const readout = opts.readout ?? "pooled";
  const umap = opts.umap ? { readout, ...(opts.umap === true ? {} : opts.umap), stats } : undefined;
  if (umap) {
    if (!opts.checkpoint) {
      throw new ConfigError("the UMAP maps need a checkpoint: give --checkpoint");
    }
    const points = Math.min(umap.points ?? UMAP_DEFAULTS.points, test.length);
    checkUmapPoints(points, umap.nNeighbors); // before any protocol runs
  }
  const rows: EvalRow[] = [];
  const record = async (row: Omit<EvalRow, "dataset" | "backend">) => {
    const params = typeof row.params === "string" ? row.params : { ...row.params, ...splitParam };
    const full = { ...row, params, dataset, backend };
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
  if (opts.checkpoint && model) {
    config = model.config;
    const checkpoint = opts.checkpoint;
    const runId = opts.runId ?? runIdOf(checkpoint);
    checkInputSize(model.config, train, checkpoint);
    await runBackbone(runId, checkpoint, model, await checkpointCacheKey(checkpoint));
    if (umap) {
      const m = await writeCheckpointMaps(model, checkpoint, test, umap);
      print(`UMAP maps (${m.points} points each, ${m.seconds.toFixed(1)} s): ${m.html}`);
      print(m.png ? `UMAP maps: ${m.png}` : `UMAP maps: ${m.warning} (the HTML is written)`);
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

/**
 * The safetensors file to evaluate for `path`: the path itself, or for a run directory its
 * `backbone.safetensors` (else its `checkpoint.safetensors`), which `print` names. A directory
 * that holds neither is a {@link CheckpointError} that says what to give.
 *
 * @example
 * ```ts
 * await checkpointFile("data/runs/demo"); // "data/runs/demo/backbone.safetensors"
 * ```
 */
export async function checkpointFile(
  path: string,
  print: (line: string) => void = () => {},
): Promise<string> {
  const isDir = await Deno.stat(path).then((s) => s.isDirectory, () => false);
  if (!isDir) return path;
  for (const name of [RUN_FILES.backbone, RUN_FILES.checkpoint]) {
    const file = `${path.replace(/\/+$/, "")}/${name}`;
    if (await pathExists(file)) {
      print(`checkpoint: ${file}`);
      return file;
    }
  }
  throw new CheckpointError(
    `--checkpoint ${path} is a directory without ${RUN_FILES.backbone} or ` +
      `${RUN_FILES.checkpoint}: give a run directory that has them, or a .safetensors file`,
  );
}

/**
 * Refuses a dataset whose images do not fit the backbone, saying which flags convert them (the
 * model would otherwise fail deep in its forward pass).
 */
function checkInputSize(cfg: ViT["config"], ds: Dataset, checkpoint: string): void {
  const s = cfg.imageSize, c = cfg.channels;
  if (ds.height === s && ds.width === s && ds.channels === c) return;
  const flags = [
    ds.height !== s || ds.width !== s ? `--image-size ${s}` : "",
    ds.channels !== c ? `--channels ${c}` : "",
  ].filter(Boolean).join(" ");
  throw new ConfigError(
    `${checkpoint} takes ${s}x${s}x${c} images but ${ds.name} has ${ds.height}x${ds.width}x` +
      `${ds.channels}: give the --dataset it was pretrained on (its run's config.json names it, ` +
      `with any --image-size and --channels), or convert these images with ${flags}`,
  );
}

function imageSize(ds: Dataset): number {
  return ds.height * ds.width * ds.channels;
}

/**
 * The run id of a checkpoint: its directory's name (`data/runs/x/backbone.safetensors` -> x), or
 * for a PyTorch file its own name (`data/vit-s-300ep.pth.tar` -> vit-s-300ep).
 */
export function runIdOf(checkpoint: string): string {
  const parts = checkpoint.split(/[\\/]/).filter(Boolean);
  if (isPthPath(checkpoint)) {
    return parts[parts.length - 1].replace(/(\.pth)?\.(pth|pt|tar|ckpt)$/i, "");
  }
  return parts.length > 1 ? parts[parts.length - 2] : parts[0] ?? "checkpoint";
}
