/**
 * The paper's studies as data: each suite is a name, a description, the paper's ImageNet numbers
 * it reads against, and a grid of runs (a few fields of {@link PretrainConfig} on top of a base
 * per budget). Add a study by adding a row to {@link SUITES}; `runSuite` runs it and `plots.ts`
 * draws it.
 *
 * Budgets: `smoke` (seconds per suite: synthetic data, `vit_nano`, a few steps; the tests run it),
 * `cpu` (Fashion-MNIST on a 2-core machine: a fixed number of training images per run, about 5-15
 * minutes per suite) and `gpu` (paper-like: bigger models, batches and epochs; not run here).
 *
 * @example
 * ```ts
 * import { budgetConfigs, SUITES } from "./suites.ts";
 * SUITES["posemb"].paper[0]; // { label: "sin-cos", value: 76.5, ... }
 * budgetConfigs("posemb", "smoke").map((r) => r.runId);
 * // ["posemb_smoke_posEmb-sincos_pool-cls", ...]
 * ```
 * @module
 */
import { PRESETS, type PretrainConfig } from "../train/config.ts";

/**
 * The budgets every suite defines and every notebook runs at (`lib/viz/budget.ts`).
 */
export const NOTEBOOK_BUDGETS = ["smoke", "cpu", "gpu"] as const;
/** A budget every suite defines. */
export type NotebookBudget = typeof NOTEBOOK_BUDGETS[number];
/**
 * Every study budget: the {@link NOTEBOOK_BUDGETS} and `cpu-long`, the default recipe as base
 * (above raw pixels), which only the suites that list it run (the patch-projection suite).
 */
export const BUDGETS = ["smoke", "cpu", "cpu-long", "gpu"] as const;
/** A budget name. */
export type Budget = typeof BUDGETS[number];

/** A set of field values on top of a base config (one run of a grid). */
export type Variant = Partial<PretrainConfig>;

/** One number of the paper (ImageNet, ViT, linear probe top-1 in percent unless `unit` says). */
export interface PaperNumber {
  /** What it is, as figures and tables label it ("sin-cos", "batch 4k"). */
  label: string;
  value: number;
  /** `%`: top-1 accuracy; `points`: a gain in accuracy points. Default `%`. */
  unit?: "%" | "points";
  /** The run of our grid it corresponds to (field values), when one does. */
  match?: Variant;
  /** Anything needed to read it (model, epochs, lr). */
  note?: string;
  /** The paper's backbone (a `VIT_CONFIGS` name and its patch size), for its FLOPs. */
  vit?: { name: string; patchSize?: number };
  /** The paper's parameter count of that backbone. */
  params?: number;
}

/** What a budget fixes for every run of every suite. */
export interface BudgetSpec {
  /**
   * Config fields shared by every run of this budget (on top of the preset's). Runs train for
   * whole `epochs`, so warmup and the cosine schedule span each run's own length.
   */
  base: Partial<PretrainConfig>;
  /**
   * The seeds every configuration runs under. A seed sets the initialisation, the data order and
   * the augmentation; the same seeds serve every configuration of a suite, so that differences
   * can be paired by seed.
   */
  seeds: number[];
  /**
   * Final evaluation after training, the paper's metric on frozen features: a linear probe of
   * this many epochs on the features of the whole train split (0: no probe), evaluated on the
   * whole test split, and kNN-20 with the whole train split as the bank.
   */
  linearEpochs: number;
  /** One line for help texts and figure notes, without the seeds ({@link budgetText} adds them). */
  about: string;
  /**
   * Where the budget's base configuration was run, for its regime (`lib/experiments/regime.ts`):
   * a suite and the field values that pick its rows. Absent: the `pilot` suite's runs of the
   * budget's `epochs`.
   */
  baseRuns?: { suite: string; variant: Variant };
}

/** A study of the paper, as runs and reference numbers. */
export interface Suite {
  name: string;
  description: string;
  /** The paper's numbers this suite reads against. */
  paper: PaperNumber[];
  /** The fields the grid varies; each becomes a column of `data/results/<suite>.csv`. */
  fields: (keyof PretrainConfig)[];
  /**
   * The runs of each budget: field values on top of the budget's base and {@link Suite.base}.
   * Every suite defines the {@link NOTEBOOK_BUDGETS}; `cpu-long` only where the suite runs there.
   */
  grid: Record<NotebookBudget, Variant[]> & Partial<Record<Budget, Variant[]>>;
  /** Suite-specific settings per budget (monitor sizes, another model). */
  base?: Partial<Record<Budget, Partial<PretrainConfig>>>;
  /**
   * A kNN monitor every this many training images (`knnEvery` = this / batch size, at least 1),
   * so that curves of different batch sizes have points at the same data seen. Absent: the
   * budget's `knnEvery`.
   */
  monitorImages?: Partial<Record<Budget, number>>;
  /**
   * Seeds per budget where this suite needs other seeds than the budget's
   * {@link BudgetSpec.seeds} (more for the pilot; fewer for the stability sweep's 16 configs).
   */
  seeds?: Partial<Record<Budget, number[]>>;
  /**
   * Also evaluate, under each seed, the base configuration's backbone at its random
   * initialisation (no training): the floor every run is read against. `true`: at every budget;
   * a list: at those budgets.
   */
  randomInit?: boolean | Budget[];
}

/**
 * Every combination of the given field values, in order (the last field varies fastest).
 *
 * @example
 * ```ts
 * product({ batchSize: [64, 128], baseLr: [1e-3] });
 * // [{ batchSize: 64, baseLr: 1e-3 }, { batchSize: 128, baseLr: 1e-3 }]
 * ```
 */
export function product(axes: { [K in keyof PretrainConfig]?: PretrainConfig[K][] }): Variant[] {
  let out: Variant[] = [{}];
  for (const [key, values] of Object.entries(axes)) {
    out = out.flatMap((v) => (values as unknown[]).map((x) => ({ ...v, [key]: x })));
  }
  return out;
}

/** The same grid for every notebook budget. */
function everyBudget(grid: Variant[]): Record<NotebookBudget, Variant[]> {
  return { smoke: grid, cpu: grid, gpu: grid };
}

/**
 * Whole epochs of one `cpu` run, and its seeds: the pilot's choice (figures/README.md). At 2
 * epochs the base config's linear top-1 has a seed-to-seed SD of about 0.5 points and stands 6
 * points above its random init; five seeds make a paired 95% interval about 1 point wide on
 * either side, and the six suites fit in about 4 hours with `--jobs 2`.
 */
export const CPU_EPOCHS = 2;
/** The `cpu` budget's seeds. */
export const CPU_SEEDS = [0, 1, 2, 3, 4];
/**
 * Epochs of the `cpu` budget's final linear probe (on cached features: about 20 s). The probe's
 * own seed moves its result by 0.03 points, and 90 epochs add about 0.2 to every run alike.
 */
export const CPU_LINEAR_EPOCHS = 30;

/**
 * The `cpu-long` budget's seeds: three, the floor of a paired interval; its runs take about 12
 * minutes each on 2 cores, so the patch-projection suite (8 configurations) is about 5 hours.
 */
export const CPU_LONG_SEEDS = [0, 1, 2];

/**
 * What each budget fixes. `cpu`: a 64-wide, 4-deep ViT on 28x28 Fashion-MNIST with 7x7 patches
 * (16 tokens), heads 256 wide, batch 128, {@link CPU_EPOCHS} whole epochs per run (warmup and
 * cosine span the run), seeds {@link CPU_SEEDS}; each run ends with a linear probe on the frozen
 * features of all 60,000 training images, evaluated on all 10,000 test images, and kNN-20 on the
 * same features. The length was chosen by the `pilot` suite (figures/README.md).
 */
export const BUDGET_SPECS: Record<Budget, BudgetSpec> = {
  smoke: {
    base: {
      preset: "smoke",
      syntheticSize: 96,
      epochs: 1,
      warmupEpochs: 0.25,
      checkpointEvery: 2,
      finalEval: "none",
    },
    seeds: [0, 1, 2],
    linearEpochs: 2,
    about: "synthetic shapes (96 images), vit_nano, one epoch of 3 steps of 32: seconds per " +
      "suite (tests)",
  },
  cpu: {
    base: {
      preset: "fmnist",
      model: "vit_micro",
      patchSize: 7,
      hidden: 256,
      outDim: 128,
      batchSize: 128,
      epochs: CPU_EPOCHS,
      warmupEpochs: 0.1 * CPU_EPOCHS,
      baseLr: 1.5e-3,
      checkpointEvery: 100,
      knnEvery: 0,
      knnTrainSize: 5000,
      knnTestSize: 1000,
      finalEval: "none",
    },
    seeds: CPU_SEEDS,
    linearEpochs: CPU_LINEAR_EPOCHS,
    about: `Fashion-MNIST, vit_micro (D 64, depth 4, patch 7), batch 128, ${CPU_EPOCHS} ` +
      `epochs; linear probe (${CPU_LINEAR_EPOCHS} epochs) and kNN-20 on all 60,000 / 10,000 ` +
      "images",
  },
  "cpu-long": {
    base: {
      preset: "default",
      knnEvery: 0,
      onlineProbe: false,
      finalEval: "none",
    },
    seeds: CPU_LONG_SEEDS,
    linearEpochs: CPU_LINEAR_EPOCHS,
    baseRuns: {
      suite: "patch-projection",
      variant: { framework: "mocov3", freezePatchEmbed: false },
    },
    about: "the default recipe (Fashion-MNIST, vit_micro at D 128, depth 4, patch 7, batch 256, " +
      "10 epochs, lr 3e-3, crops >= 40%, bf16 matrix products where the CPU has AVX512-BF16), " +
      `above raw pixels: about 12 minutes per run on 2 cores; linear probe (${CPU_LINEAR_EPOCHS} ` +
      "epochs) and kNN-20 on all 60,000 / 10,000 images",
  },
  gpu: {
    base: {
      preset: "fmnist",
      model: "vit_tiny",
      patchSize: 7,
      hidden: 1024,
      outDim: 256,
      batchSize: 1024,
      epochs: 5,
      warmupEpochs: 0.5,
      baseLr: 1.5e-3,
      checkpointEvery: 100,
      knnEvery: 0,
      knnTrainSize: 10000,
      knnTestSize: 2000,
      finalEval: "none",
    },
    seeds: [0, 1, 2],
    linearEpochs: 90,
    about: "Fashion-MNIST, vit_tiny (D 192, depth 12, patch 7), batch 1024, 5 epochs, linear " +
      "probe 90 epochs: sized for about 10 minutes per suite on one H100/H200 (not yet measured " +
      "there)",
  },
};

/**
 * The paper's framework comparison (Sec. 6.1: ImageNet linear top-1 %, learned patch projection,
 * two crops, no multi-crop): `[framework label, ViT-S, ViT-B, framework name]`.
 */
export const FRAMEWORK_TOP1: readonly [string, number, number, string][] = [
  ["MoCo v3", 72.5, 76.5, "mocov3"],
  ["SimCLR", 69.0, 73.9, "simclr"],
  ["BYOL", 71.0, 73.9, "byol"],
  ["SwAV", 67.1, 71.6, "swav"],
];

/** Base lr of the cpu budget (10x the paper's 1.5e-4: small models and batches take more). */
const CPU_LR = 1.5e-3;

/** The patch-projection suite's runs: each framework with a learned and a frozen projection. */
const PATCH_PROJECTION_GRID = product({
  framework: ["mocov3", "simclr", "byol", "swav"],
  freezePatchEmbed: [false, true],
});

/** The studies, by name. */
export const SUITES: Record<string, Suite> = {
  pilot: {
    name: "pilot",
    description: "The base configuration at several training lengths under five seeds, with " +
      "its random initialisation: the seed-to-seed spread and the climb above random init that " +
      "chose the cpu budget's length.",
    paper: [],
    fields: ["epochs"],
    grid: {
      smoke: [1, 2].map((epochs) => ({ epochs, warmupEpochs: 0.25 * epochs })),
      cpu: [1, 2, 4].map((epochs) => ({ epochs, warmupEpochs: 0.1 * epochs })),
      gpu: [2, 5, 10].map((epochs) => ({ epochs, warmupEpochs: 0.1 * epochs })),
    },
    seeds: { cpu: [0, 1, 2, 3, 4], gpu: [0, 1, 2, 3, 4] },
    randomInit: true,
  },
  stability: {
    name: "stability",
    description: "A learning-rate sweep at two batch sizes, with a learned and a frozen random " +
      "patch projection: larger batches and learning rates give dips (sudden drops of the kNN " +
      "monitor, partial recoveries) preceded by spikes of the patch projection's gradient norm, " +
      "and freezing the projection removes much of it (the paper's Figures 4 and 7).",
    paper: [
      { label: "batch 1k", value: 71.5, match: { batchSize: 1024 }, note: "ViT-B, 100 ep" },
      { label: "batch 2k", value: 72.6, match: { batchSize: 2048 }, note: "ViT-B, 100 ep" },
      { label: "batch 4k", value: 72.2, match: { batchSize: 4096 }, note: "dips" },
      { label: "batch 6k", value: 69.7, note: "big dips" },
      { label: "lr 0.5e-4", value: 70.4, note: "batch 4k" },
      { label: "lr 1.0e-4", value: 72.2, note: "batch 4k" },
      { label: "lr 1.5e-4", value: 71.7, note: "batch 4k, learned patch projection; dips" },
      { label: "lr 1.5e-4, random patch projection", value: 73.4, note: "batch 4k" },
    ],
    fields: ["batchSize", "baseLr", "freezePatchEmbed"],
    grid: {
      smoke: product({ batchSize: [16, 32], baseLr: [1.5e-3, 6e-3], freezePatchEmbed: [false] }),
      cpu: product({
        batchSize: [64, 256],
        // Up to 64x: at 16x the learned projection's gradient spikes but no run dips or fails.
        baseLr: [CPU_LR, 4 * CPU_LR, 16 * CPU_LR, 64 * CPU_LR],
        freezePatchEmbed: [false, true],
      }),
      gpu: product({
        batchSize: [1024, 4096],
        baseLr: [1.5e-3, 6e-3, 2.4e-2],
        freezePatchEmbed: [false, true],
      }),
    },
    base: { cpu: { knnTrainSize: 2000, knnTestSize: 1000 } },
    monitorImages: { smoke: 32, cpu: 3072, gpu: 20 * 4096 },
    // Three seeds, the floor: 16 configs x 5 seeds would not fit the cpu budget's 6 hours
    // with the other suites, and the sweep's effects at high lr are several points wide.
    seeds: { cpu: [0, 1, 2] },
  },
  "patch-projection": {
    name: "patch-projection",
    description: "Learned versus random (frozen at initialisation) patch projection for MoCo v3, " +
      "SimCLR, BYOL and SwAV: freezing the first layer improves accuracy for all four frameworks " +
      "(the learning-rate sweep of MoCo v3 is in the stability suite); and the frameworks " +
      "against each other (learned projection): MoCo v3 ahead of SimCLR, BYOL and SwAV.",
    paper: [
      { label: "MoCo v3, lr 0.5e-4", value: 0.4, unit: "points", note: "ViT-B random - learned" },
      { label: "MoCo v3, lr 1.0e-4", value: 0.6, unit: "points" },
      { label: "MoCo v3, lr 1.5e-4", value: 1.7, unit: "points", note: "73.4 with random" },
      { label: "SimCLR", value: 0.8, unit: "points", match: { framework: "simclr" } },
      { label: "BYOL", value: 1.3, unit: "points", match: { framework: "byol" } },
      { label: "MoCo v3", value: 1.7, unit: "points", match: { framework: "mocov3" } },
      {
        label: "SwAV",
        value: 0.6,
        unit: "points",
        match: { framework: "swav" },
        note: "65.8 -> 66.4; the learned projection diverges at a higher lr",
      },
      ...FRAMEWORK_TOP1.map(([label, s, b]) => ({
        label: `${label} ViT-S / ViT-B`,
        value: s,
        note: `ViT-B ${b}; framework comparison, learned projection`,
      })),
    ],
    fields: ["framework", "freezePatchEmbed"],
    grid: {
      ...everyBudget(PATCH_PROJECTION_GRID),
      "cpu-long": PATCH_PROJECTION_GRID,
    },
    randomInit: ["cpu-long"],
  },
  posemb: {
    name: "posemb",
    description: "Position embedding (2D sin-cos, learned, none) with the class token, and " +
      "sin-cos with mean pooling of the patch tokens: sin-cos is best, none costs little.",
    paper: [
      { label: "sin-cos", value: 76.5, match: { posEmb: "sincos", pool: "cls" }, note: "ViT-B" },
      { label: "learned", value: 76.1, match: { posEmb: "learned", pool: "cls" } },
      { label: "none", value: 74.9, match: { posEmb: "none", pool: "cls" } },
      {
        label: "mean pool (no final LN)",
        value: 76.3,
        match: { posEmb: "sincos", pool: "mean" },
      },
    ],
    fields: ["posEmb", "pool"],
    grid: everyBudget([
      { posEmb: "sincos", pool: "cls" },
      { posEmb: "learned", pool: "cls" },
      { posEmb: "none", pool: "cls" },
      { posEmb: "sincos", pool: "mean" },
    ]),
  },
  "patch-size": {
    name: "patch-size",
    description: "Patch size on 28x28 images: 7x7 patches (16 tokens) versus 4x4 (49 tokens), " +
      "with the forward FLOPs per image: smaller patches are more accurate and cost more.",
    paper: [
      {
        label: "ViT-L/16",
        value: 77.6,
        match: { patchSize: 7 },
        vit: { name: "vit_large", patchSize: 16 },
      },
      {
        label: "ViT-BN-L/7",
        value: 81.0,
        match: { patchSize: 4 },
        note: "with BN in the MLP blocks; the paper credits /7 with about +2-3 at about 6x FLOPs",
        vit: { name: "vit_large", patchSize: 7 },
      },
    ],
    fields: ["patchSize"],
    grid: {
      smoke: [{ patchSize: 7 }, { patchSize: 4 }],
      cpu: [{ patchSize: 7 }, { patchSize: 4 }],
      gpu: [{ patchSize: 7 }, { patchSize: 4 }, { patchSize: 2 }],
    },
  },
  scaling: {
    name: "scaling",
    description: "Model width and depth at a fixed number of training images: accuracy against " +
      "parameters and FLOPs (the paper gains about 1 point from ViT-B to ViT-L to ViT-H).",
    paper: [
      { label: "ViT-B", value: 76.7, vit: { name: "vit_base" }, params: 86e6 },
      { label: "ViT-L", value: 77.6, vit: { name: "vit_large" }, params: 304e6 },
      { label: "ViT-H", value: 78.1, vit: { name: "vit_huge" }, params: 632e6 },
    ],
    fields: ["dim", "depth", "heads"],
    grid: {
      smoke: [
        { dim: 16, depth: 1, heads: 2 },
        { dim: 32, depth: 2, heads: 2 },
        { dim: 48, depth: 2, heads: 4 },
      ],
      cpu: [
        { dim: 32, depth: 2, heads: 2 },
        { dim: 64, depth: 4, heads: 4 },
        { dim: 96, depth: 4, heads: 4 },
      ],
      gpu: [
        { dim: 192, depth: 12, heads: 3 },
        { dim: 384, depth: 12, heads: 12 },
        { dim: 768, depth: 12, heads: 12 },
      ],
    },
  },
  optimizer: {
    name: "optimizer",
    description: "AdamW versus LAMB (the paper's LAMB: lr 5e-4, weight decay 1e-3, slightly " +
      "above AdamW but more sensitive to the learning rate).",
    paper: [
      {
        label: "LAMB",
        value: 72.5,
        match: { optimizer: "lamb" },
        note: "ViT-S, lr 5e-4, wd 1e-3; slightly above AdamW",
      },
    ],
    fields: ["optimizer", "baseLr", "weightDecay"],
    grid: {
      smoke: [
        { optimizer: "adamw", baseLr: 1.5e-3, weightDecay: 0.1 },
        { optimizer: "lamb", baseLr: 5e-3, weightDecay: 1e-3 },
      ],
      // The paper's LAMB lr is 5e-4 / 1.5e-4 = 3.3x its AdamW lr; the same ratio here.
      cpu: [
        { optimizer: "adamw", baseLr: CPU_LR, weightDecay: 0.1 },
        { optimizer: "lamb", baseLr: 5e-3, weightDecay: 1e-3 },
      ],
      gpu: [
        { optimizer: "adamw", baseLr: 1.5e-4, weightDecay: 0.1 },
        { optimizer: "lamb", baseLr: 5e-4, weightDecay: 1e-3 },
      ],
    },
    base: { cpu: { knnTrainSize: 1000, knnTestSize: 1000 } },
    monitorImages: { smoke: 32, cpu: 1024 },
  },
};

/** The paper's studies, in the order `--suite all` runs them (the pilot is run by name). */
export const SUITE_NAMES = Object.keys(SUITES).filter((n) => n !== "pilot");

/** One run of a suite: its id, the varied field values, the seed and the whole partial config. */
export interface PlannedRun {
  /** `<suite>_<budget>_<field>-<value>_..._seed-<n>`: also the run directory's name. */
  runId: string;
  /** The varied fields' values (the suite's `fields`, from the resolved config). */
  varied: Variant;
  /** The run's seed (initialisation, data order, augmentation). */
  seed: number;
  /** True for the untrained baseline: the base config's backbone at its random init. */
  randomInit: boolean;
  /** Everything to pass to `resolveConfig` except `outDir` and `backend` (with `seed`). */
  config: Partial<PretrainConfig>;
}

/**
 * The run id of a variant under a seed: the suite, the budget, each varied field with its value,
 * then the seed.
 *
 * @example
 * ```ts
 * runIdOf("posemb", "cpu", { posEmb: "none", pool: "cls" }, 2);
 * // "posemb_cpu_posEmb-none_pool-cls_seed-2"
 * ```
 */
export function runIdOf(suite: string, budget: Budget, varied: Variant, seed: number): string {
  const parts = Object.entries(varied).map(([k, v]) => `${k}-${v}`);
  return [suite, budget, ...parts, `seed-${seed}`].join("_").replace(/[^A-Za-z0-9_.+-]/g, "");
}

/** The seeds of a suite at a budget: the suite's own where it sets them, else the budget's. */
export function suiteSeeds(name: string, budget: Budget): number[] {
  return getSuite(name).seeds?.[budget] ?? BUDGET_SPECS[budget].seeds;
}

/**
 * A budget in one line with its seeds: those of `suite` where given (a suite may run other
 * seeds than its budget), else the budget's.
 *
 * @example
 * ```ts
 * budgetText("cpu", "stability"); // "Fashion-MNIST, vit_micro ... 10,000 images; 3 seeds"
 * ```
 */
export function budgetText(budget: Budget, suite?: string): string {
  const seeds = suite ? suiteSeeds(suite, budget) : BUDGET_SPECS[budget].seeds;
  return `${BUDGET_SPECS[budget].about}; ${seeds.length} seeds`;
}

/** Throws for an unknown suite or budget, listing the known ones. */
export function getSuite(name: string): Suite {
  const s = SUITES[name];
  if (!s) {
    throw new RangeError(`unknown suite "${name}": choose one of ${SUITE_NAMES.join(", ")}, all`);
  }
  return s;
}

/** Checks a budget name. */
export function checkBudget(budget: string): Budget {
  if (!(BUDGETS as readonly string[]).includes(budget)) {
    throw new RangeError(`unknown budget "${budget}": choose one of ${BUDGETS.join(", ")}`);
  }
  return budget as Budget;
}

/**
 * The runs of a suite at a budget: every variant of the grid under every seed, seed by seed (the
 * whole grid under the first seed, then under the next), so that a suite stopped part way has
 * every configuration at the seeds done so far. Each config is the budget's base, the suite's
 * base and the variant, with the seed and a monitor interval from {@link Suite.monitorImages}.
 * A suite with {@link Suite.randomInit} gets a random-init run (varied fields empty) at the head
 * of each seed.
 *
 * @example
 * ```ts
 * budgetConfigs("posemb", "smoke").map((r) => r.runId);
 * // ["posemb_smoke_posEmb-sincos_pool-cls_seed-0", "posemb_smoke_posEmb-learned_pool-cls_seed-0", ...]
 * ```
 */
export function budgetConfigs(name: string, budget: Budget): PlannedRun[] {
  const suite = getSuite(name);
  const grid = suiteGrid(name, budget);
  const spec = BUDGET_SPECS[budget];
  const seeds = suiteSeeds(name, budget);
  const plan = (variant: Variant, seed: number, randomInit: boolean): PlannedRun => {
    const config: Partial<PretrainConfig> = {
      ...spec.base,
      ...suite.base?.[budget],
      ...variant,
      seed,
    };
    const batch = config.batchSize ?? PRESETS[config.preset ?? "fmnist"]?.batchSize ?? 1;
    const every = suite.monitorImages?.[budget];
    if (every && variant.knnEvery === undefined) {
      config.knnEvery = Math.max(1, Math.round(every / batch));
    }
    const varied: Variant = {};
    for (const f of suite.fields) {
      if (variant[f] !== undefined) (varied as Record<string, unknown>)[f] = variant[f];
    }
    const runId = randomInit
      ? [suite.name, budget, "random-init", `seed-${seed}`].join("_")
      : runIdOf(suite.name, budget, varied, seed);
    return { runId, varied, seed, randomInit, config };
  };
  const random = suite.randomInit === true ||
    (Array.isArray(suite.randomInit) && suite.randomInit.includes(budget));
  return seeds.flatMap((seed) => [
    ...(random ? [plan({}, seed, true)] : []),
    ...grid.map((variant) => plan(variant, seed, false)),
  ]);
}

/**
 * The grid of a suite at a budget; throws, naming the suites that run there, when the suite has
 * none (only some suites run at `cpu-long`).
 *
 * @example
 * ```ts
 * suiteGrid("posemb", "cpu-long"); // RangeError: suite "posemb" has no runs at budget cpu-long ...
 * ```
 */
export function suiteGrid(name: string, budget: Budget): Variant[] {
  const grid = getSuite(name).grid[budget];
  if (!grid) {
    throw new RangeError(
      `suite "${name}" has no runs at budget ${budget}: at ${budget} run ` +
        `${suitesAt(budget).join(", ")}`,
    );
  }
  return grid;
}

/**
 * The suites that run at a budget (all of them at the {@link NOTEBOOK_BUDGETS}), in
 * {@link SUITE_NAMES} order.
 *
 * @example
 * ```ts
 * suitesAt("cpu-long"); // ["patch-projection"]
 * ```
 */
export function suitesAt(budget: Budget): string[] {
  return SUITE_NAMES.filter((n) => SUITES[n].grid[budget] !== undefined);
}
