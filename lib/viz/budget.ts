/**
 * The budget a notebook runs at (`VITSSL_BUDGET=smoke|cpu|gpu`, default `cpu`) and what each
 * notebook does at each: `smoke` runs in seconds (the test suite executes every notebook so),
 * `cpu` in minutes on a laptop, `gpu` at workbench scale on one GPU. The budget names are the
 * experiments' that every suite defines (`NOTEBOOK_BUDGETS` of `lib/experiments/suites.ts`; the
 * study budget `cpu-long` is read by notebook 08 beside `cpu`, not run by notebooks). Each budget
 * keeps its notebook runs apart ({@link runsDir}).
 *
 * @example
 * ```ts
 * import { byBudget } from "./budget.ts";
 * const steps = byBudget({ smoke: 4, cpu: 200, gpu: 2000 });
 * ```
 * @module
 */
import * as aq from "arquero";
import {
  NOTEBOOK_BUDGETS as BUDGETS,
  type NotebookBudget as Budget,
} from "../experiments/suites.ts";
import { repoPath } from "./runs.ts";

export {
  NOTEBOOK_BUDGETS as BUDGETS,
  type NotebookBudget as Budget,
} from "../experiments/suites.ts";

/**
 * The budget from `VITSSL_BUDGET` (default `cpu`). Throws naming the variable and the choices
 * when it holds anything else.
 *
 * @example
 * ```ts
 * budget(); // "smoke" under VITSSL_BUDGET=smoke
 * ```
 */
export function budget(value: string | undefined = Deno.env.get("VITSSL_BUDGET")): Budget {
  const v = (value ?? "").trim().toLowerCase();
  if (v === "") return "cpu";
  if ((BUDGETS as readonly string[]).includes(v)) return v as Budget;
  throw new Error(
    `VITSSL_BUDGET is "${value}": expected one of ${BUDGETS.join(", ")} ` +
      "(unset means cpu)",
  );
}

/**
 * The value for the current budget: `byBudget({ smoke: 4, cpu: 200, gpu: 2000 })`.
 *
 * @example
 * ```ts
 * const cfg = byBudget({ smoke: { maxSteps: 8 }, cpu: { epochs: 2 }, gpu: { epochs: 20 } });
 * ```
 */
export function byBudget<T>(choices: Record<Budget, T>, b: Budget = budget()): T {
  return choices[b];
}

/**
 * Where a notebook keeps its runs and result tables: `$VITSSL_RUNS/<name>` when the variable is
 * set (the test suite points it at a temp dir), else `data/runs/notebooks-<budget>/<name>`.
 *
 * @example
 * ```ts
 * runsDir("02_pretrain", "smoke"); // ".../data/runs/notebooks-smoke/02_pretrain"
 * ```
 */
export function runsDir(name = "", b: Budget = budget()): string {
  const base = Deno.env.get("VITSSL_RUNS") || repoPath(`data/runs/notebooks-${b}`);
  return name ? `${base.replace(/\/$/, "")}/${name}` : base;
}

/** One notebook: what it shows, the part of the paper it follows, and its work per budget. */
export interface NotebookInfo {
  /** File name without `.ipynb`. */
  name: string;
  shows: string;
  paper: string;
  /** Whether it is committed executed (it shows committed results from `data/results/`). */
  committedExecuted: boolean;
  work: Record<Budget, string>;
}

/** The notebooks in `notebooks/`, in order, with what each does at each budget. */
export const NOTEBOOKS: NotebookInfo[] = [
  {
    name: "00_quickstart",
    shows: "pick a backend, build a ViT, two augmented views of Fashion-MNIST images, a few " +
      "MoCo v3 steps and their loss",
    paper: "Sec. 3 (MoCo v3, Algorithm 1)",
    committedExecuted: false,
    work: {
      smoke: "ViT-nano, 6 steps of batch 32",
      cpu: "ViT-micro, 40 steps of batch 128",
      gpu: "ViT-micro, 200 steps of batch 256",
    },
  },
  {
    name: "01_vit_anatomy",
    shows: "patch embedding, the 2D sin-cos table, similarity of position embeddings (sin-cos vs " +
      "learned), parameters and FLOPs of ViT-S/B/L/H",
    paper: "Sec. 5 (ViT details), Table 1 (model sizes), Sec. 6.2 (position embedding)",
    committedExecuted: false,
    work: {
      smoke: "analytic; learned embedding after 4 steps",
      cpu: "analytic; learned embedding after 60 steps (~1 min)",
      gpu: "analytic; learned embedding after 1000 steps",
    },
  },
  {
    name: "02_pretrain",
    shows: "a full pretraining run with live progress, loss and kNN curves, the checkpoint",
    paper: "Sec. 3 and 5 (the recipe), the kNN monitor",
    committedExecuted: false,
    work: {
      smoke: "preset smoke: synthetic shapes, ViT-nano, 16 steps",
      cpu: "preset default, the default recipe: Fashion-MNIST, ViT-micro D 128, 10 epochs " +
        "(~12 min on 2 cores with AVX512-BF16)",
      gpu: "preset fmnist-long: the longer Fashion-MNIST recipe",
    },
  },
  {
    name: "03_evaluate",
    shows: "kNN, linear probe and fine-tuning of the checkpoint of 02 against raw pixels and " +
      "random init; UMAP maps of its test features against random init",
    paper: "Sec. 5-6 (linear probing, end-to-end fine-tuning)",
    committedExecuted: false,
    work: {
      smoke: "synthetic shapes; 2 probe epochs, 1 fine-tune epoch on 256 images",
      cpu: "Fashion-MNIST; 30 probe epochs, 1 fine-tune epoch on 5,000 images",
      gpu: "Fashion-MNIST; 90 probe epochs, 5 fine-tune epochs on all images",
    },
  },
  {
    name: "04_stability",
    shows: "the stability suite: linear top-1 against lr per batch and patch projection " +
      "(mean ± 95% CI over seeds), verdicts, kNN curves with dips marked, gradient-norm traces; " +
      "the patch-projection suite's curves",
    paper: "Sec. 4 (instability, random patch projection)",
    committedExecuted: true,
    work: {
      smoke: "both suites trained at smoke size (seconds)",
      cpu: "committed data/results/{stability,patch-projection}.csv, else trains them",
      gpu: "both suites at gpu size",
    },
  },
  {
    name: "05_positional_embedding",
    shows: "sin-cos vs learned vs no position embedding, class token vs mean pooling",
    paper: "Sec. 6.2 (ablations: position embedding, class token)",
    committedExecuted: true,
    work: {
      smoke: "the posemb suite at smoke size",
      cpu: "committed data/results/posemb.csv, else trains it",
      gpu: "the suite at gpu size",
    },
  },
  {
    name: "06_patch_size",
    shows: "accuracy and cost against patch size",
    paper: "Sec. 6 (ViT-L/16 vs ViT-BN-L/7)",
    committedExecuted: true,
    work: {
      smoke: "the patch-size suite at smoke size",
      cpu: "committed data/results/patch-size.csv, else trains it",
      gpu: "the suite at gpu size",
    },
  },
  {
    name: "07_scaling",
    shows: "accuracy against model width and depth, parameters and FLOPs",
    paper: "Sec. 6 (ViT-B/L/H)",
    committedExecuted: true,
    work: {
      smoke: "the scaling suite at smoke size",
      cpu: "committed data/results/scaling.csv, else trains it",
      gpu: "the suite at gpu size",
    },
  },
  {
    name: "08_frameworks",
    shows: "MoCo v3 vs SimCLR vs BYOL vs SwAV, each with a learned and a random patch projection",
    paper: "Sec. 6.1 (frameworks), Sec. 4 (random patch projection)",
    committedExecuted: true,
    work: {
      smoke: "the patch-projection suite at smoke size",
      cpu: "committed data/results/patch-projection.csv, else trains it; and the committed " +
        "cpu-long rows (never trained here)",
      gpu: "the suite at gpu size",
    },
  },
  {
    name: "09_attention",
    shows: "attention maps of the class token over the image, pretrained vs random model; " +
      "UMAP maps of their test features",
    paper: "the ViT backbone (Sec. 5); no figure of the paper",
    committedExecuted: false,
    work: {
      smoke: "the checkpoint of 02 (or a 16-step smoke run), 6 images",
      cpu: "the checkpoint of 02 (or its run, trained first), 8 images",
      gpu: "the checkpoint of 02, 8 images",
    },
  },
];

/** {@link NOTEBOOKS} as an arquero table (notebook, smoke, cpu, gpu). */
export function budgetTable(): aq.ColumnTable {
  return aq.from(NOTEBOOKS.map((n) => ({ notebook: n.name, ...n.work })));
}
