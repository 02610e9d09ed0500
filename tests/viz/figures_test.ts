import * as aq from "arquero";
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { chromiumStatus, requireTool } from "../_helpers/system_tools.ts";
import { figureHtml } from "../../lib/viz/render.ts";
import {
  dipCurvesSpec,
  gradientSpec,
  gradientTraces,
  mimeBundle,
  PAPER_NAME,
  paperComparison,
  patchProjectionBars,
  patchSizeFigure,
  posembBars,
  scalingFigure,
  stabilityCurves,
  type Trace,
  writeFigure,
} from "../../lib/viz/figures.ts";

function trace(spec: { data: Trace[] }, name: string): Trace {
  const t = spec.data.find((d) => d.name === name);
  assert(t, `no trace named "${name}" in [${spec.data.map((d) => d.name).join(", ")}]`);
  return t!;
}

Deno.test("posembBars: our bars carry the table's values, the paper's beside them on the right axis", () => {
  const rows = [
    { run_id: "a", posEmb: "sincos", pool: "cls", knn_top1: 71.5 },
    { run_id: "b", posEmb: "learned", pool: "cls", knn_top1: 70.25 },
    { run_id: "c", posEmb: "none", pool: "cls", knn_top1: 69 },
    { run_id: "d", posEmb: "sincos", pool: "mean", knn_top1: 72 },
  ];
  const spec = posembBars(rows);
  const bars = spec.data.find((d) => d.type === "bar")!;
  assertEquals(bars.y, [71.5, 70.25, 69, 72]);
  assertEquals(bars.x, [
    "sin-cos, cls token",
    "learned, cls token",
    "none, cls token",
    "sin-cos, mean pool",
  ]);
  const paper = trace(spec, PAPER_NAME);
  // PAPER.md: sin-cos / learned / none 76.5 / 76.1 / 74.9; pooling without final LN 76.3.
  assertEquals(paper.y, [76.5, 76.1, 74.9, 76.3]);
  assertEquals(paper.x, bars.x);
  assertEquals(paper.yaxis, "y2");
  const y2 = spec.layout.yaxis2 as { title: { text: string }; overlaying: string };
  assertStringIncludes(y2.title.text, "paper (ImageNet)");
  assertEquals(y2.overlaying, "y");
});

Deno.test("stabilityCurves: dips are marked at the bottoms of the constructed curve", () => {
  const rows = [
    { run_id: "dippy", batchSize: 10, baseLr: 0.006 },
    { run_id: "smooth", batchSize: 20, baseLr: 0.0015 },
  ];
  // dippy: peak 60 at step 2, bottom 55 at step 3, back to 59 (>= 55 + 2.5) at step 4;
  // a second drop 61 -> 58.5 (2.5 points) at step 6, recovered to 61 at step 7.
  const dippy = [50, 60, 55, 59, 61, 58.5, 61];
  const smooth = [40, 45, 50, 52, 53, 53.5, 54];
  const curves = [
    ...dippy.map((top1, i) => ({
      run_id: "dippy",
      kind: "knn",
      step: i + 1,
      images: (i + 1) * 10,
      top1,
    })),
    ...smooth.map((top1, i) => ({
      run_id: "smooth",
      kind: "knn",
      step: i + 1,
      images: (i + 1) * 20,
      top1,
    })),
  ];
  const spec = stabilityCurves(rows, curves);
  const dips = trace(spec, "dips");
  assertEquals(dips.x, [30, 60]); // steps 3 and 6 of batch 10
  assertEquals(dips.y, [55, 58.5]);
  const line = trace(spec, "batch 10, lr 6e-3");
  assertEquals(line.y, dippy);
  assertEquals(trace(spec, "batch 20, lr 1.5e-3").x, [20, 40, 60, 80, 100, 120, 140]);
  const paper = trace(spec, PAPER_NAME);
  assertEquals((paper.y as number[]).slice(0, 4), [71.5, 72.6, 72.2, 69.7]); // batch 1k..6k
  const annotations = spec.layout.annotations as { text: string }[];
  assert(annotations.some((a) => a.text === PAPER_NAME), "the paper panel has a title");
});

Deno.test("gradientTraces: a patch-projection spike is marked at its step", () => {
  const rows = [{ run_id: "r", batchSize: 8, baseLr: 0.001 }];
  const grads = [1, 1.1, 0.9, 5, 1, 1, 1.2];
  const curves = grads.map((g, step) => ({
    run_id: "r",
    kind: "step",
    step,
    images: (step + 1) * 8,
    grad_patch: g,
    grad_last_block: 2,
  }));
  const spec = gradientTraces(rows, curves);
  const spikes = trace(spec, "spike (>= 3x median)");
  // median of the trace is 1; only 5 (step 3, 32 images) is >= 3x it.
  assertEquals(spikes.x, [32]);
  assertEquals(spikes.y, [5]);
  assertEquals(trace(spec, "last block").y, grads.map(() => 2));
});

Deno.test("patchProjectionBars: gains are random minus learned, paper gains per framework", () => {
  const rows = [];
  const acc: Record<string, [number, number]> = {
    mocov3: [70, 72.5],
    simclr: [68, 67.5],
    byol: [66, 66.75],
  };
  for (const [framework, [learned, random]] of Object.entries(acc)) {
    rows.push({
      run_id: `${framework}-l`,
      framework,
      freezePatchEmbed: false,
      baseLr: 1e-3,
      knn_top1: learned,
    });
    rows.push({
      run_id: `${framework}-r`,
      framework,
      freezePatchEmbed: true,
      baseLr: 1e-3,
      knn_top1: random,
    });
  }
  const spec = patchProjectionBars(rows);
  assertEquals(trace(spec, "learned, lr 1e-3").y, [70, 68, 66]);
  assertEquals(trace(spec, "random (frozen), lr 1e-3").y, [72.5, 67.5, 66.75]);
  assertEquals(trace(spec, "ours: random - learned, lr 1e-3").y, [2.5, -0.5, 0.75]);
  const paper = trace(spec, `${PAPER_NAME}: random - learned`);
  // PAPER.md: SimCLR +0.8, BYOL +1.3, MoCo v3 +1.7 (at lr 1.5e-4).
  const byFramework = Object.fromEntries(
    (paper.x as string[]).map((x, i) => [x, (paper.y as number[])[i]]),
  );
  assertEquals(byFramework, { "MoCo v3": 1.7, SimCLR: 0.8, BYOL: 1.3 });
});

Deno.test("patchSizeFigure and scalingFigure: FLOPs and params on the axes", () => {
  const rows = [
    { run_id: "p7", patchSize: 7, knn_top1: 70, flops: 2e6 },
    { run_id: "p4", patchSize: 4, knn_top1: 73, flops: 7e6 },
  ];
  const ps = patchSizeFigure(rows);
  assertEquals(trace(ps, "ours: forward MFLOPs / image").y, [2, 7]);
  assertEquals(trace(ps, "ours (Fashion-MNIST kNN)").x, [
    "patch 7 (16 tokens)",
    "patch 4 (49 tokens)",
  ]);
  // ViT-L/16 at 224: D 1024, 196 patches + cls, depth 24, MLP 4096, multiply-add = 2 FLOPs.
  const D = 1024, N = 196, T = 197, C = 3, p = 16;
  const block = 2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * 4 * D;
  const flopsL16 = 2 * N * C * p * p * D + 24 * block;
  const paperFlops = trace(ps, `${PAPER_NAME}: GFLOPs / image`);
  assert(Math.abs((paperFlops.y as number[])[0] - flopsL16 / 1e9) < 1e-9);
  assertEquals(trace(ps, PAPER_NAME).y, [77.6, 81.0]);

  const sc = scalingFigure([
    { run_id: "a", dim: 32, depth: 2, params: 3e4, flops: 1e6, knn_top1: 60 },
    { run_id: "b", dim: 64, depth: 4, params: 2e5, flops: 7e6, knn_top1: 65 },
  ]);
  const ours = sc.data.filter((d) => d.name === "ours (Fashion-MNIST kNN)");
  assertEquals(ours[0].x, [3e4, 2e5]);
  assertEquals(ours[1].x, [1e6, 7e6]);
  assertEquals(ours[0].text, ["D32x2", "D64x4"]);
  const paper = sc.data.filter((d) => d.name === PAPER_NAME);
  assertEquals(paper[0].x, [86e6, 304e6, 632e6]);
  assertEquals(paper[0].y, [76.7, 77.6, 78.1]);
  assertEquals((sc.layout.xaxis as { type: string }).type, "log");
});

Deno.test("paperComparison: each run beside the paper number it matches, then the rest", () => {
  const results = aq.from([
    { run_id: "a", posEmb: "sincos", pool: "cls", knn_top1: 70, dips: 0, params: 10, flops: 2e6 },
    { run_id: "b", posEmb: "none", pool: "cls", knn_top1: 60, dips: 1, params: 9, flops: 2e6 },
  ]);
  const rows = paperComparison("posemb", results).objects() as Record<string, unknown>[];
  assertEquals(rows.length, 4); // 2 runs + learned and mean-pool paper rows without a run
  assertEquals(rows[0].paper, "sin-cos");
  assertEquals(rows[0]["paper (ImageNet)"], "76.5%");
  assertEquals(rows[0].MFLOPs, 2);
  assertEquals(rows[1].paper, "none");
  assertEquals(rows[1]["paper (ImageNet)"], "74.9%");
  assertEquals(rows.slice(2).map((r) => r["kNN top-1 (ours, %)"]), [null, null]);
  assertStringIncludes(String(rows[2].paper), "learned");
});

Deno.test("dipCurvesSpec and gradientSpec: the notebooks' curves of a suite, dips and spikes marked", () => {
  const results = aq.from([{ run_id: "r1", lr: 1 }, { run_id: "r2", lr: 2 }]);
  // r1: peak 60 at step 2, bottom 55 at step 3, recovered to 59 at step 4 (a dip of 5 points).
  const knn = [50, 60, 55, 59].map((top1, i) => ({
    run_id: "r1",
    kind: "knn",
    step: i + 1,
    images: (i + 1) * 100,
    top1,
  }));
  // r2: gradients 1, 1, 6, 1 (median 1): a spike at step 2 (300 images).
  const steps = [1, 1, 6, 1].map((g, step) => ({
    run_id: "r2",
    kind: "step",
    step,
    images: (step + 1) * 100,
    grad_patch: g,
    grad_last_block: 0.5,
  }));
  const curves = [...knn, ...steps]; // rows (aq.from would take the first row's columns only)
  const dips = dipCurvesSpec({ results, curves }, (r) => `lr ${r.lr}`);
  assertEquals(dips.data.map((d) => d.name), ["lr 1", "dips (1)"]); // r2 has no kNN points
  assertEquals(dips.data[0].x, [100, 200, 300, 400]);
  assertEquals([dips.data[1].x, dips.data[1].y], [[300], [55]]);
  assertEquals(dips.data[1].hovertext, ["lr 1: -5.0"]);
  const grads = gradientSpec({ results, curves }, (r) => `lr ${r.lr}`);
  assertEquals(grads.data.map((d) => d.name), ["lr 2", "lr 2: last block", "spikes (1)"]);
  assertEquals(grads.data[0].y, [1, 1, 6, 1]);
  assertEquals([grads.data[2].x, grads.data[2].y], [[300], [6]]);
  assertEquals((grads.layout?.yaxis as { type: string }).type, "log");
});

Deno.test("figureHtml / writeFigure: self-contained HTML, and a warning without Chromium", async () => {
  const spec = posembBars([{ run_id: "a", posEmb: "sincos", pool: "cls", knn_top1: 70 }]);
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
    const spec = posembBars([{ run_id: "a", posEmb: "sincos", pool: "cls", knn_top1: 70 }]);
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
