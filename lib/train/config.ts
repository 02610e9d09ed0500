/**
 * The pretraining config: one flat object with defaults (presets), a table of its fields that
 * drives both validation and the command line (`--batch 256` sets `batchSize`), and the
 * presets. Add a field by adding a row to {@link FIELDS}.
 *
 * @example
 * ```ts
 * import { PRESETS, validateConfig } from "./config.ts";
 * const cfg = { ...PRESETS.smoke, batchSize: 16 };
 * validateConfig(cfg); // throws ConfigError with the fix on bad values
 * ```
 * @module
 */
import { BACKENDS, type Precision } from "../backends/mod.ts";
import { type DatasetName, DATASETS } from "../data/mod.ts";
import { type PosEmb, VIT_CONFIGS } from "../model/vit.ts";
import { ConfigError } from "../core/errors.ts";
import { FRAMEWORKS } from "../methods/names.ts";
import { FINAL_EVALS, type FinalEval } from "../eval/final_report.ts";
import { BACKEND_FLAG, PRECISION_FLAG } from "../backends/flags.ts";
import { flagProblem, type FlagSpec } from "../core/flags.ts";
import { RUN_FILES } from "./rundir.ts";

/** Everything that defines a pretraining run. */
export interface PretrainConfig {
  /** The preset the defaults came from. */
  preset: string;
  dataset: DatasetName;
  /** cifar10 / imagefolder: where the files are. */
  dataRoot?: string;
  /** Resize images to this square side (default: the dataset's own). */
  imageSize?: number;
  /** Convert images to 1 or 3 channels (default: the dataset's own). */
  channels?: 1 | 3;
  /** synthetic: number of training images (test: a fifth of it). */
  syntheticSize?: number;
  /** Backbone preset (a key of VIT_CONFIGS). */
  model: string;
  patchSize?: number;
  dim?: number;
  depth?: number;
  heads?: number;
  posEmb: PosEmb;
  pool: "cls" | "mean";
  mlpNorm: "layernorm" | "batchnorm";
  freezePatchEmbed: boolean;
  framework: string;
  /** Projector/predictor hidden width (4096 in the paper). */
  hidden: number;
  /** Projector/predictor output width (256 in the paper). */
  outDim: number;
  temperature: number;
  /** SwAV's prototypes K (at most the batch: no queue). SwAV: 3000 on ImageNet. */
  prototypes: number;
  /** Base momentum m0 of the momentum encoder (cosine-increased to 1). */
  m0: number;
  batchSize: number;
  epochs: number;
  warmupEpochs: number;
  /** Base learning rate; the peak lr is baseLr * batch / 256. */
  baseLr: number;
  optimizer: "adamw" | "lamb";
  weightDecay: number;
  skipDecay: boolean;
  /** Smallest crop area (fraction of the image) of the random resized crop. Paper: 0.08. */
  cropMin: number;
  /** Stop after this many steps (0: run all epochs); the schedule still spans all epochs. */
  maxSteps: number;
  seed: number;
  backend: typeof BACKENDS[number];
  /** Backend threads; 0: the backend's default (every core on native, 1 on wasm). */
  threads: number;
  /** Matmul precision: `fp32`, `bf16` (bf16 inputs, fp32 sums; native backend), or `auto`. */
  precision: Precision;
  /** Data-parallel Deno workers of each step (any method, on wasm/cpu); 1 runs in this thread. */
  workers: number;
  /** Run directory (default: data/runs/<preset>-<time>). */
  outDir: string;
  checkpointEvery: number;
  /** kNN monitor every this many steps (0: at the end of every epoch). */
  knnEvery: number;
  /** Images of the train split used as the monitor's kNN bank (0: all). */
  knnTrainSize: number;
  /** Images of the test split the monitor classifies (0: all). */
  knnTestSize: number;
  knnK: number;
  /**
   * After training, the final report on the full splits (`lib/eval/final_report.ts`): kNN-20,
   * the linear probe, both (`all`) or nothing, for the backbone, its random init and raw pixels.
   */
  finalEval: FinalEval;
  /**
   * An online linear probe on the detached class token, trained beside pretraining and evaluated
   * with the kNN monitor (lib/train/online_probe.ts). Unset: on where the data has labels (two
   * or more classes) and `workers` is 1; a run records the value it used in config.json.
   */
  onlineProbe?: boolean;
  onNan: "stop" | "rollback";
  /** On rollback, the lr is multiplied by this (compounding over rollbacks). */
  nanLrFactor: number;
  /** Under `onNan: "rollback"`: at most this many rollbacks in a run; the next divergence stops it. */
  maxRollbacks: number;
  /** Testing aid: poison the inputs of this step with NaN (-1: never). */
  injectNanAt: number;
  /** Testing aid: fail if tf.memory().numTensors grows across a step. */
  checkTensorLeaks: boolean;
}

/** One config field: its command-line flag, type, allowed values and a line of help. */
export interface Field extends FlagSpec {
  key: keyof PretrainConfig;
}

/** Every field of {@link PretrainConfig}, with its flag. */
export const FIELDS: Field[] = [
  { key: "dataset", flag: "dataset", kind: "string", choices: DATASETS, help: "dataset" },
  {
    key: "dataRoot",
    flag: "data-root",
    kind: "string",
    help: "cifar10/imagefolder directory (imagefolder without train/, test/: 20% held out)",
  },
  { key: "imageSize", flag: "image-size", kind: "int", min: 1, help: "resize images to this" },
  { key: "channels", flag: "channels", kind: "int", choices: [1, 3], help: "1 or 3 channels" },
  {
    key: "syntheticSize",
    flag: "synthetic-size",
    kind: "int",
    min: 8,
    help: "synthetic: train images",
  },
  {
    key: "model",
    flag: "model",
    kind: "string",
    choices: Object.keys(VIT_CONFIGS),
    help: "ViT preset",
  },
  { key: "patchSize", flag: "patch-size", kind: "int", min: 1, help: "patch side in pixels" },
  { key: "dim", flag: "dim", kind: "int", min: 1, help: "override the width D" },
  { key: "depth", flag: "depth", kind: "int", min: 1, help: "override the number of blocks" },
  { key: "heads", flag: "heads", kind: "int", min: 1, help: "override the number of heads" },
  {
    key: "posEmb",
    flag: "pos-emb",
    kind: "string",
    choices: ["sincos", "learned", "none"],
    help: "position embedding",
  },
  { key: "pool", flag: "pool", kind: "string", choices: ["cls", "mean"], help: "pooling" },
  {
    key: "mlpNorm",
    flag: "mlp-norm",
    kind: "string",
    choices: ["layernorm", "batchnorm"],
    help: "norm before each MLP (batchnorm = ViT-BN)",
  },
  {
    key: "freezePatchEmbed",
    flag: "freeze-patch-embed",
    kind: "bool",
    help: "random, frozen patch projection (the paper's stability trick)",
  },
  {
    key: "framework",
    flag: "framework",
    kind: "string",
    choices: FRAMEWORKS,
    help: "self-supervised method",
  },
  { key: "hidden", flag: "hidden", kind: "int", min: 1, help: "head hidden width" },
  { key: "outDim", flag: "out-dim", kind: "int", min: 1, help: "head output width" },
  {
    key: "temperature",
    flag: "temperature",
    kind: "number",
    min: 0,
    exclusive: true,
    help: "softmax temperature T of MoCo v3 and SimCLR (SwAV's is fixed: 0.1)",
  },
  {
    key: "prototypes",
    flag: "prototypes",
    kind: "int",
    min: 1,
    help: "SwAV prototypes K (at most --batch; SwAV's ImageNet: 3000)",
  },
  { key: "m0", flag: "momentum", kind: "number", min: 0, max: 1, help: "base momentum m0" },
  {
    key: "batchSize",
    flag: "batch",
    kind: "int",
    min: 2,
    help: "images per step (BatchNorm in the heads needs at least 2 images per view)",
  },
  { key: "epochs", flag: "epochs", kind: "int", min: 1, help: "epochs" },
  { key: "warmupEpochs", flag: "warmup", kind: "number", min: 0, help: "warmup epochs" },
  {
    key: "baseLr",
    flag: "lr",
    kind: "number",
    min: 0,
    exclusive: true,
    help: "base lr (x batch/256)",
  },
  {
    key: "optimizer",
    flag: "optimizer",
    kind: "string",
    choices: ["adamw", "lamb"],
    help: "optimiser",
  },
  { key: "weightDecay", flag: "wd", kind: "number", min: 0, help: "weight decay" },
  {
    key: "skipDecay",
    flag: "skip-decay",
    kind: "bool",
    help: "no decay on biases, norms, tokens",
  },
  {
    key: "cropMin",
    flag: "crop-min",
    kind: "number",
    min: 0,
    exclusive: true,
    max: 1,
    help: "smallest crop area of the random resized crop (paper 0.08)",
  },
  { key: "maxSteps", flag: "max-steps", kind: "int", min: 0, help: "stop after N steps (0: all)" },
  { key: "seed", flag: "seed", kind: "int", min: 0, help: "random seed" },
  { ...BACKEND_FLAG, key: "backend" },
  { ...PRECISION_FLAG, key: "precision" },
  {
    key: "threads",
    flag: "threads",
    kind: "int",
    min: 0,
    help: "backend threads (0: the backend's default, every core on native, 1 on wasm)",
  },
  {
    key: "workers",
    flag: "workers",
    kind: "int",
    min: 1,
    help: "data-parallel Deno workers per step (wasm/cpu; batch must divide)",
  },
  { key: "outDir", flag: "out", kind: "string", help: "run directory" },
  {
    key: "checkpointEvery",
    flag: "ckpt-every",
    kind: "int",
    min: 1,
    help: "checkpoint every N steps",
  },
  {
    key: "knnEvery",
    flag: "knn-every",
    kind: "int",
    min: 0,
    help: "kNN monitor every N steps (0: each epoch)",
  },
  { key: "knnTrainSize", flag: "knn-train", kind: "int", min: 0, help: "monitor bank (0: all)" },
  { key: "knnTestSize", flag: "knn-test", kind: "int", min: 0, help: "monitor queries (0: all)" },
  { key: "knnK", flag: "knn-k", kind: "int", min: 1, help: "neighbours of the kNN monitor" },
  {
    key: "finalEval",
    flag: "final-eval",
    kind: "string",
    choices: FINAL_EVALS,
    help: "at the end, on the full splits, beside random init and raw pixels",
  },
  {
    key: "onlineProbe",
    flag: "online-probe",
    kind: "bool",
    help: "online linear probe beside the kNN monitor (default: on with labels and --workers 1)",
  },
  {
    key: "onNan",
    flag: "on-nan",
    kind: "string",
    choices: ["stop", "rollback"],
    help: "on a non-finite loss or gradient: stop, or go back to a checkpoint",
  },
  {
    key: "nanLrFactor",
    flag: "nan-lr-factor",
    kind: "number",
    min: 0,
    exclusive: true,
    max: 1,
    help: "lr factor per rollback (compounds)",
  },
  {
    key: "maxRollbacks",
    flag: "max-rollbacks",
    kind: "int",
    min: 0,
    help: "--on-nan rollback: at most N rollbacks, then stop",
  },
  { key: "injectNanAt", flag: "inject-nan-at", kind: "int", min: -1, help: "(testing)" },
  { key: "checkTensorLeaks", flag: "check-leaks", kind: "bool", help: "(testing)" },
];

/**
 * The default of every field, which every preset starts from. It is also what a run made before a
 * field existed did for that field (new fields default to the old behaviour), so it fills the
 * fields a run's config.json lacks: see {@link savedRunConfig}.
 */
const BASE: Omit<PretrainConfig, "preset"> = {
  dataset: "fmnist",
  model: "vit_micro",
  patchSize: 7,
  posEmb: "sincos",
  pool: "cls",
  mlpNorm: "layernorm",
  freezePatchEmbed: false,
  framework: "mocov3",
  hidden: 1024,
  outDim: 256,
  temperature: 0.2,
  prototypes: 100,
  m0: 0.99,
  batchSize: 256,
  epochs: 1,
  warmupEpochs: 0.2,
  baseLr: 1.5e-3,
  optimizer: "adamw",
  weightDecay: 0.1,
  skipDecay: false,
  cropMin: 0.08,
  maxSteps: 0,
  seed: 0,
  backend: "auto",
  threads: 0,
  precision: "fp32",
  workers: 1,
  outDir: "",
  checkpointEvery: 50,
  knnEvery: 0,
  knnTrainSize: 10000,
  knnTestSize: 2000,
  knnK: 20,
  finalEval: "all",
  onNan: "stop",
  nanLrFactor: 0.5,
  maxRollbacks: 3,
  injectNanAt: -1,
  checkTensorLeaks: false,
};

/**
 * The config a run was made with, from the `config` of its config.json: fields it lacks were added
 * later (or, like `dim`, left unset) and take {@link BASE}'s values, what the code did when the run
 * was made. Never the current preset's values, which may have changed since.
 *
 * @example
 * ```ts
 * savedRunConfig({ preset: "fmnist-long", epochs: 8 }).cropMin; // 0.08: made before --crop-min
 * ```
 */
export function savedRunConfig(saved: Partial<PretrainConfig>): Partial<PretrainConfig> {
  // Runs made before --final-eval had a boolean finalKnn: the final kNN, or nothing.
  const { finalKnn, ...rest } = saved as Partial<PretrainConfig> & { finalKnn?: boolean };
  const legacy = finalKnn === undefined || rest.finalEval !== undefined
    ? {}
    : { finalEval: finalKnn ? "knn" as const : "none" as const };
  return { ...BASE, ...BEFORE_FIELD, ...rest, ...legacy };
}

/**
 * Fields whose default for a new run (unset, decided when the run starts) differs from what runs
 * made before the field existed did: the online probe (those runs had none).
 */
const BEFORE_FIELD: Partial<PretrainConfig> = { onlineProbe: false };

/** `fmnist-long` (see {@link PRESETS}). */
const FMNIST_LONG: Omit<PretrainConfig, "preset"> = {
  ...BASE,
  dim: 128,
  epochs: 10,
  warmupEpochs: 1,
  baseLr: 3e-3,
  cropMin: 0.4,
  checkpointEvery: 100,
};

/**
 * Named starting points. `default` is what `deno task pretrain` runs with no flags: `fmnist-long`
 * with `--precision auto` (bf16 matrix products where the CPU has AVX512-BF16), the recipe chosen
 * by measurement to beat raw pixels on kNN-20 and the linear probe within 15 minutes on a 2-core
 * CPU (README.md, "The default recipe"). `fmnist` is the base every preset starts from, and the
 * studies' base: vit_micro/7 (D 64, depth 4, 16 tokens) with MoCo v3 heads 1024/256, batch 256,
 * one epoch, peak lr 1.5e-3 (AdamW, wd 0.1): about a minute, below raw pixels. `fmnist-long` is
 * the same ViT at D 128 for 10 epochs, base lr 3e-3, crops of at least 40% of the image (28x28
 * images leave too little in the paper's 8% crops), in float32; `cifar10` for 32x32 RGB; `smoke`
 * runs in seconds on the synthetic set (tests); `paper-vit-small` is the paper's ViT-S recipe for
 * a GPU.
 *
 * @example
 * ```ts
 * PRESETS.default.epochs; // 10
 * ```
 */
export const PRESETS: Record<string, Omit<PretrainConfig, "preset">> = {
  fmnist: BASE,
  "fmnist-long": FMNIST_LONG,
  default: { ...FMNIST_LONG, precision: "auto" },
  cifar10: { ...BASE, dataset: "cifar10", model: "vit_tiny", patchSize: 4, epochs: 100 },
  smoke: {
    ...BASE,
    dataset: "synthetic",
    syntheticSize: 256,
    model: "vit_nano",
    patchSize: 7,
    hidden: 64,
    outDim: 32,
    prototypes: 16,
    batchSize: 32,
    epochs: 2,
    warmupEpochs: 0.5,
    checkpointEvery: 4,
    knnTrainSize: 0,
    knnTestSize: 0,
  },
  "paper-vit-small": {
    ...BASE,
    dataset: "imagefolder",
    model: "vit_small",
    patchSize: 16,
    imageSize: 224,
    channels: 3,
    hidden: 4096,
    outDim: 256,
    batchSize: 1024,
    epochs: 300,
    warmupEpochs: 40,
    baseLr: 1.5e-4,
    checkpointEvery: 1000,
  },
};

/**
 * Checks every field against {@link FIELDS} (types, ranges, choices) and throws a
 * {@link ConfigError} naming the flag and the fix.
 */
export function validateConfig(cfg: PretrainConfig): void {
  for (const f of FIELDS) {
    const v = cfg[f.key] as unknown;
    if (v === undefined || v === "") continue;
    const problem = flagProblem(f, v);
    if (problem) throw new ConfigError(problem);
  }
  if (cfg.framework === "swav" && cfg.batchSize < cfg.prototypes) {
    throw new ConfigError(
      `--framework swav needs --batch >= --prototypes (got ${cfg.batchSize} < ` +
        `${cfg.prototypes}: Sinkhorn splits each batch equally among the prototypes, with no ` +
        "queue): raise --batch or lower --prototypes",
    );
  }
  if (cfg.onlineProbe && cfg.workers > 1) {
    throw new ConfigError(
      `--online-probe runs in the main process, but --workers ${cfg.workers} trains in workers: ` +
        "pass --no-online-probe (or --workers 1)",
    );
  }
  if ((cfg.dataset === "cifar10" || cfg.dataset === "imagefolder") && !cfg.dataRoot) {
    throw new ConfigError(
      `--dataset ${cfg.dataset} needs --data-root DIR (` +
        (cfg.dataset === "cifar10"
          ? "the folder of data_batch_1.bin ... test_batch.bin"
          : "a folder of <class>/<image>.png|jpg") +
        ")",
    );
  }
}

/** The preset `deno task pretrain` runs when none is named. */
export const CLI_DEFAULT_PRESET = "default";

/**
 * Resolves a partial config: preset defaults (`fmnist`, the base, when none is named), then the
 * given fields; validated.
 *
 * @example
 * ```ts
 * resolveConfig({ preset: "smoke", batchSize: 16 }).epochs; // 2, from the smoke preset
 * ```
 */
export function resolveConfig(
  partial: Partial<PretrainConfig> & { preset?: string },
): PretrainConfig {
  const presetName = partial.preset ?? "fmnist";
  const cfg = {
    ...presetDefaults(presetName),
    ...definedFields(partial),
    preset: presetName,
  } as PretrainConfig;
  validateConfig(cfg);
  return cfg;
}

/**
 * The config to resume a run with: the `config` of its config.json ({@link savedRunConfig}: fields
 * it lacks take the base defaults, not today's preset), then `overrides` (e.g. flags); validated.
 *
 * @example
 * ```ts
 * const saved = JSON.parse(await Deno.readTextFile("data/runs/demo/config.json")).config;
 * const cfg = resumeConfig({ ...saved, outDir: "data/runs/demo" }, { maxSteps: 100 });
 * ```
 */
export function resumeConfig(
  saved: Partial<PretrainConfig>,
  overrides: Partial<PretrainConfig> = {},
): PretrainConfig {
  const cfg = { ...savedRunConfig(saved), ...definedFields(overrides) } as PretrainConfig;
  cfg.preset ??= "fmnist";
  presetDefaults(cfg.preset); // a known name
  validateConfig(cfg);
  return cfg;
}

function presetDefaults(name: string): Omit<PretrainConfig, "preset"> {
  const preset = PRESETS[name];
  if (!preset) {
    throw new ConfigError(
      `unknown preset "${name}": choose one of ${Object.keys(PRESETS).join(", ")}`,
    );
  }
  return preset;
}

function definedFields(partial: Partial<PretrainConfig>): Partial<PretrainConfig> {
  return Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined));
}

/** Fields that may change when a run is resumed (they do not change its result). */
/** (see checkSameConfig) */
const RESUMABLE = new Set<keyof PretrainConfig>([
  "maxSteps",
  "backend",
  "threads",
  "outDir",
  "checkpointEvery",
  "knnEvery",
  "knnTrainSize",
  "knnTestSize",
  "knnK",
  "finalEval",
  "onNan",
  "nanLrFactor",
  "maxRollbacks",
  "injectNanAt",
  "checkTensorLeaks",
]);

/**
 * Refuses to resume a run directory whose config (its config.json) differs from `cfg` in a field
 * that shapes the run, unless `force`; the error lists the differences and the ways out.
 *
 * @example
 * ```ts
 * await checkSameConfig("data/runs/demo", resolveConfig({ preset: "smoke" }), false);
 * ```
 */
export async function checkSameConfig(
  dir: string,
  cfg: PretrainConfig,
  force: boolean,
): Promise<void> {
  let saved: PretrainConfig;
  try {
    saved = JSON.parse(await Deno.readTextFile(`${dir}/${RUN_FILES.config}`)).config;
  } catch (e) {
    throw new ConfigError(
      `${dir} has a checkpoint but no readable config.json (${(e as Error).message}); ` +
        "use a new --out directory",
    );
  }
  // Fields added after the run was made are absent from its config.json: it ran their defaults.
  const was = savedRunConfig(saved);
  const diffs = (Object.keys({ ...was, ...cfg }) as (keyof PretrainConfig)[])
    .filter((k) => !RESUMABLE.has(k))
    .filter((k) => JSON.stringify(was[k]) !== JSON.stringify(cfg[k]))
    .map((k) => `${k}: run has ${JSON.stringify(was[k])}, now ${JSON.stringify(cfg[k])}`);
  if (diffs.length && !force) {
    throw new ConfigError(
      `${dir} belongs to a different config:\n  ${diffs.join("\n  ")}\n` +
        "Resume it with its own config (deno task pretrain --resume DIR), choose a new --out, " +
        "or pass --force to resume with the new config anyway.",
    );
  }
}
