/**
 * One process per run directory. Pretraining, a resume and an experiment run hold an exclusive
 * lock on `<dir>/.lock` for as long as they write there; a second process that asks for the same
 * directory is refused at once with a {@link RunLockedError} naming the holder, before it changes
 * anything. The lock is the OS's advisory file lock (flock), so a holder that is killed, even with
 * SIGKILL, releases it with its process: a stale lock file is simply taken over.
 *
 * @example
 * ```ts
 * import { lockRunDir } from "./lock.ts";
 * const lock = await lockRunDir("data/runs/demo");
 * try {
 *   // ... write the run ...
 * } finally {
 *   lock.release();
 * }
 * ```
 * @module
 */

/** The name of the lock file inside a run directory. */
export const LOCK_FILE = ".lock";

/** Another process holds the run directory; the message names it and what to do. */
export class RunLockedError extends Error {
  override name = "RunLockedError";
}

/** A held lock on a run directory. */
export interface RunLock {
  /** The run directory. */
  dir: string;
  /** Releases the lock (the lock file stays; it only records the last holder). */
  release(): void;
}

/** Who holds a lock: written into the lock file by the holder, read by a refused process. */
interface Holder {
  pid: number;
  host: string;
  since: string;
  command: string;
}

function describe(text: string): string {
  try {
    const h = JSON.parse(text) as Holder;
    return `process ${h.pid} on ${h.host} (${h.command}, since ${h.since})`;
  } catch {
    return "another process";
  }
}

/**
 * Takes the lock of run directory `dir` (creating the directory), or throws a
 * {@link RunLockedError} at once if another process (or another part of this one) holds it.
 * Nothing in `dir` changes when the lock is refused. With `create: false` a directory that does
 * not exist yet is left alone, and `null` is returned.
 *
 * @example
 * ```ts
 * const lock = await lockRunDir("data/runs/demo"); // a second process: RunLockedError
 * lock.release();
 * await lockRunDir("data/runs/new", { create: false }); // null: no such directory yet
 * ```
 */
export async function lockRunDir(dir: string): Promise<RunLock>;
export async function lockRunDir(dir: string, opts: { create: false }): Promise<RunLock | null>;
export async function lockRunDir(
  dir: string,
  { create = true } = {},
): Promise<RunLock | null> {
  if (create) {
    await Deno.mkdir(dir, { recursive: true });
  } else if (!(await Deno.stat(dir).then((s) => s.isDirectory, () => false))) {
    return null;
  }
  const path = `${dir}/${LOCK_FILE}`;
  const file = await Deno.open(path, { read: true, write: true, create: true });
  let locked = false;
  try {
    locked = await file.tryLock(true);
  } catch (e) {
    file.close();
    throw new Error(`cannot lock ${path} (${(e as Error).message})`, { cause: e });
  }
  if (!locked) {
    file.close();
    const holder = describe(await Deno.readTextFile(path).catch(() => ""));
    throw new RunLockedError(
      `${dir} is in use by ${holder}: wait for it to finish or stop it, or choose another ` +
        "directory (--out)",
    );
  }
  const holder: Holder = {
    pid: Deno.pid,
    host: Deno.hostname(),
    since: new Date().toISOString(),
    command: [Deno.mainModule.replace(/^.*\//, ""), ...Deno.args].join(" ").slice(0, 300),
  };
  await file.truncate(0);
  await file.write(new TextEncoder().encode(JSON.stringify(holder) + "\n"));
  let held = true;
  return {
    dir,
    release() {
      if (!held) return;
      held = false;
      try {
        file.unlockSync();
      } finally {
        file.close();
      }
    },
  };
}
