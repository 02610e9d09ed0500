/**
 * The patch-size study (paper Section 6, ViT-L/16 against ViT-BN-L/7): accuracy per patch size
 * beside the paper's, and the forward FLOPs per image of each.
 *
 * @example
 * ```ts
 * import { patchSizeFigure } from "./patch_size.ts";
 * const spec = patchSizeFigure(rows, { imageSize: 28 });
 * ```
 * @module
 */
import { SUITES } from "../../experiments/suites.ts";
import { groupByConfig, type Row } from "../../experiments/aggregate.ts";
import { vitConfig, vitFlops } from "../../model/vit.ts";
import type { Trace } from "../render.ts";
import { barsWithPaper, PAPER_BAR_FONT } from "./bars_with_paper.ts";
import {
  baseLayout,
  COLORS,
  type FigureOptions,
  type FigureSpec,
  finishFigure,
  matches,
  num,
  panelTitle,
  PAPER_NAME,
  subtitle,
  type TableLike,
  wrapLabel,
} from "./kit.ts";

/**
 * Patch size: left, linear top-1 and kNN-20 per patch size (means over seeds, 95% CI; the
 * paper's ViT-L/16 and ViT-BN-L/7 as grey bars on the right axis); right, forward FLOPs per
 * image, ours (MFLOPs) and the paper's models (GFLOPs, `vitFlops`), side by side. Input:
 * `patch-size.csv` rows (`patchSize`, `seed`, `linear_top1`, `knn_top1`, `flops`).
 *
 * @example
 * ```ts
 * const spec = patchSizeFigure(rows, { imageSize: 28 });
 * ```
 */
export function patchSizeFigure(
  results: TableLike,
  opts: FigureOptions & { imageSize?: number } = {},
): FigureSpec {
  const paper = opts.paper ?? SUITES["patch-size"].paper;
  const groups = groupByConfig(results, ["patchSize"])
    .sort((a, b) => num(b.config.patchSize) - num(a.config.patchSize));
  const side = opts.imageSize ?? 28;
  const label = (c: Row) => `patch ${num(c.patchSize)} (${(side / num(c.patchSize)) ** 2} tokens)`;
  const acc = barsWithPaper("", results, groups, label, paper, "");
  const x = groups.map((g) => label(g.config));
  const flops = groups.map((g) => num(g.runs[0].flops) / 1e6);
  const placed = paper.flatMap((p) => {
    const g = p.match && groups.find((q) => matches(q.config, p.match as Record<string, unknown>));
    return g && p.vit ? [{ p, x: label(g.config), g: vitFlops(vitConfig(p.vit)) / 1e9 }] : [];
  });
  const data: Trace[] = [
    ...acc.data,
    {
      type: "bar",
      name: "ours: forward MFLOPs / image",
      x,
      y: flops,
      text: flops.map((v) => v.toFixed(1)),
      textposition: "outside",
      marker: { color: COLORS[2] },
      offsetgroup: "ours",
      xaxis: "x2",
      yaxis: "y3",
    },
    {
      type: "bar",
      name: `${PAPER_NAME}: GFLOPs / image`,
      x: placed.map((q) => q.x),
      y: placed.map((q) => q.g),
      text: placed.map((q) => wrapLabel(`${q.p.label}: ${q.g.toFixed(0)}`, 16)),
      textposition: "outside",
      textfont: PAPER_BAR_FONT,
      constraintext: "none",
      cliponaxis: false,
      marker: { color: "#e0e0e0", line: { color: "#111", width: 1 } },
      offsetgroup: "paper",
      xaxis: "x2",
      yaxis: "y4",
    },
  ];
  const left: [number, number] = [0, 0.42], right: [number, number] = [0.58, 1];
  const fl = flops.filter(Number.isFinite), gl = placed.map((q) => q.g);
  const ratio = fl.length >= 2 ? Math.max(...fl) / Math.min(...fl) : NaN;
  const paperRatio = gl.length >= 2 ? Math.max(...gl) / Math.min(...gl) : NaN;
  const accLayout = acc.layout as Record<string, Record<string, unknown>>;
  const layout = baseLayout("Patch size: accuracy and cost", {
    barmode: "group",
    xaxis: { domain: left, type: "category" },
    yaxis: accLayout.yaxis,
    yaxis2: { ...accLayout.yaxis2, anchor: "x", overlaying: "y", side: "right" },
    xaxis2: { domain: right, anchor: "y3", type: "category" },
    yaxis3: { anchor: "x2", title: { text: "ours: MFLOPs / image" }, rangemode: "tozero" },
    yaxis4: {
      anchor: "x2",
      overlaying: "y3",
      side: "right",
      title: { text: `${PAPER_NAME}: GFLOPs / image` },
      rangemode: "tozero",
      tickformat: ".0f",
      tickmode: "auto",
      showgrid: false,
    },
    annotations: [
      subtitle(
        `smaller patches: x${ratio.toFixed(1)} FLOPs for us, x${paperRatio.toFixed(1)} for ` +
          "ViT-L/16 -> /7 in the paper; ours: linear (dark) and kNN-20 (light), 95% CI over seeds",
        opts.note,
      ),
      panelTitle("top-1 (ours, left) and paper (right axis)", left),
      panelTitle("forward FLOPs per image", right),
    ],
  });
  return finishFigure(data, layout, { study: "patch-size", comparisons: opts.comparisons });
}
