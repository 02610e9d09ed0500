/**
 * `deno task eval`: judge a pretrained backbone with the paper's protocols.
 *
 * ```sh
 * deno task eval --checkpoint data/runs/x/checkpoint.safetensors --protocol knn
 * deno task eval --checkpoint RUN/backbone.safetensors --protocol all --baselines
 * deno task eval --checkpoint RUN/backbone.safetensors --umap   # UMAP maps next to it
 * deno task eval --checkpoint RUN --image-size 32 --channels 1   # a run's backbone, data converted
 * deno task eval --checkpoint vit-s-300ep.pth.tar --dataset cifar10 --data-root DIR  # official
 * deno task eval --summary          # print data/results/eval.csv
 * ```
 * @module
 */
import { initBackend } from "../backends/mod.ts";
import { type DatasetName, DATASETS } from "../data/mod.ts";
import { RESULTS_FILE, summaryTable } from "../eval/results.ts";
import { evaluate, type Protocol, PROTOCOLS } from "./eval_run.ts";
import { type Readout, READOUTS } from "../eval/features.ts";
import { helpText } from "./args.ts";
import { BACKEND_FLAG } from "../backends/flags.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";
import { checkUmapPoints, UMAP_DEFAULTS } from "../viz/umap.ts";
import { FIELDS } from "../train/config.ts";
import { withStopSignal } from "./stop_signal.ts";
import { StoppedError } from "../core/stop.ts";

const SPECS: FlagSpec[] = [
  {
    key: "checkpoint",
    flag: "checkpoint",
    kind: "string",
    help:
      "backbone or run checkpoint (.safetensors), a run directory (its backbone), or a PyTorch .pth / .pth.tar",
  },
  {
    key: "protocol",
    flag: "protocol",
    kind: "string",
    choices: [...PROTOCOLS, "all"],
    list: true,
    help: "evaluation protocol(s), comma-separated, or all",
  },
  { key: "dataset", flag: "dataset", kind: "string", choices: DATASETS, help: "dataset" },
  // The same flags as pretraining's: read and convert the dataset as the run did.
  ...FIELDS.filter((f) => ["dataRoot", "imageSize", "channels"].includes(f.key)),
  {
    key: "prefix",
    flag: "prefix",
    kind: "string",
    help: "name prefix to load (default: module.base_encoder., base_encoder. or module.)",
  },
  { key: "baselines", flag: "baselines", kind: "bool", help: "raw pixels and random init too" },
  {
    key: "readout",
    flag: "readout",
    kind: "string",
    choices: READOUTS,
    help: "kNN/linear features (pooled: class token)",
  },
  { key: "k", flag: "k", kind: "string", help: "kNN neighbour counts, e.g. 20,200" },
  {
    key: "linearEpochs",
    flag: "linear-epochs",
    kind: "int",
    min: 1,
    help: "linear-probe epochs (90)",
  },
  {
    key: "linearLr",
    flag: "linear-lr",
    kind: "number",
    min: 0,
    exclusive: true,
    help: "linear-probe lr (0.1)",
  },
  { key: "finetuneEpochs", flag: "ft-epochs", kind: "int", min: 1, help: "fine-tuning epochs (5)" },
  {
    key: "finetuneLr",
    flag: "ft-lr",
    kind: "number",
    min: 0,
    exclusive: true,
    help: "fine-tuning lr (1e-3)",
  },
  {
    key: "finetuneWarmup",
    flag: "ft-warmup",
    kind: "number",
    min: 0,
    help: "fine-tuning warmup epochs (5, at most a tenth of the epochs)",
  },
  {
    key: "finetuneTrainSize",
    flag: "ft-train-size",
    kind: "int",
    min: 0,
    help: "fine-tune on the first N train images (0: all)",
  },
  {
    key: "umap",
    flag: "umap",
    kind: "bool",
    help: "UMAP maps of the checkpoint vs its random init, written next to it " +
      "(alone unless --protocol is given)",
  },
  {
    key: "umapPoints",
    flag: "umap-points",
    kind: "int",
    min: 1,
    help: `test images in the maps, a stratified sample (${UMAP_DEFAULTS.points})`,
  },
  BACKEND_FLAG,
  { key: "results", flag: "results", kind: "string", help: `results CSV (${RESULTS_FILE})` },
  { key: "summary", flag: "summary", kind: "bool", help: "print the results table and exit" },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** Parses the arguments and runs the evaluation; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values: v } = parseFlags(args, SPECS);
  if (v.help) {
    console.log(helpText("deno task eval [flags]: kNN, linear probe, fine-tuning", SPECS));
    return 0;
  }
  const resultsFile = (v.results as string) ?? RESULTS_FILE;
  if (v.summary) {
    const t = await summaryTable(resultsFile);
    console.log(t.numRows() ? t.toMarkdown({ limit: Infinity }) : `(${resultsFile} is empty)`);
    return 0;
  }
  if (!v.checkpoint && !v.baselines) {
    throw new UsageError("give --checkpoint PATH (and/or --baselines), or --summary");
  }
  if (v.umap && !v.checkpoint) throw new UsageError("--umap needs --checkpoint PATH");
  if (v.umapPoints !== undefined && !v.umap) throw new UsageError("--umap-points needs --umap");
  if (v.umapPoints !== undefined) checkUmapPoints(v.umapPoints as number); // before loading data
  // --umap alone draws only the maps; --protocol adds protocols to them.
  const names = v.protocol === undefined && v.umap
    ? []
    : String(v.protocol ?? "knn").split(",").map((s) => s.trim());
  const protocols = (names.includes("all") ? [...PROTOCOLS] : names) as Protocol[];
  const dataset = (v.dataset as string) ?? "fmnist";
  const k = v.k ? String(v.k).split(",").map(Number) : undefined;
  if (k?.some((x) => !(Number.isInteger(x) && x > 0))) {
    throw new UsageError(`--k must be positive whole numbers separated by commas, got "${v.k}"`);
  }
  const readout = (v.readout as string) ?? "pooled";
  const info = await initBackend({ backend: (v.backend as "auto") ?? "auto" });
  console.log(`backend: ${info.summary}`);
  await withStopSignal("stopping after this batch", (signal) =>
    evaluate({
      signal,
      checkpoint: v.checkpoint as string | undefined,
      prefix: v.prefix as string | undefined,
      protocols,
      dataset: dataset as DatasetName,
      dataRoot: v.dataRoot as string | undefined,
      imageSize: v.imageSize as number | undefined,
      channels: v.channels as 1 | 3 | undefined,
      baselines: Boolean(v.baselines),
      k,
      readout: readout as Readout,
      linearEpochs: v.linearEpochs as number | undefined,
      linearLr: v.linearLr as number | undefined,
      finetuneEpochs: v.finetuneEpochs as number | undefined,
      finetuneLr: v.finetuneLr as number | undefined,
      finetuneWarmup: v.finetuneWarmup as number | undefined,
      finetuneTrainSize: v.finetuneTrainSize as number | undefined,
      resultsFile,
      backend: info.name,
      umap: v.umap ? { points: v.umapPoints as number | undefined } : undefined,
    })).catch((e) => {
      if (!(e instanceof StoppedError)) throw e;
      throw new StoppedError(
        e.phase,
        `${e.message}; the rows of the protocols that finished before it are in ${resultsFile}, ` +
          "the stopped one wrote nothing",
      );
    });
  if (protocols.length) console.log(`results appended to ${resultsFile}`);
  return 0;
}

if (import.meta.main) runMain(main);
