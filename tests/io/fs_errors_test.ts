/**
 * File-system errors a user can fix (lib/io/fs_errors.ts): real OS errors are told apart (not a
 * directory, is a directory, read-only), and the writers of run files (writeFileAtomic,
 * appendRows) turn them into one-line FileSystemErrors that leave the old file as it was.
 */
import { assert, assertEquals, assertInstanceOf } from "@std/assert";
import { FileSystemError, fileSystemErrorOr, fsProblem } from "../../lib/io/fs_errors.ts";
import { formatBytes, writeFileAtomic } from "../../lib/io/atomic.ts";
import { appendRows } from "../../lib/train/rundir.ts";
import { requireTool, smallDisk, smallDiskStatus } from "../_helpers/system_tools.ts";
import { listDir } from "../_helpers/temp.ts";

Deno.test("fsProblem: real ENOTDIR and EISDIR errors; other errors are not file-system problems", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/file`, "x");
    const notDir = await Deno.stat(`${dir}/file/below`).catch((e) => e);
    assertEquals(fsProblem(notDir)?.kind, "not-a-directory");
    const isDir = await Deno.readFile(dir).catch((e) => e);
    assertEquals(fsProblem(isDir)?.kind, "is-a-directory");
    // By the "(os error N)" text alone, and through `cause`.
    assertEquals(fsProblem(new Error("Read-only file system (os error 30)"))?.kind, "read-only");
    assertEquals(fsProblem(new Error("Permission denied (os error 13)"))?.kind, "permission");
    assertEquals(
      fsProblem(new Error("wrapped", { cause: new Error("x (os error 28)") }))?.kind,
      "no-space",
    );
    const missing = await Deno.stat(`${dir}/nothing`).catch((e) => e);
    assertEquals(fsProblem(missing), undefined, "a missing file is not one of them");
    assertEquals(fsProblem(new Error("boom")), undefined);
    const plain = new Error("boom");
    assert(fileSystemErrorOr(plain, "p", "doing") === plain, "others are returned unchanged");
    const e = fileSystemErrorOr(notDir, `${dir}/file/below`, "could not write it") as Error;
    assertInstanceOf(e, FileSystemError);
    assertEquals(
      e.message,
      "could not write it: a part of its path is a file, not a directory; move that file away, " +
        "or use another path",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("formatBytes: binary units with one decimal", () => {
  assertEquals(formatBytes(0), "0 B");
  assertEquals(formatBytes(1023), "1023 B");
  assertEquals(formatBytes(1536), "1.5 KiB");
  assertEquals(formatBytes(440 * 2 ** 20), "440.0 MiB");
  assertEquals(formatBytes(3 * 2 ** 30 + 2 ** 29), "3.5 GiB");
});

const noMount = requireTool(
  "read-only file writes",
  await smallDiskStatus(),
  "run the tests as root on Linux, where mount -t tmpfs works",
  { optionalInCi: true },
);

Deno.test({
  name: "writeFileAtomic and appendRows on a read-only mount: one-line FileSystemError, file kept",
  ignore: noMount,
  fn: async () => {
    const disk = await smallDisk(256);
    const remount = (mode: string) =>
      new Deno.Command("mount", { args: ["-o", `remount,${mode}`, disk.path] }).output();
    try {
      const path = `${disk.path}/config.json`, log = `${disk.path}/log.csv`;
      await Deno.writeTextFile(path, "{}\n");
      await Deno.writeTextFile(log, "step,loss\n0,1\n");
      await remount("ro");
      const e = await writeFileAtomic(path, new TextEncoder().encode("{ }\n")).catch((e) => e);
      assertInstanceOf(e, FileSystemError);
      assertEquals(
        e.message,
        `could not write ${path}: it is on a read-only file system; any existing file there ` +
          "was left unchanged; make the disk writable (remount it read-write), or use another one",
      );
      const a = await appendRows(log, ["step", "loss"], [{ step: 1, loss: 2 }]).catch((e) => e);
      assertInstanceOf(a, FileSystemError);
      assertEquals(
        a.message,
        `could not append to ${log}: it is on a read-only file system; make the disk writable ` +
          "(remount it read-write), or use another one",
      );
      assertEquals(await Deno.readTextFile(path), "{}\n");
      assertEquals(await Deno.readTextFile(log), "step,loss\n0,1\n");
      assertEquals(await listDir(disk.path), ["config.json", "log.csv"]);
    } finally {
      await remount("rw").catch(() => {});
      await disk.close();
    }
  },
});
