/**
 * The figure specs of lib/viz/figures/ from small tables built by hand: every plotted mean and
 * error bar is checked against values computed here (mean, and the 95% t half-width
 * t(0.975, n - 1) * s / sqrt(n) with t(0.975, 2) = 4.302653 from the printed table), and the
 * summary the figure CLI writes.
 */
import * as aq from "arquero";
import { assert, assertAlmostEquals, assertEquals, assertStringIncludes } from "@std/assert";
import { chromiumStatus, requireTool } from "../_helpers/system_tools.ts";
import { figureHtml } from "../../lib/viz/render.ts";
import { tableMarkdown } from "../../lib/viz/tables.ts";
import { summaryMarkdown } from "../../lib/cli/figures.ts";
import { buildFigures } from "../../lib/viz/figures/mod.ts";
import type { Comparison } from "../../lib/experiments/summary.ts";
import {
  dipCurvesSpec,
  envelope,
  gradientSpec,
  gradientTraces,
  hasMonitor,
  legendBelow,
  legendRows,
  mimeBundle,
  OURS_KNN,
  OURS_LINEAR,
  PAPER_NAME,
  paperComparison,
  patchProjectionBars,
  patchSizeFigure,
  pilotFigure,
  posembBars,
  scalingFigure,
  stabilityCurves,
  stabilityLrFigure,
  type Trace,
  verdictForest,
  verdictLines,
  wrapLabel,
  writeFigure,
} from "../../lib/viz/figures/mod.ts";

/** t(0.975, 2) from the printed t-table. */
const T2 = 4.302653;

/** Mean and 95% half-width of three values, computed independently of lib/. */
function byHand(xs: [number, number, number]): { mean: number; hw: number } {
  const mean = (xs[0] + xs[1] + xs[2]) / 3;
  const s = Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / 2);
  return { mean, hw: T2 * s / Math.sqrt(3) };
}

function trace(spec: { data: Trace[] }, name: string, nth = 0): Trace {
  const t = spec.data.filter((d) => d.name === name)[nth];
  assert(t, `no trace named "${name}" in [${spec.data.map((d) => d.name).join(", ")}]`);
  return t!;
}

function errors(t: Trace, key = "error_y"): number[] {
  return (t[key] as { array: number[] }).array;
}

function assertClose(actual: unknown, expected: number[], tol = 1e-5, msg = "") {
  const a = actual as number[];
  assertEquals(a.length, expected.length, `${msg}: ${a} vs ${expected}`);
  a.forEach((v, i) => assertAlmostEquals(v, expected[i], tol, `${msg} [${i}]`));
}

/** Rows of one configuration under seeds 0, 1, 2. */
function seeded(
  fields: Record<string, unknown>,
  linear: [number, number, number],
  knn: [number, number, number] = linear,
  extra: Record<string, unknown> = {},
): Record<string, unknown>[] {
  const id = Object.entries(fields).map(([k, v]) => `${k}-${v}`).join("_");
  return linear.map((l, seed) => ({
    run_id: `s_smoke_${id}_seed-${seed}`,
    ...fields,
    seed,
    random_init: false,
    diverged: false,
    linear_top1: l,
    knn_top1: knn[seed],
    ...extra,
  }));
}

/** Random-init baseline rows (varied fields empty) under seeds 0, 1, 2. */
function randomInit(linear: [number, number, number], knn = linear) {
  return linear.map((l, seed) => ({
    run_id: `s_smoke_random-init_seed-${seed}`,
    seed,
    random_init: true,
    diverged: false,
    linear_top1: l,
    knn_top1: knn[seed],
  }));
}

Deno.test("posembBars: mean over seeds with t-interval error bars, paper beside, random init ignored", () => {
  const sincos = [70, 72, 74] as const, learned = [69, 70, 74] as const;
  const rows = [
    ...seeded({ posEmb: "sincos", pool: "cls" }, [...sincos], [60, 61, 62]),
    ...seeded({ posEmb: "learned", pool: "cls" }, [...learned], [50, 55, 57]),
    ...seeded({ posEmb: "none", pool: "cls" }, [65, 65, 65]),
    ...seeded({ posEmb: "sincos", pool: "mean" }, [71, 72, 73]),
    // A random-init row with the fields of a configuration would shift its mean: left out.
    { ...seeded({ posEmb: "sincos", pool: "cls" }, [0, 0, 0])[0], random_init: true },
  ];
  const spec = posembBars(rows);
  const lin = trace(spec, OURS_LINEAR);
  assertEquals(lin.x, [
    "sin-cos, cls token",
    "learned, cls token",
    "none, cls token",
    "sin-cos, mean pool",
  ]);
  const [a, b, d] = [byHand([...sincos]), byHand([...learned]), byHand([71, 72, 73])];
  // sin-cos: mean 72, s 2, half-width 4.302653 * 2 / sqrt(3) = 4.968 (by the formula, and by hand).
  assertAlmostEquals(a.hw, 4.968276, 1e-5);
  assertClose(lin.y, [a.mean, b.mean, 65, d.mean], 1e-9, "means");
  assertClose(errors(lin), [a.hw, b.hw, 0, d.hw], 1e-5, "half-widths");
  const knn = trace(spec, OURS_KNN);
  assertClose(knn.y, [61, 54, 65, 72], 1e-9, "kNN means");
  assertClose(errors(knn).slice(0, 2), [T2 / Math.sqrt(3), byHand([50, 55, 57]).hw]);
  const paper = trace(spec, PAPER_NAME);
  // Chen, Xie, He 2021 (arXiv:2104.02057), Sec. 6.2, the ablations of ViT-B: position embedding
  // sin-cos / learned / none 76.5 / 76.1 / 74.9; no class token, pooling without final LN 76.3.
  assertEquals(paper.y, [76.5, 76.1, 74.9, 76.3]);
  assertEquals(paper.x, lin.x);
  assertEquals(paper.yaxis, "y2");
  const y2 = spec.layout.yaxis2 as { title: { text: string }; overlaying: string };
  assertStringIncludes(y2.title.text, "paper (ImageNet)");
});

/** A hand-made comparison (as compareWithPaper returns them). */
function comparison(
  study: string,
  effect: string,
  diff: [number, number] | null,
  verdict: Comparison["verdict"],
  paper = 1,
): Comparison {
  const d = diff &&
    { n: 3, mean: diff[0], halfWidth: diff[1], lo: diff[0] - diff[1], hi: diff[0] + diff[1] };
  return {
    study,
    effect,
    metric: "linear_top1",
    seeds: [0, 1, 2],
    a: null,
    b: null,
    diff: d,
    verdict,
    p: NaN,
    adjusted: verdict,
    adjustedP: NaN,
    paper,
    paperSign: paper < 0 ? -1 : 1,
    paperNote: "",
  };
}

Deno.test("verdicts: listed under the study's figure title, counted per kind when many, and as a forest", () => {
  const cs = [
    comparison("posemb", "sin-cos - learned", [2, 1], "holds", 0.4),
    comparison("posemb", "sin-cos - none", [0.5, 1.5], "not detected", 1.6),
    comparison("scaling", "big - small", [-2, 1], "opposite", 1.4),
  ];
  const spec = posembBars(seeded({ posEmb: "sincos", pool: "cls" }, [70, 71, 72]), {
    comparisons: cs,
  });
  const sub = String((spec.layout.annotations as { text: string }[])[0].text);
  assertStringIncludes(sub, "sin-cos - learned: +2.0 [+1.0, +3.0]");
  assertStringIncludes(sub, ">holds<");
  assertStringIncludes(sub, "(paper +0.4)");
  assertStringIncludes(sub, "not detected (±1.5)");
  assert(!sub.includes("big - small"), "another study's verdicts are not listed");
  // Three extra lines (a heading and two verdicts) of 16 px above the plot.
  assertEquals(spec.layout.height, 520 + 3 * 16);

  const many = [1, 2, 3, 4, 5].map((i) =>
    comparison("stability", `lr ${i} - 1, batch 64`, [i, 0.5], i === 5 ? "opposite" : "holds")
  );
  many.push(comparison("stability", "random - learned patch proj., batch 64", null, "missing"));
  const lines = verdictLines(many, "stability").map((l) => l.replace(/<[^>]+>/g, ""));
  assertEquals(lines, [
    "lr 1 - 1: 1 holds (of 1)",
    "lr 2 - 1: 1 holds (of 1)",
    "lr 3 - 1: 1 holds (of 1)",
    "lr 4 - 1: 1 holds (of 1)",
    "lr 5 - 1: 1 opposite (of 1)",
    "random - learned patch proj.: 1 missing (of 1)",
  ]);

  const forest = verdictForest(cs);
  assertEquals(trace(forest, "holds").x, [2]);
  assertEquals(trace(forest, "holds").y, ["posemb: sin-cos - learned"]);
  assertEquals(errors(trace(forest, "not detected"), "error_x"), [1.5]);
  assertEquals(trace(forest, "opposite").y, ["scaling: big - small"]);
  assertEquals(trace(forest, `${PAPER_NAME}: a - b`).x, [0.4, 1.6, 1.4]);
  const yaxis = forest.layout.yaxis as { categoryarray: string[] };
  assertEquals(yaxis.categoryarray.length, 3);
});

Deno.test("stabilityLrFigure: linear top-1 against lr per (batch, projection), log x, diverged marked", () => {
  const rows = [
    ...seeded({ batchSize: 64, baseLr: 0.006, freezePatchEmbed: false }, [60, 62, 64]),
    ...seeded({ batchSize: 64, baseLr: 0.0015, freezePatchEmbed: false }, [70, 71, 75]),
    ...seeded({ batchSize: 64, baseLr: 0.0015, freezePatchEmbed: true }, [72, 72, 72]),
    ...seeded({ batchSize: 64, baseLr: 0.006, freezePatchEmbed: true }, [71, 73, 72]),
    ...seeded({ batchSize: 256, baseLr: 0.0015, freezePatchEmbed: false }, [68, 69, 70]),
    ...seeded({ batchSize: 256, baseLr: 0.006, freezePatchEmbed: false }, [40, 61, 62]),
  ];
  rows[rows.length - 3].diverged = true; // batch 256, lr 6e-3, seed 0 (40)
  const spec = stabilityLrFigure(rows);
  const learned64 = trace(spec, "batch 64, learned patch proj.");
  assertEquals(learned64.x, [0.0015, 0.006]);
  const [lo, hi] = [byHand([70, 71, 75]), byHand([60, 62, 64])];
  assertClose(learned64.y, [lo.mean, hi.mean], 1e-9);
  assertClose(errors(learned64), [lo.hw, hi.hw]);
  const random64 = trace(spec, "batch 64, random patch proj.");
  assertClose(random64.y, [72, 72], 1e-9);
  assertEquals((random64.line as { dash: string }).dash, "dash");
  // The diverged run counts in its configuration's mean, and is marked at its own value.
  assertClose(trace(spec, "batch 256, learned patch proj.").y, [69, 163 / 3], 1e-9);
  const div = trace(spec, "diverged runs");
  assertEquals([div.x, div.y], [[0.006], [40]]);
  // kNN panel: the same lines on the second axes (kNN = linear in these rows).
  const knn64 = trace(spec, "batch 64, learned patch proj.", 1);
  assertEquals([knn64.xaxis, knn64.y], ["x2", learned64.y]);
  assertEquals((spec.layout.xaxis as { type: string }).type, "log");
  const paper = trace(spec, PAPER_NAME);
  assertEquals(paper.y, [70.4, 72.2, 71.7, 73.4]); // the paper's lr results at batch 4k
});

Deno.test("pilotFigure: means with error bars per length, the random-init band, the climb", () => {
  const rows = [
    ...randomInit([40, 42, 44], [30, 30, 33]),
    ...seeded({ epochs: 1 }, [50, 53, 50], [40, 41, 45]),
    ...seeded({ epochs: 2 }, [60, 61, 65], [50, 50, 50]),
  ];
  const spec = pilotFigure(rows);
  const lin = trace(spec, "trained: mean ± 95% CI");
  assertEquals(lin.x, [1, 2]);
  const [e1, e2] = [byHand([50, 53, 50]), byHand([60, 61, 65])];
  assertClose(lin.y, [e1.mean, e2.mean], 1e-9);
  assertClose(errors(lin), [e1.hw, e2.hw]);
  // The band spans the random init's interval: 42 ± 4.302653 * 2 / sqrt(3).
  const floor = byHand([40, 42, 44]);
  const band = trace(spec, "random init: 95% CI");
  assertClose(band.y, [
    floor.mean - floor.hw,
    floor.mean - floor.hw,
    floor.mean + floor.hw,
    floor.mean + floor.hw,
  ]);
  assertEquals(band.x, [0, 2, 2, 0]);
  assertEquals(trace(spec, "random init: mean").y, [42, 42]);
  assertEquals(trace(spec, "seeds").y, [50, 53, 50, 60, 61, 65]);
  // kNN panel: second axes.
  const knn = trace(spec, "trained: mean ± 95% CI", 1);
  assertEquals(knn.xaxis, "x2");
  assertClose(knn.y, [42, 50], 1e-9);
  assertClose(trace(spec, "random init: mean", 1).y, [31, 31], 1e-9);
  // Climb at 1 epoch, paired by seed: [10, 11, 6], mean 9, s sqrt(7).
  const sub = String((spec.layout.annotations as { text: string }[])[0].text);
  const climbHw = T2 * Math.sqrt(7) / Math.sqrt(3);
  assertStringIncludes(sub, `+9.0 ± ${climbHw.toFixed(1)} at 1`);
});

/** kNN monitor points of a run. */
function knnPoints(runId: string, accs: number[], batch: number) {
  return accs.map((top1, i) => ({
    run_id: runId,
    kind: "knn",
    step: i + 1,
    images: (i + 1) * batch,
    top1,
  }));
}

Deno.test("stabilityCurves: the first seed of each configuration, dips marked, a panel per projection", () => {
  const rows = [
    ...seeded({ batchSize: 10, baseLr: 0.006, freezePatchEmbed: false }, [1, 2, 3]),
    ...seeded({ batchSize: 20, baseLr: 0.0015, freezePatchEmbed: false }, [1, 2, 3]),
    ...seeded({ batchSize: 10, baseLr: 0.006, freezePatchEmbed: true }, [1, 2, 3]),
  ];
  const id = (b: number, lr: number, f: boolean, s: number) =>
    `s_smoke_batchSize-${b}_baseLr-${lr}_freezePatchEmbed-${f}_seed-${s}`;
  // dippy: peak 60 at step 2, bottom 55 at step 3, back to 59 (>= 55 + 2.5) at step 4;
  // a second drop 61 -> 58.5 (2.5 points) at step 6, recovered to 61 at step 7.
  const dippy = [50, 60, 55, 59, 61, 58.5, 61];
  const curves = [
    ...knnPoints(id(10, 0.006, false, 0), dippy, 10),
    // Seed 1 of the same configuration dips elsewhere: not drawn.
    ...knnPoints(id(10, 0.006, false, 1), [50, 40, 50, 50, 50, 50, 50], 10),
    ...knnPoints(id(20, 0.0015, false, 0), [40, 45, 50, 52, 53, 53.5, 54], 20),
    ...knnPoints(id(10, 0.006, true, 0), [50, 52, 54, 56, 58, 60, 62], 10),
  ];
  const spec = stabilityCurves(rows, curves, { minDepth: 1 });
  const dips = trace(spec, "dips");
  assertEquals(dips.x, [30, 60]); // steps 3 and 6 of batch 10
  assertEquals(dips.y, [55, 58.5]);
  assertEquals(trace(spec, "batch 10, lr 6e-3, learned").y, dippy);
  assertEquals(trace(spec, "batch 20, lr 1.5e-3, learned").x, [20, 40, 60, 80, 100, 120, 140]);
  const random = trace(spec, "batch 10, lr 6e-3, random");
  assertEquals(random.xaxis, "x2");
  assertEquals(trace(spec, "dips", 1).x, []); // the random panel has none
  assertEquals(spec.data.filter((d) => String(d.name).startsWith("batch")).length, 3);
  const paper = trace(spec, PAPER_NAME);
  assertEquals((paper.y as number[]).slice(0, 4), [71.5, 72.6, 72.2, 69.7]); // batch 1k..6k
  assertEquals(paper.xaxis, "x3");
  const annotations = spec.layout.annotations as { text: string }[];
  assert(annotations.some((a) => a.text === PAPER_NAME), "the paper panel has a title");
  assertStringIncludes(annotations[0].text, "seed 0");
  // By default each run's own threshold: dippy's second differences -15, 9, -2, -4.5, 5 have
  // median -2 and MAD 7, noise 1.4826 x 7 / sqrt(6) = 4.24, threshold 21.2: no dip is that deep.
  assertEquals(trace(stabilityCurves(rows, curves), "dips").x, []);
});

Deno.test("gradientTraces: a patch-projection spike is marked at its step, first seed only", () => {
  const rows = seeded({ batchSize: 8, baseLr: 0.001, freezePatchEmbed: false }, [1, 2, 3]);
  const grads = [1, 1.1, 0.9, 5, 1, 1, 1.2];
  const curves = [0, 1].flatMap((seed) =>
    grads.map((g, step) => ({
      run_id: String(rows[seed].run_id),
      kind: "step",
      step,
      images: (step + 1) * 8,
      grad_patch: seed === 0 ? g : 100,
      grad_last_block: 2,
    }))
  );
  const spec = gradientTraces(rows, curves);
  assertEquals(spec.data.filter((d) => d.name === "patch projection").length, 1);
  const spikes = trace(spec, "spike (>= 3x median)");
  // median of the trace is 1; only 5 (step 3, 32 images) is >= 3x it.
  assertEquals(spikes.x, [32]);
  assertEquals(spikes.y, [5]);
  assertEquals(trace(spec, "last block").y, grads.map(() => 2));
});

Deno.test("labels that do not overlap: wrapped labels, the legend below the axes, y titles of the first column", () => {
  assertEquals(wrapLabel("random patch projection", 12), "random patch<br>projection");
  // "lr 1.5e-4," (10) + " random" would be 17 > 12.
  assertEquals(
    wrapLabel("lr 1.5e-4, random patch projection", 12),
    "lr 1.5e-4,<br>random patch<br>projection",
  );
  assertEquals(wrapLabel("sin-cos: 76.5", 16), "sin-cos: 76.5");
  // An entry: 46 px plus 6.6 px a character; ten characters: 112 px.
  assertEquals(legendRows(["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"], 200), 3);
  assertEquals(legendRows(["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"], 250), 2); // 224 + 112
  assertEquals(legendRows([], 250), 0);
  // One row below a gap of 95 px: margin 95 + 20 + 10 = 125 px, 55 px more than 70 (no taller
  // than 60 px more: the height stays), the legend's top 95 px under a plot of 520 - 115 - 125.
  const layout: Record<string, unknown> = {
    width: 1100,
    height: 520,
    margin: { l: 70, r: 80, t: 115, b: 70 },
    legend: { orientation: "h", y: -0.16 },
  };
  legendBelow(layout, [{ name: "a", y: [1] }, { name: "b", y: [2] }, { name: "c", y: [] }], 95);
  assertEquals(layout.height, 520);
  assertEquals((layout.margin as { b: number }).b, 125);
  assertAlmostEquals((layout.legend as { y: number }).y, -95 / 280, 1e-12);
  // Four entries of 200 characters, one a row: 95 + 4 * 20 + 10 = 185 px, 115 more than 70:
  // 55 px added to the height.
  const tall: Record<string, unknown> = {
    width: 1100,
    height: 520,
    margin: { l: 70, t: 115, b: 70 },
  };
  legendBelow(tall, ["w", "x", "y", "z"].map((n) => ({ name: n.repeat(200) })), 95);
  assertEquals([tall.height, (tall.margin as { b: number }).b], [575, 185]);

  // Gradient panels: the y title on the first column only; the spike in the legend once, from
  // the first panel that has one (an empty trace has no legend entry).
  const rows = [
    ...seeded({ batchSize: 8, baseLr: 0.001, freezePatchEmbed: false }, [1, 2, 3]),
    ...seeded({ batchSize: 8, baseLr: 0.004, freezePatchEmbed: false }, [1, 2, 3]),
  ];
  const grads = [1, 1.1, 0.9, 5, 1, 1, 1.2];
  const curves = [0, 3].flatMap((i) =>
    grads.map((g, step) => ({
      run_id: String(rows[i].run_id),
      kind: "step",
      step,
      images: (step + 1) * 8,
      grad_patch: i === 0 ? 1 : g, // spikes in the second panel only
      grad_last_block: 2,
    }))
  );
  const spec = gradientTraces(rows, curves);
  const title = (k: string) => (spec.layout[k] as { title: { text: string } }).title.text;
  assertEquals([title("yaxis"), title("yaxis2")], ["grad norm", ""]);
  const spikes = spec.data.filter((d) => d.name === "spike (>= 3x median)");
  assertEquals(spikes.map((d) => d.showlegend), [false, true]);

  // The paper bars' labels: wrapped, at a fixed 11 px (plotly shrinks a label wider than its bar).
  const pe = posembBars(seeded({ posEmb: "sincos", pool: "mean" }, [70, 71, 72]));
  const paper = trace(pe, PAPER_NAME);
  assertEquals(paper.text, ["mean pool (no<br>final LN): 76.3"]);
  assertEquals((paper.textfont as { size: number }).size, 11);
  assertEquals(paper.constraintext, "none");
});

Deno.test("patchProjectionBars: means with error bars; gains random - learned paired by seed", () => {
  const rows = [
    ...seeded({ framework: "mocov3", freezePatchEmbed: false }, [70, 71, 72]),
    ...seeded({ framework: "mocov3", freezePatchEmbed: true }, [72, 72, 75]),
    ...seeded({ framework: "simclr", freezePatchEmbed: false }, [68, 68, 68]),
    ...seeded({ framework: "simclr", freezePatchEmbed: true }, [67, 68, 66]),
    ...seeded({ framework: "byol", freezePatchEmbed: false }, [66, 67, 68]),
    ...seeded({ framework: "byol", freezePatchEmbed: true }, [66, 67, 68]),
  ];
  const spec = patchProjectionBars(rows);
  const learned = trace(spec, "learned: linear top-1");
  assertEquals(learned.x, ["MoCo v3", "SimCLR", "BYOL"]);
  assertClose(learned.y, [71, 68, 67], 1e-9);
  assertClose(errors(learned), [T2 / Math.sqrt(3), 0, T2 / Math.sqrt(3)]);
  const random = trace(spec, "random (frozen): linear top-1");
  assertClose(random.y, [73, 67, 67], 1e-9);
  assertClose(errors(random), [byHand([72, 72, 75]).hw, T2 / Math.sqrt(3), T2 / Math.sqrt(3)]);
  // Paired differences: MoCo v3 [2, 1, 3] (mean 2, s 1), SimCLR [-1, 0, -2] (mean -1, s 1),
  // BYOL [0, 0, 0].
  const gain = trace(spec, "ours: random - learned (paired by seed)");
  assertClose(gain.y, [2, -1, 0], 1e-9);
  assertClose(errors(gain), [T2 / Math.sqrt(3), T2 / Math.sqrt(3), 0]);
  const paper = trace(spec, `${PAPER_NAME}: random - learned`);
  // Chen, Xie, He 2021 (arXiv:2104.02057), Sec. 4.2, random patch projection: SimCLR +0.8,
  // BYOL +1.3, MoCo v3 +1.7 (at lr 1.5e-4).
  const byFramework = Object.fromEntries(
    (paper.x as string[]).map((x, i) => [x, (paper.y as number[])[i]]),
  );
  assertEquals(byFramework, { "MoCo v3": 1.7, SimCLR: 0.8, BYOL: 1.3 });
});

Deno.test("patchSizeFigure and scalingFigure: means over seeds against FLOPs and params", () => {
  const rows = [
    ...seeded({ patchSize: 7 }, [70, 71, 72], [60, 60, 63], { flops: 2e6 }),
    ...seeded({ patchSize: 4 }, [73, 73, 73], [62, 62, 62], { flops: 7e6 }),
  ];
  const ps = patchSizeFigure(rows);
  assertEquals(trace(ps, "ours: forward MFLOPs / image").y, [2, 7]);
  const lin = trace(ps, OURS_LINEAR);
  assertEquals(lin.x, ["patch 7 (16 tokens)", "patch 4 (49 tokens)"]);
  assertClose(lin.y, [71, 73], 1e-9);
  assertClose(errors(lin), [T2 / Math.sqrt(3), 0]);
  assertClose(trace(ps, OURS_KNN).y, [61, 62], 1e-9);
  // ViT-L/16 at 224: D 1024, 196 patches + cls, depth 24, MLP 4096, multiply-add = 2 FLOPs.
  const D = 1024, N = 196, T = 197, C = 3, p = 16;
  const block = 2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * 4 * D;
  const flopsL16 = 2 * N * C * p * p * D + 24 * block;
  const paperFlops = trace(ps, `${PAPER_NAME}: GFLOPs / image`);
  assert(Math.abs((paperFlops.y as number[])[0] - flopsL16 / 1e9) < 1e-9);
  assertEquals(trace(ps, PAPER_NAME).y, [77.6, 81.0]);

  const sc = scalingFigure([
    ...seeded({ dim: 64, depth: 4, heads: 4 }, [64, 66, 68], undefined, {
      params: 2e5,
      flops: 7e6,
    }),
    ...seeded({ dim: 32, depth: 2, heads: 2 }, [60, 60, 60], undefined, {
      params: 3e4,
      flops: 1e6,
    }),
  ]);
  const ours = sc.data.filter((d) => d.name === OURS_LINEAR);
  assertEquals(ours[0].x, [3e4, 2e5]);
  assertEquals(ours[1].x, [1e6, 7e6]);
  assertEquals(ours[0].text, ["D32x2", "D64x4"]);
  assertClose(ours[0].y, [60, 66], 1e-9);
  assertClose(errors(ours[0]), [0, T2 * 2 / Math.sqrt(3)]);
  const paper = sc.data.filter((d) => d.name === PAPER_NAME);
  assertEquals(paper[0].x, [86e6, 304e6, 632e6]);
  assertEquals(paper[0].y, [76.7, 77.6, 78.1]);
  assertEquals((sc.layout.xaxis as { type: string }).type, "log");
});

Deno.test("paperComparison: one row per configuration (mean, 95% half-width), then unmatched paper rows", () => {
  const results = aq.from([
    ...seeded({ posEmb: "sincos", pool: "cls" }, [70, 72, 74], [60, 60, 60], {
      params: 10,
      flops: 2e6,
      dips: 1,
      knn_noise: 0.3, // monitored: its dips count
    }),
    ...seeded({ posEmb: "none", pool: "cls" }, [60, 60, 60], [50, 50, 50], {
      params: 9,
      flops: 2e6,
      dips: 0,
    }),
  ]);
  const rows = paperComparison("posemb", results).objects() as Record<string, unknown>[];
  assertEquals(rows.length, 4); // 2 configurations + learned and mean-pool paper rows
  assertEquals(rows[0].paper, "sin-cos");
  assertEquals(rows[0]["paper (ImageNet)"], "76.5%");
  assertEquals(rows[0].seeds, 3);
  assertEquals(rows[0]["linear top-1"], 72);
  assertAlmostEquals(Number(rows[0]["linear ±95%"]), T2 * 2 / Math.sqrt(3), 0.005);
  assertEquals(rows[0]["kNN-20 top-1"], 60);
  assertEquals(rows[0].dips, 3);
  assertEquals(rows[0].MFLOPs, 2);
  assertEquals(rows[1].paper, "none");
  assertEquals(rows[1]["paper (ImageNet)"], "74.9%");
  assertEquals(rows.slice(2).map((r) => r["linear top-1"]), [null, null]);
  assertStringIncludes(String(rows[2].paper), "learned");
});

Deno.test("dipCurvesSpec and gradientSpec: the notebooks' curves, first seed per configuration", () => {
  const results = aq.from([
    { run_id: "a_lr-1_seed-0", seed: 0, lr: 1 },
    { run_id: "a_lr-1_seed-1", seed: 1, lr: 1 },
    { run_id: "a_lr-2_seed-0", seed: 0, lr: 2 },
    { run_id: "a_random-init_seed-0", seed: 0, random_init: true },
  ]);
  // lr 1: peak 60 at step 2, bottom 55 at step 3, recovered to 59 at step 4 (a dip of 5 points).
  const knn = [
    ...knnPoints("a_lr-1_seed-0", [50, 60, 55, 59], 100),
    ...knnPoints("a_lr-1_seed-1", [50, 40, 50, 50], 100),
  ];
  // lr 2: gradients 1, 1, 6, 1 (median 1): a spike at step 2 (300 images).
  const steps = [1, 1, 6, 1].map((g, step) => ({
    run_id: "a_lr-2_seed-0",
    kind: "step",
    step,
    images: (step + 1) * 100,
    grad_patch: g,
    grad_last_block: 0.5,
  }));
  const curves = [...knn, ...steps]; // rows (aq.from would take the first row's columns only)
  const dips = dipCurvesSpec({ results, curves }, (r) => `lr ${r.lr}`, { minDepth: 1 });
  assertEquals(dips.data.map((d) => d.name), ["lr 1", "dips (1)"]); // lr 2 has no kNN points
  assertEquals(dips.data[0].x, [100, 200, 300, 400]);
  assertEquals([dips.data[1].x, dips.data[1].y], [[300], [55]]);
  assertEquals(dips.data[1].hovertext, ["lr 1: -5.0"]);
  // By default the threshold is the run's own: second differences -15, 9 -> median -3, MAD 12,
  // noise 1.4826 x 12 / sqrt(6) = 7.26, threshold 36.3 points, so the 5-point drop is noise.
  const own = dipCurvesSpec({ results, curves }, (r) => `lr ${r.lr}`);
  assertEquals(own.data.map((d) => d.name), ["lr 1", "dips (0)"]);
  // Monitored: lr 1 has 4 kNN points. A suite with only each run's final kNN is not.
  assertEquals(hasMonitor({ results, curves }), true);
  const finalOnly = knnPoints("a_lr-1_seed-0", [80], 100);
  assertEquals(hasMonitor({ results, curves: [...finalOnly, ...steps] }), false);
  const grads = gradientSpec({ results, curves }, (r) => `lr ${r.lr}`);
  assertEquals(grads.data.map((d) => d.name), ["lr 2", "lr 2: last block", "spikes (1)"]);
  assertEquals(grads.data[0].y, [1, 1, 6, 1]);
  assertEquals([grads.data[2].x, grads.data[2].y], [[300], [6]]);
  assertEquals((grads.layout?.yaxis as { type: string }).type, "log");
});

Deno.test("tableMarkdown: rounded numbers, empty cells for null and NaN", () => {
  const md = tableMarkdown([{ a: "x", b: 1.23456, c: null, d: NaN }], { digits: 2 });
  assertEquals(md.split("\n")[2], "|x|1.23|||");
});

Deno.test("summaryMarkdown: verdict tables for linear and kNN, stability and pilot tables", async () => {
  const dir = await Deno.makeTempDir();
  const csv = (rows: Record<string, unknown>[]) => {
    const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
    return [cols.join(","), ...rows.map((r) => cols.map((c) => r[c] ?? "").join(","))].join(
      "\n",
    ) + "\n";
  };
  try {
    await Deno.writeTextFile(
      `${dir}/posemb.csv`,
      csv([
        ...seeded({ posEmb: "sincos", pool: "cls" }, [72, 73, 71], [60, 60, 60]),
        ...seeded({ posEmb: "none", pool: "cls" }, [70, 72, 70], [60, 60, 60]),
      ]),
    );
    const stab = { dips: 1, max_dip: 2.5, dips_after_spike: 1, grad_spikes: 2, knn_noise: 0.3 };
    await Deno.writeTextFile(
      `${dir}/stability.csv`,
      csv(
        seeded(
          { batchSize: 64, baseLr: 0.0015, freezePatchEmbed: false },
          [70, 71, 72],
          undefined,
          stab,
        ),
      ),
    );
    await Deno.writeTextFile(
      `${dir}/pilot.csv`,
      csv([...randomInit([40, 42, 44]), ...seeded({ epochs: 1 }, [50, 53, 50])]),
    );
    const md = await summaryMarkdown(dir);
    assertStringIncludes(md, "## Linear probe top-1");
    assertStringIncludes(md, "## kNN-20 top-1");
    // sin-cos - none paired: [2, 1, 1], mean 4/3, half-width 4.302653 / 3 = 1.43.
    assertStringIncludes(
      md,
      "| posemb | sin-cos - none | 72.0 ± 2.5 | 70.7 ± 2.9 | +1.3 [-0.1, +2.8] |",
    );
    assertStringIncludes(md, "## Stability per configuration");
    // 3 seeds of one configuration: dips 3, deepest 2.5, 3 after a spike, 6 spikes, noise 0.3.
    assertStringIncludes(
      md,
      `|64|1.5e-3|false|3|71|${(T2 / Math.sqrt(3)).toFixed(2)}|0|3|2.5|3|6|0.3|`,
    );
    assertStringIncludes(md, "## Pilot: training length");
    // random init 42 ± 4.97 (SD 2); 1 epoch 51 (SD sqrt(3)), climb [10, 11, 6] = 9 ± 6.57.
    assertStringIncludes(md, "|random init|3|42|4.97|2.00|");
    assertStringIncludes(md, `|1|3|51|${byHand([50, 53, 50]).hw.toFixed(2)}|1.73|9|6.57|`);
    assert(!md.includes("## Regime"), "no regime section without regimes");
    // A regime per budget: its own section, before the verdicts, and in every figure's note.
    const regimes = { cpu: "regime: the base configuration (made up) is below raw pixels" };
    const withRegime = await summaryMarkdown(dir, regimes);
    const at = withRegime.indexOf(`- **cpu**: ${regimes.cpu}`);
    assert(at > 0 && at < withRegime.indexOf("## Linear probe top-1"), withRegime);
    // (Result tables always have a budget column; these hand-made ones did not.)
    for (const f of ["stability", "pilot"]) await Deno.remove(`${dir}/${f}.csv`);
    await Deno.writeTextFile(
      `${dir}/posemb.csv`,
      csv(seeded({ posEmb: "sincos", pool: "cls" }, [72, 73, 71], undefined, { budget: "cpu" })),
    );
    const figs = await buildFigures(dir, { regimes });
    assertStringIncludes(JSON.stringify(figs["posemb"]), regimes.cpu);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("figureHtml / writeFigure: self-contained HTML, and a warning without Chromium", async () => {
  const spec = posembBars(seeded({ posEmb: "sincos", pool: "cls" }, [70, 71, 72]));
  const html = figureHtml(spec, "t");
  assertStringIncludes(html, "plotly.js v"); // the bundle's own header comment
  assertStringIncludes(html, "Plotly.newPlot");
  assert(!/<script[^>]*\bsrc=/i.test(html), "no external script");
  assertEquals(mimeBundle(spec)["application/vnd.plotly.v1+json"], spec);

  const dir = await Deno.makeTempDir();
  try {
    const missing = await writeFigure(spec, "nochrome", dir, { chromium: "/nonexistent/chromium" });
    assert(missing.warning && missing.warning.includes("not installed"), missing.warning);
    assertStringIncludes(missing.warning, `${dir}/nochrome.html is written`);
    assert((await Deno.stat(`${dir}/nochrome.html`)).size > 1_000_000, "plotly inlined");
    assertEquals(missing.png, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const noChromium = requireTool(
  "Chromium (PNG figures)",
  await chromiumStatus(),
  "apt-get install chromium, or set VITSSL_CHROMIUM to its path",
);

Deno.test({
  name: "writeFigure: a PNG of the layout's size via Chromium",
  ignore: noChromium,
  fn: async () => {
    const spec = posembBars(seeded({ posEmb: "sincos", pool: "cls" }, [70, 71, 72]));
    const dir = await Deno.makeTempDir();
    try {
      const res = await writeFigure(spec, "posemb", dir);
      assertEquals(res.warning, undefined);
      const png = await Deno.readFile(res.png!);
      assertEquals([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      // IHDR: width and height (big-endian) are the layout's size.
      const view = new DataView(png.buffer, png.byteOffset);
      assertEquals([view.getUint32(16), view.getUint32(20)], [1100, 520]);
      assert(png.length > 5000, `PNG of ${png.length} bytes is too small to hold a plot`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("envelope: the min and max of each run of points, in order; short lines whole", () => {
  // Runs [0, 1, 2] and [3, 4, 5]: the first has min 1 at 0 and max 9 at 1; the second has max 1
  // first at 3 and min 0 at 4.
  assertEquals(envelope([0, 1, 2, 3, 4, 5], [1, 9, 1, 1, 0, 1], 4), {
    x: [0, 1, 3, 4],
    y: [1, 9, 1, 0],
  });
  assertEquals(envelope([0, 1], [5, 6], 4), { x: [0, 1], y: [5, 6] });
  // 2,000 points with one spike: at most 600 come back, the spike among them.
  const x = Array.from({ length: 2000 }, (_, i) => i);
  const y = x.map((i) => (i === 1234 ? 50 : 1 + (i % 7) / 10));
  const e = envelope(x, y);
  assert(e.x.length <= 600);
  assertEquals(Math.max(...e.y), 50);
  assertEquals(e.x[e.y.indexOf(50)], 1234);
  assert(e.x.every((v, i) => i === 0 || v > e.x[i - 1]), "in order");
});
