/**
 * Pretraining through tfjs-backend-webgpu on Deno's `navigator.gpu`: a few steps of the `smoke`
 * preset, with a kNN monitor, must give the losses, gradient norms and kNN accuracy of the same
 * run on `wasm` (the reference), and leak no tensor.
 *
 * Without a WebGPU adapter (no `--unstable-webgpu`, no Vulkan driver) the test is registered as
 * ignored, with the reason printed (under CI=true it fails). Here a software adapter (Mesa's llvmpipe) runs it.
 */
import { assert, assertEquals, assertMatch } from "@std/assert";
import { initBackend } from "../../lib/backends/mod.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { requireTool, webgpuStatus } from "../_helpers/system_tools.ts";

const opts = { sanitizeOps: false, sanitizeResources: false };

const noWebgpu = requireTool(
  "WebGPU",
  await webgpuStatus(),
  "apt-get install mesa-vulkan-drivers, and run deno with --unstable-webgpu",
);

const STEPS = 4;

/** Reads a CSV written by the run into rows of numbers keyed by column. */
async function readCsv(path: string): Promise<Record<string, number>[]> {
  const [head, ...lines] = (await Deno.readTextFile(path)).trim().split("\n");
  const cols = head.split(",");
  return lines.map((l) => Object.fromEntries(l.split(",").map((v, i) => [cols[i], Number(v)])));
}

/** Runs STEPS smoke steps on `backend`; returns the logs, the printed backend line and timing. */
async function run(backend: "wasm" | "webgpu") {
  const dir = await Deno.makeTempDir({ prefix: `vitssl_${backend}_` });
  const printed: string[] = [];
  const cfg = resolveConfig({
    preset: "smoke",
    backend,
    maxSteps: STEPS,
    knnEvery: 2,
    finalEval: "none",
    checkpointEvery: 100,
    checkTensorLeaks: true,
    outDir: dir,
  });
  const t0 = performance.now();
  const result = await pretrain(cfg, { print: (s) => printed.push(s) });
  const seconds = (performance.now() - t0) / 1000;
  const log = await readCsv(`${dir}/log.csv`);
  const knn = await readCsv(`${dir}/knn.csv`);
  await Deno.remove(dir, { recursive: true });
  return { result, log, knn, backendLine: printed[0], seconds };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

Deno.test({
  ...opts,
  ignore: noWebgpu,
  name: `webgpu pretraining: ${STEPS} smoke steps and a kNN monitor match wasm`,
  fn: async () => {
    const ref = await run("wasm");
    const gpu = await run("webgpu");
    await initBackend({ backend: "cpu" });
    assertMatch(gpu.backendLine, /^backend: webgpu \(.+, 1 thread\)$/);
    const B = 32; // the smoke preset's batch
    const stepSeconds = (r: typeof ref) => median(r.log.slice(1).map((x) => B / x.images_per_s));
    console.log(
      `${gpu.backendLine}: ${stepSeconds(gpu).toFixed(3)} s/step; wasm ` +
        `${stepSeconds(ref).toFixed(3)} s/step (median of steps 2-${STEPS}, batch ${B})`,
    );

    assertEquals(gpu.result.status, "done");
    assertEquals(gpu.result.steps, STEPS);
    assertEquals(gpu.log.map((r) => r.step), [0, 1, 2, 3]);
    for (let i = 0; i < STEPS; i++) {
      const [g, r] = [gpu.log[i], ref.log[i]];
      assert(Number.isFinite(r.loss) && r.loss > 0, `wasm loss ${r.loss}`);
      assert(Math.abs(g.loss - r.loss) <= 1e-3, `step ${i}: loss ${g.loss} vs wasm ${r.loss}`);
      // The schedule does not depend on the backend at all.
      assertEquals([g.lr, g.momentum], [r.lr, r.momentum]);
      for (const k of ["grad_patch", "grad_first_block", "grad_last_block", "grad_heads"]) {
        assert(r[k] > 0, `wasm ${k} at step ${i} is ${r[k]}`);
        assert(Math.abs(g[k] - r[k]) <= 1e-2 * r[k], `step ${i}: ${k} ${g[k]} vs wasm ${r[k]}`);
      }
    }
    // The loss moved: the steps did update the weights (same on both backends, checked above).
    assert(ref.log.some((r) => Math.abs(r.loss - ref.log[0].loss) > 1e-3), "loss never moved");

    // The kNN monitor (feature extraction and top-k on the backend) after step 2.
    assertEquals(gpu.knn.length, 1);
    assertEquals([gpu.knn[0].step, gpu.knn[0].test_size], [ref.knn[0].step, ref.knn[0].test_size]);
    // Ties or near-ties may flip one query between backends, no more.
    const onePercent = 100 / ref.knn[0].test_size;
    assert(
      Math.abs(gpu.knn[0].top1 - ref.knn[0].top1) <= onePercent + 1e-6,
      `kNN top-1 ${gpu.knn[0].top1} vs wasm ${ref.knn[0].top1}`,
    );
  },
});
