/**
 * Tests of the `--crop-min` pretraining field: the flag reaches the augmentation (the crop boxes
 * of a generated batch stay above the area the flag asks for), it is range-checked, and a run
 * records it in its config.json.
 */
import { assert, assertEquals, assertStringIncludes, assertThrows } from "@std/assert";
import { sampleViewParams } from "../../lib/data/augment.ts";
import { parseFlags } from "../../lib/core/flags.ts";
import { FIELDS, type PretrainConfig } from "../../lib/train/config.ts";
import { createRng } from "../../lib/core/rng.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { pretrainAugmentConfig } from "../../lib/train/setup.ts";
import { ConfigError } from "../../lib/core/errors.ts";

const SIZE = 28;
const STATS = { mean: [0.5], std: [0.5] };

/** Crop areas (fractions of the image) of a batch's view-1 boxes, from the box corners. */
function cropAreas(cfg: PretrainConfig, batch: number, seed: number): number[] {
  const aug = pretrainAugmentConfig(cfg, { height: SIZE, channels: 1 }, STATS);
  const p = sampleViewParams(batch, SIZE, SIZE, 1, createRng(seed), aug);
  const areas: number[] = [];
  for (let i = 0; i < batch; i++) {
    const [y1, x1, y2, x2] = p.boxes.subarray(4 * i, 4 * i + 4);
    // A box spans (len - len / S) / (S - 1) = len / S of the axis in normalised coordinates;
    // the flip swaps x1 and x2, hence the abs.
    areas.push(Math.abs(y2 - y1) * Math.abs(x2 - x1));
  }
  return areas;
}

/**
 * Smallest box area a crop of at least `cropMin` of the image can show: the sampled side is
 * sqrt(target / aspect) >= sqrt(cropMin * S^2 * 3 / 4) pixels (aspect <= 4/3), minus 0.5 for the
 * rounding and 1 for the box clamped at the image edge (half a pixel at each end).
 */
function areaBound(cropMin: number): number {
  const side = Math.sqrt(cropMin * SIZE * SIZE * 3 / 4) - 1.5;
  return (side * side) / (SIZE * SIZE);
}

Deno.test("--crop-min reaches the crop boxes of a generated batch", () => {
  const { values } = parseFlags(["--crop-min", "0.4"], FIELDS);
  const cfg = resolveConfig({ ...values, preset: "fmnist" } as Partial<PretrainConfig>);
  assertEquals(cfg.cropMin, 0.4);
  const bound = areaBound(0.4); // about 0.24
  const areas = cropAreas(cfg, 2000, 1);
  const min = Math.min(...areas);
  assert(min >= bound, `smallest crop area ${min.toFixed(3)} < ${bound.toFixed(3)}`);
  assert(Math.max(...areas) <= 1 + 1e-6);
  // The paper's default (0.08) does make crops that small: the check above can fail.
  const paper = resolveConfig({ preset: "fmnist" });
  assertEquals(paper.cropMin, 0.08);
  const small = cropAreas(paper, 2000, 1).filter((a) => a < bound).length;
  assert(small > 200, `only ${small} of 2000 default crops below ${bound.toFixed(3)}`);
  // Median crop area: larger with the larger minimum.
  const median = (a: number[]) => a.slice().sort((x, y) => x - y)[a.length >> 1];
  assert(median(areas) > median(cropAreas(paper, 2000, 1)) + 0.1);
});

Deno.test("--crop-min is range-checked with the flag named", () => {
  for (const bad of [0, -0.1, 1.5]) {
    const e = assertThrows(() => resolveConfig({ preset: "fmnist", cropMin: bad }), ConfigError);
    assertStringIncludes(e.message, "--crop-min");
  }
  assertEquals(resolveConfig({ preset: "fmnist", cropMin: 1 }).cropMin, 1);
});

Deno.test("a run records cropMin in its config.json", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-cropmin-" });
  try {
    const cfg = resolveConfig({
      preset: "smoke",
      backend: "wasm",
      outDir: dir,
      cropMin: 0.5,
      maxSteps: 1,
      finalEval: "none",
    });
    await pretrain(cfg, { print: () => {} });
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/config.json`));
    assertEquals(saved.config.cropMin, 0.5);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
