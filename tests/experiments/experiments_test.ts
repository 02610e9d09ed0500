import {
  assert,
  assertAlmostEquals,
  assertEquals,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { main } from "../../lib/cli/experiments.ts";
import { main as figuresMain } from "../../lib/cli/figures.ts";
import { readTable } from "../../lib/experiments/tables.ts";
import { resolveConfig } from "../../lib/train/config.ts";
import {
  BUDGET_SPECS,
  budgetConfigs,
  budgetText,
  product,
  SUITE_NAMES,
  SUITES,
  suiteSeeds,
} from "../../lib/experiments/suites.ts";
import { buildFigures } from "../../lib/viz/figures/mod.ts";
import { compareRows, compareWithPaper, familyNote } from "../../lib/experiments/summary.ts";

const REQUIRED = [
  "suite",
  "run_id",
  "budget",
  "seed",
  "random_init",
  "diverged",
  "linear_top1",
  "linear_top5",
  "knn_top1",
  "knn_top5",
  "params",
  "flops",
  "seconds",
  "backend",
  "dips",
  "date",
];

Deno.test("product: every combination, last field fastest", () => {
  assertEquals(product({ batchSize: [1, 2], baseLr: [0.1, 0.2] }), [
    { batchSize: 1, baseLr: 0.1 },
    { batchSize: 1, baseLr: 0.2 },
    { batchSize: 2, baseLr: 0.1 },
    { batchSize: 2, baseLr: 0.2 },
  ]);
});

Deno.test("budgetConfigs: every variant under every seed, whole epochs, monitors at the same images", () => {
  const runs = budgetConfigs("stability", "cpu");
  const grid = SUITES.stability.grid.cpu;
  const seeds = suiteSeeds("stability", "cpu");
  assertEquals(seeds, [0, 1, 2], "the sweep's own three seeds");
  // The budget's line names the suite's seeds where the suite has its own.
  assert(budgetText("cpu", "stability").endsWith("; 3 seeds"));
  assert(budgetText("cpu", "posemb").endsWith(`; ${BUDGET_SPECS.cpu.seeds.length} seeds`));
  assert(budgetText("cpu").startsWith(BUDGET_SPECS.cpu.about));
  assertEquals(seeds.length >= 3, true, "at least three seeds");
  assertEquals(runs.length, grid.length * seeds.length);
  for (const [i, r] of runs.entries()) {
    // Seed by seed: the whole grid under seeds[0], then under seeds[1], ...
    const variant = grid[i % grid.length];
    assertEquals(r.seed, seeds[Math.floor(i / grid.length)]);
    assertEquals(r.varied, variant);
    assertEquals(r.config.seed, r.seed);
    assertEquals(r.config.batchSize, variant.batchSize);
    assertEquals(r.config.maxSteps, undefined, "no cut: the schedule spans the run");
    assertEquals(r.config.epochs, BUDGET_SPECS.cpu.base.epochs);
    assertEquals(r.config.knnEvery, Math.round(3072 / r.config.batchSize!));
    assertEquals(r.randomInit, false);
  }
  assertEquals(
    runs[0].runId,
    "stability_cpu_batchSize-64_baseLr-0.0015_freezePatchEmbed-false_seed-0",
  );
  assertEquals(new Set(runs.map((r) => r.runId)).size, runs.length, "run ids are unique");
  // The pilot: a random-init run at the head of each of its own five seeds.
  const pilot = budgetConfigs("pilot", "cpu");
  assertEquals(pilot.filter((r) => r.randomInit).map((r) => r.seed), [0, 1, 2, 3, 4]);
  assertEquals(pilot[0].runId, "pilot_cpu_random-init_seed-0");
  assertEquals(pilot.slice(0, 4).map((r) => [r.seed, r.randomInit]), [
    [0, true],
    [0, false],
    [0, false],
    [0, false],
  ]);
  assertEquals(pilot.length, 5 + 3 * 5);
  for (const r of pilot.filter((r) => !r.randomInit)) {
    assertAlmostEquals(r.config.warmupEpochs!, 0.1 * r.config.epochs!, 1e-12);
  }
});

Deno.test("every suite at every budget plans valid configs (the gpu budget too), 3+ seeds", () => {
  for (const name of [...SUITE_NAMES, "pilot"]) {
    for (const budget of ["smoke", "cpu", "gpu"] as const) {
      const runs = budgetConfigs(name, budget);
      assert(runs.length > 0, `${name} ${budget}: no runs`);
      for (const r of runs) {
        const cfg = resolveConfig({ ...r.config, outDir: `/tmp/x/${r.runId}` });
        assertEquals(cfg.seed, r.seed);
        assertEquals(cfg.maxSteps, 0, `${r.runId}: the schedule spans the run`);
      }
      const seeds = new Set(runs.map((r) => r.seed));
      assert(seeds.size >= 3, `${name} ${budget}: ${seeds.size} seeds`);
    }
  }
  // The gpu budget: MoCo v3 recipe on one GPU (batch 1024, vit_tiny), 90-epoch probe.
  const gpu = budgetConfigs("posemb", "gpu")[0].config;
  assertEquals([gpu.model, gpu.batchSize, BUDGET_SPECS.gpu.linearEpochs], ["vit_tiny", 1024, 90]);
});

Deno.test({
  name: "experiments --suite all --budget smoke: tables, skip on re-run, figures",
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const tmp = await Deno.makeTempDir({ prefix: "vitssl-exp-" });
    const results = `${tmp}/results`;
    const runs = `${tmp}/runs`;
    const args = [
      "--suite",
      "all",
      "--budget",
      "smoke",
      "--backend",
      "wasm",
      "--results-dir",
      results,
      "--runs-dir",
      runs,
    ];
    try {
      const t0 = performance.now();
      assertEquals(await main(args), 0);
      const first = (performance.now() - t0) / 1000;

      const seeds = BUDGET_SPECS.smoke.seeds;
      for (const name of SUITE_NAMES) {
        const t = await readTable(`${results}/${name}.csv`);
        const suite = SUITES[name];
        const n = suite.grid.smoke.length * seeds.length;
        assertEquals(t.numRows(), n, `${name}: one row per run and seed`);
        for (const c of [...REQUIRED, ...suite.fields]) {
          assert(t.columnNames().includes(c), `${name}.csv lacks column ${c}`);
        }
        const rows = t.objects() as Record<string, unknown>[];
        // The varied fields hold the grid's values, in grid order, under each seed in turn.
        const grid = suite.grid.smoke;
        rows.forEach((r, i) => {
          const variant = grid[i % grid.length];
          for (const [k, v] of Object.entries(variant)) assertEquals(r[k], v, `${name} ${k}`);
          assertEquals(r.seed, seeds[Math.floor(i / grid.length)]);
          assert(String(r.run_id).endsWith(`_seed-${r.seed}`));
          assertEquals(r.random_init, false);
        });
        for (const r of rows) {
          for (const m of ["knn_top1", "linear_top1"]) {
            const top1 = r[m] as number;
            assert(top1 >= 0 && top1 <= 100, `${name}: ${m} ${top1}`);
          }
          assert((r.knn_top5 as number) >= (r.knn_top1 as number));
          assert((r.linear_top5 as number) >= (r.linear_top1 as number));
          assertEquals(r.linear_epochs, BUDGET_SPECS.smoke.linearEpochs);
          // The final evaluation uses the whole splits: 96 synthetic train, 96 / 5 test images.
          assertEquals([r.knn_train_size, r.knn_test_size], [96, 20]);
          assertEquals(r.budget, "smoke");
        }
        const curves = await readTable(`${results}/${name}.curves.csv`);
        assert(curves.numRows() > 0, `${name}: curves recorded`);
      }

      // Smoke = the smoke preset: vit_nano (D 32, depth 2, MLP 128) on 28x28x1, patch 7.
      const posemb = (await readTable(`${results}/posemb.csv`)).objects() as Record<
        string,
        number
      >[];
      const D = 32, N = 16, T = 17, H = 128;
      const flops = 2 * N * 49 * D +
        2 * (2 * T * D * 3 * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * H);
      assertEquals(posemb[0].flops, flops);
      // cls + patch (w, b) + 2 blocks (2 LNs, qkv, proj, fc1, fc2) + final LN; sin-cos excluded.
      const block = 4 * D + (3 * D * D + 3 * D) + (D * D + D) + (D * H + H) + (H * D + D);
      const params = D + (49 * D + D) + 2 * block + 2 * D;
      assertEquals(posemb[0].params, params);
      assertEquals(posemb[1].params, params + (N + 1) * D, "learned position embedding counts");
      assertEquals(posemb[0].steps, 3); // one epoch: 96 images at batch 32

      const stab = (await readTable(`${results}/stability.csv`)).objects() as Record<
        string,
        number
      >[];
      // One epoch each, under each of three seeds: batch 16 (two lrs) then batch 32 (two lrs).
      assertEquals(stab.map((r) => r.steps), [6, 6, 3, 3, 6, 6, 3, 3, 6, 6, 3, 3]);
      // Different seeds give different runs of one configuration (sin-cos, class token).
      const sincos = posemb.filter((r) =>
        r.posEmb as unknown === "sincos" && r.pool as unknown === "cls"
      );
      assertEquals(sincos.map((r) => r.seed), seeds);
      assert(new Set(sincos.map((r) => r.knn_top1 + "/" + r.linear_top1)).size > 1);

      // Second run: everything is complete, so nothing trains and no row is added.
      const t1 = performance.now();
      assertEquals(await main(args), 0);
      const second = (performance.now() - t1) / 1000;
      assert(second < first / 2, `re-run took ${second.toFixed(1)} s vs ${first.toFixed(1)} s`);
      for (const name of SUITE_NAMES) {
        const t = await readTable(`${results}/${name}.csv`);
        assertEquals(
          t.numRows(),
          SUITES[name].grid.smoke.length * seeds.length,
          `${name}: no duplicate rows`,
        );
      }
      const times = (await readTable(`${results}/suite_times.csv`)).objects() as Record<
        string,
        number
      >[];
      assertEquals(times.length, 2 * SUITE_NAMES.length);
      for (const t of times.slice(SUITE_NAMES.length)) assertEquals(t.ran, 0);

      // A complete run whose saved config no longer matches the plan is refused, not reused.
      const edited = `${runs}/optimizer_smoke_optimizer-adamw_baseLr-0.0015_weightDecay-0.1_seed-0`;
      const saved = JSON.parse(await Deno.readTextFile(`${edited}/config.json`));
      saved.config.epochs = 99;
      await Deno.writeTextFile(`${edited}/config.json`, JSON.stringify(saved));
      await assertRejects(
        () => main(["--suite", "optimizer", ...args.slice(2)]),
        Error,
        "epochs: run has 99, plan has 1",
      );

      // Two processes share a suite (--jobs 2): the same rows as one process, run by run.
      const jobsResults = `${tmp}/results-jobs`;
      const jobsArgs = ["--suite", "posemb", "--budget", "smoke", "--backend", "wasm"];
      assertEquals(
        await main([
          ...jobsArgs,
          "--jobs",
          "2",
          "--results-dir",
          jobsResults,
          "--runs-dir",
          `${tmp}/runs-jobs`,
        ]),
        0,
      );
      const jobsRows = (await readTable(`${jobsResults}/posemb.csv`)).objects() as Record<
        string,
        unknown
      >[];
      const key = (r: Record<string, unknown>) =>
        [r.run_id, r.seed, r.knn_top1, r.linear_top1, r.steps].join(" ");
      assertEquals(jobsRows.map(key), posemb.map(key));
      const jobsTime = (await readTable(`${jobsResults}/suite_times.csv`)).objects() as Record<
        string,
        number
      >[];
      assertEquals([jobsTime[0].ran, jobsTime[0].skipped], [posemb.length, 0]);

      // Rows already recorded win: with a runs directory that lacks their runs (the committed
      // results on another machine), none is trained again and the tables stay as they were.
      const tables = async () =>
        (await Promise.all(
          ["posemb.csv", "posemb.curves.csv"].map((f) => Deno.readTextFile(`${jobsResults}/${f}`)),
        )).join("");
      const before = await tables();
      const printed: string[] = [];
      const log = console.log;
      console.log = (line: string) => printed.push(line);
      try {
        assertEquals(
          await main([
            ...jobsArgs,
            "--results-dir",
            jobsResults,
            "--runs-dir",
            `${tmp}/runs-elsewhere`,
          ]),
          0,
        );
      } finally {
        console.log = log;
      }
      assertEquals(await tables(), before);
      assertEquals(printed.filter((l) => l.endsWith(": recorded, skipped")).length, posemb.length);
      const again = (await readTable(`${jobsResults}/suite_times.csv`)).objects() as Record<
        string,
        number
      >[];
      assertEquals([again.at(-1)!.ran, again.at(-1)!.skipped], [0, posemb.length]);

      const figs = await buildFigures(results);
      assertEquals(Object.keys(figs).sort(), [
        "optimizer",
        "patch-projection",
        "patch-size",
        "posemb",
        "scaling",
        "stability-curves",
        "stability-gradients",
        "stability-lr",
        "verdicts",
      ]);
      assertEquals(
        await figuresMain(["--results-dir", results, "--out", `${tmp}/fig`, "--no-png"]),
        0,
      );
      const html = await Deno.readTextFile(`${tmp}/fig/posemb.html`);
      assert(html.includes("Plotly.newPlot") && html.includes("paper (ImageNet)"));
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  },
});

Deno.test("compareWithPaper: the framework comparison (MoCo v3 - others, learned) by hand", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // [framework, frozen, seed, linear top-1]; no BYOL rows; seed 3 of MoCo v3 has no partner.
    const rows: [string, boolean, number, number][] = [
      ["mocov3", false, 0, 70],
      ["mocov3", false, 1, 71],
      ["mocov3", false, 2, 72],
      ["mocov3", false, 3, 90],
      ["mocov3", true, 0, 71],
      ["mocov3", true, 1, 72],
      ["mocov3", true, 2, 73],
      ["simclr", false, 0, 68],
      ["simclr", false, 1, 68.5],
      ["simclr", false, 2, 69.5],
      ["simclr", true, 0, 68],
      ["simclr", true, 1, 68],
      ["simclr", true, 2, 68],
      ["swav", false, 0, 72],
      ["swav", false, 1, 70],
      ["swav", false, 2, 71],
      ["swav", true, 0, 72],
      ["swav", true, 1, 71],
      ["swav", true, 2, 72],
    ];
    await Deno.writeTextFile(
      `${dir}/patch-projection.csv`,
      "suite,run_id,budget,framework,freezePatchEmbed,seed,random_init,linear_top1,knn_top1\n" +
        rows.map(([fw, frozen, seed, acc], i) =>
          `patch-projection,r${i},cpu,${fw},${frozen},${seed},false,${acc},50`
        ).join("\n") + "\npatch-projection,ri,cpu,,,0,true,10,10\n",
    );
    const cmp = await compareWithPaper(dir);
    const by = Object.fromEntries(cmp.map((c) => [c.effect, c]));
    assertEquals(cmp.map((c) => c.effect), [
      "random - learned, mocov3",
      "random - learned, simclr",
      "random - learned, swav",
      "MoCo v3 - SimCLR, learned patch proj. (vs ViT-S)",
      "MoCo v3 - SimCLR, learned patch proj. (vs ViT-B)",
      "MoCo v3 - SwAV, learned patch proj. (vs ViT-S)",
      "MoCo v3 - SwAV, learned patch proj. (vs ViT-B)",
    ]);
    const t2 = 4.302652729911275; // t(0.975, 2)
    // MoCo v3 - SimCLR: differences 2, 2.5, 2.5: mean 7/3, s = sqrt(1/12), CI [1.62, 3.05].
    for (const [vit, paper, inside] of [["ViT-S", 3.5, false], ["ViT-B", 2.6, true]] as const) {
      const c = by[`MoCo v3 - SimCLR, learned patch proj. (vs ${vit})`];
      assertEquals(c.seeds, [0, 1, 2]);
      assertAlmostEquals(c.a!.mean, 71, 1e-9); // seeds 0-2 only
      assertAlmostEquals(c.diff!.mean, 7 / 3, 1e-9);
      assertAlmostEquals(c.diff!.halfWidth, t2 * Math.sqrt(1 / 12) / Math.sqrt(3), 1e-6);
      assertEquals(c.verdict, "holds");
      // Chen, Xie, He 2021 (arXiv:2104.02057), Sec. 6.1, the framework comparison:
      // 72.5 - 69.0 (ViT-S), 76.5 - 73.9 (ViT-B).
      assertEquals(c.paper, paper);
      assertEquals(c.paperInside, inside);
    }
    // MoCo v3 - SwAV: differences -2, 1, 1: mean 0, s = sqrt(3).
    for (const [vit, paper] of [["ViT-S", 5.4], ["ViT-B", 4.9]] as const) {
      const c = by[`MoCo v3 - SwAV, learned patch proj. (vs ${vit})`];
      assertAlmostEquals(c.diff!.mean, 0, 1e-9);
      assertAlmostEquals(c.diff!.halfWidth, t2 * Math.sqrt(3) / Math.sqrt(3), 1e-6);
      assertEquals(c.verdict, "not detected");
      assertEquals(c.paper, paper); // 72.5 - 67.1, 76.5 - 71.6
      assertEquals(c.paperInside, false); // CI [-4.30, 4.30]
    }
    // SwAV random - learned: 0, 1, 1 against the paper's +0.6 (65.8 -> 66.4).
    const swav = by["random - learned, swav"];
    assertAlmostEquals(swav.diff!.mean, 2 / 3, 1e-9);
    assertEquals(swav.paper, 0.6);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compareWithPaper: seed-paired differences, t-intervals and verdicts by hand", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // [posEmb, pool, seed, linear top-1]; seed 3 of sin-cos has no partner; a random-init row.
    const rows: [string, string, number, number][] = [
      ["sincos", "cls", 0, 75],
      ["sincos", "cls", 1, 76],
      ["sincos", "cls", 2, 77],
      ["sincos", "cls", 3, 90],
      ["none", "cls", 0, 73],
      ["none", "cls", 1, 73.5],
      ["none", "cls", 2, 74.5],
      ["learned", "cls", 0, 76],
      ["learned", "cls", 1, 75],
      ["learned", "cls", 2, 78],
      ["sincos", "mean", 0, 78],
      ["sincos", "mean", 1, 79],
      ["sincos", "mean", 2, 80],
    ];
    await Deno.writeTextFile(
      `${dir}/posemb.csv`,
      "suite,run_id,budget,posEmb,pool,seed,random_init,linear_top1,knn_top1\n" +
        rows.map(([pe, pool, seed, acc], i) =>
          `posemb,r${i},cpu,${pe},${pool},${seed},false,${acc},50`
        ).join("\n") + "\nposemb,ri,cpu,,,0,true,10,10\n",
    );
    const cmp = await compareWithPaper(dir);
    assertEquals(cmp.length, 3, "only the posemb table exists");
    const by = Object.fromEntries(cmp.map((c) => [c.effect, c]));
    const t2 = 4.302652729911275; // t(0.975, 2)
    // sin-cos - none: differences 2, 2.5, 2.5: mean 7/3, s = sqrt(1/12).
    const none = by["sin-cos - none"];
    assertEquals(none.seeds, [0, 1, 2]);
    assertAlmostEquals(none.diff!.mean, 7 / 3, 1e-9);
    assertAlmostEquals(none.diff!.halfWidth, t2 * Math.sqrt(1 / 12) / Math.sqrt(3), 1e-6);
    assertEquals(none.verdict, "holds"); // [1.62, 3.05] excludes 0 on the paper's (+) side
    assertEquals(none.paperInside, false); // the paper's +1.6 lies just below 1.62
    assertAlmostEquals(none.a!.mean, 76, 1e-9); // seeds 0-2 only
    // sin-cos - learned: differences -1, 1, -1: mean -1/3, s = sqrt(4/3).
    const learned = by["sin-cos - learned"];
    assertAlmostEquals(learned.diff!.mean, -1 / 3, 1e-9);
    assertAlmostEquals(learned.diff!.halfWidth, t2 * Math.sqrt(4 / 3) / Math.sqrt(3), 1e-6);
    assertEquals(learned.verdict, "not detected");
    assertEquals(learned.paperInside, true);
    // class token - mean pool: -3 under every seed: a zero-width interval below 0.
    const pool = by["class token - mean pool"];
    assertEquals([pool.diff!.mean, pool.diff!.halfWidth], [-3, 0]);
    assertEquals(pool.verdict, "opposite"); // the paper has +0.2
    // Paired t-tests and Holm over the family of three. none: se = s / sqrt(3) = 1/6, t = 14,
    // df 2: p = 1 - 14 / sqrt(198); learned: se = 2/3, t = 0.5: p = 1 - 0.5 / sqrt(2.25) = 2/3;
    // pool: no spread, p = 0. Holm: 3 x 0 = 0, 2 x p_none, max(that, 1 x 2/3).
    const pNone = 1 - 14 / Math.sqrt(198);
    assertAlmostEquals(none.p, pNone, 1e-6);
    assertAlmostEquals(learned.p, 2 / 3, 1e-6);
    assertEquals([pool.p, pool.adjustedP], [0, 0]);
    assertAlmostEquals(none.adjustedP, 2 * pNone, 1e-6);
    assertAlmostEquals(learned.adjustedP, 2 / 3, 1e-6);
    assertEquals([none.adjusted, learned.adjusted, pool.adjusted], [
      "holds",
      "not detected",
      "opposite",
    ]);
    assertStringIncludes(
      familyNote(cmp),
      "3 comparisons at 95%: about 0.15 would read holds or opposite by chance alone",
    );
    assertStringIncludes(familyNote(cmp), "After Holm's adjustment over these 3");
    // The same on kNN: every value 50, so no difference at all.
    const knn = await compareWithPaper(dir, "knn_top1");
    assertEquals(knn.map((c) => c.verdict), ["not detected", "not detected", "not detected"]);
    // Fewer than two pairs: missing.
    const one = compareRows(
      [{ posEmb: "a", seed: 0, linear_top1: 1 }, { posEmb: "b", seed: 0, linear_top1: 2 }],
      { posEmb: "a" },
      { posEmb: "b" },
      { study: "x", effect: "a - b", paper: 1, paperNote: "" },
    );
    assertEquals(one.verdict, "missing");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
