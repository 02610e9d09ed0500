/**
 * File-system errors on a run directory are one `error:` line (issue 21, item 4 and the smaller
 * messages): a read-only mount (`--resume` and a new `--out`), a file in the way, a full disk at
 * the lock, a full disk before and after the first checkpoint, and the experiments runner's lock
 * message. Each through `deno task pretrain` as a child process where the exit code matters; the
 * directory is checked byte for byte afterwards. The mount tests need root and `mount` (tmpfs);
 * elsewhere they are skipped with one line.
 */
import { assert, assertEquals, assertInstanceOf, assertStringIncludes } from "@std/assert";
import { lockRunDir, RunLockedError } from "../../lib/io/lock.ts";
import { FileSystemError } from "../../lib/io/fs_errors.ts";
import { runSuite } from "../../lib/experiments/run.ts";
import { budgetConfigs } from "../../lib/experiments/suites.ts";
import { spawnPretrain } from "../_helpers/pretrain_child.ts";
import { requireTool, smallDisk, smallDiskStatus } from "../_helpers/system_tools.ts";
import { listDir, removeOnUnload } from "../_helpers/temp.ts";

const dirs: string[] = [];
removeOnUnload(dirs);
async function tempDir(): Promise<string> {
  const d = await Deno.makeTempDir({ prefix: "vitssl_run_dir_errors_" });
  dirs.push(d);
  return d;
}

const SMOKE = ["--preset", "smoke", "--backend", "wasm", "--final-eval", "none"];

/** Runs `deno task pretrain ...args`; its exit code and stderr lines. */
async function pretrainCli(args: string[]): Promise<{ code: number; lines: string[] }> {
  const out = await spawnPretrain(args).output();
  const stderr = new TextDecoder().decode(out.stderr).trim();
  return { code: out.code, lines: stderr ? stderr.split("\n") : [] };
}

/** Every file under `dir` (relative path -> bytes), to compare a directory before and after. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const files: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    for await (const e of Deno.readDir(d)) {
      const path = `${d}/${e.name}`;
      if (e.isDirectory) await walk(path, `${rel}${e.name}/`);
      else {
        const bytes = await Deno.readFile(path);
        const hash = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
        files[`${rel}${e.name}`] = `${bytes.length}:${Array.from(hash.subarray(0, 8)).join(".")}`;
      }
    }
  };
  await walk(dir, "");
  return files;
}

/** KiB with one decimal, computed here: the size a message should state. */
const kib = (bytes: number) => `${(bytes / 1024).toFixed(1)} KiB`;

Deno.test("run directory: a file in the way is one error line, exit 2, and nothing is created", async () => {
  const root = await tempDir();
  const file = `${root}/not-a-dir`;
  await Deno.writeTextFile(file, "a file, not a directory\n");
  // A path through a file (ENOTDIR), and the file itself as the run directory.
  for (
    const [out, cause] of [
      [`${file}/run`, "a part of its path is a file, not a directory"],
      [file, "it is a file, not a directory"],
    ]
  ) {
    const { code, lines } = await pretrainCli([...SMOKE, "--max-steps", "2", "--out", out]);
    assertEquals(code, 2, lines.join("\n"));
    assertEquals(lines.length, 1, `one line, no stack trace:\n${lines.join("\n")}`);
    assertEquals(lines[0], lines[0].trim());
    assertStringIncludes(lines[0], `error: cannot use ${out} as a run directory: ${cause}; `);
    assertStringIncludes(lines[0], "choose another directory (--out)");
    assertEquals(
      await Deno.readTextFile(file),
      "a file, not a directory\n",
      "the file is unchanged",
    );
    assertEquals(await listDir(root), ["not-a-dir"], "nothing was created");
  }
  // In process: the error class, for the library and the task runner's exit code.
  const e = await lockRunDir(`${file}/run`).catch((e) => e);
  assertInstanceOf(e, FileSystemError);
  assertEquals(e.path, `${file}/run`);
  const e2 = await lockRunDir(file, { create: false }).catch((e) => e);
  assertInstanceOf(e2, FileSystemError, "not null: the path exists but is not a directory");
});

Deno.test("experiments: a run directory in use says --runs-dir and --jobs, not --out", async () => {
  const root = await tempDir();
  const runsDir = `${root}/runs`;
  const [first] = budgetConfigs("posemb", "smoke");
  const held = await lockRunDir(`${runsDir}/${first.runId}`);
  try {
    const e = await runSuite("posemb", "smoke", {
      runsDir,
      resultsDir: `${root}/results`,
      print: () => {},
    }).catch((e) => e);
    assertInstanceOf(e, RunLockedError);
    assertStringIncludes(e.message, `${runsDir}/${first.runId} is in use by process ${Deno.pid} `);
    assertStringIncludes(
      e.message,
      "wait for it to finish or stop it, or choose another directory (--runs-dir); to train " +
        "one suite's runs side by side, give one command --jobs N",
    );
    assert(!e.message.includes("--out"), e.message);
    assertEquals(e.message.split("\n").length, 1);
  } finally {
    held.release();
  }
  assertEquals(await listDir(`${runsDir}/${first.runId}`), [".lock"], "the run was not started");
});

const noMount = requireTool(
  "read-only and full-disk run directory",
  await smallDiskStatus(),
  "run the tests as root on Linux, where mount -t tmpfs works",
  { optionalInCi: true },
);

/** `mount -o remount,ro|rw PATH`. */
async function remount(path: string, mode: "ro" | "rw"): Promise<void> {
  const out = await new Deno.Command("mount", {
    args: ["-o", `remount,${mode}`, path],
    stderr: "piped",
  }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

Deno.test({
  name:
    "run directory on a read-only mount: --resume and a new --out give one line, exit 2, nothing changed",
  ignore: noMount,
  fn: async () => {
    const disk = await smallDisk(8192);
    const dir = `${disk.path}/run`;
    try {
      const made = await pretrainCli([...SMOKE, "--max-steps", "4", "--out", dir]);
      assertEquals(made.code, 0, made.lines.join("\n"));
      await remount(disk.path, "ro");
      const before = await snapshot(disk.path);
      assert(
        "run/checkpoint.safetensors" in before && "run/.lock" in before,
        Object.keys(before).join(),
      );

      const resumed = await pretrainCli(["--resume", dir, "--max-steps", "8"]);
      assertEquals(resumed.code, 2, resumed.lines.join("\n"));
      assertEquals(resumed.lines.length, 1, `one line:\n${resumed.lines.join("\n")}`);
      assertEquals(
        resumed.lines[0],
        `error: cannot use ${dir} as a run directory: it is on a read-only file system; remount ` +
          `it read-write, or copy it to a writable disk (cp -r ${dir} NEW) and use the copy, or ` +
          `choose another directory (--out). Nothing in ${dir} was changed`,
      );

      const fresh = `${disk.path}/new/run`;
      const started = await pretrainCli([...SMOKE, "--max-steps", "2", "--out", fresh]);
      assertEquals(started.code, 2, started.lines.join("\n"));
      assertEquals(started.lines.length, 1, `one line:\n${started.lines.join("\n")}`);
      assertEquals(
        started.lines[0],
        `error: cannot use ${fresh} as a run directory: it is on a read-only file system; ` +
          "choose another directory (--out) on a writable disk",
      );
      assertEquals(await snapshot(disk.path), before, "nothing on the mount changed");

      // Writable again: the same --resume continues.
      await remount(disk.path, "rw");
      const again = await pretrainCli(["--resume", dir, "--max-steps", "8"]);
      assertEquals(again.code, 0, again.lines.join("\n"));
    } finally {
      await remount(disk.path, "rw").catch(() => {});
      await disk.close();
    }
  },
});

Deno.test({
  name: "run directory on a full disk: the lock is refused with the free space; nothing is left",
  ignore: noMount,
  fn: async () => {
    const disk = await smallDisk(64);
    try {
      // Fill the disk to the last byte.
      const filler = await Deno.open(`${disk.path}/filler`, { write: true, create: true });
      try {
        const chunk = new Uint8Array(4096);
        for (;;) await filler.write(chunk);
      } catch {
        /* full */
      } finally {
        filler.close();
      }
      const e = await lockRunDir(`${disk.path}/a/run`).catch((e) => e);
      assertInstanceOf(e, FileSystemError);
      assert(
        /^cannot use .*\/a\/run as a run directory: the disk is full \(\d+ KiB free\); free some space, or choose another directory \(--out\) on another disk$/
          .test(e.message),
        e.message,
      );
      assertEquals(await listDir(disk.path), ["filler"], "no directory or lock file is left");
    } finally {
      await disk.close();
    }
  },
});

Deno.test({
  name:
    "a full disk before the first checkpoint says there is none and its size; after it, what to free",
  ignore: noMount,
  fn: async () => {
    // 400 KiB holds config.json and the logs but not the smoke run's checkpoint (about 640 KiB).
    const disk = await smallDisk(400);
    const dir = `${disk.path}/run`;
    const flags = [...SMOKE, "--seed", "5", "--out", dir];
    try {
      const first = await pretrainCli(flags);
      assertEquals(first.code, 1, first.lines.join("\n"));
      assertEquals(first.lines.length, 1, `one line:\n${first.lines.join("\n")}`);
      const line = first.lines[0];
      assertStringIncludes(line, `error: the disk is full: could not write ${dir}/checkpoint`);
      assert(!line.includes("intact"), `no checkpoint exists, none is intact: ${line}`);
      assert(!line.includes("--resume"), line);
      const need = /the checkpoint needs about ([\d.]+ KiB)\), then run the same command again$/
        .exec(line);
      assert(need, line);
      assertStringIncludes(line, "no checkpoint was written yet, so there is nothing to resume");
      assert(/\(\d+ KiB free; [\d.]+ KiB to write\)/.test(line), line);

      // With room for one checkpoint but not two (the new one is written beside the old one).
      await disk.resize(1100);
      const second = await pretrainCli(flags);
      assertEquals(second.code, 1, second.lines.join("\n"));
      assertEquals(second.lines.length, 1, `one line:\n${second.lines.join("\n")}`);
      const ckpt = (await Deno.stat(`${dir}/checkpoint.safetensors`)).size;
      const backbone = (await Deno.stat(`${dir}/backbone.safetensors`)).size;
      assertEquals(need![1], kib(ckpt), "the size stated before is the checkpoint's size");
      assertStringIncludes(
        second.lines[0],
        `; the last checkpoint and the log of ${dir} are intact: free about ` +
          `${kib(ckpt + backbone)} (a checkpoint and backbone are written beside the old ones ` +
          `before replacing them), then resume with: deno task pretrain --resume ${dir}`,
      );
    } finally {
      await disk.close();
    }
  },
});
