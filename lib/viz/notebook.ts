/**
 * Display helpers for the Jupyter notebooks (Deno kernel): rich output that JupyterLab, VS Code,
 * `jupyter nbconvert --to html` and GitHub all show, plus the budget every notebook reads.
 *
 * - plotly figures: `application/vnd.plotly.v1+json` (interactive in JupyterLab / VS Code) with a
 *   static `image/png` rendered by headless Chromium (what nbconvert's HTML and GitHub show), or,
 *   without Chromium, a `text/html` fallback that loads plotly.js from a CDN;
 * - arquero tables: `text/html` (and Markdown as `text/plain`);
 * - uint8 image grids: `image/png` (encoded with pngjs);
 * - live progress: one display updated in place (`update_display_data`).
 *
 * Outside a Jupyter kernel (a test, `deno run`) every `show*` prints its `text/plain` instead, so
 * the same code runs anywhere.
 *
 * The budget (`VITSSL_BUDGET=smoke|cpu|gpu`, default `cpu`) sizes each notebook's work:
 * `smoke` runs in seconds (the test suite executes every notebook so), `cpu` in minutes on a
 * laptop, `gpu` at workbench scale on one GPU. {@link NOTEBOOKS} says what each notebook does at
 * each budget.
 *
 * @example
 * ```ts
 * import { byBudget, showPlot, showTable } from "./notebook.ts";
 * const steps = byBudget({ smoke: 4, cpu: 200, gpu: 2000 });
 * await showPlot({ data: [{ y: [3, 1, 2], type: "scatter" }], layout: { title: { text: "loss" } } });
 * ```
 * @module
 */
import * as aq from "arquero";
import { PNG } from "pngjs";
import { Buffer } from "node:buffer";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import * as tf from "@tensorflow/tfjs-core";
import type { KnnRow, LogRow, RunHooks } from "../train/pretrain.ts";
import { type BackendName, BACKENDS } from "../backend.ts";
import type { PretrainConfig } from "../train/config.ts";
import { numPatches, type ViT, type ViTConfig, vitForward } from "../model/vit.ts";
import { pretrain, resolveConfig } from "../train/pretrain.ts";
import { RESULTS_DIR, runSuite } from "../experiments/run.ts";
import { budgetConfigs, type PaperNumber, SUITES } from "../experiments/suites.ts";
import { curvesFile, readTable, suiteFile } from "../experiments/tables.ts";
import { findDips, gradientSpikes } from "../experiments/stability.ts";

// ---------------------------------------------------------------------------------------------
// Budgets

/** The work sizes a notebook knows. */
export const BUDGETS = ["smoke", "cpu", "gpu"] as const;
/** A work size: `smoke` (seconds, tests), `cpu` (minutes, the default), `gpu` (one GPU). */
export type Budget = typeof BUDGETS[number];

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
      cpu: "preset fmnist, the default recipe: Fashion-MNIST, ViT-micro (~15 min on 2 cores)",
      gpu: "preset fmnist-long: the longer Fashion-MNIST recipe",
    },
  },
  {
    name: "03_evaluate",
    shows: "kNN, linear probe and fine-tuning of the checkpoint of 02 against raw pixels and " +
      "random init",
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
    shows: "the stability and patch-projection suites: kNN curves with dips marked, " +
      "gradient-norm traces",
    paper: "Sec. 4 (instability, random patch projection)",
    committedExecuted: false,
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
    shows: "MoCo v3 vs SimCLR vs BYOL, each with a learned and a random patch projection",
    paper: "Sec. 6.1 (frameworks), Sec. 4 (random patch projection)",
    committedExecuted: true,
    work: {
      smoke: "the patch-projection suite at smoke size",
      cpu: "committed data/results/patch-projection.csv, else trains it",
      gpu: "the suite at gpu size",
    },
  },
  {
    name: "09_attention",
    shows: "attention maps of the class token over the image, pretrained vs random model",
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

// ---------------------------------------------------------------------------------------------
// Paths

/** The repository root (absolute, with a trailing slash). */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));

/** A path under the repository root: `repoPath("data/results")`. */
export function repoPath(rel: string): string {
  return ROOT + rel.replace(/^\.?\//, "");
}

/** A path relative to the repository root when it lies under it (for display). */
export function relPath(path: string): string {
  return path.startsWith(ROOT) ? path.slice(ROOT.length) : path;
}

/**
 * Where a notebook keeps its runs and result tables: `$VITSSL_RUNS/<name>` when the variable is
 * set (the test suite points it at a temp dir), else `data/runs/notebooks-<budget>/<name>`.
 */
export function runsDir(name = "", b: Budget = budget()): string {
  const base = Deno.env.get("VITSSL_RUNS") || repoPath(`data/runs/notebooks-${b}`);
  return name ? `${base.replace(/\/$/, "")}/${name}` : base;
}

/**
 * The tfjs backend a notebook starts: `$VITSSL_BACKEND` when set, else `wasm` for the smoke and
 * cpu budgets (the fastest CPU backend, and quiet) and `auto` for gpu.
 */
export function backendName(b: Budget = budget()): BackendName {
  const v = Deno.env.get("VITSSL_BACKEND");
  if (v) {
    if (!(BACKENDS as readonly string[]).includes(v)) {
      throw new Error(`VITSSL_BACKEND is "${v}": expected one of ${BACKENDS.join(", ")}`);
    }
    return v as BackendName;
  }
  return b === "gpu" ? "auto" : "wasm";
}

/**
 * The pretraining run of notebook 02 (which 03 and 09 evaluate), per budget: `smoke` is the
 * smoke preset (synthetic shapes, 16 steps), `cpu` the default Fashion-MNIST recipe (`fmnist`),
 * `gpu` the longer one. Its directory is `runsDir("02_pretrain")`.
 */
export function pretrainSettings(b: Budget = budget()): Partial<PretrainConfig> & {
  preset: string;
} {
  const common = { backend: backendName(b), outDir: runsDir("02_pretrain", b) };
  return byBudget({
    smoke: { ...common, preset: "smoke", knnEvery: 2 },
    cpu: { ...common, preset: "fmnist", knnEvery: 26, knnTrainSize: 5000, knnTestSize: 1000 },
    gpu: { ...common, preset: "fmnist-long", knnEvery: 100 },
  }, b);
}

/**
 * Whether a run directory holds a finished run: its `log.csv` has a row for every step its
 * `config.json` planned (all epochs, or `maxSteps`).
 */
export async function runFinished(dir: string): Promise<boolean> {
  try {
    const { config, resolved } = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    const last = config.maxSteps > 0
      ? Math.min(config.maxSteps, resolved.totalSteps)
      : resolved.totalSteps;
    return (await readRun(dir)).log.length >= last;
  } catch {
    return false;
  }
}

/**
 * The backbone of notebook 02's run, training (or finishing) that run first, with live progress,
 * when it is missing or was stopped midway, so that 03 and 09 also run alone. Returns the path
 * of `backbone.safetensors`.
 */
export async function ensurePretrained(): Promise<string> {
  const cfg = resolveConfig(pretrainSettings());
  const path = `${cfg.outDir}/backbone.safetensors`;
  if (!(await runFinished(cfg.outDir))) {
    await showMarkdown(
      `The run of notebook 02 at budget ${budget()} (\`${relPath(cfg.outDir)}\`) is missing or ` +
        "unfinished: training it now.",
    );
    const progress = await trainProgress(cfg.outDir);
    await pretrain(cfg, progress);
    await progress.finish();
  }
  return path;
}

/** The rows of a run directory's `log.csv` and `knn.csv` (kNN rows deduplicated by step). */
export async function readRun(dir: string): Promise<{ log: LogRow[]; knn: KnnRow[] }> {
  const read = async (file: string) => {
    let text: string;
    try {
      text = await Deno.readTextFile(`${dir}/${file}`);
    } catch {
      return [];
    }
    const lines = text.split(/\r?\n/).filter((l) => l.trim() !== "");
    if (lines.length < 2) return [];
    const head = lines[0].split(",");
    return lines.slice(1).map((l) => {
      const v = l.split(",");
      return Object.fromEntries(head.map((h, i) => [h, Number(v[i])]));
    });
  };
  const log = (await read("log.csv")) as unknown as LogRow[];
  const byStep = new Map<number, KnnRow>();
  for (const r of (await read("knn.csv")) as unknown as KnnRow[]) byStep.set(r.step, r);
  return { log, knn: [...byStep.values()].sort((a, b) => a.step - b.step) };
}

/**
 * Parameters of a ViT, counted from its config (what `countParams(createViT(cfg).params)`
 * gives, without building it): patch projection, class token, position table (also the fixed
 * sin-cos one, as timm counts it), 12 D^2 + 13 D per block (for mlpRatio 4), final norm.
 */
export function vitParams(cfg: ViTConfig): number {
  const D = cfg.dim, N = numPatches(cfg);
  const hidden = Math.round(D * cfg.mlpRatio);
  const patch = cfg.channels * cfg.patchSize ** 2 * D + D;
  const pos = cfg.posEmb === "none" ? 0 : (N + 1) * D;
  const block = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (D * hidden + hidden) +
    (hidden * D + D);
  return patch + D + pos + cfg.depth * block + (cfg.pool === "cls" ? 2 * D : 0);
}

// ---------------------------------------------------------------------------------------------
// Experiment suites (notebooks 04-08)

/** A suite's tables as a notebook shows them. */
export interface SuiteData {
  /** `<suite>.csv` rows of this budget (one per run). */
  results: aq.ColumnTable;
  /** `<suite>.curves.csv` rows of those runs (kNN monitor points and per-step gradients). */
  curves: aq.ColumnTable;
  /** Where the rows came from (for the notebook's text). */
  source: string;
}

function ofBudget(t: aq.ColumnTable, b: Budget): aq.ColumnTable {
  if (t.numRows() === 0 || !t.columnNames().includes("budget")) return t;
  return t.params({ b }).filter((d: { budget: string }, $: { b: string }) => d.budget === $.b);
}

function ofRuns(curves: aq.ColumnTable, results: aq.ColumnTable): aq.ColumnTable {
  if (curves.numRows() === 0 || results.numRows() === 0) return curves;
  const ids = new Set((results.array("run_id") as unknown[]).map(String));
  return aq.from(
    (curves.objects() as { run_id: unknown }[]).filter((r) => ids.has(String(r.run_id))),
  );
}

/**
 * A suite's results at the current budget. At `cpu` and `gpu`, the committed tables in
 * `data/results/` are used when they hold every run of the suite at that budget (set
 * `VITSSL_RERUN=1` to train anyway); otherwise (and always at `smoke`) the suite runs now with
 * `runSuite`, into `runsDir("suites")`, its progress in a live display. Complete runs are
 * skipped, so notebooks sharing a suite (04 and 08) train it once.
 *
 * @example
 * ```ts
 * const { results, curves } = await suiteData("posemb");
 * ```
 */
export async function suiteData(suite: string, b: Budget = budget()): Promise<SuiteData> {
  const planned = budgetConfigs(suite, b).length;
  if (b !== "smoke" && !Deno.env.get("VITSSL_RERUN")) {
    const dir = repoPath(RESULTS_DIR);
    const results = ofBudget(await readTable(suiteFile(dir, suite)), b);
    if (results.numRows() >= planned) {
      const curves = ofRuns(await readTable(curvesFile(dir, suite)), results);
      return { results, curves, source: `${RESULTS_DIR}/${suite}.csv (committed, budget ${b})` };
    }
  }
  const base = runsDir("suites", b);
  const resultsDir = `${base}/results`;
  const log = await liveLog(12);
  const res = await runSuite(suite, b, {
    resultsDir,
    runsDir: `${base}/runs`,
    backend: backendName(b),
    print: log.print,
  });
  await log.finish();
  const results = ofBudget(await readTable(suiteFile(resultsDir, suite)), b);
  const curves = ofRuns(await readTable(curvesFile(resultsDir, suite)), results);
  return {
    results,
    curves,
    source: `${relPath(resultsDir)}/${suite}.csv (trained now at budget ${b}: ` +
      `${res.ran.length} run(s), ${res.skipped.length} found complete)`,
  };
}

/**
 * Our results beside the paper's numbers: every run of the suite (its varied fields, kNN top-1,
 * dips, parameters, MFLOPs) with the paper number whose `match` it satisfies, and then the paper
 * numbers no run matches. Accuracies: ours are Fashion-MNIST kNN top-1, the paper's ImageNet
 * linear top-1 (or gains in points), so read trends, not levels.
 */
export function paperComparison(suite: string, results: aq.ColumnTable): aq.ColumnTable {
  const s = SUITES[suite];
  if (!s) throw new Error(`paperComparison: unknown suite "${suite}"`);
  const rows = results.objects() as Record<string, unknown>[];
  const matches = (r: Record<string, unknown>, m: Record<string, unknown>) =>
    Object.entries(m).every(([k, v]) => String(r[k]) === String(v));
  const used = new Set<PaperNumber>();
  const out: Record<string, unknown>[] = rows.map((r) => {
    const p = s.paper.find((q) => q.match && matches(r, q.match as Record<string, unknown>));
    if (p) used.add(p);
    return {
      ...Object.fromEntries(s.fields.map((f) => [f, r[f]])),
      "kNN top-1 (ours, %)": r.knn_top1,
      dips: r.dips,
      params: r.params,
      MFLOPs: Number(r.flops) / 1e6,
      paper: p ? p.label : "",
      "paper (ImageNet)": p ? `${p.value}${p.unit === "points" ? " pts" : "%"}` : "",
    };
  });
  for (const p of s.paper.filter((q) => !used.has(q))) {
    out.push({
      ...Object.fromEntries(s.fields.map((f) => [f, ""])),
      "kNN top-1 (ours, %)": null,
      dips: null,
      params: p.params ?? null,
      MFLOPs: null,
      paper: p.label + (p.note ? ` (${p.note})` : ""),
      "paper (ImageNet)": `${p.value}${p.unit === "points" ? " pts" : "%"}`,
    });
  }
  return aq.from(out);
}

type Row = Record<string, unknown>;

function runPoints(curves: aq.ColumnTable, runId: string, kind: "knn" | "step"): Row[] {
  return (curves.objects() as Row[])
    .filter((r) => String(r.run_id) === runId && r.kind === kind)
    .sort((a, b) => Number(a.step) - Number(b.step));
}

/**
 * kNN monitor curves of a suite's runs (one line per run, named by `label`) against training
 * images seen, with the bottom of every dip ({@link findDips}, `minDepth` points) marked by a
 * red x.
 */
export function dipCurvesSpec(
  data: SuiteData,
  label: (row: Row) => string,
  opts: { title?: string; minDepth?: number } = {},
): PlotSpec {
  const traces: Record<string, unknown>[] = [];
  const dips: { x: number; y: number; text: string }[] = [];
  for (const r of data.results.objects() as Row[]) {
    const pts = runPoints(data.curves, String(r.run_id), "knn");
    if (pts.length === 0) continue;
    const name = label(r);
    traces.push({
      type: "scatter",
      mode: "lines+markers",
      name,
      x: pts.map((p) => Number(p.images)),
      y: pts.map((p) => Number(p.top1)),
      marker: { size: 4 },
    });
    const curve = pts.map((p) => ({ step: Number(p.step), acc: Number(p.top1) }));
    for (const d of findDips(curve, { minDepth: opts.minDepth ?? 1 })) {
      const at = pts.find((p) => Number(p.step) === d.bottomStep)!;
      dips.push({ x: Number(at.images), y: d.bottomAcc, text: `${name}: -${d.depth.toFixed(1)}` });
    }
  }
  traces.push({
    type: "scatter",
    mode: "markers",
    name: `dips (${dips.length})`,
    x: dips.map((d) => d.x),
    y: dips.map((d) => d.y),
    hovertext: dips.map((d) => d.text),
    marker: { symbol: "x", size: 12, color: "#d00" },
  });
  return {
    data: traces,
    layout: {
      title: { text: opts.title ?? "kNN top-1 during training (x: dips)" },
      xaxis: { title: { text: "training images seen" } },
      yaxis: { title: { text: "kNN top-1 (%)" } },
      margin: { t: 50, r: 30, b: 50, l: 60 },
      legend: { orientation: "h", y: -0.2 },
    },
  };
}

/**
 * Gradient-norm traces of a suite's runs: the patch projection's (solid) and the last block's
 * (dotted, same colour) against training images seen, log scale, with the patch projection's
 * spikes ({@link gradientSpikes}, >= 3x its median) marked.
 */
export function gradientSpec(
  data: SuiteData,
  label: (row: Row) => string,
  opts: { title?: string } = {},
): PlotSpec {
  const colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2"];
  const traces: Record<string, unknown>[] = [];
  const spikes: { x: number; y: number }[] = [];
  (data.results.objects() as Row[]).forEach((r, i) => {
    const pts = runPoints(data.curves, String(r.run_id), "step");
    if (pts.length === 0) return;
    const color = colors[i % colors.length];
    const x = pts.map((p) => Number(p.images));
    // One legend entry per run: the solid patch-projection line; its dotted last-block line
    // toggles with it.
    const group = String(r.run_id);
    traces.push({
      type: "scatter",
      mode: "lines",
      name: label(r),
      legendgroup: group,
      x,
      y: pts.map((p) => Number(p.grad_patch)),
      line: { color, width: 1.5 },
    });
    traces.push({
      type: "scatter",
      mode: "lines",
      name: `${label(r)}: last block`,
      legendgroup: group,
      showlegend: false,
      x,
      y: pts.map((p) => Number(p.grad_last_block)),
      line: { color, width: 1, dash: "dot" },
    });
    const trace = pts.map((p) => ({ step: Number(p.step), grad_patch: Number(p.grad_patch) }));
    for (const sp of gradientSpikes(trace)) {
      spikes.push({ x: x[trace.findIndex((t) => t.step === sp.step)], y: sp.value });
    }
  });
  traces.push({
    type: "scatter",
    mode: "markers",
    name: `spikes (${spikes.length})`,
    x: spikes.map((s) => s.x),
    y: spikes.map((s) => s.y),
    marker: { symbol: "circle-open", size: 11, color: "#d00", line: { width: 2 } },
  });
  return {
    data: traces,
    layout: {
      title: { text: opts.title ?? "gradient norms: patch projection vs last block" },
      xaxis: { title: { text: "training images seen" } },
      yaxis: { title: { text: "gradient norm" }, type: "log" },
      margin: { t: 50, r: 30, b: 50, l: 60 },
      legend: { orientation: "h", y: -0.2 },
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Displaying

/** A Jupyter MIME bundle: MIME type -> data (strings, or JSON for `*+json` types). */
export type MimeBundle = Record<string, unknown>;

interface JupyterApi {
  broadcast(type: string, content: Record<string, unknown>): Promise<void>;
}

function jupyter(): JupyterApi | undefined {
  return (Deno as unknown as { jupyter?: JupyterApi }).jupyter;
}

/** Whether this code runs inside the Deno Jupyter kernel. */
export function inNotebook(): boolean {
  return jupyter() !== undefined;
}

/** Options of {@link display}. */
export interface DisplayOptions {
  /** Per-MIME metadata (`{ "image/png": { width: 400 } }`). */
  metadata?: Record<string, unknown>;
  /** Name this display so that a later call with `update: true` replaces it. */
  displayId?: string;
  /** Replace the display named `displayId` instead of adding one. */
  update?: boolean;
}

/**
 * Shows a MIME bundle as a cell output (in a kernel), or prints its `text/plain` (elsewhere).
 *
 * @example
 * ```ts
 * await display({ "text/html": "<b>hi</b>", "text/plain": "hi" });
 * ```
 */
export async function display(bundle: MimeBundle, opts: DisplayOptions = {}): Promise<void> {
  const api = jupyter();
  if (!api) {
    if (!opts.update) console.log(String(bundle["text/plain"] ?? "[rich output]"));
    return;
  }
  await api.broadcast(opts.update ? "update_display_data" : "display_data", {
    data: bundle,
    metadata: opts.metadata ?? {},
    transient: opts.displayId ? { display_id: opts.displayId } : {},
  });
}

/** Shows HTML (with a plain-text alternative). */
export async function showHtml(html: string, text = ""): Promise<void> {
  await display({ "text/html": html, "text/plain": text || html.replace(/<[^>]+>/g, "") });
}

/** Shows Markdown (rendered by every front end). */
export async function showMarkdown(md: string): Promise<void> {
  await display({ "text/markdown": md, "text/plain": md });
}

function escapeHtml(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

// ---------------------------------------------------------------------------------------------
// Plotly figures

/** A plotly figure: traces, layout and config, as `Plotly.newPlot` takes them. */
export interface PlotSpec {
  data: Record<string, unknown>[];
  layout?: Record<string, unknown>;
  config?: Record<string, unknown>;
}

/** Options of {@link plotBundle} and {@link showPlot}. */
export interface PlotOptions {
  /** Pixel size of the static image (and of the interactive figure). Default 760 x 420. */
  width?: number;
  height?: number;
  /**
   * Render a PNG with headless Chromium: `true`, `false`, or `auto` (the default: when
   * Chromium is found and `VITSSL_PLOT_PNG` is not `0`).
   */
  png?: boolean | "auto";
}

const PLOTLY_CDN = "https://cdn.jsdelivr.net/npm/plotly.js-dist@4.1.1/plotly.js";

function figureTitle(spec: PlotSpec): string {
  const t = spec.layout?.title as string | { text?: string } | undefined;
  return (typeof t === "string" ? t : t?.text) ?? "figure";
}

/** The figure's pixel size: the options', else the layout's, else 760 x 420. */
function figureSize(spec: PlotSpec, opts: PlotOptions): { width: number; height: number } {
  const w = Number(spec.layout?.width), h = Number(spec.layout?.height);
  return {
    width: Math.round(opts.width ?? (w > 0 ? w : 760)),
    height: Math.round(opts.height ?? (h > 0 ? h : 420)),
  };
}

/** The spec with its size fixed (and a white background), as the PNG and HTML draw it. */
function sized(spec: PlotSpec, width: number, height: number): PlotSpec {
  return {
    data: spec.data,
    layout: { paper_bgcolor: "white", ...spec.layout, width, height },
    config: { responsive: false, displaylogo: false, ...spec.config },
  };
}

/**
 * The MIME bundle of a plotly figure: `application/vnd.plotly.v1+json` (the interactive figure
 * for JupyterLab and VS Code) plus `image/png` when Chromium can render it, else a `text/html`
 * fallback that loads plotly.js from a CDN.
 */
export async function plotBundle(spec: PlotSpec, opts: PlotOptions = {}): Promise<MimeBundle> {
  const { width, height } = figureSize(spec, opts);
  const fig = sized(spec, width, height);
  const bundle: MimeBundle = {
    "application/vnd.plotly.v1+json": fig,
    "text/plain": `[plotly figure: ${figureTitle(spec)}]`,
  };
  const want = opts.png ?? "auto";
  const png = want === false || (want === "auto" && Deno.env.get("VITSSL_PLOT_PNG") === "0")
    ? null
    : await plotPng(fig, { width, height, required: want === true });
  if (png) bundle["image/png"] = Buffer.from(png).toString("base64");
  else bundle["text/html"] = plotHtml(fig, { script: "cdn" });
  return bundle;
}

/**
 * Shows a plotly figure (see {@link plotBundle}).
 *
 * @example
 * ```ts
 * await showPlot({ data: [{ x: [0, 1, 2], y: [4, 2, 1], type: "scatter" }] });
 * ```
 */
export async function showPlot(spec: PlotSpec, opts: PlotOptions = {}): Promise<void> {
  await display(await plotBundle(spec, opts));
}

/**
 * A standalone HTML fragment that draws the figure with plotly.js, loaded from a CDN
 * (`script: "cdn"`) or from a given URL (a `file://` URL of the local copy for Chromium).
 */
export function plotHtml(spec: PlotSpec, opts: { script: "cdn" | string; id?: string }): string {
  const id = opts.id ?? `vitssl-plot-${crypto.randomUUID().slice(0, 8)}`;
  const src = opts.script === "cdn" ? PLOTLY_CDN : opts.script;
  const json = JSON.stringify(spec).replace(/</g, "\\u003c");
  return `<div id="${id}"></div>\n<script>\n(function () {\n` +
    `  const spec = ${json};\n` +
    `  const draw = () => Plotly.newPlot("${id}", spec.data, spec.layout, spec.config);\n` +
    `  if (window.Plotly) { draw(); return; }\n` +
    `  const s = document.createElement("script");\n` +
    `  s.src = ${JSON.stringify(src)}; s.onload = draw;\n` +
    `  document.head.appendChild(s);\n})();\n</script>`;
}

let chromiumPath: string | null | undefined;

/**
 * The Chromium (or Chrome) executable: `$VITSSL_CHROMIUM` or `$CHROMIUM`, else the first of
 * `chromium`,
 * `chromium-browser`, `google-chrome`, `google-chrome-stable` on the PATH; null when none.
 */
export function findChromium(): string | null {
  if (chromiumPath !== undefined) return chromiumPath;
  const named = Deno.env.get("VITSSL_CHROMIUM") || Deno.env.get("CHROMIUM");
  const dirs = (Deno.env.get("PATH") ?? "").split(":").filter(Boolean);
  const names = named ? [named] : [
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
  ];
  const candidates = names.flatMap((n) => n.includes("/") ? [n] : dirs.map((d) => `${d}/${n}`));
  chromiumPath = null;
  for (const c of candidates) {
    try {
      if (Deno.statSync(c).isFile) {
        chromiumPath = c;
        break;
      }
    } catch { /* not there */ }
  }
  return chromiumPath;
}

/** The local plotly.js file (npm `plotly.js-dist`), or null when it is not installed. */
function plotlyFile(): string | null {
  try {
    return createRequire(import.meta.url).resolve("plotly.js-dist");
  } catch {
    const guess = repoPath("node_modules/plotly.js-dist/plotly.js");
    try {
      Deno.statSync(guess);
      return guess;
    } catch {
      return null;
    }
  }
}

/**
 * Renders a figure to PNG bytes with headless Chromium (about 3 s). Returns null when Chromium
 * or plotly.js is missing or the render fails, unless `required` (then it throws saying what to
 * install).
 */
export async function plotPng(
  spec: PlotSpec,
  opts: { width?: number; height?: number; required?: boolean } = {},
): Promise<Uint8Array | null> {
  const { width, height } = figureSize(spec, opts);
  const chromium = findChromium();
  const plotly = plotlyFile();
  const fail = (why: string): null => {
    if (opts.required) throw new Error(`cannot render the figure to PNG: ${why}`);
    return null;
  };
  if (!chromium) {
    return fail(
      "no Chromium found (install the Debian package chromium, or set VITSSL_CHROMIUM)",
    );
  }
  if (!plotly) return fail("npm package plotly.js-dist is not installed: run `deno install`");
  const dir = await Deno.makeTempDir({ prefix: "vitssl-plot-" });
  try {
    const fig = sized(spec, width, height);
    fig.config = { ...fig.config, staticPlot: true };
    const html = `<!DOCTYPE html><html><head><meta charset="utf-8">` +
      `<script src="file://${plotly}"></script></head>` +
      `<body style="margin:0;background:white">` +
      plotHtml(fig, { script: `file://${plotly}`, id: "fig" }) + `</body></html>`;
    await Deno.writeTextFile(`${dir}/fig.html`, html);
    const out = await new Deno.Command(chromium, {
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        `--user-data-dir=${dir}/profile`,
        `--window-size=${width},${height}`,
        "--virtual-time-budget=5000",
        `--screenshot=${dir}/fig.png`,
        `file://${dir}/fig.html`,
      ],
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    try {
      return await Deno.readFile(`${dir}/fig.png`);
    } catch {
      const err = new TextDecoder().decode(out.stderr).split("\n").slice(-3).join(" ");
      return fail(`${chromium} wrote no screenshot (exit ${out.code}): ${err}`);
    }
  } catch (e) {
    return fail((e as Error).message);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/** A line trace for {@link lineSpec}: a name and points. */
export interface Series {
  name: string;
  x: number[];
  y: number[];
  /** `lines` (default), `markers` or `lines+markers`. */
  mode?: string;
  /** Put this series on a second y axis (right). */
  y2?: boolean;
  /** Line dash: `solid` (default), `dash`, `dot`. */
  dash?: string;
}

/**
 * A line chart of several series.
 *
 * @example
 * ```ts
 * lineSpec([{ name: "loss", x: [0, 1], y: [3.2, 2.9] }], { title: "loss", xTitle: "step" });
 * ```
 */
export function lineSpec(
  series: Series[],
  opts: {
    title?: string;
    xTitle?: string;
    yTitle?: string;
    y2Title?: string;
    logY?: boolean;
    /** Ticks at whole numbers only (steps, blocks). */
    xInteger?: boolean;
  } = {},
): PlotSpec {
  const layout: Record<string, unknown> = {
    title: { text: opts.title ?? "" },
    xaxis: { title: { text: opts.xTitle ?? "" }, ...(opts.xInteger ? { dtick: 1 } : {}) },
    yaxis: { title: { text: opts.yTitle ?? "" }, type: opts.logY ? "log" : "linear" },
    margin: { t: 50, r: 30, b: 50, l: 60 },
    legend: { orientation: "h", y: -0.2 },
  };
  if (series.some((s) => s.y2)) {
    layout.yaxis2 = { title: { text: opts.y2Title ?? "" }, overlaying: "y", side: "right" };
    (layout.margin as Record<string, number>).r = 60;
  }
  return {
    data: series.map((s) => ({
      type: "scatter",
      name: s.name,
      x: s.x,
      y: s.y,
      mode: s.mode ?? "lines",
      ...(s.dash ? { line: { dash: s.dash } } : {}),
      ...(s.y2 ? { yaxis: "y2" } : {}),
    })),
    layout,
  };
}

/**
 * A heatmap of a row-major matrix `[rows, cols]`, row 0 at the top.
 *
 * @example
 * ```ts
 * heatmapSpec(new Float32Array([0, 1, 1, 0]), 2, 2, { title: "identity" });
 * ```
 */
export function heatmapSpec(
  values: ArrayLike<number>,
  rows: number,
  cols: number,
  opts: {
    title?: string;
    xTitle?: string;
    yTitle?: string;
    colorscale?: string;
    zmin?: number;
    zmax?: number;
    /** Square cells and no tick labels (for image-like maps). */
    image?: boolean;
  } = {},
): PlotSpec {
  const axis = opts.image
    ? { showticklabels: false, showgrid: false, zeroline: false, ticks: "" }
    : {};
  const z = Array.from(
    { length: rows },
    (_, r) => Array.from({ length: cols }, (_, c) => round4(values[r * cols + c])),
  );
  return {
    data: [{
      type: "heatmap",
      z,
      colorscale: opts.colorscale ?? "RdBu",
      zmin: opts.zmin,
      zmax: opts.zmax,
    }],
    layout: {
      title: { text: opts.title ?? "" },
      xaxis: { title: { text: opts.xTitle ?? "" }, ...axis },
      yaxis: {
        title: { text: opts.yTitle ?? "" },
        autorange: "reversed",
        ...axis,
        ...(opts.image ? { scaleanchor: "x" } : {}),
      },
      margin: { t: 50, r: 30, b: 50, l: 60 },
    },
  };
}

function round4(v: number): number {
  return Math.round(v * 1e4) / 1e4;
}

/**
 * Cosine similarity of every pair of rows of a row-major `[n, d]` matrix: `[n, n]`, row-major.
 *
 * @example
 * ```ts
 * cosineSimilarity(new Float32Array([1, 0, 0, 1]), 2, 2); // [1, 0, 0, 1]
 * ```
 */
export function cosineSimilarity(rows: ArrayLike<number>, n: number, d: number): Float32Array {
  if (rows.length !== n * d) {
    throw new Error(`cosineSimilarity: expected ${n} x ${d} = ${n * d} values, got ${rows.length}`);
  }
  const norms = Array.from({ length: n }, (_, i) => {
    let s = 0;
    for (let k = 0; k < d; k++) s += rows[i * d + k] ** 2;
    return Math.sqrt(s) || 1;
  });
  const out = new Float32Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let k = 0; k < d; k++) s += rows[i * d + k] * rows[j * d + k];
      out[i * n + j] = s / (norms[i] * norms[j]);
    }
  }
  return out;
}

/**
 * Rearranges an `[N, N]` similarity matrix of a `grid x grid` layout (N = grid^2) into a mosaic
 * of per-patch maps, as in the ViT paper's Fig. 7: block (r, c) of the mosaic is the `grid x grid`
 * map of patch (r, c)'s similarity to every patch. Blocks are separated by `gap` cells of NaN
 * (drawn empty). Returns the row-major values and the mosaic's side.
 */
export function similarityMosaic(
  sim: ArrayLike<number>,
  grid: number,
  gap = 1,
): { values: Float32Array; size: number } {
  const N = grid * grid;
  if (sim.length !== N * N) {
    throw new Error(`similarityMosaic: expected ${N} x ${N} values, got ${sim.length}`);
  }
  const size = grid * grid + (grid - 1) * gap;
  const values = new Float32Array(size * size).fill(NaN);
  for (let i = 0; i < N; i++) {
    const [ri, ci] = [Math.floor(i / grid), i % grid];
    for (let j = 0; j < N; j++) {
      const [rj, cj] = [Math.floor(j / grid), j % grid];
      values[(ri * (grid + gap) + rj) * size + ci * (grid + gap) + cj] = sim[i * N + j];
    }
  }
  return { values, size };
}

// ---------------------------------------------------------------------------------------------
// Tables

/** Options of {@link tableHtml}. */
export interface TableOptions {
  /** A bold line above the table. */
  caption?: string;
  /** Most rows shown. Default 50. */
  limit?: number;
  /** Fraction digits of numbers. Default 3. */
  digits?: number;
  /** Columns to show, in order (default all). */
  columns?: string[];
}

/** Anything {@link tableHtml} accepts: an arquero table or an array of plain row objects. */
export type TableLike = aq.ColumnTable | Record<string, unknown>[];

function asTable(t: TableLike): aq.ColumnTable {
  return Array.isArray(t) ? aq.from(t) : t;
}

/**
 * An arquero table as an HTML `<table>` (with a caption and a row count when rows were cut).
 *
 * @example
 * ```ts
 * tableHtml(aq.table({ model: ["ViT-S"], params: [22e6] }), { caption: "sizes" });
 * ```
 */
export function tableHtml(table: TableLike, opts: TableOptions = {}): string {
  const t = asTable(table);
  const limit = opts.limit ?? 50;
  const style = {
    table: "border-collapse: collapse; font-size: 13px; margin: 4px 0;",
    th: "border-bottom: 1px solid #888; padding: 2px 10px; text-align: right;",
    td: "padding: 2px 10px; font-variant-numeric: tabular-nums;",
  };
  const body = t.toHTML({
    limit,
    maxdigits: opts.digits ?? 3,
    columns: opts.columns,
    style,
    null: () => "",
  });
  const caption = opts.caption ? `<div><b>${escapeHtml(opts.caption)}</b></div>` : "";
  const more = t.numRows() > limit
    ? `<div style="color:#666">${limit} of ${t.numRows()} rows shown</div>`
    : "";
  return `<div class="vitssl-table">${caption}${body}${more}</div>`;
}

/**
 * Shows a table as HTML (with Markdown as the plain-text alternative).
 *
 * @example
 * ```ts
 * await showTable(await summaryTable(), { caption: "all evaluations" });
 * ```
 */
export async function showTable(table: TableLike, opts: TableOptions = {}): Promise<void> {
  const t = asTable(table);
  const md = t.toMarkdown({
    limit: opts.limit ?? 50,
    maxdigits: opts.digits ?? 3,
    columns: opts.columns,
  });
  await display({
    "text/html": tableHtml(t, opts),
    // Markdown has no null format: empty cells instead of "null".
    "text/plain": (opts.caption ? `${opts.caption}\n` : "") + md.replace(/\|null(?=\|)/g, "|"),
  });
}

// ---------------------------------------------------------------------------------------------
// Images

/** `n` images of `height x width x channels` bytes (NHWC, 0..255), channels 1 or 3. */
export interface ImageBatch {
  pixels: Uint8Array;
  n: number;
  height: number;
  width: number;
  channels: number;
}

/** An RGB image (bytes, row-major, 3 per pixel). */
export interface RgbImage {
  data: Uint8Array;
  width: number;
  height: number;
}

/** Options of {@link imageGrid}. */
export interface GridOptions {
  /** Integer upscaling (nearest neighbour). Default 3. */
  scale?: number;
  /** Pixels between cells (before scaling... after: in output pixels). Default 4. */
  pad?: number;
  /** Gray level of the padding. Default 255 (white). */
  background?: number;
}

/**
 * Lays out batches as a grid, one batch per row, image `i` of each batch in column `i`.
 * Cells are as large as the largest image; every image is upscaled by `scale`.
 *
 * @example
 * ```ts
 * const grid = imageGrid([{ pixels, n: 8, height: 28, width: 28, channels: 1 }]);
 * ```
 */
export function imageGrid(rows: ImageBatch[], opts: GridOptions = {}): RgbImage {
  const scale = opts.scale ?? 3, pad = opts.pad ?? 4, bg = opts.background ?? 255;
  if (rows.length === 0) throw new Error("imageGrid: expected at least one batch, got none");
  for (const b of rows) {
    if (b.channels !== 1 && b.channels !== 3) {
      throw new Error(`imageGrid: channels must be 1 or 3, got ${b.channels}`);
    }
    if (b.pixels.length !== b.n * b.height * b.width * b.channels) {
      throw new Error(
        `imageGrid: a batch of ${b.n} x ${b.height} x ${b.width} x ${b.channels} needs ` +
          `${b.n * b.height * b.width * b.channels} bytes, got ${b.pixels.length}`,
      );
    }
  }
  const cellH = Math.max(...rows.map((b) => b.height)) * scale;
  const cellW = Math.max(...rows.map((b) => b.width)) * scale;
  const cols = Math.max(...rows.map((b) => b.n));
  const width = cols * cellW + (cols + 1) * pad;
  const height = rows.length * cellH + (rows.length + 1) * pad;
  const data = new Uint8Array(width * height * 3).fill(bg);
  rows.forEach((b, r) => {
    const size = b.height * b.width * b.channels;
    for (let i = 0; i < b.n; i++) {
      const x0 = pad + i * (cellW + pad), y0 = pad + r * (cellH + pad);
      for (let y = 0; y < b.height * scale; y++) {
        for (let x = 0; x < b.width * scale; x++) {
          const src = i * size + (Math.floor(y / scale) * b.width + Math.floor(x / scale)) *
              b.channels;
          const dst = ((y0 + y) * width + x0 + x) * 3;
          for (let k = 0; k < 3; k++) data[dst + k] = b.pixels[src + (b.channels === 3 ? k : 0)];
        }
      }
    }
  });
  return { data, width, height };
}

/** Encodes an RGB image as PNG bytes (pngjs). */
export function encodePng(img: RgbImage): Uint8Array {
  const png = new PNG({ width: img.width, height: img.height });
  for (let i = 0, n = img.width * img.height; i < n; i++) {
    png.data[4 * i] = img.data[3 * i];
    png.data[4 * i + 1] = img.data[3 * i + 1];
    png.data[4 * i + 2] = img.data[3 * i + 2];
    png.data[4 * i + 3] = 255;
  }
  return new Uint8Array(PNG.sync.write(png));
}

/**
 * Shows image batches as one PNG grid (one batch per row), with an optional caption line.
 *
 * @example
 * ```ts
 * const v = previewViews(pixels, 8, 28, 28, 1, 0);
 * await showImages([{ pixels: v.original, n: 8, height: 28, width: 28, channels: 1 }],
 *   { caption: "originals" });
 * ```
 */
export async function showImages(
  rows: ImageBatch[],
  opts: GridOptions & { caption?: string } = {},
): Promise<void> {
  const grid = imageGrid(rows, opts);
  await display({
    "image/png": Buffer.from(encodePng(grid)).toString("base64"),
    "text/plain": `[image grid ${grid.width}x${grid.height}${
      opts.caption ? `: ${opts.caption}` : ""
    }]`,
  });
  if (opts.caption) await showMarkdown(`*${opts.caption}*`);
}

/** Maps values in [0, 1] to RGB bytes with the viridis colour map (linear between 5 stops). */
export function colormap(values: ArrayLike<number>): Uint8Array {
  const stops = [
    [68, 1, 84],
    [59, 82, 139],
    [33, 145, 140],
    [94, 201, 98],
    [253, 231, 37],
  ];
  const out = new Uint8Array(values.length * 3);
  for (let i = 0; i < values.length; i++) {
    const v = Math.min(1, Math.max(0, Number.isFinite(values[i]) ? values[i] : 0)) * 4;
    const j = Math.min(3, Math.floor(v)), f = v - j;
    for (let k = 0; k < 3; k++) {
      out[3 * i + k] = Math.round(stops[j][k] * (1 - f) + stops[j + 1][k] * f);
    }
  }
  return out;
}

/**
 * Overlays attention maps on images: each map `[grid, grid]` is mapped to colours over `range`
 * (default: min-max of each map; pass one range to compare models on one scale), upsampled to
 * the image (nearest) and blended with the gray image. Returns an RGB batch `[n, H, W, 3]` for
 * {@link showImages}.
 */
export function attentionOverlay(
  images: ImageBatch,
  maps: Float32Array,
  grid: number,
  opts: { alpha?: number; range?: [number, number] } = {},
): ImageBatch {
  const alpha = opts.alpha ?? 0.6;
  const { n, height: H, width: W, channels: C } = images;
  if (maps.length !== n * grid * grid) {
    throw new Error(
      `attentionOverlay: expected ${n} maps of ${grid}x${grid} = ${n * grid * grid} values, ` +
        `got ${maps.length}`,
    );
  }
  const out = new Uint8Array(n * H * W * 3);
  for (let i = 0; i < n; i++) {
    const m = maps.subarray(i * grid * grid, (i + 1) * grid * grid);
    let [lo, hi] = opts.range ?? [Infinity, -Infinity];
    if (!opts.range) { for (const v of m) [lo, hi] = [Math.min(lo, v), Math.max(hi, v)]; }
    const norm = Float32Array.from(m, (v) => (v - lo) / (hi - lo || 1));
    const colors = colormap(norm);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const cell = Math.floor((y * grid) / H) * grid + Math.floor((x * grid) / W);
        const p = i * H * W + y * W + x;
        let gray = 0;
        for (let k = 0; k < C; k++) gray += images.pixels[p * C + k] / C;
        for (let k = 0; k < 3; k++) {
          out[p * 3 + k] = Math.round((1 - alpha) * gray + alpha * colors[cell * 3 + k]);
        }
      }
    }
  }
  return { pixels: out, n, height: H, width: W, channels: 3 };
}

// ---------------------------------------------------------------------------------------------
// Live progress

/** A display that is replaced in place by each {@link LiveDisplay.update}. */
export interface LiveDisplay {
  /** Replaces the display's content (HTML, with a plain-text alternative). */
  update(html: string, text?: string): Promise<void>;
}

/**
 * A display updated in place (`update_display_data`). Outside a kernel, each update prints its
 * text.
 *
 * @example
 * ```ts
 * const live = await liveDisplay("starting...");
 * for (let i = 1; i <= 3; i++) await live.update(`<b>${i}/3</b>`, `${i}/3`);
 * ```
 */
export async function liveDisplay(html = "", text = ""): Promise<LiveDisplay> {
  const displayId = `vitssl-live-${crypto.randomUUID()}`;
  const bundle = (h: string, t: string) => ({
    "text/html": h,
    "text/plain": t || h.replace(/<[^>]+>/g, ""),
  });
  await display(bundle(html, text), { displayId });
  return {
    update: async (h, t = "") => {
      if (inNotebook()) await display(bundle(h, t), { displayId, update: true });
      else console.log(t || h.replace(/<[^>]+>/g, ""));
    },
  };
}

/** What {@link liveLog} returns. */
export interface LiveLog {
  /** Adds a line (pass as a `print` option). */
  print: (line: string) => void;
  /** Waits for pending updates. */
  finish(): Promise<void>;
}

/**
 * A log shown in one display updated in place (the last `keep` lines), for the `print` option of
 * long library calls such as `evaluate`.
 *
 * @example
 * ```ts
 * const log = await liveLog();
 * await evaluate({ checkpoint, print: log.print });
 * await log.finish();
 * ```
 */
export async function liveLog(keep = 20): Promise<LiveLog> {
  const live = await liveDisplay("<i>starting...</i>", "starting...");
  const lines: string[] = [];
  let chain = Promise.resolve();
  return {
    print: (line) => {
      lines.push(line);
      const text = lines.slice(-keep).join("\n");
      const html = `<pre style="margin:0;font-size:11px">${escapeHtml(text)}</pre>`;
      if (inNotebook()) chain = chain.then(() => live.update(html, text)).catch(() => {});
      else console.log(line);
    },
    finish: async () => await chain,
  };
}

/** A tiny inline SVG line of `ys` (the loss so far), `w x h` pixels. */
export function sparkline(ys: number[], w = 240, h = 40): string {
  const v = ys.filter(Number.isFinite);
  if (v.length < 2) return "";
  const lo = Math.min(...v), hi = Math.max(...v);
  const pts = v.map((y, i) =>
    `${((i / (v.length - 1)) * (w - 2) + 1).toFixed(1)},` +
    `${(h - 1 - ((y - lo) / (hi - lo || 1)) * (h - 2)).toFixed(1)}`
  );
  return `<svg width="${w}" height="${h}" style="vertical-align:middle">` +
    `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${pts.join(" ")}"/></svg>`;
}

/** What {@link trainProgress} returns: run hooks for `pretrain`, and `finish` to call after. */
export interface TrainProgress extends RunHooks {
  /** Waits for pending updates and shows the final state. */
  finish(): Promise<void>;
  /** Every step row seen (the loss curve) and every kNN row. */
  steps: LogRow[];
  knn: KnnRow[];
}

/**
 * Live progress of a `pretrain` run in one display updated in place: a progress bar, the last
 * loss, lr and speed, a loss sparkline, the last kNN accuracy and the run's printed lines. The
 * total step count is read from the run directory's `config.json` (written before step 0).
 * Updates at most every `intervalMs` (default 500 ms).
 *
 * @example
 * ```ts
 * const progress = await trainProgress(cfg.outDir);
 * await pretrain(cfg, progress);
 * await progress.finish();
 * ```
 */
export async function trainProgress(runDir: string, intervalMs = 500): Promise<TrainProgress> {
  const live = await liveDisplay("<i>starting...</i>", "starting...");
  const steps: LogRow[] = [];
  const knn: KnnRow[] = [];
  const lines: string[] = [];
  const t0 = performance.now();
  let total = 0;
  let last = 0;
  let chain = Promise.resolve();
  const lastStep = (): number => {
    if (total) return total;
    try {
      const { config, resolved } = JSON.parse(Deno.readTextFileSync(`${runDir}/config.json`));
      total = config.maxSteps > 0
        ? Math.min(config.maxSteps, resolved.totalSteps)
        : resolved.totalSteps;
    } catch { /* not written yet */ }
    return total;
  };
  const render = () => {
    const row = steps[steps.length - 1];
    const done = row ? row.step + 1 : 0;
    const of = lastStep();
    const secs = (performance.now() - t0) / 1000;
    const k = knn[knn.length - 1];
    const text =
      (row
        ? `step ${done}/${of || "?"}  epoch ${row.epoch + 1}  loss ${row.loss.toFixed(4)}  ` +
          `lr ${row.lr.toExponential(2)}  ${row.images_per_s.toFixed(0)} img/s  ` +
          `${secs.toFixed(0)} s`
        : "starting...") + (k ? `  kNN top-1 ${k.top1.toFixed(2)}% @ ${k.step}` : "");
    const bar = of ? `<progress value="${done}" max="${of}" style="width:240px"></progress> ` : "";
    const html = `<div style="font-family:monospace;font-size:12px">${bar}${escapeHtml(text)}` +
      `<br>${sparkline(steps.map((s) => s.loss))}` +
      (lines.length
        ? `<pre style="margin:2px 0;font-size:11px">${escapeHtml(lines.slice(-6).join("\n"))}</pre>`
        : "") +
      `</div>`;
    chain = chain.then(() => live.update(html, text)).catch(() => {});
  };
  const maybeRender = (force = false) => {
    const now = performance.now();
    if (force || now - last >= intervalMs) {
      last = now;
      render();
    }
  };
  return {
    steps,
    knn,
    print: (line) => {
      lines.push(line);
      if (!inNotebook()) console.log(line);
    },
    onStep: (row) => {
      steps.push(row);
      maybeRender();
    },
    onKnn: (row) => {
      knn.push(row);
      maybeRender(true);
    },
    finish: async () => {
      render();
      await chain;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Attention maps

/**
 * Attention of the class token to every patch in one block (default the last), averaged over
 * heads: `x [B, H, W, C]` (normalised images) -> `[B, N]` (rows sum to at most 1; the rest
 * went to the class token itself), as a Float32Array.
 *
 * @example
 * ```ts
 * const maps = classTokenAttention(model, x); // B * (28 / 7) ** 2 values
 * ```
 */
export function classTokenAttention(model: ViT, x: tf.Tensor4D, block = -1): Float32Array {
  const depth = model.config.depth;
  const b = block < 0 ? depth + block : block;
  if (b < 0 || b >= depth) {
    throw new Error(`classTokenAttention: block ${block} is outside 0..${depth - 1}`);
  }
  const maps = tf.tidy(() => {
    const { attention } = vitForward(model, x, { returnAttention: true });
    const a = attention![b]; // [B, heads, T, T]
    const [B, , T] = a.shape;
    const cls = tf.slice(a, [0, 0, 0, 1], [B, a.shape[1], 1, T - 1]); // [B, heads, 1, N]
    return tf.reshape(tf.mean(cls, 1), [B, T - 1]);
  });
  try {
    return maps.dataSync() as Float32Array;
  } finally {
    maps.dispose();
  }
}

/**
 * Mean entropy, in bits, of `n` attention maps stored one after another (each normalised to sum
 * to 1 first): log2(N) for uniform maps of N values, 0 for maps on a single patch.
 *
 * @example
 * ```ts
 * attentionEntropy(new Float32Array([0.25, 0.25, 0.25, 0.25]), 1); // 2
 * ```
 */
export function attentionEntropy(maps: Float32Array, n: number): number {
  const N = maps.length / n;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const m = maps.subarray(i * N, (i + 1) * N);
    const total = m.reduce((a, v) => a + v, 0);
    for (const v of m) if (v > 0) sum -= (v / total) * Math.log2(v / total);
  }
  return sum / n;
}
