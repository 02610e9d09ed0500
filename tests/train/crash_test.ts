/**
 * Crash safety of `deno task pretrain` (issue "Reliability", item 1): a child process is killed
 * with SIGKILL ten times in a row at random points, including while a checkpoint is being
 * written, and resumed with `--resume DIR` after each kill. After every kill the run directory
 * must hold a loadable checkpoint (once one was written) and a log whose complete rows are steps
 * 0, 1, 2, ... with none missing or repeated; the finished run must equal an uninterrupted run of
 * the same seed and backend bit for bit (wasm, one thread: every step is a pure function of the
 * checkpointed tensors, the seed and the step number).
 *
 * The child is `deno run -A --unstable-webgpu lib/cli/pretrain.ts`, which is what
 * `deno task pretrain` runs (killing `deno task` itself would kill its shell, not the trainer).
 * The model is the smoke preset (vit_nano on the synthetic set) with a checkpoint every 2 steps.
 *
 * Related tests elsewhere: tests/train/train_test.ts (in-process resume equality, one SIGKILL after a
 * checkpoint), tests/io/safetensors_test.ts (atomic write with a failing writer).
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import { logSteps, spawnPretrain } from "../_helpers/pretrain_child.ts";
import { loadBackbone } from "../../lib/train/checkpoint.ts";
import { createRng } from "../../lib/core/rng.ts";
import { readSafetensors } from "../../lib/io/safetensors.ts";
import { disposeViT } from "../../lib/model/vit.ts";
import { pretrain, resolveConfig } from "../../lib/train/pretrain.ts";
import { main } from "../../lib/cli/pretrain.ts";

/**
 * 16 epochs of 256 / 32 = 128 steps; a checkpoint every 2 steps, kNN monitor every 8. Long enough
 * that ten kills cannot use it up on an idle machine (with 48 steps the last child could finish).
 */
const FLAGS = [
  "--preset",
  "smoke",
  "--backend",
  "wasm",
  "--ckpt-every",
  "2",
  "--epochs",
  "16",
  "--final-eval",
  "none",
];
const TOTAL = 128;
const CKPT = "checkpoint.safetensors";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function inode(path: string): Promise<number | null> {
  try {
    return (await Deno.stat(path)).ino;
  } catch {
    return null;
  }
}

async function exists(path: string): Promise<boolean> {
  return (await inode(path)) !== null;
}

async function tempFiles(dir: string): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) if (/\.tmp-/.test(e.name)) names.push(e.name);
  return names.sort();
}

/** Resolves when a file whose name starts with `prefix` is created in `dir`. */
function watchCreate(dir: string, prefix: string): { created: Promise<void>; close: () => void } {
  const watcher = Deno.watchFs(dir, { recursive: false });
  const created = (async () => {
    for await (const ev of watcher) {
      const names = ev.paths.map((p) => p.slice(p.lastIndexOf("/") + 1));
      if (ev.kind === "create" && names.some((n) => n.startsWith(prefix))) return;
    }
    await new Promise(() => {}); // closed: never resolves
  })();
  return {
    created,
    close: () => {
      try {
        watcher.close();
      } catch { /* closed */ }
    },
  };
}

/** Polls `cond` every 5 ms until it holds, the child exits, or the time runs out. */
async function until(
  cond: () => Promise<boolean>,
  exited: Promise<unknown>,
  what: string,
  ms = 90_000,
): Promise<void> {
  let done = false;
  exited.then(() => done = true);
  const t0 = performance.now();
  while (!(await cond())) {
    if (done) throw new Error(`the child exited before ${what}`);
    if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(5);
  }
}

/** Where a kill lands. */
type Point =
  | "startup" // a random time after spawn: module loading, backend start, resume, truncation
  | "mid-run" // k complete steps after the resumed (or fresh) start, plus a random delay
  | "checkpoint-write" // as soon as the checkpoint's temp file appears
  | "backbone-write"; // as soon as the backbone's temp file appears (checkpoint just renamed)

/** The ten kills: every kind at least twice, in a fixed order; delays and k are random. */
const PLAN: Point[] = [
  "mid-run",
  "checkpoint-write",
  "mid-run",
  "startup",
  "backbone-write",
  "checkpoint-write",
  "mid-run",
  "checkpoint-write",
  "backbone-write",
  "mid-run",
];

Deno.test("crash: 10 SIGKILLs at random points (incl. checkpoint writes), resumed each time, end bit-exact", async () => {
  const t0 = performance.now();
  const whole = await Deno.makeTempDir({ prefix: "vitssl_crash_whole_" });
  const dir = await Deno.makeTempDir({ prefix: "vitssl_crash_" });
  const seed = Number(Deno.env.get("VITSSL_CRASH_SEED") ?? Date.now() % 100000);
  const rng = createRng(seed);
  const notes: string[] = [`seed ${seed} (rerun with VITSSL_CRASH_SEED=${seed})`];
  try {
    // The uninterrupted run, in this process (same code, same wasm build, one thread).
    const log = console.log;
    console.log = () => {};
    try {
      assertEquals(await main([...FLAGS, "--out", whole]), 0);
    } finally {
      console.log = log;
    }

    let ckptStep = -1; // step of the last checkpoint seen (-1: none yet)
    let caughtInWrite = 0;
    for (let i = 0; i < PLAN.length; i++) {
      const point = PLAN[i];
      const watch = point === "checkpoint-write"
        ? watchCreate(dir, `.${CKPT}.tmp-`)
        : point === "backbone-write"
        ? watchCreate(dir, ".backbone.safetensors.tmp-")
        : undefined;
      const logIno = await inode(`${dir}/log.csv`);
      // Held open while the child runs: a child without a checkpoint deletes log.csv and starts a
      // new one, which could otherwise get the freed inode number back and look unchanged.
      const oldLog = await Deno.open(`${dir}/log.csv`).catch(() => undefined);
      const child = spawnPretrain(i === 0 ? [...FLAGS, "--out", dir] : ["--resume", dir]);
      const output = child.output();
      const exited = child.status;
      let detail = "";
      try {
        if (point === "startup") {
          const ms = 200 + rng.int(2500);
          await Promise.race([sleep(ms), exited]);
          detail = `${ms} ms after spawn`;
        } else if (point === "mid-run") {
          const k = 1 + rng.int(3);
          const from = Math.max(ckptStep, 0);
          // The resumed child first rewrites log.csv (new inode), cut back to its checkpoint.
          await until(
            async () =>
              (await inode(`${dir}/log.csv`)) !== logIno &&
              (await logSteps(`${dir}/log.csv`)).length >= from + k,
            exited,
            `${k} new log rows`,
          );
          const ms = rng.int(120);
          await sleep(ms);
          detail = `${k} step(s) after step ${from} + ${ms} ms`;
        } else {
          await Promise.race([watch!.created, exited]);
        }
        child.kill("SIGKILL");
      } catch (e) {
        // A child that exited on its own (or hung): say how, with the end of what it printed.
        try {
          child.kill("SIGKILL");
        } catch { /* already exited */ }
        const out = await output;
        const said = new TextDecoder().decode(out.stderr).trim().split("\n").slice(-5).join("\n");
        throw new Error(
          `kill ${i + 1} (${point}): ${(e as Error).message}; the child's exit code ${out.code}, ` +
            `its stderr ends:\n${said}\n${notes.join("\n")}`,
        );
      } finally {
        watch?.close();
        oldLog?.close();
      }
      const status = await exited;
      await output;
      assertEquals(status.signal, "SIGKILL", `kill ${i + 1} (${point}): the child must not finish`);

      // (a) A loadable checkpoint (once the first one was written), never going backwards.
      const temps = await tempFiles(dir);
      const midWrite = temps.some((n) => n.startsWith(`.${CKPT}.tmp-`));
      if (midWrite) caughtInWrite++;
      if (await exists(`${dir}/${CKPT}`)) {
        const { metadata } = await readSafetensors(`${dir}/${CKPT}`);
        const step = Number(metadata.step);
        assert(step >= ckptStep && step < TOTAL, `kill ${i + 1}: checkpoint step ${step}`);
        ckptStep = step;
        disposeViT(await loadBackbone(`${dir}/${CKPT}`));
        if (await exists(`${dir}/backbone.safetensors`)) {
          disposeViT(await loadBackbone(`${dir}/backbone.safetensors`));
        }
      } else {
        assertEquals(ckptStep, -1, `kill ${i + 1}: the checkpoint disappeared`);
      }
      // (b) Complete log rows are 0, 1, 2, ... (the resume cut the rows after its checkpoint);
      // every step up to the checkpoint is there.
      const steps = await logSteps(`${dir}/log.csv`);
      assertEquals(steps, steps.map((_, j) => j), `kill ${i + 1}: log steps ${steps}`);
      assert(steps.length >= ckptStep, `kill ${i + 1}: ${steps.length} rows < step ${ckptStep}`);
      notes.push(
        `kill ${i + 1} ${point}${detail ? ` (${detail})` : ""}: ` +
          `${ckptStep < 0 ? "no checkpoint yet" : `checkpoint step ${ckptStep}`}, ` +
          `${steps.length} log rows${midWrite ? ", killed mid-write (temp file left)" : ""}`,
      );
    }

    // The last resume runs to the end.
    const last = await spawnPretrain(["--resume", dir]).output();
    const stdout = new TextDecoder().decode(last.stdout);
    assertEquals(last.code, 0, new TextDecoder().decode(last.stderr));
    assertStringIncludes(stdout, `resumed ${dir} at step ${Math.max(ckptStep, 0)}/${TOTAL}`);
    assertEquals(await tempFiles(dir), [], "stale temp files are removed on resume");
    console.log(notes.join("\n"));
    // At least one kill must have hit a checkpoint write before its rename (the temp file was
    // left behind and the old checkpoint loaded).
    assert(caughtInWrite >= 1, `no kill landed inside a checkpoint write:\n${notes.join("\n")}`);

    // (b) The whole log, (c) the final weights: identical to the uninterrupted run.
    const a = await Deno.readTextFile(`${dir}/log.csv`);
    const b = await Deno.readTextFile(`${whole}/log.csv`);
    assertEquals(dropTiming(a), dropTiming(b), "log.csv (all columns but images_per_s)");
    assertEquals(
      await Deno.readTextFile(`${dir}/knn.csv`),
      await Deno.readTextFile(`${whole}/knn.csv`),
    );
    for (const file of [CKPT, "backbone.safetensors"]) {
      const x = await readSafetensors(`${dir}/${file}`);
      const y = await readSafetensors(`${whole}/${file}`);
      assertEquals(Object.keys(x.tensors).sort(), Object.keys(y.tensors).sort(), file);
      for (const [k, t] of Object.entries(x.tensors)) {
        const u = new Uint8Array(t.data.buffer), v = new Uint8Array(y.tensors[k].data.buffer);
        assertEquals(u.length, v.length, `${file}: ${k}`);
        assert(u.every((byte, j) => byte === v[j]), `${file}: ${k} is not bit-identical`);
      }
      assertEquals(x.metadata.step, String(TOTAL));
    }
    console.log(`crash test: ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(whole, { recursive: true }).catch(() => {});
  }
});

Deno.test("crash: a run killed before its first checkpoint restarts at step 0 without duplicated rows; stale temp files go", async () => {
  // The state such a kill leaves (the kill loop above hits it only by chance): config.json, a
  // log with rows 0 and 1 and a torn third line, no checkpoint, and the temp file of a
  // checkpoint write that never reached its rename.
  const dir = await Deno.makeTempDir({ prefix: "vitssl_crash_early_" });
  try {
    const cfg = resolveConfig({
      preset: "smoke",
      backend: "wasm",
      outDir: dir,
      maxSteps: 3,
      finalEval: "none",
    });
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ config: cfg }));
    const header = "step,epoch,loss,lr,momentum,grad_patch,grad_first_block,grad_last_block," +
      "grad_heads,grad_total,images_per_s";
    await Deno.writeTextFile(
      `${dir}/log.csv`,
      `${header}\n0,0,3.2,0,0.99,1,1,1,1,2,100\n` +
        "1,0,3.1,1e-4,0.99,1,1,1,1,2,100\n2,0,3.",
    );
    await Deno.writeFile(`${dir}/.${CKPT}.tmp-0123abcd`, new Uint8Array(1000));
    const r = await pretrain(cfg, { print: () => {} });
    assertEquals(r.steps, 3);
    assertEquals(await logSteps(`${dir}/log.csv`), [0, 1, 2]);
    assertEquals(await tempFiles(dir), []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** log.csv without its last column (images_per_s, a timing). */
function dropTiming(csv: string): string {
  return csv.split("\n").map((l) => l.slice(0, l.lastIndexOf(","))).join("\n");
}
