import { PNG } from "pngjs";
import { initBackend } from "./lib/backends/mod.ts";
import { loadDataset, stratifiedSubset } from "./lib/data/mod.ts";
import { extractFeatures, datasetStats } from "./lib/eval/features.ts";
import { loadBackbone } from "./lib/train/checkpoint.ts";
import { umapEmbedding, classColor } from "./lib/viz/umap.ts";
await initBackend({ backend: "auto" });
const test = await loadDataset({ name: "fmnist", split: "test" });
const m = await loadBackbone("/tmp/umapbench/run/backbone.safetensors");
let t = performance.now();
const s = stratifiedSubset(test, 5000, 0);
const f = await extractFeatures(m, s, datasetStats(test));
console.log(`features ${((performance.now() - t) / 1000).toFixed(1)} s`);
for (const nEpochs of [400, 200]) {
  t = performance.now();
  const xy = umapEmbedding(f, { nEpochs });
  console.log(`umap nEpochs ${nEpochs}: ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const W = 500, png = new PNG({ width: W, height: W });
  png.data.fill(255);
  let [x0, x1, y0, y1] = [Infinity, -Infinity, Infinity, -Infinity];
  for (let i = 0; i < 5000; i++) { x0 = Math.min(x0, xy[2*i]); x1 = Math.max(x1, xy[2*i]); y0 = Math.min(y0, xy[2*i+1]); y1 = Math.max(y1, xy[2*i+1]); }
  const hex = (c: string) => [1, 3, 5].map((k) => parseInt(c.slice(k, k + 2), 16));
  for (let i = 0; i < 5000; i++) {
    const px = Math.round(10 + (W - 20) * (xy[2*i] - x0) / (x1 - x0)), py = Math.round(10 + (W - 20) * (xy[2*i+1] - y0) / (y1 - y0));
    const [r, g, b] = hex(classColor(f.labels[i], 10));
    for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) { const o = 4 * ((py+dy) * W + px+dx); png.data[o] = r; png.data[o+1] = g; png.data[o+2] = b; }
  }
  Deno.writeFileSync(`/tmp/umapbench/map${nEpochs}.png`, PNG.sync.write(png));
}
