/**
 * The bad-input matrix (issue "Reliability", item 5) in one place: one case per row, each through
 * the user-facing entry point where there is one (`deno task pretrain` / `deno task eval`, run
 * in process through their `main`), each asserting that the error names the cause and the fix.
 *
 * Deeper tests of the same inputs live next to their modules: tests/train/train_test.ts (CLI flag
 * errors, config mismatch with --force), tests/train/checkpoint_test.ts (architecture mismatch),
 * tests/io/safetensors_test.ts (truncation, header length, offsets, atomic-write failure),
 * tests/data/data_test.ts (CIFAR and ImageFolder errors), tests/eval/results_test.ts (missing column),
 * tests/backends/backend_test.ts (unavailable backends).
 */
import * as tf from "@tensorflow/tfjs-core";
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { join } from "node:path";
import { loadBackbone, saveTensors } from "../../lib/train/checkpoint.ts";
import { readSafetensors, writeSafetensors } from "../../lib/io/safetensors.ts";
import { pretrain, resolveConfig, resumeConfig } from "../../lib/train/pretrain.ts";
import type { PretrainConfig } from "../../lib/train/config.ts";
import { main as pretrainMain } from "../../lib/cli/pretrain.ts";
import { main as evalMain } from "../../lib/cli/eval.ts";
import { RESULT_COLUMNS } from "../../lib/eval/results.ts";
import { logSteps, spawnPretrain } from "../_helpers/pretrain_child.ts";
import { requireTool, smallDisk, smallDiskStatus } from "../_helpers/system_tools.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../lib/cli/pretrain.ts", import.meta.url).pathname;
const SMOKE = ["--preset", "smoke", "--backend", "wasm", "--final-eval", "none"];

const dirs: string[] = [];
removeOnUnload(dirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_bad_input_" });
  dirs.push(d);
  return d;
}

/** Runs `fn` with console.log silenced and returns the error it throws. */
async function error(fn: () => Promise<unknown>): Promise<Error> {
  const log = console.log;
  console.log = () => {};
  try {
    return await assertRejects(fn) as Error;
  } finally {
    console.log = log;
  }
}

/** Asserts the error's class name and that its message holds every part (cause and fix). */
function expect(e: Error, name: string, ...parts: string[]): void {
  assertEquals(e.name, name, e.message);
  for (const p of parts) assertStringIncludes(e.message, p);
}

/** `deno task pretrain ...` in process, with the smoke preset and a fresh --out. */
async function pretrainError(args: string[]): Promise<Error> {
  const out = join(await tempDir(), "run");
  const e = await error(() => pretrainMain([...SMOKE, "--out", out, ...args]));
  // Bad input is refused before the run directory is made.
  assert(!(await exists(out)), `${args.join(" ")}: ${out} was created`);
  return e;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** A finished 2-step run directory, made once; tests that change it work on copies. */
let runDir: Promise<string> | undefined;
function run(): Promise<string> {
  runDir ??= (async () => {
    const dir = await tempDir();
    const cfg = resolveConfig({
      preset: "smoke",
      backend: "wasm",
      maxSteps: 2,
      finalEval: "none",
      outDir: dir,
    });
    await pretrain(cfg, { print: () => {} });
    return dir;
  })();
  return runDir;
}

async function copyRun(): Promise<string> {
  const src = await run(), dst = await tempDir();
  for await (const e of Deno.readDir(src)) {
    await Deno.copyFile(join(src, e.name), join(dst, e.name));
  }
  return dst;
}

// ---------------------------------------------------------------- flags and config

Deno.test("bad input: an unknown or misspelled flag (suggests the right one)", async () => {
  expect(await pretrainError(["--bacth", "64"]), "UsageError", "--bacth", "did you mean --batch?");
  expect(
    await pretrainError(["--ckpt-evry", "2"]),
    "UsageError",
    "did you mean --ckpt-every?",
  );
  const e = await pretrainError(["--frobnicate"]);
  expect(e, "UsageError", "unknown flag --frobnicate", "run with --help to list the flags");
  assert(!e.message.includes("did you mean"), e.message);
});

Deno.test("bad input: an unknown --framework exits 2 with one line (did you mean), before any work", async () => {
  const out = join(await tempDir(), "run");
  const child = spawnPretrain([...SMOKE, "--framework", "mocov4", "--out", out]);
  const res = await child.output();
  const stderr = new TextDecoder().decode(res.stderr).trim();
  assertEquals(res.code, 2, stderr);
  assertEquals(
    stderr,
    'error: unknown --framework "mocov4": did you mean mocov3? ' +
      "(choose one of mocov3, simclr, byol, swav)",
  );
  assertEquals(new TextDecoder().decode(res.stdout), "", "nothing ran: no backend line");
  assert(!(await exists(out)), "no run directory");
  // Every enumerated flag is checked the same way.
  expect(await pretrainError(["--model", "vit_mikro"]), "UsageError", "did you mean vit_micro?");
  expect(await pretrainError(["--optimizer", "adam"]), "UsageError", "did you mean adamw?");
});

Deno.test("bad input: --framework swav with a batch smaller than its prototypes", async () => {
  expect(
    await pretrainError(["--framework", "swav", "--batch", "16", "--prototypes", "20"]),
    "ConfigError",
    "--framework swav needs --batch >= --prototypes (got 16 < 20",
    "raise --batch or lower --prototypes",
  );
});

Deno.test("bad input: a non-numeric value", async () => {
  expect(await pretrainError(["--lr", "fast"]), "UsageError", '--lr must be a number, got "fast"');
  expect(await pretrainError(["--epochs", "2.5"]), "UsageError", "--epochs must be a whole number");
});

Deno.test("bad input: a zero or negative batch, epochs or lr", async () => {
  const cases: [string[], string][] = [
    [["--batch", "0"], "--batch must be >= 2, got 0"],
    [["--batch", "-8"], "--batch must be >= 2, got -8"],
    [["--epochs", "0"], "--epochs must be >= 1, got 0"],
    [["--epochs", "-1"], "--epochs must be >= 1, got -1"],
    [["--lr", "0"], "--lr must be > 0, got 0"],
    [["--lr", "-1e-3"], "--lr must be > 0, got -0.001"],
  ];
  for (const [args, text] of cases) expect(await pretrainError(args), "UsageError", text);
});

Deno.test("bad input: an image size not divisible by the patch size", async () => {
  expect(
    await pretrainError(["--image-size", "30"]),
    "ConfigError",
    "image size 30 is not divisible by patch size 7",
    "choose a patch size that divides it (1, 2, 3, 5, 6, 10, 15, 30) or resize the images",
  );
});

Deno.test("bad input: a width not divisible by the number of heads", async () => {
  expect(
    await pretrainError(["--dim", "30", "--heads", "4"]),
    "ConfigError",
    "width 30 is not divisible by 4 heads",
    "choose heads among 1, 2, 3, 5, 6, 10, 15",
  );
});

Deno.test("bad input: a backend named but unavailable (no silent fallback)", async () => {
  expect(
    await pretrainError(["--backend", "tensorflow"]),
    "BackendError",
    "@tensorflow/tfjs-node-gpu cannot load its native binding",
    "deno task setup-gpu",
    "--backend webgpu|wasm|cpu",
  );
  expect(
    await pretrainError(["--backend", "cuda"]),
    "UsageError",
    'unknown --backend "cuda" (choose one of auto, ',
    "wasm, cpu",
  );
});

// ---------------------------------------------------------------- data files

Deno.test("bad input: a CIFAR-10 file of the wrong length", async () => {
  const root = await tempDir();
  const files = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"];
  for (const f of [...files, "test_batch"]) {
    await Deno.writeFile(join(root, `${f}.bin`), new Uint8Array(3073));
  }
  await Deno.writeFile(join(root, "data_batch_3.bin"), new Uint8Array(3000));
  expect(
    await pretrainError(["--dataset", "cifar10", "--data-root", root]),
    "DataError",
    `CIFAR-10 file ${join(root, "data_batch_3.bin")} has 3000 bytes`,
    "expected a positive multiple of 3073",
    "download the CIFAR-10 binary version",
  );
});

Deno.test("bad input: an ImageFolder with no images, or with an unreadable image", async () => {
  const root = await tempDir();
  await Deno.mkdir(join(root, "cats"));
  await Deno.mkdir(join(root, "dogs"));
  await Deno.writeTextFile(join(root, "cats", "notes.txt"), "no images here");
  const flags = ["--dataset", "imagefolder", "--data-root", root, "--image-size", "28"];
  expect(
    await pretrainError(flags),
    "DataError",
    `image folder ${root} has no .png/.jpg/.jpeg images`,
    `expected ${root}/<class>/<image>.png|jpg`,
  );
  const bad = join(root, "dogs", "rex.png");
  await Deno.writeTextFile(bad, "this is not a png");
  expect(
    await pretrainError(flags),
    "DataError",
    `${bad} is not a PNG or JPEG image`,
    "replace or remove the file",
  );
  // A PNG whose header claims 60000 x 60000 pixels: refused before any allocation.
  const png = new Uint8Array(33);
  png.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, 73, 72, 68, 82]);
  new DataView(png.buffer).setUint32(16, 60000);
  new DataView(png.buffer).setUint32(20, 60000);
  png.set([8, 6], 24);
  await Deno.writeFile(bad, png);
  expect(
    await pretrainError(flags),
    "DataError",
    `cannot decode ${bad} as PNG`,
    "60000x60000 is over the limit",
    "resize it first",
  );
});

Deno.test("bad input: a results CSV with a missing column", async () => {
  const file = join(await tempDir(), "eval.csv");
  const cols = RESULT_COLUMNS.filter((c) => c !== "top5");
  await Deno.writeTextFile(file, `${cols.join(",")}\n${cols.map(() => "1").join(",")}\n`);
  expect(
    await error(() => evalMain(["--summary", "--results", file])),
    "ResultsError",
    `results file ${file} lacks column "top5"`,
    "Add the column(s) or move the file aside",
  );
});

Deno.test("bad input: an unknown feature readout for the probes", async () => {
  expect(
    await error(() => evalMain(["--baselines", "--readout", "cls+max"])),
    "UsageError",
    `unknown --readout "cls+max": did you mean cls+mean?`,
    "(choose one of pooled, cls+mean)",
  );
});

// ---------------------------------------------------------------- run directories, checkpoints

Deno.test("bad input: --resume of a run directory of a different config is refused unless --force", async () => {
  const dir = await copyRun();
  const log = await Deno.readTextFile(join(dir, "log.csv"));
  const e = await error(() => pretrainMain(["--resume", dir, "--lr", "0.003"]));
  expect(
    e,
    "ConfigError",
    `${dir} belongs to a different config`,
    "baseLr: run has 0.0015, now 0.003",
    "--force",
  );
  assertEquals(await Deno.readTextFile(join(dir, "log.csv")), log, "the refusal changed nothing");
  const lines: string[] = [];
  const logFn = console.log;
  console.log = (s: string) => lines.push(s);
  try {
    const code = await pretrainMain([
      "--resume",
      dir,
      "--lr",
      "0.003",
      "--force",
      "--max-steps",
      "3",
    ]);
    assertEquals(code, 0);
  } finally {
    console.log = logFn;
  }
  assert(lines.some((l) => l.includes(`resumed ${dir} at step 2/3`)), lines.join("\n"));
});

Deno.test("a run older than a field keeps that field's old default, whatever the preset says now", async () => {
  // As if made with fmnist-long before --crop-min and --workers existed, without --dim: its
  // config.json lacks them. Today's fmnist-long has crop-min 0.4 and D 128; the run had 0.08, 1, 64.
  const saved = { ...resolveConfig({ preset: "fmnist-long" }) } as Partial<PretrainConfig>;
  delete saved.cropMin;
  delete saved.workers;
  delete saved.dim;
  const resumed = resumeConfig(saved, { maxSteps: 3 });
  assertEquals([resumed.cropMin, resumed.workers, resumed.dim], [0.08, 1, undefined]);
  assertEquals([resumed.maxSteps, resumed.epochs], [3, 10]);

  // Into a run directory made before --crop-min, without --dim (a smoke run whose config.json
  // lost cropMin), a fresh fmnist-long run is refused: its crops and width differ from the run's.
  const dir = await copyRun();
  const file = join(dir, "config.json");
  const json = JSON.parse(await Deno.readTextFile(file));
  delete json.config.cropMin;
  await Deno.writeTextFile(file, JSON.stringify(json));
  const e = await error(() => pretrainMain(["--preset", "fmnist-long", "--out", dir]));
  expect(
    e,
    "ConfigError",
    `${dir} belongs to a different config`,
    "cropMin: run has 0.08, now 0.4",
    "dim: run has undefined, now 128",
  );
});

Deno.test("bad input: --resume of a directory that is not a run, --config of a file that is not JSON", async () => {
  const empty = await tempDir();
  expect(
    await error(() => pretrainMain(["--resume", empty])),
    "ConfigError",
    `--resume: cannot read ${empty}/config.json`,
    "Give the run directory that holds config.json",
  );
  const file = join(empty, "config.json");
  await Deno.writeTextFile(file, '{"config": {"seed": 0,'); // cut short
  expect(
    await error(() => pretrainMain(["--config", file, "--out", join(empty, "run")])),
    "ConfigError",
    `--config: ${file} is not valid JSON`,
    "start a new run with --out",
  );
});

Deno.test("bad input: a checkpoint from another architecture lists the mismatched names and shapes", async () => {
  const dir = await copyRun(); // vit_nano: width 32, depth 2
  const e = await error(() =>
    pretrainMain(["--resume", dir, "--force", "--dim", "48", "--depth", "3", "--heads", "3"])
  );
  expect(
    e,
    "CheckpointError",
    `${dir}/checkpoint.safetensors does not match the model`,
    "base_encoder.cls_token: file has [1, 1, 32], model expects [1, 1, 48]",
    "base_encoder.blocks.0.attn.qkv.weight: file has [96, 32], model expects [144, 48]",
    "missing base_encoder.blocks.2.norm1.weight [48]",
    "is it from another architecture or config?",
    "Build the model with the config the file was saved with",
  );
});

Deno.test("bad input: a truncated checkpoint (in process, and exit code 2 with one line from the CLI)", async () => {
  const dir = await copyRun();
  const ckpt = join(dir, "checkpoint.safetensors");
  await Deno.truncate(ckpt, Math.floor((await Deno.stat(ckpt)).size / 2));
  expect(
    await error(() => pretrainMain(["--resume", dir])),
    "SafetensorsError",
    `safetensors ${ckpt}`,
    "the file is truncated or corrupt",
    "copy or download it again, or re-create it",
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--resume", dir],
    cwd: ROOT,
    stdout: "null",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr).trim();
  assertEquals(out.code, 2, err);
  assert(err.startsWith(`error: safetensors ${ckpt}`), err);
  assert(!err.includes("    at "), `no stack trace: ${err}`);
});

Deno.test("bad input: a safetensors header larger than the file, or offsets out of range, allocates nothing", async () => {
  const dir = await tempDir();
  const rss0 = Deno.memoryUsage().rss;
  // 16 bytes that claim a 2^40-byte header.
  const huge = join(dir, "huge_header.safetensors");
  const bytes = new Uint8Array(16);
  new DataView(bytes.buffer).setBigUint64(0, 2n ** 40n, true);
  await Deno.writeFile(huge, bytes);
  expect(
    await error(() => loadBackbone(huge)),
    "SafetensorsError",
    `safetensors ${huge}`,
    "header length 1099511627776 exceeds the 8 bytes after the length field",
    "copy or download it again",
  );
  // A consistent header whose tensor claims 2^40 floats at offsets past the data.
  const far = join(dir, "far_offsets.safetensors");
  const header = JSON.stringify({
    "patch_embed.proj.weight": {
      dtype: "F32",
      shape: [2 ** 20, 2 ** 20],
      data_offsets: [0, 2 ** 42],
    },
  });
  const h = new TextEncoder().encode(header);
  const file = new Uint8Array(8 + h.length + 16);
  new DataView(file.buffer).setBigUint64(0, BigInt(h.length), true);
  file.set(h, 8);
  await Deno.writeFile(far, file);
  expect(
    await error(() => loadBackbone(far)),
    "SafetensorsError",
    'tensor "patch_embed.proj.weight"',
    "run past the data section (16 bytes)",
  );
  const grown = Deno.memoryUsage().rss - rss0;
  assert(grown < 64 * 2 ** 20, `RSS grew by ${(grown / 2 ** 20).toFixed(0)} MiB`);
});

Deno.test("bad input: a full disk during a checkpoint write keeps the old checkpoint byte for byte", async () => {
  const dir = await tempDir();
  const path = join(dir, "checkpoint.safetensors");
  const w = tf.tensor2d([[1, 2], [3, 4]]);
  await saveTensors(path, { w }, { step: "1" });
  const old = await Deno.readFile(path);
  // The disk fills up after 100 bytes of the new file.
  const diskFull = async (file: Deno.FsFile, bytes: Uint8Array) => {
    await file.write(bytes.subarray(0, 100));
    throw new Error("No space left on device (os error 28)");
  };
  const w2 = tf.tensor2d([[5, 6], [7, 8]]);
  try {
    for (
      const write of [
        () => saveTensors(path, { w: w2 }, { step: "2" }, { writer: diskFull }),
        () =>
          writeSafetensors(
            path,
            {
              w: { dtype: "F32", shape: [2, 2], data: new Float32Array([5, 6, 7, 8]) },
            },
            { step: "2" },
            { writer: diskFull },
          ),
      ]
    ) {
      const e = await error(write);
      expect(
        e,
        "DiskFullError",
        `the disk is full: could not write ${path}`,
        "the file that was there before is unchanged",
        "free some space (or write to another disk) and try again",
      );
      assertEquals(await Deno.readFile(path), old, "the old checkpoint is intact");
      const names = [];
      for await (const f of Deno.readDir(dir)) names.push(f.name);
      assertEquals(names, ["checkpoint.safetensors"], "no temp file is left");
    }
    assertEquals((await readSafetensors(path)).metadata.step, "1");
  } finally {
    tf.dispose([w, w2]);
  }
});

const noSmallDisk = requireTool(
  "full-disk pretraining",
  await smallDiskStatus(),
  "run the tests as root on Linux, where mount -t tmpfs works",
  { optionalInCi: true },
);

Deno.test({
  name:
    "bad input: the disk fills up mid-run: one line naming the file and the free space; --resume works",
  ignore: noSmallDisk,
  fn: async () => {
    // The smoke run's first save (checkpoint 0.64 MB + backbone 0.11 MB) fits in 1100 KiB; the
    // second cannot, since the new checkpoint is written beside the old one before the rename.
    const disk = await smallDisk(1100);
    const dir = `${disk.path}/run`;
    const flags = ["--preset", "smoke", "--backend", "wasm", "--seed", "5", "--final-eval", "none"];
    try {
      const out = await spawnPretrain([...flags, "--out", dir]).output();
      const stderr = new TextDecoder().decode(out.stderr).trim();
      assertEquals(out.code, 1, stderr);
      assertEquals(stderr.split("\n").length, 1, `one line, no stack trace:\n${stderr}`);
      assertStringIncludes(
        stderr,
        `error: the disk is full: could not write ${dir}/checkpoint.safetensors (`,
      );
      assert(/\d KiB free; [\d.]+ KiB to write\)/.test(stderr), stderr);
      assertStringIncludes(stderr, `then resume with: deno task pretrain --resume ${dir}`);
      // The last good checkpoint (step 4) and the log are intact.
      const ckpt = await readSafetensors(`${dir}/checkpoint.safetensors`);
      assertEquals(ckpt.metadata.step, "4");
      const steps = await logSteps(`${dir}/log.csv`);
      assertEquals(steps.slice(0, 8), [0, 1, 2, 3, 4, 5, 6, 7]);
      assert(steps.every((s, i) => s === i), `log steps ${steps}`);

      await disk.resize(8192);
      const resumed = await spawnPretrain(["--resume", dir]).output();
      assertEquals(resumed.code, 0, new TextDecoder().decode(resumed.stderr));
      assertEquals(await logSteps(`${dir}/log.csv`), Array.from({ length: 16 }, (_, i) => i));
      assertEquals((await readSafetensors(`${dir}/checkpoint.safetensors`)).metadata.step, "16");
    } finally {
      await disk.close();
    }
  },
});
