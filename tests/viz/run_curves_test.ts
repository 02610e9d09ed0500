/**
 * Notebook 02's figures of a run: round ticks aligned on two axes (by hand), the final kNN on
 * the full splits drawn apart from the monitor's line, a run directory read back with its
 * `final.json`, and the schedules figure.
 */
import { assert, assertEquals } from "@std/assert";
import { alignedTicks, trainingCurvesSpec } from "../../lib/viz/charts.ts";
import { runCurveSpecs } from "../../lib/viz/run_curves.ts";
import { readRun, splitKnn } from "../../lib/viz/runs.ts";

Deno.test("alignedTicks: steps of 1, 2, 2.5, 5 x 10^k, ranges on multiples, as many intervals each", () => {
  // Span 2.3 / 5 = 0.46 -> 0.5: 2 .. 4.5 (5 intervals); span 37 / 5 = 7.4 -> 10: 30 .. 80 (5).
  assertEquals(alignedTicks([{ values: [2.1, 4.4] }, { values: [35, 72], max: 100 }]), [
    { range: [2, 4.5], dtick: 0.5 },
    { range: [30, 80], dtick: 10 },
  ]);
  // 0 .. 1 by 0.2 is 5 intervals; 0 .. 7: 1.4 -> 2, 0 .. 8 is 4, grown at the top to 5: 0 .. 10.
  assertEquals(alignedTicks([{ values: [0, 1] }, { values: [0, 7] }]), [
    { range: [0, 1], dtick: 0.2 },
    { range: [0, 10], dtick: 2 },
  ]);
  // A percent axis at its ceiling grows at the bottom: 88 .. 99.5 -> 2.3 -> 2.5, 87.5 .. 100 is
  // 5 intervals; against 0 .. 3.1 (0.62 -> 1: 0 .. 4, 4 intervals) the loss axis grows to 5.
  assertEquals(alignedTicks([{ values: [0, 3.1] }, { values: [88, 99.5], min: 0, max: 100 }]), [
    { range: [0, 5], dtick: 1 },
    { range: [87.5, 100], dtick: 2.5 },
  ]);
  // 96 .. 99 by 1 is 3 intervals (0.6 -> 1); against 5 (0 .. 9.5: 1.9 -> 2, 0 .. 10) it grows
  // up to 100, then down: 95 .. 100.
  assertEquals(
    alignedTicks([{ values: [0, 9.5] }, { values: [96, 99], min: 0, max: 100 }])[1],
    { range: [95, 100], dtick: 1 },
  );
  // One value: a span of 1 around it.
  assertEquals(alignedTicks([{ values: [3] }])[0], { range: [2.4, 3.6], dtick: 0.2 });
});

const log = [0, 1, 2, 3].map((step) => ({ step, loss: 4 - step * 0.5 }));
const monitor = [
  { step: 2, top1: 40, k: 20, train_size: 5000, test_size: 1000, probe_top1: 30 },
  { step: 4, top1: 50, k: 20, train_size: 5000, test_size: 1000, probe_top1: 35 },
];
const finalRow = { step: 6, top1: 61.5, k: 20, train_size: 60000, test_size: 10000 };

Deno.test("trainingCurvesSpec: the final kNN is one marked point apart from the monitor's line", () => {
  const spec = trainingCurvesSpec(log, [...monitor, finalRow], { final: finalRow });
  assertEquals(spec.data.map((d) => d.name), [
    "loss",
    "kNN-20 monitor (5,000 / 1,000 images) (%)",
    "online probe top-1 (%)",
    "final kNN-20 (60,000 / 10,000 images) (%)",
  ]);
  const [, mon, , fin] = spec.data;
  assertEquals([mon.x, mon.y], [[2, 4], [40, 50]]); // the final row is not on the line
  assertEquals([fin.x, fin.y, fin.mode, fin.yaxis], [[6], [61.5], "markers", "y2"]);
  // Round ticks, grid lines shared: loss 2.5 .. 4 (0.3 -> 0.5: 2.5 .. 4, 3 intervals); percent
  // 30 .. 61.5 (6.3 -> 10: 30 .. 70, 4 intervals); the loss axis grows to 4: 2.5 .. 4.5.
  const y = spec.layout!.yaxis as { range: number[]; dtick: number };
  const y2 = spec.layout!.yaxis2 as { range: number[]; dtick: number };
  assertEquals([y.range, y.dtick], [[2.5, 4.5], 0.5]);
  assertEquals([y2.range, y2.dtick], [[30, 70], 10]);
  // Without `final`, the names and series are as before (one kNN series, every row on it).
  const plain = trainingCurvesSpec(log, [...monitor, finalRow]);
  assertEquals(plain.data.map((d) => d.name), ["loss", "kNN top-1 (%)", "online probe top-1 (%)"]);
  assertEquals(plain.data[1].x, [2, 4, 6]);
});

Deno.test("readRun, splitKnn and runCurveSpecs: final.json read back, its row apart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-run-" });
  try {
    await Deno.writeTextFile(
      `${dir}/log.csv`,
      "step,epoch,loss,lr,momentum\n0,0,4,0.001,0.99\n1,0,3.5,0.002,0.995\n",
    );
    await Deno.writeTextFile(
      `${dir}/knn.csv`,
      "step,epoch,top1,top5,k,train_size,test_size\n1,0,40,90,20,5000,1000\n" +
        "2,0,55,95,20,60000,10000\n",
    );
    const before = await readRun(dir);
    assertEquals(before.final, undefined);
    assertEquals(splitKnn(before).final, undefined); // no final.json: every row is the monitor's
    assertEquals(splitKnn(before).monitor.length, 2);
    const report = {
      step: 2,
      rows: [{ model: "trained backbone", knn_top1: 55 }],
      k: 20,
      linearEpochs: 30,
      trainSize: 60000,
      testSize: 10000,
      seconds: 1,
    };
    await Deno.writeTextFile(`${dir}/final.json`, JSON.stringify(report));
    const run = await readRun(dir);
    assertEquals(run.final?.step, 2);
    const { monitor: mon, final } = splitKnn(run);
    assertEquals([mon.map((r) => r.step), final?.top1], [[1], 55]);
    const [curves, schedules] = runCurveSpecs(run, { dataset: "fmnist", chanceLoss: 3.9 });
    assertEquals(curves.data.map((d) => d.name), [
      "loss",
      "chance 4T ln B",
      "kNN-20 monitor (5,000 / 1,000 images) (%)",
      "final kNN-20 (60,000 / 10,000 images) (%)",
    ]);
    assertEquals(curves.data[1].y, [3.9, 3.9]);
    assert(String((curves.layout!.title as { text: string }).text).includes("on fmnist"));
    assertEquals(schedules.data.map((d) => [d.name, d.x, d.y]), [
      ["lr", [1, 2], [0.001, 0.002]],
      ["momentum m", [1, 2], [0.99, 0.995]],
    ]);
    assertEquals(schedules.layout!.height, 340);
    // An unreadable final.json counts as none.
    await Deno.writeTextFile(`${dir}/final.json`, "{");
    assertEquals((await readRun(dir)).final, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
