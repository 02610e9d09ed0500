/**
 * What the notebooks say about their numbers is computed from them: the final report's table
 * and sentence (02, 03), the protocols' table and sentences with the fine-tune column named for
 * what it is (03), the attention's distance from uniform and its share on the object (09), and
 * the frameworks beside the paper (08). Expected values and texts written by hand.
 */
import { assertAlmostEquals, assertEquals, assertThrows } from "@std/assert";
import { finalReportSentence, finalReportTable } from "../../lib/viz/final_report.ts";
import { finetuneLabel, protocolSentences, protocolTable } from "../../lib/viz/protocols.ts";
import { attentionSentences, objectAttention } from "../../lib/viz/inspect.ts";
import { frameworkComparison } from "../../lib/viz/figures/mod.ts";
import type { FinalRecord } from "../../lib/viz/runs.ts";

const report: FinalRecord = {
  step: 16,
  rows: [
    { model: "trained backbone", knn_top1: 80.5, linear_top1: 82 },
    { model: "random init", knn_top1: 75.25, linear_top1: 79.5 },
    { model: "raw pixels", knn_top1: 85.5, linear_top1: 81 },
  ],
  k: 20,
  linearEpochs: 30,
  trainSize: 60000,
  testSize: 10000,
  seconds: 3,
};

Deno.test("finalReportTable and finalReportSentence: differences to raw pixels, said from the numbers", () => {
  const t = finalReportTable(report);
  assertEquals(t.columnNames(), [
    "model",
    "kNN-20 top-1 (%)",
    "linear top-1 (%)",
    "kNN-20 - raw pixels",
    "linear - raw pixels",
  ]);
  const rows = t.objects() as Record<string, number>[];
  // 80.5 - 85.5 = -5; 82 - 81 = +1; 75.25 - 85.5 = -10.25; 79.5 - 81 = -1.5; raw: 0.
  assertEquals(rows.map((r) => [r["kNN-20 - raw pixels"], r["linear - raw pixels"]]), [
    [-5, 1],
    [-10.25, -1.5],
    [0, 0],
  ]);
  assertEquals(
    finalReportSentence(report),
    "The trained backbone, against raw pixels: kNN-20 -5.00 points (below), linear +1.00 " +
      "points (above); against its random initialisation: kNN-20 +5.25 points (above), linear " +
      "+2.50 points (above).",
  );
  // A kNN-only report has only the kNN columns.
  const knnOnly = {
    ...report,
    rows: report.rows.map(({ model, knn_top1 }) => ({ model, knn_top1 })),
  };
  assertEquals(finalReportTable(knnOnly).columnNames(), [
    "model",
    "kNN-20 top-1 (%)",
    "kNN-20 - raw pixels",
  ]);
});

Deno.test("protocolTable and protocolSentences: percent per protocol, the fine-tune named, differences", () => {
  assertEquals(
    finetuneLabel({ epochs: 1, images: 5000 }),
    "fine-tune (1 epoch, 5,000 images; short, not converged)",
  );
  assertEquals(
    finetuneLabel({ epochs: 5, images: 0, trainSize: 60000 }),
    "fine-tune (5 epochs, 60,000 images; short, not converged)",
  );
  assertEquals(finetuneLabel({ epochs: 100, images: 0 }), "fine-tune (100 epochs, all images)");
  const row = (run_id: string, protocol: string, top1: number) => ({ run_id, protocol, top1 });
  const rows = [
    row("pretrained", "knn-20", 0.8),
    row("pretrained", "knn-200", 0.78),
    row("pretrained", "linear", 0.825),
    row("pretrained", "finetune", 0.7),
    row("raw-pixels", "knn-20", 0.85),
    row("raw-pixels", "knn-200", 0.8),
    row("raw-pixels", "linear", 0.82),
    row("random-init:vit_nano", "knn-20", 0.75),
    row("random-init:vit_nano", "knn-200", 0.74),
    row("random-init:vit_nano", "linear", 0.8),
    row("random-init:vit_nano", "finetune", 0.72),
    row("random-init:vit_nano", "finetune", 0.6), // a second row: the best one is shown
  ];
  const t = protocolTable(rows, { finetune: { epochs: 1, images: 5000 } });
  const ft = "fine-tune (1 epoch, 5,000 images; short, not converged)";
  assertEquals(t.columnNames(), ["model", "kNN-20", "kNN-200", "linear", ft]);
  const objs = t.objects() as Record<string, number | null>[];
  assertEquals(objs.map((r) => r.model), ["pretrained", "raw-pixels", "random-init:vit_nano"]);
  assertAlmostEquals(objs[0]["linear"]!, 82.5, 1e-9);
  assertEquals(objs[1][ft], null); // raw pixels are not fine-tuned
  assertAlmostEquals(objs[2][ft]!, 72, 1e-9);
  // Pretrained - random: 5, 4, 2.5, -2 points; pretrained - raw: -5, -2, +0.5 (no fine-tune).
  assertEquals(
    protocolSentences(t),
    "The pretrained backbone, against its random initialisation: kNN-20 +5.00 points (above), " +
      "kNN-200 +4.00 points (above), linear +2.50 points (above), fine-tune -2.00 points " +
      "(below); against raw pixels: kNN-20 -5.00 points (below), kNN-200 -2.00 points " +
      "(below), linear +0.50 points (above).",
  );
});

Deno.test("objectAttention and attentionSentences: the share on the object against uniform, by hand", () => {
  // Two 4x4 gray images, 2x2 patches of 2x2 pixels. Image 0: the top-left patch white (255),
  // the rest black; image 1: the two left patches at 100, the right ones at 5 (under a tenth of
  // 100: background).
  const img0 = new Uint8Array(16), img1 = new Uint8Array(16);
  for (let y = 0; y < 4; y++) {
    for (let x = 0; x < 4; x++) {
      img0[y * 4 + x] = y < 2 && x < 2 ? 255 : 0;
      img1[y * 4 + x] = x < 2 ? 100 : 5;
    }
  }
  const batch = {
    pixels: new Uint8Array([...img0, ...img1]),
    n: 2,
    height: 4,
    width: 4,
    channels: 1,
  };
  // Maps (patches in order TL, TR, BL, BR), normalised inside: image 0 [0.4, 0.2, 0.2, 0.2]
  // (0.4 on the object, its top patch TL on it); image 1 [0.05, 0.15, 0.05, 0.25] of 0.5
  // ((0.05 + 0.05) / 0.5 = 0.2 on the object, its top patch BR off it).
  const maps = new Float32Array([0.4, 0.2, 0.2, 0.2, 0.05, 0.15, 0.05, 0.25]);
  const o = objectAttention(maps, batch, 2);
  assertAlmostEquals(o.onObject, (0.4 + 0.2) / 2, 1e-6);
  assertAlmostEquals(o.objectPatches, (1 / 4 + 2 / 4) / 2, 1e-12);
  assertEquals([o.topOnObject, o.images], [1, 2]);
  assertThrows(() => objectAttention(maps, batch, 3), Error, "2 maps of 3x3 patches");

  const random = { onObject: 0.375, objectPatches: 0.375, topOnObject: 0, images: 2 };
  // 16 patches: uniform = 4 bits; 3.7 is 0.30 bits (7.5%) below, 3.96 is 0.04 (1.0%) below.
  assertEquals(
    attentionSentences({
      entropy: { pretrained: 3.7, random: 3.96 },
      patches: 16,
      object: { pretrained: o, random },
    }),
    "In the last block the pretrained backbone's attention has 3.70 bits of entropy: 0.30 bits " +
      "(7.5%) below a uniform spread over 16 patches (4.00 bits); the random backbone's has " +
      "3.96 bits of entropy: 0.04 bits (1.0%) below. On these 2 images, 30% of the pretrained " +
      "backbone's attention falls on object patches (mean pixel above a tenth of the image's " +
      "brightest), which make up 38% of the patches (the random backbone: 38%); its " +
      "most-attended patch is on the object in 1 of 2 images (random: 0 of 2).",
  );
});

Deno.test("frameworkComparison: every framework of the paper, ours where it ran (learned projection)", () => {
  const rows = [0, 1, 2].flatMap((seed) => [
    { framework: "mocov3", freezePatchEmbed: false, seed, linear_top1: 80 + seed, knn_top1: 70 },
    { framework: "mocov3", freezePatchEmbed: true, seed, linear_top1: 10, knn_top1: 10 },
    { framework: "simclr", freezePatchEmbed: false, seed, linear_top1: 78, knn_top1: 69 },
  ]);
  const t = frameworkComparison(rows).objects() as Record<string, unknown>[];
  assertEquals(t.map((r) => r.framework), ["mocov3", "simclr", "byol", "swav"]);
  assertEquals(t.map((r) => r["paper ViT-S (%)"]), [72.5, 69.0, 71.0, 67.1]);
  assertEquals(t.map((r) => r["paper ViT-B (%)"]), [76.5, 73.9, 73.9, 71.6]);
  assertEquals(t[0]["linear top-1"], 81); // the learned rows' mean (80, 81, 82), not the frozen
  assertEquals([t[2]["linear top-1"], t[3]["linear top-1"]], [null, null]); // did not run
});
