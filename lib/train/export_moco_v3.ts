/**
 * Hand-off to PyTorch for pretraining at scale: the command line of the official MoCo v3
 * `main_moco.py` (facebookresearch/moco-v3) that matches a vitssl run's config as closely as that
 * code allows, a row per config field saying where it went, and a warning for every field it
 * cannot carry. The checkpoints that command writes (`checkpoint_%04d.pth.tar`, the official
 * layout) load back here with `loadBackbone` / `deno task eval --checkpoint`.
 *
 * `main_moco.py` starts one process per GPU itself (`torch.multiprocessing.spawn` under
 * `--multiprocessing-distributed`), so it is run once per node with `--world-size NODES --rank
 * NODE`, not under `torchrun`. Its fixed choices: ImageNet-style `DIR/train/<class>/` folders,
 * 224x224 RGB crops, the ViTs of its `vits.py` (`vit_small`, `vit_base`: patch 16, 12 heads, 2D
 * sin-cos position table, class token, LayerNorm), fp16 autocast.
 *
 * @example
 * ```ts
 * import { exportMocoV3 } from "./export_moco_v3.ts";
 * import { PRESETS } from "./config.ts";
 * const out = exportMocoV3({ ...PRESETS["paper-vit-small"], preset: "paper-vit-small", dataRoot: "/imagenet" });
 * console.log(out.command); // python main_moco.py -a vit_small -b 1024 --optimizer=adamw ...
 * ```
 * @module
 */
import type { PretrainConfig } from "./config.ts";
import { VIT_CONFIGS } from "../model/vit.ts";
import { quote } from "../core/shell.ts";

/** Options of {@link exportMocoV3}: how the job is spread. */
export interface ExportOptions {
  /** Nodes (machines), each running the command once with its `--rank` (default 1). */
  nodes?: number;
  /** Address of the first node, for `--dist-url` (default `localhost` on one node). */
  master?: string;
  /** Port of `--dist-url` (default 10001). */
  port?: number;
  /** Whether `dataRoot` has a `train/` folder (unknown: `undefined`). */
  dataHasTrain?: boolean;
}

/** One config field: its value, the flag of `main_moco.py` it became, and a note. */
export interface FieldMapping {
  /** The config field. */
  field: keyof PretrainConfig;
  /** Its value in the run's config. */
  value: string;
  /** The `main_moco.py` argument it maps to, or `""` when it is not carried. */
  flag: string;
  /** How it maps, or why not. */
  note: string;
}

/** The export: the command, a row per field, and the warnings. */
export interface MocoV3Export {
  /** The command line, one argument group per line (`\` continued). */
  command: string;
  /** Every field of the config, in {@link PretrainConfig}'s order. */
  rows: FieldMapping[];
  /** One line per field that cannot be carried as it is (empty: a faithful hand-off). */
  warnings: string[];
}

/** The ViTs of moco-v3's vits.py without a convolutional stem. */
const OFFICIAL_ARCHS: Record<string, { dim: number; depth: number; heads: number }> = {
  vit_small: { dim: 384, depth: 12, heads: 12 },
  vit_base: { dim: 768, depth: 12, heads: 12 },
};

/** Native image size and channels of each dataset (imagefolder: RGB, size of its files). */
const NATIVE: Record<string, { size?: number; channels: number }> = {
  fmnist: { size: 28, channels: 1 },
  cifar10: { size: 32, channels: 3 },
  synthetic: { size: 28, channels: 1 },
  imagefolder: { channels: 3 },
};

/** Each field's mapping: the flag (with value) it adds, a note, and a warning if not carried. */
type Rule = (
  cfg: PretrainConfig,
  o: Required<Omit<ExportOptions, "dataHasTrain">> & {
    dataHasTrain?: boolean;
  },
) => { flag?: string; note: string; warning?: string };

const notCarried = (why: string): Rule => () => ({ note: `not carried: ${why}` });

function arch(cfg: PretrainConfig): string {
  return Object.hasOwn(OFFICIAL_ARCHS, cfg.model) ? cfg.model : "vit_small";
}

function imageSize(cfg: PretrainConfig): number | undefined {
  return cfg.imageSize ?? NATIVE[cfg.dataset]?.size;
}

const RULES: Record<keyof PretrainConfig, Rule> = {
  preset: notCarried("the preset only supplied defaults; every field is mapped below"),
  dataset: (cfg) =>
    cfg.dataset === "imagefolder"
      ? { note: "main_moco.py reads torchvision's ImageFolder (DIR/train/<class>/<image>)" }
      : {
        note: "main_moco.py reads an ImageFolder only",
        warning: `dataset ${cfg.dataset} is not an ImageFolder: write its training images as ` +
          "DIR/train/<class>/<image>.png and give DIR",
      },
  dataRoot: (cfg, o) => ({
    flag: "DIR (positional)",
    note: "main_moco.py reads DIR/train",
    warning: cfg.dataset === "imagefolder" && o.dataHasTrain === false
      ? `${cfg.dataRoot} has no train/ folder, which main_moco.py reads: move the class ` +
        "folders into DIR/train/"
      : undefined,
  }),
  imageSize: (cfg) => {
    const size = imageSize(cfg);
    const grid = size ? `${size / (cfg.patchSize ?? 16)}x${size / (cfg.patchSize ?? 16)}` : "";
    return {
      note: "main_moco.py crops 224x224 (RandomResizedCrop(224)): a 14x14 sin-cos grid",
      warning: size === 224
        ? undefined
        : `image size ${size ?? "(the files')"}${
          grid ? ` (a ${grid} grid)` : ""
        } cannot be carried: main_moco.py trains on 224x224 crops, a 14x14 sin-cos grid of ` +
          "16-pixel patches; its checkpoints have a 197-token pos_embed",
    };
  },
  channels: (cfg) => {
    const c = cfg.channels ?? NATIVE[cfg.dataset]?.channels ?? 3;
    return {
      note: "main_moco.py reads RGB (gray images are converted to RGB)",
      warning: c === 3 ? undefined : `${c}-channel images cannot be carried: main_moco.py ` +
        "trains on RGB (its loader converts gray images to 3 equal channels)",
    };
  },
  syntheticSize: notCarried("synthetic data has no counterpart (see dataset)"),
  model: (cfg) => ({
    flag: `-a ${arch(cfg)}`,
    note: "vits.py has vit_small, vit_base (and vit_conv_*, a convolutional stem)",
    warning: Object.hasOwn(OFFICIAL_ARCHS, cfg.model) ? undefined : `model ${cfg.model} has no ` +
      "counterpart in moco-v3's vits.py (vit_small, vit_base): -a vit_small is printed",
  }),
  patchSize: (cfg) => ({
    note: "vits.py: patch 16",
    warning: (cfg.patchSize ?? VIT_CONFIGS[cfg.model]?.patchSize) === 16
      ? undefined
      : `patch size ${cfg.patchSize ?? VIT_CONFIGS[cfg.model]?.patchSize} cannot be carried: ` +
        "vits.py's ViTs use 16",
  }),
  dim: (cfg) => sizeRule(cfg, "dim", "width"),
  depth: (cfg) => sizeRule(cfg, "depth", "depth"),
  heads: (cfg) => sizeRule(cfg, "heads", "heads"),
  posEmb: (cfg) => ({
    note: "vits.py: the fixed 2D sin-cos table",
    warning: cfg.posEmb === "sincos"
      ? undefined
      : `posEmb ${cfg.posEmb} cannot be carried: vits.py always uses the fixed 2D sin-cos table`,
  }),
  pool: (cfg) => ({
    note: "vits.py: class token after the final LayerNorm",
    warning: cfg.pool === "cls"
      ? undefined
      : `pool ${cfg.pool} cannot be carried: vits.py pools the class token`,
  }),
  mlpNorm: (cfg) => ({
    note: "vits.py: LayerNorm",
    warning: cfg.mlpNorm === "layernorm"
      ? undefined
      : "mlpNorm batchnorm (ViT-BN) cannot be carried: the released main_moco.py has no " +
        "BatchNorm ViT",
  }),
  freezePatchEmbed: (cfg) => ({
    flag: cfg.freezePatchEmbed ? "--stop-grad-conv1" : undefined,
    note: "--stop-grad-conv1: the random patch projection is frozen",
  }),
  framework: (cfg) => ({
    note: "main_moco.py trains MoCo v3",
    warning: cfg.framework === "mocov3"
      ? undefined
      : `framework ${cfg.framework} cannot be carried: main_moco.py trains MoCo v3 only`,
  }),
  hidden: (cfg) => ({ flag: `--moco-mlp-dim=${cfg.hidden}`, note: "projector/predictor width" }),
  outDim: (cfg) => ({ flag: `--moco-dim=${cfg.outDim}`, note: "output width" }),
  prototypes: notCarried("SwAV's prototypes; main_moco.py trains MoCo v3 (see framework)"),
  temperature: (cfg) => ({ flag: `--moco-t=${cfg.temperature}`, note: "softmax temperature" }),
  m0: (cfg) => ({
    flag: `--moco-m=${cfg.m0} --moco-m-cos`,
    note: "base momentum, cosine-increased to 1 per step (--moco-m-cos), as here",
  }),
  batchSize: (cfg) => ({
    flag: `-b ${cfg.batchSize}`,
    note: "the total over all GPUs and nodes; it must divide by the number of GPUs",
  }),
  epochs: (cfg) => ({ flag: `--epochs=${cfg.epochs}`, note: "" }),
  warmupEpochs: (cfg) => ({
    flag: `--warmup-epochs=${Math.round(cfg.warmupEpochs)}`,
    note: "linear warmup, then half-cycle cosine (per step in both)",
    warning: Number.isInteger(cfg.warmupEpochs)
      ? undefined
      : `warmupEpochs ${cfg.warmupEpochs} is rounded to ${Math.round(cfg.warmupEpochs)}: ` +
        "main_moco.py takes whole epochs",
  }),
  baseLr: (cfg) => ({
    flag: `--lr=${cfg.baseLr}`,
    note: "base lr; both scale it by batch / 256",
  }),
  optimizer: (cfg) => ({
    flag: "--optimizer=adamw",
    note: "main_moco.py: lars or adamw (torch.optim.AdamW)",
    warning: cfg.optimizer === "adamw"
      ? undefined
      : `optimizer ${cfg.optimizer} cannot be carried: main_moco.py has lars and adamw; adamw ` +
        "is printed",
  }),
  weightDecay: (cfg) => ({ flag: `--weight-decay=${cfg.weightDecay}`, note: "" }),
  skipDecay: (cfg) => ({
    note: "torch.optim.AdamW decays every parameter",
    warning: cfg.skipDecay
      ? "skipDecay cannot be carried: main_moco.py decays biases, norms and tokens too"
      : undefined,
  }),
  cropMin: (cfg) => ({ flag: `--crop-min=${cfg.cropMin}`, note: "RandomResizedCrop scale" }),
  maxSteps: (cfg) => ({
    note: "main_moco.py runs every epoch",
    warning: cfg.maxSteps > 0
      ? `maxSteps ${cfg.maxSteps} cannot be carried: main_moco.py has no step limit`
      : undefined,
  }),
  seed: (cfg) => ({
    flag: `--seed=${cfg.seed}`,
    note: "seeds Python and torch (and makes cuDNN deterministic); not the same draws",
  }),
  backend: notCarried("CUDA, one process per GPU (DistributedDataParallel)"),
  threads: notCarried("CUDA"),
  precision: notCarried("main_moco.py trains under fp16 autocast with a GradScaler on GPUs"),
  workers: notCarried("one process per GPU; -j sets data-loading workers"),
  outDir: notCarried("main_moco.py writes checkpoint_%04d.pth.tar in its working directory"),
  checkpointEvery: notCarried("main_moco.py writes a checkpoint every epoch"),
  knnEvery: notCarried(
    "no kNN monitor; evaluate the checkpoints with deno task eval --checkpoint FILE.pth.tar",
  ),
  knnTrainSize: notCarried("no kNN monitor"),
  knnTestSize: notCarried("no kNN monitor"),
  knnK: notCarried("no kNN monitor"),
  finalEval: notCarried("no final report; evaluate the checkpoints with deno task eval"),
  onlineProbe: notCarried("no online linear probe; main_lincls.py trains a probe afterwards"),
  onNan: notCarried("fp16 autocast with a GradScaler, which skips non-finite steps"),
  nanLrFactor: notCarried("see onNan"),
  maxRollbacks: notCarried("see onNan"),
  injectNanAt: notCarried("a testing aid"),
  checkTensorLeaks: notCarried("a testing aid"),
};

function sizeRule(
  cfg: PretrainConfig,
  key: "dim" | "depth" | "heads",
  what: string,
): { note: string; warning?: string } {
  const official = OFFICIAL_ARCHS[arch(cfg)][key];
  const value = cfg[key] ?? VIT_CONFIGS[cfg.model]?.[key];
  return {
    note: `vits.py's ${arch(cfg)}: ${official}`,
    warning: value === official ? undefined : `${what} ${value} cannot be carried: vits.py's ` +
      `${arch(cfg)} has ${official}`,
  };
}

/**
 * The `main_moco.py` command for a run's config, its field-by-field mapping and the warnings.
 *
 * @example
 * ```ts
 * const { command, rows, warnings } = exportMocoV3(cfg, { nodes: 4, master: "node0" });
 * ```
 */
export function exportMocoV3(cfg: PretrainConfig, opts: ExportOptions = {}): MocoV3Export {
  const nodes = opts.nodes ?? 1;
  const o = {
    nodes,
    master: opts.master ?? (nodes > 1 ? "FIRST_NODE_ADDRESS" : "localhost"),
    port: opts.port ?? 10001,
    dataHasTrain: opts.dataHasTrain,
  };
  const rows: FieldMapping[] = [];
  const warnings: string[] = [];
  const flags = new Map<string, string>();
  for (const [field, rule] of Object.entries(RULES) as [keyof PretrainConfig, Rule][]) {
    const r = rule(cfg, o);
    const value = cfg[field] === undefined ? "(unset)" : String(cfg[field]);
    rows.push({ field, value, flag: r.flag ?? "", note: r.note });
    if (r.flag) flags.set(field, r.flag);
    if (r.warning) warnings.push(r.warning);
  }
  const pick = (...fields: (keyof PretrainConfig)[]) =>
    fields.map((f) => flags.get(f)).filter(Boolean).join(" ");
  const data = cfg.dataset === "imagefolder" && cfg.dataRoot ? quote(cfg.dataRoot) : "DIR";
  const lines = [
    "python main_moco.py",
    pick("model", "batchSize"),
    pick("optimizer", "baseLr", "weightDecay"),
    pick("epochs", "warmupEpochs"),
    pick("freezePatchEmbed", "m0", "temperature"),
    pick("hidden", "outDim", "cropMin", "seed"),
    `--dist-url 'tcp://${o.master}:${o.port}'`,
    `--multiprocessing-distributed --world-size ${nodes} --rank ${nodes > 1 ? "NODE_RANK" : 0}`,
    data,
  ].filter(Boolean);
  return { command: lines.join(" \\\n  "), rows, warnings };
}
