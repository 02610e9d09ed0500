/**
 * Feature maps: UMAP (McInnes et al. 2018, through the npm library `umap-js`) of backbone
 * features in 2-D, coloured by class, for a checkpoint beside its random initialisation. Seeded
 * with the project's generator ({@link createRng}), so the same features and options draw the same
 * map. `deno task eval --umap` writes one next to the checkpoint; notebooks 03 and 09 show one.
 *
 * UMAP keeps neighbourhoods, not distances: points of one class gathering together means their
 * features' nearest neighbours share labels (what the kNN monitor measures); the sizes of the
 * clusters and the gaps between them carry little meaning.
 *
 * @example
 * ```ts
 * import { featureMaps, umapSpec } from "./umap.ts";
 * import { showPlot } from "./display.ts";
 * const panels = await featureMaps(
 *   [{ name: "pretrained", model }, { name: "random init", model: random }],
 *   testDs,
 *   { points: 5_000, seed: 0 },
 * );
 * await showPlot(umapSpec(panels, { classes: testDs.classes }));
 * ```
 * @module
 */
import { basename, dirname } from "node:path";
import { UMAP } from "umap-js";
import { COLORS } from "./figures/kit.ts";
import { ConfigError } from "../core/errors.ts";
import { createRng } from "../core/rng.ts";
import { type Dataset, stratifiedSubset } from "../data/dataset.ts";
import { extractFeatures, type FeatureSet, type Readout } from "../eval/features.ts";
import { type ChannelStats } from "../data/stats.ts";
import { createViT, disposeViT, type ViT } from "../model/vit.ts";
import { type FigureSpec, writeFigure, type WrittenFigure } from "./figures/mod.ts";
import { renderPng } from "./render.ts";

/** Defaults of {@link umapEmbedding} and {@link featureMaps}. */
export const UMAP_DEFAULTS = {
  /** Seed of the sample and of UMAP's neighbour search, initial layout and optimisation. */
  seed: 0,
  /** Neighbours of each point in the graph UMAP lays out (umap-js's and umap-learn's 15). */
  nNeighbors: 15,
  /** How tightly points may pack in 2-D (umap-learn's 0.1). */
  minDist: 0.1,
  /**
   * Layout epochs (umap-learn's default for large sets; umap-js's own is 400 up to 5,000 points).
   * 5,000 points of 64-D features took 12 s with 200 epochs and 20 s with 400 on 2 shared cores
   * (load ~7), and drew the same clusters; the neighbour search is a fixed part of it.
   */
  nEpochs: 200,
  /** `cosine` (features L2-normalised first, as the kNN monitor compares them) or `euclidean`. */
  metric: "cosine" as "cosine" | "euclidean",
  /** Stratified sample of the split that {@link featureMaps} draws. */
  points: 5_000,
};

/** Options of {@link umapEmbedding}; see {@link UMAP_DEFAULTS}. */
export interface UmapOptions {
  seed?: number;
  nNeighbors?: number;
  minDist?: number;
  nEpochs?: number;
  metric?: "cosine" | "euclidean";
}

/**
 * Throws a one-line {@link ConfigError} unless `points` is more than `nNeighbors` (UMAP links
 * every point to that many others).
 *
 * @example
 * ```ts
 * checkUmapPoints(5_000, 15); // fine
 * checkUmapPoints(10, 15); // throws: UMAP needs more points than neighbours ...
 * ```
 */
export function checkUmapPoints(points: number, nNeighbors = UMAP_DEFAULTS.nNeighbors): void {
  if (!(Number.isInteger(nNeighbors) && nNeighbors >= 2)) {
    throw new ConfigError(`UMAP neighbours must be a whole number >= 2, got ${nNeighbors}`);
  }
  if (!(points > nNeighbors)) {
    throw new ConfigError(
      `UMAP needs more points than neighbours: ${points} point(s), ${nNeighbors} neighbours; ` +
        `map at least ${nNeighbors + 1} points (--umap-points, or a larger test split)`,
    );
  }
}

/**
 * The 2-D UMAP embedding of `N` feature rows `[N, D]`: `[N, 2]` row-major (x, y per row).
 * Deterministic: the same rows and options give the same coordinates. Throws (see
 * {@link checkUmapPoints}) when N is not more than `nNeighbors`.
 *
 * @example
 * ```ts
 * const xy = umapEmbedding({ features, dim: 192 }, { seed: 0 });
 * const [x0, y0] = [xy[0], xy[1]];
 * ```
 */
export function umapEmbedding(
  set: Pick<FeatureSet, "features" | "dim">,
  opts: UmapOptions = {},
): Float32Array {
  const o = { ...UMAP_DEFAULTS, ...definedOnly(opts) };
  const { features, dim } = set;
  const n = features.length / dim;
  if (!(Number.isInteger(dim) && dim > 0 && Number.isInteger(n))) {
    throw new RangeError(`umapEmbedding: ${features.length} values are not rows of ${dim}`);
  }
  checkUmapPoints(n, o.nNeighbors);
  if (o.metric !== "cosine" && o.metric !== "euclidean") {
    throw new ConfigError(`UMAP metric must be cosine or euclidean, got "${o.metric}"`);
  }
  if (!(Number.isInteger(o.nEpochs) && o.nEpochs >= 1)) {
    throw new ConfigError(`UMAP epochs must be a whole number >= 1, got ${o.nEpochs}`);
  }
  const rows = Array.from({ length: n }, (_, i) => {
    const row = Array.from(features.subarray(i * dim, (i + 1) * dim));
    if (o.metric === "euclidean") return row;
    const norm = Math.hypot(...row) || 1;
    return row.map((v) => v / norm);
  });
  const rng = createRng(o.seed);
  const umap = new UMAP({
    nComponents: 2,
    nNeighbors: o.nNeighbors,
    minDist: o.minDist,
    nEpochs: o.nEpochs,
    random: () => rng.uniform(),
  });
  const xy = umap.fit(rows);
  const out = new Float32Array(2 * n);
  xy.forEach(([x, y], i) => {
    out[2 * i] = x;
    out[2 * i + 1] = y;
  });
  return out;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** One map: a name, `[N, 2]` coordinates and the N labels. */
export interface UmapPanel {
  name: string;
  /** `[N, 2]` row-major, from {@link umapEmbedding}. */
  coords: Float32Array;
  labels: Int32Array;
}

/** Options of {@link featureMaps}: the UMAP's, plus the sample and the features'. */
export interface FeatureMapOptions extends UmapOptions {
  /** Stratified sample of the split (default {@link UMAP_DEFAULTS}.points; all if fewer). */
  points?: number;
  /** Pixel normalisation (pass the train split's `datasetStats`); default the split's own. */
  stats?: ChannelStats;
  /** Which tokens make the features (default `pooled`, the class token). */
  readout?: Readout;
  /** Called with each model's name as its map starts. */
  onModel?: (name: string) => void;
}

/**
 * UMAP maps of several backbones' features of one stratified sample of `ds` (the same images for
 * every model), one {@link UmapPanel} per model. Refuses, before any work, a sample of no more
 * points than neighbours.
 *
 * @example
 * ```ts
 * const panels = await featureMaps([{ name: "pretrained", model }], test, { points: 2_000 });
 * panels[0].coords.length; // 4000
 * ```
 */
export async function featureMaps(
  models: { name: string; model: ViT }[],
  ds: Dataset,
  opts: FeatureMapOptions = {},
): Promise<UmapPanel[]> {
  const points = Math.min(opts.points ?? UMAP_DEFAULTS.points, ds.length);
  checkUmapPoints(points, opts.nNeighbors ?? UMAP_DEFAULTS.nNeighbors);
  const sample = stratifiedSubset(ds, points, opts.seed ?? UMAP_DEFAULTS.seed);
  const panels: UmapPanel[] = [];
  for (const { name, model } of models) {
    opts.onModel?.(name);
    const set = await extractFeatures(model, sample, {
      mean: opts.stats?.mean,
      std: opts.stats?.std,
      readout: opts.readout,
    });
    panels.push({ name, coords: umapEmbedding(set, opts), labels: set.labels });
  }
  return panels;
}

/**
 * The colour of class `k` of `numClasses`: category10 for up to ten classes, else evenly spaced
 * hues.
 *
 * @example
 * ```ts
 * classColor(0, 10); // "#1f77b4"
 * classColor(0, 100); // "hsl(0, 65%, 45%)"
 * ```
 */
export function classColor(k: number, numClasses: number): string {
  if (numClasses <= COLORS.length) return COLORS[k];
  return `hsl(${Math.round((360 * k) / numClasses)}, 65%, 45%)`;
}

/** Options of {@link umapSpec}. */
export interface UmapSpecOptions {
  /** Class names, label k = classes[k] (default: "class k"). */
  classes?: string[];
  /** The title's start (default "UMAP of backbone features"); the point count is added. */
  title?: string;
  /** Height in pixels (default 500); the width grows with the panels. */
  height?: number;
}

/**
 * A plotly figure of UMAP maps side by side, one scatter trace per class and panel (the same
 * colour for a class in every panel, one legend entry per class). The title says how many points
 * each panel shows; each panel is titled with its name. The axes carry no ticks: UMAP's
 * coordinates have no units.
 *
 * @example
 * ```ts
 * const spec = umapSpec([{ name: "pretrained", coords, labels }], { classes: ["a", "b"] });
 * spec.layout?.title; // { text: "UMAP of backbone features: 500 points" }
 * ```
 */
export function umapSpec(panels: UmapPanel[], opts: UmapSpecOptions = {}): FigureSpec {
  if (panels.length === 0) throw new RangeError("umapSpec: no panels to draw");
  for (const p of panels) {
    if (p.coords.length !== 2 * p.labels.length) {
      throw new RangeError(
        `umapSpec: panel "${p.name}" has ${
          p.coords.length / 2
        } points but ${p.labels.length} labels`,
      );
    }
  }
  const maxLabel = Math.max(...panels.flatMap((p) => Array.from(p.labels)));
  const numClasses = Math.max(opts.classes?.length ?? 0, maxLabel + 1);
  const className = (k: number) => opts.classes?.[k] ?? `class ${k}`;
  const counts = panels.map((p) => p.labels.length);
  const countText = counts.every((c) => c === counts[0])
    ? `${counts[0].toLocaleString("en-US")} points${panels.length > 1 ? " per map" : ""}`
    : counts.map((c) => c.toLocaleString("en-US")).join(" / ") + " points";
  const P = panels.length, gap = 0.04;
  const data: Record<string, unknown>[] = [];
  const inLegend = new Set<number>();
  const layout: Record<string, unknown> = {
    title: { text: `${opts.title ?? "UMAP of backbone features"}: ${countText}` },
    width: 440 * P + 160,
    height: opts.height ?? 500,
    margin: { t: 80, r: 20, b: 20, l: 20 },
    legend: { itemsizing: "constant" },
    annotations: [] as unknown[],
  };
  panels.forEach((p, j) => {
    const suffix = j === 0 ? "" : String(j + 1);
    const domain = [j / P + (j ? gap / 2 : 0), (j + 1) / P - (j < P - 1 ? gap / 2 : 0)];
    const axis = { showticklabels: false, showgrid: false, zeroline: false, ticks: "" };
    layout[`xaxis${suffix}`] = { ...axis, domain, anchor: `y${suffix}` };
    layout[`yaxis${suffix}`] = { ...axis, anchor: `x${suffix}` };
    (layout.annotations as unknown[]).push({
      text: `${p.name} (${p.labels.length.toLocaleString("en-US")} points)`,
      x: (domain[0] + domain[1]) / 2,
      y: 1,
      xref: "paper",
      yref: "paper",
      xanchor: "center",
      yanchor: "bottom",
      showarrow: false,
    });
    for (let k = 0; k < numClasses; k++) {
      const x: number[] = [], y: number[] = [];
      for (let i = 0; i < p.labels.length; i++) {
        if (p.labels[i] !== k) continue;
        x.push(round3(p.coords[2 * i]));
        y.push(round3(p.coords[2 * i + 1]));
      }
      if (x.length === 0) continue;
      const showlegend = !inLegend.has(k);
      inLegend.add(k);
      data.push({
        type: "scatter",
        mode: "markers",
        name: className(k),
        legendgroup: className(k),
        showlegend,
        x,
        y,
        xaxis: `x${suffix}`,
        yaxis: `y${suffix}`,
        marker: { color: classColor(k, numClasses), size: 3, opacity: 0.7 },
      });
    }
  });
  return { data, layout };
}

function round3(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** What {@link writeCheckpointMaps} wrote. */
export interface WrittenMaps extends WrittenFigure {
  /** Points per map. */
  points: number;
  /** Seconds for both maps (features, UMAP, figure). */
  seconds: number;
}

/**
 * The checkpoint's map beside its random initialisation (`createViT(config, 0)`, the evaluation
 * baseline's) on one stratified sample of `test`, written next to the checkpoint as
 * `umap-<checkpoint name>-<dataset>.html` and `.png` (the PNG through headless Chromium; without
 * it `warning` says why, and the HTML is still written). `deno task eval --umap` calls it.
 *
 * @example
 * ```ts
 * const { html, png, warning } = await writeCheckpointMaps(model, "data/runs/x/backbone.safetensors", test);
 * // data/runs/x/umap-backbone-fmnist.html
 * ```
 */
export async function writeCheckpointMaps(
  model: ViT,
  checkpoint: string,
  test: Dataset,
  opts: FeatureMapOptions = {},
): Promise<WrittenMaps> {
  const t0 = performance.now();
  const random = createViT(model.config, 0);
  let panels: UmapPanel[];
  try {
    panels = await featureMaps(
      [{ name: "checkpoint", model }, { name: "random init", model: random }],
      test,
      opts,
    );
  } finally {
    disposeViT(random);
  }
  const spec = umapSpec(panels, {
    classes: test.classes,
    title: `UMAP of ${test.name} ${test.split} features`,
  });
  const dir = dirname(checkpoint);
  const stem = basename(checkpoint).replace(/\.safetensors$/, "");
  const name = `umap-${stem}-${test.name}`.replace(/[^A-Za-z0-9_.-]/g, "_");
  const { html } = await writeFigure(spec, name, dir, { png: false });
  const png = `${dir}/${name}.png`;
  await Deno.remove(png).catch(() => {}); // no stale PNG beside a new HTML
  const r = await renderPng(spec);
  const written: WrittenMaps = { html, points: panels[0].labels.length, seconds: 0 };
  if (r.png) {
    await Deno.writeFile(png, r.png);
    written.png = png;
  } else {
    written.warning = r.warning;
  }
  written.seconds = (performance.now() - t0) / 1000;
  return written;
}
