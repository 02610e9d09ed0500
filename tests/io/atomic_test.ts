/**
 * Atomic whole-file writes (lib/io/atomic.ts): a failed write leaves the old file and no temp file,
 * concurrent writers of one path all succeed, and a real full disk (a small tmpfs the test mounts)
 * gives a DiskFullError naming the file and the free space.
 */
import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import { DiskFullError, isAtomicTempFile, writeFileAtomic } from "../../lib/io/atomic.ts";
import { requireTool, smallDisk, smallDiskStatus } from "../_helpers/system_tools.ts";
import { listDir } from "../_helpers/temp.ts";

const enc = new TextEncoder();

Deno.test("writeFileAtomic: a failing write leaves the old file intact and no temp file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.safetensors`;
    await Deno.writeTextFile(path, "old contents");
    const diskFull = new Error("No space left on device (os error 28), simulated");
    let wrote = 0;
    const e = await assertRejects(
      () =>
        writeFileAtomic(path, new Uint8Array(1000).fill(7), {
          // Writes part of the data, then fails as a full disk would.
          writer: async (file, bytes) => {
            wrote = await file.write(bytes.subarray(0, 100));
            throw diskFull;
          },
        }),
      Error,
    );
    assertEquals(wrote, 100);
    assertInstanceOf(e, DiskFullError);
    assertStringIncludes(e.message, `the disk is full: could not write ${path} (`);
    assertMatch(e.message, /( free|free space unknown); 1000 B to write\)/);
    assertEquals((e as DiskFullError).bytes, 1000);
    assertStringIncludes(e.message, "the file that was there before is unchanged");
    assertEquals(e.cause, diskFull);
    assertEquals(await Deno.readTextFile(path), "old contents");
    assertEquals(await listDir(dir), ["model.safetensors"]);

    // Same without an existing file: nothing is left behind at all.
    const fresh = `${dir}/fresh.bin`;
    await assertRejects(() =>
      writeFileAtomic(fresh, new Uint8Array(10), {
        writer: () => Promise.reject(new Error("boom")),
      })
    );
    assertEquals(await listDir(dir), ["model.safetensors"]);

    // A missing directory fails cleanly too.
    await assertRejects(() => writeFileAtomic(`${dir}/no/such/dir/x.bin`, new Uint8Array(1)));

    // And the default writer succeeds, replacing the file.
    await writeFileAtomic(path, enc.encode("new"));
    assertEquals(await Deno.readTextFile(path), "new");
    assertEquals(await listDir(dir), ["model.safetensors"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic: relative path in the current directory", async () => {
  const dir = await Deno.makeTempDir();
  const cwd = Deno.cwd();
  try {
    Deno.chdir(dir);
    await writeFileAtomic("plain.bin", new Uint8Array([1, 2]));
    assertEquals(Array.from(await Deno.readFile(`${dir}/plain.bin`)), [1, 2]);
    assertEquals(await listDir(dir), ["plain.bin"]);
  } finally {
    Deno.chdir(cwd);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic: parts are written one after another", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await writeFileAtomic(`${dir}/a.bin`, [
      new Uint8Array([1, 2]),
      new Uint8Array(0),
      enc.encode("z"),
    ]);
    assertEquals(Array.from(await Deno.readFile(`${dir}/a.bin`)), [1, 2, 0x7a]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic: 8 concurrent writers of one path all succeed; one complete file wins", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/cache.bin`;
    // Distinct, large-ish contents, so that a mixed or torn result would show.
    const contents = Array.from({ length: 8 }, (_, i) => new Uint8Array(300_000).fill(i + 1));
    await Promise.all(
      contents.map((c) => writeFileAtomic(path, [c.subarray(0, 1000), c.subarray(1000)])),
    );
    const got = await Deno.readFile(path);
    assertEquals(got.length, 300_000);
    assert(got.every((v) => v === got[0]) && got[0] >= 1 && got[0] <= 8, "one writer's whole file");
    assertEquals(await listDir(dir), ["cache.bin"], "no temp file is left");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("isAtomicTempFile: the temp names writeFileAtomic uses, and nothing else", () => {
  assert(isAtomicTempFile(".checkpoint.safetensors.tmp-0a1b2c3d"));
  assert(!isAtomicTempFile("checkpoint.safetensors"));
  assert(!isAtomicTempFile(".lock"));
  assert(!isAtomicTempFile(".x.tmp-0a1b2c3"), "7 hex digits");
});

const noDisk = requireTool(
  "small-filesystem (full disk)",
  await smallDiskStatus(),
  "run the tests as root on Linux, where mount -t tmpfs works",
  { optionalInCi: true },
);

Deno.test({
  name:
    "writeFileAtomic: a real full disk gives a DiskFullError with the free space; the old file stays",
  ignore: noDisk,
  fn: async () => {
    const disk = await smallDisk(256);
    try {
      const path = `${disk.path}/checkpoint.safetensors`;
      const old = new Uint8Array(100_000).fill(3);
      await writeFileAtomic(path, old);
      // The new file needs 200 kB beside the old 100 kB: more than the 256 KiB disk holds.
      const e = await assertRejects(() => writeFileAtomic(path, new Uint8Array(200_000).fill(4)));
      assertInstanceOf(e, DiskFullError);
      assertEquals(e.path, path);
      assertStringIncludes(e.message, `could not write ${path}`);
      // 200,000 bytes = 195.3 KiB.
      assertMatch(e.message, /\(\d+(\.\d)? KiB free; 195\.3 KiB to write\)/);
      assertEquals(await Deno.readFile(path), old, "the old file is intact");
      assertEquals(await listDir(disk.path), ["checkpoint.safetensors"], "no temp file is left");
      // With room, the same write succeeds.
      await disk.resize(1024);
      await writeFileAtomic(path, new Uint8Array(200_000).fill(4));
      assertEquals((await Deno.readFile(path))[199_999], 4);
    } finally {
      await disk.close();
    }
  },
});
