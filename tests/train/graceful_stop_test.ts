/**
 * Graceful stop of `deno task pretrain` (issue "Reliability", item 2): SIGINT (Ctrl-C) and
 * SIGTERM finish the step in flight, write a checkpoint at the step reached, print how to
 * resume, and exit 0; the printed command resumes the run at that step.
 *
 * The child is `deno run -A --unstable-webgpu lib/cli/pretrain.ts` (what `deno task pretrain`
 * runs). The scheduled checkpoints are every 1000 steps, so the checkpoint found after the stop
 * can only be the one the stop wrote. In-process stops (hooks.signal) and exact resume are in
 * tests/train/train_test.ts.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { logSteps, spawnPretrain } from "../_helpers/pretrain_child.ts";
import { readSafetensors } from "../../lib/io/safetensors.ts";

/** 6 epochs of 256 / 32 = 48 steps, far more than run before the signal. */
const FLAGS = ["--preset", "smoke", "--backend", "wasm", "--epochs", "6", "--ckpt-every", "1000"];
const TOTAL = 48;

async function stopWith(sig: "SIGINT" | "SIGTERM"): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: `vitssl_${sig}_` });
  try {
    const child = spawnPretrain([...FLAGS, "--out", dir]);
    const output = child.output();
    // Signal once three steps are logged: mid-run, between or inside steps.
    const t0 = performance.now();
    let seen: number[] = [];
    while ((seen = await logSteps(`${dir}/log.csv`)).length < 3) {
      assert(performance.now() - t0 < 90_000, "timed out waiting for the first steps");
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill(sig);
    const out = await output;
    const stdout = new TextDecoder().decode(out.stdout);
    const stderr = new TextDecoder().decode(out.stderr);
    assertEquals(out.code, 0, `${sig}: exit code\n${stderr}`);
    assertStringIncludes(stderr, "stopping after this step");
    // The hint names the signal received (a SIGTERM is not a Ctrl-C).
    assertStringIncludes(
      stderr,
      sig === "SIGINT"
        ? "(press Ctrl-C again to quit at once)"
        : "(SIGTERM received; send SIGTERM again or press Ctrl-C to quit at once)",
    );

    // The checkpoint holds the step reached, the log has exactly the steps before it, and the
    // step in flight when the signal came was finished (logged), not dropped.
    const { metadata } = await readSafetensors(`${dir}/checkpoint.safetensors`);
    const step = Number(metadata.step);
    assert(step >= seen.length && step < TOTAL, `${sig}: checkpoint at step ${step}`);
    assertEquals(await logSteps(`${dir}/log.csv`), Array.from({ length: step }, (_, i) => i));
    assertStringIncludes(
      stdout,
      `stopped at step ${step}/${TOTAL}; checkpoint written. Resume with: ` +
        `deno task pretrain --resume ${dir}`,
    );
    assertEquals((await readSafetensors(`${dir}/backbone.safetensors`)).metadata.step, `${step}`);

    // The printed command resumes there (two more steps, then it stops at --max-steps).
    const resumed = await spawnPretrain(["--resume", dir, "--max-steps", `${step + 2}`]).output();
    assertEquals(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
    assertStringIncludes(
      new TextDecoder().decode(resumed.stdout),
      `resumed ${dir} at step ${step}/${step + 2}`,
    );
    assertEquals(
      await logSteps(`${dir}/log.csv`),
      Array.from({ length: step + 2 }, (_, i) => i),
    );
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("graceful stop: SIGINT finishes the step, checkpoints, prints the resume line, exits 0", async () => {
  await stopWith("SIGINT");
});

Deno.test("graceful stop: SIGTERM finishes the step, checkpoints, prints the resume line, exits 0", async () => {
  await stopWith("SIGTERM");
});
