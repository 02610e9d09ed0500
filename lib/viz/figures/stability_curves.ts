/**
 * The stability study's kNN curves (paper Section 4): the monitor against training images seen,
 * one line per configuration, dips marked, one panel per patch projection.
 *
 * @example
 * ```ts
 * import { stabilityCurves } from "./stability_curves.ts";
 * const spec = stabilityCurves(results, curves, { note: "budget cpu" });
 * ```
 * @module
 */
import { dipThreshold, findDips } from "../../experiments/stability.ts";
import { SUITES } from "../../experiments/suites.ts";
import { bool, firstSeedRuns, rowsOf } from "../../experiments/aggregate.ts";
import { lrText } from "../../experiments/summary.ts";
import type { Trace } from "../render.ts";
import { knnCurve, seedPhrase } from "./curves.ts";
import {
  baseLayout,
  byStability,
  COLORS,
  type CurveOptions,
  DASHES,
  distinct,
  type FigureSpec,
  finishFigure,
  markedPoints,
  num,
  panelTitle,
  projName,
  subtitle,
  type TableLike,
} from "./kit.ts";

/**
 * Stability curves: kNN monitor top-1 against training images seen, one line per
 * configuration (batch, lr, learned or random patch projection; colour = batch, dash = lr),
 * drawn for its lowest seed ({@link firstSeedRuns}), in one panel per patch projection; the
 * bottom of every dip ({@link findDips}) marked with an x in the traces named `dips`, and the
 * paper's final accuracies per batch size and lr in a side panel. Inputs: `stability.csv` rows
 * (`run_id`, `seed`, `batchSize`, `baseLr`, `freezePatchEmbed`) and its curves.
 *
 * @example
 * ```ts
 * const spec = stabilityCurves(results, curves, { note: "budget cpu" });
 * ```
 */
export function stabilityCurves(
  results: TableLike,
  curves: TableLike,
  opts: CurveOptions = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES.stability.paper;
  const runs = firstSeedRuns(results).sort(byStability);
  const cur = rowsOf(curves);
  const batches = distinct(runs.map((r) => num(r.batchSize))) as number[];
  const lrs = distinct(runs.map((r) => num(r.baseLr))) as number[];
  const frozen = distinct(runs.map((r) => bool(r.freezePatchEmbed))) as boolean[];
  const right = paper.length ? 0.7 : 1;
  const gap = 0.05;
  const width = (right - gap * (frozen.length - 1)) / Math.max(1, frozen.length);
  const domains = frozen.map((_, i) =>
    [i * (width + gap), i * (width + gap) + width] as [number, number]
  );
  const data: Trace[] = [];
  const layout = baseLayout("Training stability: kNN accuracy during training", {
    annotations: [
      subtitle(
        `${seedPhrase(runs)}; dips (x): drops below the running peak that recover, of >= ${
          opts.minDepth ?? "max(1, 5 x the run's monitor noise)"
        } points`,
        opts.note,
      ),
    ],
  });
  frozen.forEach((f, k) => {
    const ax = k === 0 ? "" : String(k + 1);
    const dips: { x: number; y: number; text: string }[] = [];
    for (const r of runs.filter((q) => bool(q.freezePatchEmbed) === f)) {
      const b = num(r.batchSize), lr = num(r.baseLr);
      const pts = knnCurve(cur, String(r.run_id));
      if (pts.length === 0) continue;
      const color = COLORS[batches.indexOf(b) % COLORS.length];
      const name = `batch ${b}, lr ${lrText(lr)}, ${projName(f)}`;
      data.push({
        type: "scatter",
        mode: "lines+markers",
        name,
        x: pts.map((p) => p.images),
        y: pts.map((p) => p.acc),
        line: { color, dash: DASHES[lrs.indexOf(lr) % DASHES.length], width: 2 },
        marker: { size: 4, color },
        xaxis: `x${ax}`,
        yaxis: `y${ax}`,
      });
      for (const d of findDips(pts, { minDepth: opts.minDepth ?? dipThreshold(pts) })) {
        const bottom = pts.find((p) => p.step === d.bottomStep)!;
        dips.push({
          x: bottom.images,
          y: d.bottomAcc,
          text: `${name}: dip of ${d.depth.toFixed(1)} points`,
        });
      }
    }
    data.push({
      ...markedPoints("dips", dips, {
        symbol: "x-thin",
        size: 14,
        color: "#d00",
        line: { width: 3, color: "#d00" },
      }, true),
      legendgroup: "dips",
      showlegend: k === 0,
      xaxis: `x${ax}`,
      yaxis: `y${ax}`,
    });
    layout[`xaxis${ax}`] = {
      domain: domains[k],
      anchor: `y${ax}`,
      title: { text: "training images seen" },
    };
    layout[`yaxis${ax}`] = {
      anchor: `x${ax}`,
      title: { text: k === 0 ? "kNN top-1 (%), monitor" : "" },
    };
    (layout.annotations as unknown[]).push(
      panelTitle(`ours: kNN monitor, ${projName(f)} patch projection`, domains[k]),
    );
  });
  return finishFigure(data, layout, {
    paper: { numbers: paper, axis: frozen.length + 1, yTitle: "linear top-1 (%), ViT-B" },
    study: "stability",
    comparisons: opts.comparisons,
    legendGap: 95,
  });
}
