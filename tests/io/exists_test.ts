import { assert, assertEquals, assertRejects } from "@std/assert";
import { pathExists } from "../../lib/io/exists.ts";

Deno.test("pathExists: true for a file and a directory, false for a missing path", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/a.txt`, "x");
    assertEquals(await pathExists(`${dir}/a.txt`), true);
    assertEquals(await pathExists(dir), true);
    assertEquals(await pathExists(`${dir}/missing.txt`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pathExists: a path it cannot look at is an error, not 'missing'", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // A file used as a directory: ENOTDIR, which must not read as "no checkpoint, start over".
    await Deno.writeTextFile(`${dir}/file`, "x");
    const e = await assertRejects(() => pathExists(`${dir}/file/checkpoint.safetensors`));
    assert(!(e instanceof Deno.errors.NotFound));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
