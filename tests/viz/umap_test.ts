/**
 * Feature maps (lib/viz/umap.ts): UMAP embeddings are reproducible by seed, keep well-separated
 * clusters apart (kNN purity in 2-D computed here with a float64 loop), the figure spec draws
 * every point once in its class's colour and says how many points it shows, too few points give
 * one line, and `deno task eval --umap` writes the figure next to the checkpoint.
 */
import * as tf from "@tensorflow/tfjs-core";
import {
  assert,
  assertEquals,
  assertNotEquals,
  assertRejects,
  assertStringIncludes,
  assertThrows,
} from "@std/assert";
import { join } from "node:path";
import { initBackend } from "../../lib/backends/mod.ts";
import { ConfigError } from "../../lib/core/errors.ts";
import { createRng } from "../../lib/core/rng.ts";
import { syntheticDataset } from "../../lib/data/synthetic.ts";
import { createViT, disposeViT, vitConfig } from "../../lib/model/vit.ts";
import { saveBackbone } from "../../lib/train/checkpoint.ts";
import { main as evalMain } from "../../lib/cli/eval.ts";
import {
  checkUmapPoints,
  featureMaps,
  umapEmbedding,
  type UmapPanel,
  umapSpec,
} from "../../lib/viz/umap.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

await initBackend({ backend: "cpu" });

const dirs: string[] = [];
removeOnUnload(dirs);

/** `k` Gaussian blobs of `per` points each in `dim`-D: centres 12 apart on the axes, unit noise. */
function blobs(k: number, per: number, dim: number, seed: number) {
  const rng = createRng(seed);
  const features = new Float32Array(k * per * dim);
  const labels = new Int32Array(k * per);
  for (let i = 0; i < k * per; i++) {
    const c = i % k; // interleaved, so that order says nothing about the class
    labels[i] = c;
    for (let d = 0; d < dim; d++) {
      features[i * dim + d] = (d === c ? 12 : 0) + rng.normal();
    }
  }
  return { features, labels, dim };
}

/**
 * Mean fraction of each point's `k` nearest other points (Euclidean, in float64) that share its
 * label.
 */
function knnPurity(xy: Float32Array, labels: Int32Array, k: number): number {
  const n = labels.length;
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const d: [number, number][] = [];
    for (let j = 0; j < n; j++) {
      if (j === i) continue;
      d.push([Math.hypot(xy[2 * i] - xy[2 * j], xy[2 * i + 1] - xy[2 * j + 1]), j]);
    }
    d.sort((a, b) => a[0] - b[0]);
    let same = 0;
    for (let t = 0; t < k; t++) if (labels[d[t][1]] === labels[i]) same++;
    sum += same / k;
  }
  return sum / n;
}

const FAST = { nEpochs: 150 };

Deno.test("umapEmbedding: the same seed gives the same map, another seed another", () => {
  const set = blobs(3, 40, 16, 1);
  const a = umapEmbedding(set, { seed: 5, ...FAST });
  const b = umapEmbedding(set, { seed: 5, ...FAST });
  assertEquals(a.length, 2 * 120);
  assert(a.every(Number.isFinite));
  assertEquals(Array.from(a), Array.from(b));
  const c = umapEmbedding(set, { seed: 6, ...FAST });
  assertNotEquals(Array.from(a), Array.from(c));
});

Deno.test("umapEmbedding: well-separated blobs in 16-D stay separated in 2-D", () => {
  const set = blobs(3, 100, 16, 2);
  for (const metric of ["cosine", "euclidean"] as const) {
    const xy = umapEmbedding(set, { seed: 0, metric, ...FAST });
    const purity = knnPurity(xy, set.labels, 10);
    assert(purity > 0.98, `${metric}: kNN purity in 2-D ${purity}`);
    // The purity can fail: the same map with shuffled labels is near chance (1/3).
    const shuffled = Int32Array.from(set.labels);
    const rng = createRng(9);
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    assert(knnPurity(xy, shuffled, 10) < 0.5, `${metric}: shuffled labels`);
  }
});

Deno.test("umapEmbedding: no more points than neighbours is one line", () => {
  const e = assertThrows(
    () => umapEmbedding(blobs(3, 5, 16, 0), { nNeighbors: 15 }),
    ConfigError,
  );
  assertStringIncludes(e.message, "15 point(s), 15 neighbours");
  assertStringIncludes(e.message, "at least 16 points");
  assertEquals(e.message.split("\n").length, 1);
  checkUmapPoints(16, 15); // one more is enough
  assertThrows(() => checkUmapPoints(100, 1), ConfigError, ">= 2");
  assertThrows(() => umapEmbedding(blobs(3, 10, 4, 0), { nEpochs: 0 }), ConfigError, "epochs");
});

Deno.test("umapSpec: every point once, in its class's colour, the count in the title", () => {
  // Panel a: 3 of class 0, 2 of class 1, 1 of class 2; panel b: the same labels reversed.
  const labels = new Int32Array([0, 1, 0, 2, 1, 0]);
  const coords = Float32Array.from({ length: 12 }, (_, i) => i + 0.25);
  const panels: UmapPanel[] = [
    { name: "checkpoint", coords, labels },
    { name: "random init", coords, labels: labels.slice().reverse() },
  ];
  const spec = umapSpec(panels, { classes: ["tee", "shirt", "boot"], title: "UMAP of test" });
  assertEquals(spec.layout.title, { text: "UMAP of test: 6 points per map" });
  const notes = (spec.layout.annotations as { text: string }[]).map((a) => a.text);
  assertEquals(notes, ["checkpoint (6 points)", "random init (6 points)"]);
  type T = {
    name: string;
    x: number[];
    y: number[];
    xaxis: string;
    showlegend: boolean;
    marker: { color: string };
  };
  const traces = spec.data as unknown as T[];
  assertEquals(traces.length, 6);
  const colour = { tee: "#1f77b4", shirt: "#ff7f0e", boot: "#2ca02c" } as Record<string, string>;
  for (const t of traces) assertEquals(t.marker.color, colour[t.name], t.name);
  // Panel a's class 0 holds rows 0, 2, 5: x = 2i + 0.25, y = 2i + 1.25.
  const tee = traces.find((t) => t.name === "tee" && t.xaxis === "x")!;
  assertEquals(tee.x, [0.25, 4.25, 10.25]);
  assertEquals(tee.y, [1.25, 5.25, 11.25]);
  // Panel b's class 2 is row 5 - 3 = 2 reversed: row 2.
  const boot = traces.find((t) => t.name === "boot" && t.xaxis === "x2")!;
  assertEquals([boot.x, boot.y], [[4.25], [5.25]]);
  for (const axis of ["x", "x2"]) {
    const n = traces.filter((t) => t.xaxis === axis).reduce((s, t) => s + t.x.length, 0);
    assertEquals(n, 6, axis);
  }
  // One legend entry per class.
  assertEquals(traces.filter((t) => t.showlegend).map((t) => t.name).sort(), [
    "boot",
    "shirt",
    "tee",
  ]);
  // Unequal panels say both counts; over ten classes, hues.
  const two = umapSpec([panels[0], {
    ...panels[1],
    coords: coords.slice(0, 4),
    labels: labels.slice(0, 2),
  }]);
  assertEquals(two.layout.title, { text: "UMAP of backbone features: 6 / 2 points" });
  const many = umapSpec([{
    name: "a",
    coords: new Float32Array([0, 0]),
    labels: new Int32Array([11]),
  }]);
  assertEquals(
    (many.data[0] as unknown as T).marker.color,
    `hsl(${Math.round(360 * 11 / 12)}, 65%, 45%)`,
  );
  assertThrows(() => umapSpec([{ name: "bad", coords, labels: labels.slice(0, 5) }]), RangeError);
});

Deno.test("featureMaps: one stratified sample for every model, no tensor left", async () => {
  const ds = syntheticDataset({ n: 90, seed: 3, numClasses: 3, split: "test" });
  const cfg = vitConfig({ name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1 });
  const a = createViT(cfg, 1), b = createViT(cfg, 2);
  const before = tf.memory().numTensors;
  try {
    const panels = await featureMaps(
      [{ name: "a", model: a }, { name: "b", model: b }],
      ds,
      { points: 30, nNeighbors: 5, nEpochs: 50 },
    );
    assertEquals(tf.memory().numTensors, before);
    assertEquals(panels.map((p) => p.name), ["a", "b"]);
    assertEquals(Array.from(panels[0].labels), Array.from(panels[1].labels));
    // 90 images, labels cycling 0..2: 10 of each class.
    const counts = [0, 0, 0];
    for (const l of panels[0].labels) counts[l]++;
    assertEquals(counts, [10, 10, 10]);
    assertEquals(panels[0].coords.length, 60);
    assertNotEquals(Array.from(panels[0].coords), Array.from(panels[1].coords));
    await assertRejects(
      () => featureMaps([{ name: "a", model: a }], ds, { points: 5, nNeighbors: 5 }),
      ConfigError,
      "5 point(s), 5 neighbours",
    );
  } finally {
    disposeViT(a);
    disposeViT(b);
  }
});

// ---------------------------------------------------------------------------------------------
// deno task eval --umap

/** A saved random vit_nano for 28x28 gray images, in a fresh directory. */
async function checkpoint(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "vitssl_umap_" });
  dirs.push(dir);
  const model = createViT(
    vitConfig({ name: "vit_nano", imageSize: 28, patchSize: 7, channels: 1 }),
    4,
  );
  const path = join(dir, "backbone.safetensors");
  await saveBackbone(path, model);
  disposeViT(model);
  return path;
}

/** Runs `deno task eval` in process; returns its printed lines. */
async function evalLines(args: string[]): Promise<string[]> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...a: unknown[]) => lines.push(a.join(" "));
  try {
    assertEquals(await evalMain(args), 0);
  } finally {
    console.log = log;
  }
  return lines;
}

Deno.test("deno task eval --umap writes the figure next to the checkpoint and prints its path", async () => {
  const path = await checkpoint();
  const dir = path.slice(0, path.lastIndexOf("/"));
  const results = join(dir, "eval.csv");
  const chromium = Deno.env.get("VITSSL_CHROMIUM");
  Deno.env.set("VITSSL_CHROMIUM", join(dir, "no-chromium")); // the one-line PNG warning
  try {
    const lines = await evalLines([
      "--checkpoint",
      path,
      "--dataset",
      "synthetic",
      "--umap",
      "--umap-points",
      "120",
      "--backend",
      "cpu",
      "--results",
      results,
    ]);
    const html = join(dir, "umap-backbone-synthetic.html");
    assert(lines.some((l) => l.includes("120 points each") && l.endsWith(html)), lines.join("\n"));
    assert(lines.some((l) => l.startsWith("UMAP maps: no Chromium")), lines.join("\n"));
    const page = await Deno.readTextFile(html);
    assertStringIncludes(page, "UMAP of synthetic test features: 120 points per map");
    assertStringIncludes(page, "random init (120 points)");
    assertEquals(await Deno.stat(join(dir, "umap-backbone-synthetic.png")).catch(() => null), null);
    // --umap alone runs no protocol: nothing appended.
    assertEquals(await Deno.stat(results).catch(() => null), null);
  } finally {
    if (chromium === undefined) Deno.env.delete("VITSSL_CHROMIUM");
    else Deno.env.set("VITSSL_CHROMIUM", chromium);
  }
});

Deno.test("deno task eval --umap: fewer points than neighbours, or no checkpoint, is one line", async () => {
  const path = await checkpoint();
  const log = console.log;
  console.log = () => {};
  try {
    const e = await assertRejects(
      () =>
        evalMain(["--checkpoint", path, "--dataset", "synthetic", "--umap", "--umap-points", "10"]),
      ConfigError,
    );
    assertEquals(
      e.message,
      "UMAP needs more points than neighbours: 10 point(s), 15 neighbours; map at least 16 " +
        "points (--umap-points, or a larger test split)",
    );
    await assertRejects(
      () => evalMain(["--baselines", "--umap"]),
      Error,
      "--umap needs --checkpoint",
    );
    await assertRejects(
      () => evalMain(["--checkpoint", path, "--umap-points", "100"]),
      Error,
      "--umap-points needs --umap",
    );
  } finally {
    console.log = log;
  }
  // Refused before any work: no figure.
  const dir = path.slice(0, path.lastIndexOf("/"));
  assertEquals(await Deno.stat(join(dir, "umap-backbone-synthetic.html")).catch(() => null), null);
});
