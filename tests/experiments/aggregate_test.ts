/**
 * Per-configuration aggregates over seeds (lib/experiments/aggregate.ts) against values computed
 * by hand: means, 95% t half-widths (t(0.975, 2) = 4.302653 from the printed table), sample SDs,
 * sums of dips, and the pilot's climb above random init paired by seed.
 */
import * as aq from "arquero";
import { assertAlmostEquals, assertEquals } from "@std/assert";
import {
  configId,
  configTable,
  firstSeedRuns,
  groupByConfig,
  pilotTable,
  sampleSd,
  stabilityTable,
} from "../../lib/experiments/aggregate.ts";

const T2 = 4.302653;

Deno.test("groupByConfig and firstSeedRuns: configurations by field values, random init apart", () => {
  const rows = [
    { run_id: "s_b-2_seed-1", b: 2, seed: 1, random_init: false },
    { run_id: "s_b-1_seed-2", b: 1, seed: 2, random_init: "false" },
    { run_id: "s_b-2_seed-0", b: 2, seed: 0, random_init: false },
    { run_id: "s_b-1_seed-0", b: 1, seed: 0, random_init: false },
    { run_id: "s_random-init_seed-0", seed: 0, random_init: "true" },
  ];
  const groups = groupByConfig(aq.from(rows), ["b"]);
  assertEquals(groups.map((g) => g.config), [{ b: 2 }, { b: 1 }]);
  assertEquals(groups[0].runs.map((r) => r.seed), [0, 1]); // sorted by seed
  assertEquals(configId("posemb_cpu_posEmb-none_seed-12"), "posemb_cpu_posEmb-none");
  assertEquals(firstSeedRuns(rows).map((r) => r.run_id), ["s_b-2_seed-0", "s_b-1_seed-0"]);
});

Deno.test("configTable and stabilityTable: means, half-widths, diverged and dips by hand", () => {
  const rows = [70, 73, 76].map((linear_top1, seed) => ({
    run_id: `st_lr-1_seed-${seed}`,
    lr: 1,
    seed,
    random_init: false,
    diverged: seed === 2,
    linear_top1,
    knn_top1: 60 + seed,
    dips: seed,
    max_dip: [0, 1.5, 4][seed],
    dips_after_spike: seed === 2 ? 1 : 0,
    grad_spikes: 1,
    knn_noise: [0.2, 0.4, NaN][seed],
    params: 1000,
    flops: 3e6,
  }));
  // linear [70, 73, 76]: mean 73, s 3, half-width 4.302653 * 3 / sqrt(3) = 7.45.
  const [c] = configTable(rows, ["lr"]);
  assertEquals([c.lr, c.seeds, c["linear top-1"], c["kNN-20 top-1"]], [1, 3, 73, 61]);
  assertAlmostEquals(Number(c["linear ±95%"]), T2 * 3 / Math.sqrt(3), 0.005);
  assertAlmostEquals(Number(c["kNN ±95%"]), T2 / Math.sqrt(3), 0.005);
  assertEquals([c.diverged, c.dips, c.params, c.MFLOPs], [1, 3, 1000, 3]);
  const [s] = stabilityTable(rows, ["lr"]);
  assertEquals(s["deepest dip"], 4);
  assertEquals([s["dips after spike"], s["grad spikes"]], [1, 3]);
  assertAlmostEquals(Number(s["monitor noise"]), 0.3, 1e-9); // NaN left out of the mean
  // A suite without a kNN monitor (empty knn_noise cells, read as null): dips not counted, not 0.
  const unmonitored = rows.map((r) => ({ ...r, dips: 0, max_dip: 0, knn_noise: null }));
  assertEquals(configTable(unmonitored, ["lr"])[0].dips, null);
  const [u] = stabilityTable(unmonitored, ["lr"]);
  assertEquals([u.dips, u["deepest dip"], u["dips after spike"], u["monitor noise"]], [
    null,
    null,
    null,
    null,
  ]);
  assertEquals(u["grad spikes"], 3, "gradient spikes need no monitor");
  // One seed: a mean without an interval.
  const [one] = configTable(rows.slice(0, 1), ["lr"]);
  assertEquals([one["linear top-1"], one["linear ±95%"]], [70, null]);
  assertEquals(sampleSd([1, 2, 3]), 1);
});

Deno.test("pilotTable: the random init first, then each length with its climb paired by seed", () => {
  const rows = [
    ...[40, 42, 44].map((l, seed) => ({ seed, random_init: true, linear_top1: l, knn_top1: 30 })),
    ...[50, 53, 50].map((l, seed) => ({
      epochs: 1,
      seed,
      random_init: false,
      linear_top1: l,
      knn_top1: 35 + seed,
    })),
    // Only seed 0 of 2 epochs: no pair to build an interval on; the difference of the means.
    { epochs: 2, seed: 0, random_init: false, linear_top1: 60, knn_top1: 40 },
  ];
  const t = pilotTable(rows);
  assertEquals(t.map((r) => r.epochs), ["random init", 1, 2]);
  assertEquals([t[0]["linear top-1"], t[0]["linear seed SD"], t[0]["climb (linear)"]], [
    42,
    2,
    null,
  ]);
  // 1 epoch: climbs [10, 11, 6], mean 9, s sqrt(7); kNN climbs [5, 6, 7], mean 6.
  assertEquals([t[1]["linear top-1"], t[1]["climb (linear)"], t[1]["climb (kNN)"]], [51, 9, 6]);
  assertAlmostEquals(Number(t[1]["climb ±95%"]), T2 * Math.sqrt(7 / 3), 0.005);
  assertAlmostEquals(Number(t[1]["linear seed SD"]), Math.sqrt(3), 0.005);
  assertEquals([t[2]["climb (linear)"], t[2]["climb ±95%"]], [18, null]);
});
