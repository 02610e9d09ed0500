/**
 * One process per run directory (lib/io/lock.ts): a second holder is refused with the first one's
 * pid, a lock left by a SIGKILLed process is taken over, and two `deno task pretrain` on one
 * directory leave a log.csv with every step exactly once.
 */
import { assert, assertEquals, assertInstanceOf, assertMatch, assertRejects } from "@std/assert";
import { LOCK_FILE, lockRunDir, RunLockedError } from "../../lib/io/lock.ts";
import { logSteps, spawnPretrain } from "../_helpers/pretrain_child.ts";

const LOCK_MODULE = new URL("../../lib/io/lock.ts", import.meta.url).href;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

Deno.test("lockRunDir: a second holder is refused (naming this pid) until the first releases", async () => {
  const dir = `${await Deno.makeTempDir()}/run`;
  try {
    assertEquals(await lockRunDir(dir, { create: false }), null, "no directory: nothing to lock");
    assert(!(await Deno.stat(dir).then(() => true, () => false)), "and nothing was created");
    const first = await lockRunDir(dir);
    const e = await assertRejects(() => lockRunDir(dir));
    assertInstanceOf(e, RunLockedError);
    assertMatch(e.message, new RegExp(`is in use by process ${Deno.pid} on `));
    assertMatch(e.message, /choose another directory \(--out\)$/);
    assertEquals(e.message.split("\n").length, 1, "one line");
    first.release();
    first.release(); // twice is harmless
    const again = await lockRunDir(dir);
    again.release();
    assertEquals([...Deno.readDirSync(dir)].map((f) => f.name), [LOCK_FILE]);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

Deno.test("lockRunDir: the lock of a SIGKILLed process is stale and taken over", async () => {
  const dir = await Deno.makeTempDir();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      `const { lockRunDir } = await import(${JSON.stringify(LOCK_MODULE)});
       await lockRunDir(${JSON.stringify(dir)}); console.log("locked");
       await new Promise((r) => setTimeout(r, 60000));`,
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  try {
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assertEquals(new TextDecoder().decode(value).trim(), "locked");
    reader.releaseLock();
    const e = await assertRejects(() => lockRunDir(dir), RunLockedError);
    assertMatch(e.message, new RegExp(`process ${child.pid} `));
    child.kill("SIGKILL");
    await child.status;
    const lock = await lockRunDir(dir); // the lock file is still there, its lock is gone
    lock.release();
  } finally {
    try {
      child.kill("SIGKILL");
    } catch { /* already dead */ }
    await child.stdout.cancel().catch(() => {});
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("two pretrain processes on one --out: the second is refused with one line; the first logs every step once", async () => {
  const dir = `${await Deno.makeTempDir()}/run`;
  const flags = ["--preset", "smoke", "--backend", "wasm", "--epochs", "12", "--ckpt-every", "4"];
  const first = spawnPretrain([...flags, "--final-eval", "none", "--out", dir]);
  try {
    // Wait until the first run is training.
    for (let t = 0; (await logSteps(`${dir}/log.csv`)).length === 0; t++) {
      assert(t < 600, "the first run did not start within 60 s");
      await sleep(100);
    }
    const before = await Deno.readTextFile(`${dir}/config.json`);
    // A second run on the same directory, and a resume of it, both while the first runs.
    const [second, resume] = await Promise.all(
      [[...flags, "--out", dir], ["--resume", dir]].map((args) => spawnPretrain(args).output()),
    );
    for (const [what, out] of [["second run", second], ["resume", resume]] as const) {
      const stderr = new TextDecoder().decode(out.stderr).trim();
      assertEquals(out.code, 2, `${what}: ${stderr}`);
      const lines = stderr.split("\n");
      assertEquals(lines.length, 1, `${what}: one line, got:\n${stderr}`);
      assertMatch(lines[0], new RegExp(`^error: ${dir} is in use by process ${first.pid} on `));
      assertMatch(lines[0], /wait for it to finish or stop it, or choose another directory/);
    }
    assertEquals(await Deno.readTextFile(`${dir}/config.json`), before, "config.json unchanged");
    const done = await first.output();
    assertEquals(done.code, 0, new TextDecoder().decode(done.stderr));
    const steps = await logSteps(`${dir}/log.csv`);
    assertEquals(steps, Array.from({ length: 96 }, (_, i) => i), "every step exactly once");
  } finally {
    try {
      first.kill("SIGKILL");
    } catch { /* done */ }
    await first.status;
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});
