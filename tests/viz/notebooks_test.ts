/**
 * The notebooks: the display helpers of `lib/viz/` that notebooks use (checked against values
 * computed by hand; the figure specs are in figures_test.ts, the renderer in render_test.ts), that
 * the display modules never load the training loop, the committed state of `notebooks/*.ipynb`,
 * and every notebook executed headlessly with
 * `jupyter nbconvert --to notebook --execute` through the Deno kernel at `VITSSL_BUDGET=smoke`,
 * failing on any cell error.
 *
 * Without Jupyter (or without the Deno kernel) the execution tests print one line saying what to
 * install and are skipped; under `CI=true` they fail instead.
 */
import * as tf from "@tensorflow/tfjs-core";
import * as aq from "arquero";
import { PNG } from "pngjs";
import { Buffer } from "node:buffer";
import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertMatch,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { countParams, createViT, disposeViT, vitConfig, vitForward } from "../../lib/model/vit.ts";
import { budget, byBudget, NOTEBOOKS } from "../../lib/viz/budget.ts";
import { plotBundle, plotPng } from "../../lib/viz/display.ts";
import { findChromium } from "../../lib/viz/render.ts";
import { tableHtml } from "../../lib/viz/tables.ts";
import { attentionOverlay, colormap, encodePng, imageGrid } from "../../lib/viz/images.ts";
import { sparkline } from "../../lib/viz/progress.ts";
import { cosineSimilarity, heatmapSpec, lineSpec, similarityMosaic } from "../../lib/viz/charts.ts";
import { attentionEntropy, classTokenAttention, vitParams } from "../../lib/viz/inspect.ts";
import { readRun } from "../../lib/viz/runs.ts";
import { runFinished } from "../../lib/train/rundir.ts";
import * as nb from "../../lib/viz/notebook.ts";
import {
  executeNotebook,
  INSTALL_HINT,
  jupyterStatus,
  listNotebooks,
  main as notebooksMain,
  NOTEBOOK_DIR,
  notebookOutputs,
  overwriteClashes,
} from "../../lib/cli/notebooks.ts";
import { UsageError } from "../../lib/core/flags.ts";

await initBackend({ backend: "cpu" });

// ---------------------------------------------------------------------------------------------
// lib/viz/: what the notebooks import

/** The modules `root` loads at run time (type-only imports left out), from `deno info`. */
async function runtimeGraph(root: string): Promise<string[]> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", root],
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert(out.success, new TextDecoder().decode(out.stderr));
  const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    modules: { specifier: string; dependencies?: { code?: { specifier: string } }[] }[];
  };
  const bySpec = new Map(info.modules.map((m) => [m.specifier, m]));
  const seen = new Set<string>();
  const visit = (spec: string) => {
    if (seen.has(spec)) return;
    seen.add(spec);
    for (const d of bySpec.get(spec)?.dependencies ?? []) if (d.code) visit(d.code.specifier);
  };
  visit(new URL(root, import.meta.url).href);
  return [...seen];
}

Deno.test("display modules load neither the training loop nor the methods", async () => {
  const viz = new URL("../../lib/viz/", import.meta.url).href;
  const pretrain = (m: string) => m.endsWith("/lib/train/pretrain.ts");
  const methods = (m: string) => m.includes("/lib/methods/");
  const display = [
    "render",
    "display",
    "tables",
    "images",
    "progress",
    "charts",
    "inspect",
    "runs",
    "format",
    "final_report",
    "protocols",
    "run_curves",
  ];
  for (const file of display) {
    const graph = await runtimeGraph(`${viz}${file}.ts`);
    assertEquals(graph.filter((m) => pretrain(m) || methods(m)), [], `${file}.ts`);
  }
  // The budget names and the figure specs (also umap.ts, through figures/) read
  // lib/experiments/suites.ts, whose config fields (lib/train/config.ts) name the methods'
  // registry; still no training loop.
  for (const file of ["budget", "figures/mod", "umap"]) {
    assertEquals((await runtimeGraph(`${viz}${file}.ts`)).filter(pretrain), [], `${file}.ts`);
  }
  // The check can fail: the notebooks' entry does load training (through notebook_runs.ts).
  const entry = await runtimeGraph(`${viz}notebook.ts`);
  assert(entry.some(pretrain), "notebook.ts loads pretrain.ts");
});

Deno.test("notebook.ts: every name the notebooks use is exported", async () => {
  const used = new Set<string>();
  for (const info of NOTEBOOKS) {
    const raw = await Deno.readTextFile(`${NOTEBOOK_DIR}${info.name}.ipynb`);
    for (const m of raw.matchAll(/\bnb\.([A-Za-z_]\w*)/g)) used.add(m[1]);
  }
  assert(used.size > 20, `found only ${used.size} names`);
  const exported = nb as Record<string, unknown>;
  assertEquals([...used].filter((n) => exported[n] === undefined), []);
});

Deno.test("budget: default cpu, case-insensitive, unknown values rejected with the choices", () => {
  assertEquals(budget(undefined), "cpu");
  assertEquals(budget(""), "cpu");
  assertEquals(budget("SMOKE"), "smoke");
  assertEquals(budget(" gpu "), "gpu");
  const e = assertThrows(() => budget("fast"), Error);
  assertStringIncludes(e.message, "VITSSL_BUDGET");
  assertStringIncludes(e.message, "smoke, cpu, gpu");
  assertEquals(byBudget({ smoke: 1, cpu: 2, gpu: 3 }, "gpu"), 3);
  assertEquals(byBudget({ smoke: 1, cpu: 2, gpu: 3 }, "smoke"), 1);
});

Deno.test("imageGrid: one batch per row, nearest upscaling, padding in the background", () => {
  // Row 0: two gray 1x1 images (10, 20); row 1: one RGB 2x1 image (h 2, w 1).
  const grid = imageGrid([
    { pixels: new Uint8Array([10, 20]), n: 2, height: 1, width: 1, channels: 1 },
    { pixels: new Uint8Array([1, 2, 3, 4, 5, 6]), n: 1, height: 2, width: 1, channels: 3 },
  ], { scale: 2, pad: 1, background: 255 });
  // Cells are 2x... max height 2 * 2 = 4, max width 1 * 2 = 2; 2 columns, 2 rows.
  assertEquals(grid.width, 2 * 2 + 3 * 1);
  assertEquals(grid.height, 2 * 4 + 3 * 1);
  const px = (
    x: number,
    y: number,
  ) => [...grid.data.subarray((y * grid.width + x) * 3, (y * grid.width + x) * 3 + 3)];
  assertEquals(px(0, 0), [255, 255, 255]); // padding
  assertEquals(px(1, 1), [10, 10, 10]); // image 0, gray to RGB
  assertEquals(px(2, 2), [10, 10, 10]); // upscaled x2
  assertEquals(px(3, 1), [255, 255, 255]); // padding between columns
  assertEquals(px(4, 1), [20, 20, 20]); // image 1
  assertEquals(px(1, 3), [255, 255, 255]); // below a 1-pixel-high image: empty cell
  assertEquals(px(1, 6), [1, 2, 3]); // row 1 starts at y = 1 + 4 + 1 = 6: first pixel
  assertEquals(px(2, 8), [4, 5, 6]); // second pixel row after x2 scaling
  assertThrows(
    () => imageGrid([{ pixels: new Uint8Array(3), n: 1, height: 2, width: 2, channels: 1 }]),
    Error,
    "needs 4 bytes, got 3",
  );
});

Deno.test("encodePng: decodes back to the same pixels and size", () => {
  const img = { width: 3, height: 2, data: Uint8Array.from({ length: 18 }, (_, i) => i * 13) };
  const png = PNG.sync.read(Buffer.from(encodePng(img)));
  assertEquals([png.width, png.height], [3, 2]);
  for (let i = 0; i < 6; i++) {
    assertEquals([...png.data.subarray(4 * i, 4 * i + 4)], [
      img.data[3 * i],
      img.data[3 * i + 1],
      img.data[3 * i + 2],
      255,
    ]);
  }
});

Deno.test("tableHtml: caption, headers, rounded numbers, escaping, row limit", () => {
  const t = aq.from([
    { model: "<b>", acc: 12.34567 },
    { model: "b", acc: 2 },
    { model: "c", acc: 3 },
  ]);
  const html = tableHtml(t, { caption: "a & b", digits: 2, limit: 2 });
  assertStringIncludes(html, "<b>a &amp; b</b>");
  assertStringIncludes(html, ">model</th>");
  assertStringIncludes(html, ">12.35</td>");
  assertStringIncludes(html, "&lt;b&gt;");
  assert(!html.includes(">c</td>"), "the third row is past the limit");
  assertStringIncludes(html, "2 of 3 rows shown");
  assertStringIncludes(tableHtml([{ x: 1 }]), ">x</th>");
});

Deno.test("vitParams: equals the parameters of the built model, and the paper's sizes", () => {
  for (
    const cfg of [
      { name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1 },
      { name: "vit_micro", imageSize: 28, patchSize: 4, channels: 1, posEmb: "learned" as const },
      { name: "vit_nano", posEmb: "none" as const, pool: "mean" as const },
    ]
  ) {
    const model = createViT(cfg, 0);
    assertEquals(
      vitParams(model.config),
      countParams(model.params, { includeFrozen: true }),
      cfg.name,
    );
    disposeViT(model);
  }
  // The paper's Table 1: ViT-S 22M, ViT-B 86M, ViT-L 304M, ViT-H 632M (rounded).
  for (const [name, paper] of [["vit_small", 22], ["vit_base", 86], ["vit_large", 304]] as const) {
    assertAlmostEquals(vitParams(vitConfig({ name })) / 1e6, paper, paper * 0.02);
  }
  assertAlmostEquals(vitParams(vitConfig({ name: "vit_huge" })) / 1e6, 632, 632 * 0.02);
});

Deno.test("cosineSimilarity and similarityMosaic: values and layout by hand", () => {
  const sim = cosineSimilarity(new Float32Array([1, 0, 0, 2, 3, 3]), 3, 2);
  assertAlmostEquals(sim[0 * 3 + 1], 0, 1e-6);
  assertAlmostEquals(sim[0 * 3 + 2], Math.SQRT1_2, 1e-6);
  assertAlmostEquals(sim[1 * 3 + 1], 1, 1e-6);
  // grid 2: N = 4, values i * 4 + j; mosaic side 2 * 2 + 1 gap = 5.
  const m = similarityMosaic(Float32Array.from({ length: 16 }, (_, k) => k), 2, 1);
  assertEquals(m.size, 5);
  const at = (r: number, c: number) => m.values[r * 5 + c];
  assertEquals(at(0, 0), 0); // patch (0,0) to patch (0,0)
  assertEquals(at(0, 1), 1); // patch (0,0) to patch (0,1)
  assertEquals(at(1, 0), 2); // patch (0,0) to patch (1,0)
  assertEquals(at(0, 3), 4 + 0); // block (0,1) = patch 1: to patch 0
  assertEquals(at(4, 4), 15); // block (1,1) = patch 3, to patch 3
  assert(Number.isNaN(at(2, 2)), "gap cells are NaN");
});

Deno.test("colormap and attentionOverlay: viridis stops and the blend", () => {
  const c = colormap([0, 0.5, 1, 2]);
  assertEquals([...c.subarray(0, 3)], [68, 1, 84]);
  assertEquals([...c.subarray(3, 6)], [33, 145, 140]);
  assertEquals([...c.subarray(6, 9)], [253, 231, 37]);
  assertEquals([...c.subarray(9, 12)], [253, 231, 37]); // clamped
  // One 2x2 gray image of 100, a 2x2 map [0, 1, 1, 1] on the range [0, 1], alpha 0.5:
  // pixel (0,0) gets viridis(0), the others viridis(1).
  const out = attentionOverlay(
    { pixels: new Uint8Array([100, 100, 100, 100]), n: 1, height: 2, width: 2, channels: 1 },
    new Float32Array([0, 1, 1, 1]),
    2,
    { alpha: 0.5, range: [0, 1] },
  );
  assertEquals(out.channels, 3);
  assertEquals([...out.pixels.subarray(0, 3)], [84, 51, 92]); // round(50 + [34, 0.5, 42])
  assertEquals([...out.pixels.subarray(3, 6)], [177, 166, 69]); // round(50 + [126.5, 115.5, 18.5])
});

Deno.test("classTokenAttention: the class row of the block's attention, averaged over heads", () => {
  const model = createViT({ name: "vit_nano", imageSize: 8, patchSize: 4, channels: 1 }, 3);
  const x = tf.randomNormal([2, 8, 8, 1], 0, 1, "float32", 1) as tf.Tensor4D;
  const n0 = tf.memory().numTensors;
  const maps = classTokenAttention(model, x, 0);
  assertEquals(tf.memory().numTensors, n0);
  assertEquals(maps.length, 2 * 4);
  // Independently: block 0's probabilities [B, heads, T, T], row 0 (class token), columns 1..4.
  const probs = tf.tidy(() => vitForward(model, x, { returnAttention: true }).attention![0]);
  const p = probs.arraySync() as number[][][][];
  probs.dispose();
  for (let b = 0; b < 2; b++) {
    for (let j = 0; j < 4; j++) {
      const mean = p[b].reduce((s, head) => s + head[0][j + 1], 0) / p[b].length;
      assertAlmostEquals(maps[b * 4 + j], mean, 1e-6);
    }
  }
  assertThrows(() => classTokenAttention(model, x, 5), Error, "outside 0..1");
  // Entropy: uniform over 4 patches = 2 bits; one-hot = 0; mean of the two = 1 (unnormalised
  // maps are normalised first).
  assertAlmostEquals(attentionEntropy(new Float32Array([1, 1, 1, 1, 0, 3, 0, 0]), 2), 1, 1e-9);
  x.dispose();
  disposeViT(model);
});

Deno.test("lineSpec, heatmapSpec and sparkline: the plotly structure", () => {
  const spec = lineSpec([
    { name: "a", x: [0, 1], y: [1, 2] },
    { name: "b", x: [0, 1], y: [3, 4], y2: true, dash: "dash" },
  ], { title: "t", xInteger: true });
  assertEquals(spec.data.length, 2);
  assertEquals(spec.data[1].yaxis, "y2");
  assertEquals(spec.data[1].line, { dash: "dash" });
  assert(spec.layout?.yaxis2, "a second y axis when a series asks for it");
  assertEquals((spec.layout?.xaxis as { dtick: number }).dtick, 1);
  const h = heatmapSpec([1, 2, 3, 4, 5, 6], 2, 3);
  assertEquals(h.data[0].z, [[1, 2, 3], [4, 5, 6]]);
  assertEquals(sparkline([1]), "");
  const svg = sparkline([0, 1, 0.5], 10, 10);
  // Three points: x from 1 to 9, y from 9 (lowest) to 1 (highest).
  assertStringIncludes(svg, 'points="1.0,9.0 5.0,1.0 9.0,5.0"');
});

Deno.test("plotBundle: plotly JSON plus a PNG from Chromium, or an HTML fallback", async () => {
  const spec = { data: [{ type: "scatter", y: [1, 3, 2] }], layout: { title: { text: "t" } } };
  const noPng = await plotBundle(spec, { png: false, width: 300, height: 200 });
  const fig = noPng["application/vnd.plotly.v1+json"] as { layout: Record<string, unknown> };
  assertEquals([fig.layout.width, fig.layout.height], [300, 200]);
  assertStringIncludes(String(noPng["text/html"]), "Plotly.newPlot");
  assertEquals(noPng["image/png"], undefined);
  // No Chromium: plotPng says so (and throws only when required), plotBundle falls back to HTML.
  const none = "/nonexistent/chromium";
  assertEquals(await plotPng(spec, { chromium: none }), null);
  await assertRejects(
    () => plotPng(spec, { chromium: none, required: true }),
    Error,
    "no Chromium",
  );
  if (!findChromium()) {
    console.log("plotBundle: no Chromium here; the PNG path is untested");
    return;
  }
  const bytes = await plotPng(spec, { width: 320, height: 240, required: true });
  const png = PNG.sync.read(Buffer.from(bytes!));
  assertEquals([png.width, png.height], [320, 240]);
  // Not blank: the trace (plotly's default blue) is drawn somewhere.
  let colored = 0;
  for (let i = 0; i < png.data.length; i += 4) {
    if (png.data[i + 2] > png.data[i] + 60) colored++;
  }
  assert(colored > 20, `expected the blue trace in the PNG, found ${colored} bluish pixels`);
});

Deno.test("readRun and runFinished: log.csv and knn.csv parsed, one kNN row per step", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/log.csv`, "step,loss\n0,4.5\n1,4.25\n");
    await Deno.writeTextFile(
      `${dir}/knn.csv`,
      "step,top1\n2,30\n2,31\n1,20\n",
    );
    const { log, knn } = await readRun(dir);
    assertEquals(log.map((r) => r.loss), [4.5, 4.25]);
    assertEquals(knn.map((r) => [r.step, r.top1]), [[1, 20], [2, 31]]);
    assertEquals((await readRun(`${dir}/missing`)).log, []);
    // Finished when log.csv has a row per planned step: min(maxSteps, totalSteps) = 3 here.
    assertEquals(await runFinished(dir), false); // no config.json
    const planned = { config: { maxSteps: 3 }, resolved: { totalSteps: 10 } };
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(planned));
    assertEquals(await runFinished(dir), false); // 2 of 3 steps
    await Deno.writeTextFile(`${dir}/log.csv`, "step,loss\n0,4.5\n1,4.25\n2,4\n");
    assertEquals(await runFinished(dir), true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// notebooks/*.ipynb as committed

interface Cell {
  cell_type: string;
  source: string[] | string;
  outputs?: { output_type: string; data?: Record<string, unknown> }[];
  execution_count?: number | null;
}
interface Notebook {
  cells: Cell[];
  metadata: { kernelspec?: { name: string }; vitssl?: { budget?: string } };
}

async function readNotebook(path: string): Promise<Notebook> {
  return JSON.parse(await Deno.readTextFile(path));
}

const text = (c: Cell) => (Array.isArray(c.source) ? c.source.join("") : c.source);

Deno.test("notebooks: NOTEBOOKS lists exactly the files; listNotebooks filters by prefix", async () => {
  const files = (await listNotebooks()).map((p) => p.split("/").pop()!.replace(".ipynb", ""));
  assertEquals(files, NOTEBOOKS.map((n) => n.name));
  const some = await listNotebooks(["02", "05_pos"]);
  assertEquals(some.map((p) => p.split("/").pop()), [
    "02_pretrain.ipynb",
    "05_positional_embedding.ipynb",
  ]);
  await assertRejects(() => listNotebooks(["42"]), Error, "matches no notebook");
});

Deno.test("notebooks: Deno kernel, a markdown intro, lib/ imports, outputs as committed", async () => {
  for (const info of NOTEBOOKS) {
    const nb = await readNotebook(`${NOTEBOOK_DIR}${info.name}.ipynb`);
    assertEquals(nb.metadata.kernelspec?.name, "deno", info.name);
    assertEquals(nb.cells[0].cell_type, "markdown", `${info.name}: starts with its intro`);
    assertMatch(text(nb.cells[0]), /^# \d\d · /, info.name);
    const code = nb.cells.filter((c) => c.cell_type === "code");
    assertStringIncludes(text(code[0]), `from "../lib/`, `${info.name}: imports lib/ relatively`);
    const outputs = code.flatMap((c) => c.outputs ?? []);
    if (!info.committedExecuted) {
      assertEquals(outputs.length, 0, `${info.name} is committed with its outputs cleared`);
      assert(code.every((c) => c.execution_count == null), `${info.name}: execution counts`);
      assertEquals(nb.metadata.vitssl, undefined, `${info.name}: no budget without outputs`);
    } else {
      // The budget its committed outputs were made at, which `deno task notebooks` protects.
      assertEquals(nb.metadata.vitssl?.budget, "cpu", `${info.name}: the outputs' budget`);
    }
    assertEquals(outputs.filter((o) => o.output_type === "error").length, 0, info.name);
  }
});

Deno.test("deno task notebooks refuses to replace outputs made at another budget (a temp copy)", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-nb-guard-" });
  try {
    const name = "05_positional_embedding.ipynb";
    await Deno.copyFile(`${NOTEBOOK_DIR}${name}`, `${dir}/${name}`);
    const before = await Deno.readFile(`${dir}/${name}`);
    assertEquals(await notebookOutputs(`${dir}/${name}`), { outputs: 4, budget: "cpu" });
    assertEquals(await overwriteClashes([`${dir}/${name}`], "smoke"), [
      "05_positional_embedding (cpu)",
    ]);
    assertEquals(await overwriteClashes([`${dir}/${name}`], "cpu"), []);
    // In place at smoke: refused before anything runs (a UsageError: one line, exit 2).
    const e = await assertRejects(
      () => notebooksMain(["--budget", "smoke", "--dir", dir, "--only", "05"]),
      UsageError,
    );
    assertStringIncludes(e.message, "05_positional_embedding (cpu)");
    assertStringIncludes(e.message, "--overwrite");
    assert(!e.message.includes("\n"), "one line");
    assertEquals(await Deno.readFile(`${dir}/${name}`), before, "nothing written");
    // Outputs without a recorded budget are refused too; a notebook without outputs is not.
    const nb = JSON.parse(new TextDecoder().decode(before));
    delete nb.metadata.vitssl;
    await Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(nb));
    assertEquals(await overwriteClashes([`${dir}/${name}`], "cpu"), [
      "05_positional_embedding (unknown budget)",
    ]);
    for (const c of nb.cells) if (c.cell_type === "code") c.outputs = [];
    await Deno.writeTextFile(`${dir}/${name}`, JSON.stringify(nb));
    assertEquals(await overwriteClashes([`${dir}/${name}`], "smoke"), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Executing every notebook (smoke budget)

/** What each executed notebook must show, at least: plotly figures, PNG images, HTML tables. */
const EXPECT: Record<string, { plots?: number; images?: number; tables?: number }> = {
  "00_quickstart": { plots: 1, images: 1, tables: 1 },
  "01_vit_anatomy": { plots: 4, images: 2, tables: 1 },
  // 02: run config, final report, files; 03: protocols, every evaluation, final report.
  "02_pretrain": { plots: 2, tables: 3 },
  "03_evaluate": { plots: 1, tables: 3 },
  // stability: lr, verdicts, curves, gradients; patch-projection: gradients (no kNN monitor).
  "04_stability": { plots: 5, tables: 2 },
  "05_positional_embedding": { plots: 1, tables: 1 },
  "06_patch_size": { plots: 1, tables: 1 },
  "07_scaling": { plots: 1, tables: 1 },
  "08_frameworks": { plots: 1, tables: 1 },
  "09_attention": { plots: 2, images: 1 },
};

const status = await jupyterStatus();
const ci = Deno.env.get("CI") === "true";
if (!status.ok && !ci) {
  console.log(`notebooks: not executed: ${status.message}`);
}

const tmp = status.ok ? await Deno.makeTempDir({ prefix: "vitssl-notebooks-" }) : "";
// Teardown, not a test: the temp dir goes when the test process ends (also after --filter).
if (tmp) {
  globalThis.addEventListener("unload", () => {
    try {
      Deno.removeSync(tmp, { recursive: true });
    } catch { /* already gone */ }
  });
}
let totalSeconds = 0;
const executed = new Set<string>();

/** What the output of each show function holds. */
const SHOWN: Record<string, (d: Record<string, unknown>) => boolean> = {
  showMarkdown: (d) => "text/markdown" in d,
  showPlot: (d) => "application/vnd.plotly.v1+json" in d,
  showTable: (d) => String(d["text/html"] ?? "").includes("<table"),
  showImages: (d) => "image/png" in d && !("application/vnd.plotly.v1+json" in d),
  showFinalReport: (d) => "text/markdown" in d, // its sentence (or its one line) comes last
};

/**
 * The show function whose output ends a cell: the last line of the cell's code that calls one,
 * when that line is a statement of its own at the top level (`await nb.showX(`); undefined
 * when the last call is inside a block or a condition (its output may not come last).
 */
function lastShow(source: string): string | undefined {
  const lines = source.split("\n").filter((l) => /\bnb\.show\w+\(/.test(l));
  const m = lines.at(-1)?.match(/^await nb\.(show\w+)\(/);
  return m && m[1] in SHOWN ? m[1] : undefined;
}

if (!status.ok && ci) {
  Deno.test("notebooks: Jupyter with the Deno kernel is installed (CI=true)", () => {
    throw new Error(`CI=true but ${status.message}. ${INSTALL_HINT}`);
  });
}

for (const info of NOTEBOOKS) {
  Deno.test({
    name: `notebook ${info.name} executes at VITSSL_BUDGET=smoke with no cell error`,
    ignore: !status.ok,
    fn: async () => {
      const r = await executeNotebook(`${NOTEBOOK_DIR}${info.name}.ipynb`, {
        budget: "smoke",
        outDir: `${tmp}/out`,
        // No grace period after "idle" (nbconvert_config.py): the outputs must be complete
        // as plain nbclient reads them, as in any front end.
        env: { VITSSL_RUNS: `${tmp}/runs`, VITSSL_NB_GRACE: "0" },
        cellTimeout: 300,
      });
      totalSeconds += r.seconds;
      executed.add(info.name);
      assert(r.ok, `${info.name} failed after ${r.seconds.toFixed(1)} s:\n${r.error}`);
      const nb = await readNotebook(r.output);
      const code = nb.cells.filter((c) => c.cell_type === "code");
      assert(code.every((c) => typeof c.execution_count === "number"), "every cell ran");
      const data = code.flatMap((c) => c.outputs ?? []).map((o) => o.data ?? {});
      assertEquals(
        code.flatMap((c) => c.outputs ?? []).filter((o) => o.output_type === "error").length,
        0,
      );
      const count = (pred: (d: Record<string, unknown>) => boolean) => data.filter(pred).length;
      const plots = count((d) => "application/vnd.plotly.v1+json" in d);
      const images = count((d) => "image/png" in d && !("application/vnd.plotly.v1+json" in d));
      const tables = count((d) => String(d["text/html"] ?? "").includes("<table"));
      const want = EXPECT[info.name];
      assert(plots >= (want.plots ?? 0), `${info.name}: ${plots} plotly figures`);
      assert(images >= (want.images ?? 0), `${info.name}: ${images} images`);
      assert(tables >= (want.tables ?? 0), `${info.name}: ${tables} tables`);
      // Every figure has a static fallback (PNG, or HTML without Chromium).
      assertEquals(
        count((d) => "application/vnd.plotly.v1+json" in d && !d["image/png"] && !d["text/html"]),
        0,
      );
      // Each cell's last display is its last output (none lost after the cell's "idle").
      for (const [i, c] of code.entries()) {
        const show = lastShow(text(c));
        if (!show) continue;
        const last = c.outputs?.at(-1)?.data ?? {};
        assert(SHOWN[show](last), `${info.name}, code cell ${i}: its last output is not ${show}'s`);
      }
      // The budget of the outputs, recorded for `deno task notebooks`.
      assertEquals(nb.metadata.vitssl?.budget, "smoke");
    },
  });
}

Deno.test({
  name: "notebooks: all executed in under 10 minutes together",
  ignore: !status.ok,
  fn: () => {
    // The bound is on the whole set: with --filter fewer notebooks ran, and it is not checked.
    if (executed.size < NOTEBOOKS.length) {
      console.log(
        `notebooks: the 10-minute bound is not checked: ${executed.size} of ` +
          `${NOTEBOOKS.length} notebooks ran (filtered)`,
      );
      return;
    }
    console.log(`notebooks: ${totalSeconds.toFixed(1)} s in all (smoke)`);
    assert(totalSeconds < 600, `the notebooks took ${totalSeconds.toFixed(1)} s in all`);
  },
});
