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

import { UserError } from "../core/errors.ts";
import { freeSpaceText } from "./atomic.ts";
import { FileSystemError, type FsProblem, fsProblem } from "./fs_errors.ts";

/** The name of the lock file inside a run directory. */
export const LOCK_FILE = ".lock";

/** Another process holds the run directory; the message names it and what to do. */
export class RunLockedError extends UserError {
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

/** Options of {@link lockRunDir}. */
export interface LockOptions {
  /** Create the directory (default true); with false, a missing directory gives `null`. */
  create?: boolean;
  /** The flag that chooses another directory, named in the messages (default `--out`). */
  dirFlag?: string;
  /** More advice for the "in use" message (after the default). */
  lockedHint?: string;
}

/**
 * Takes the lock of run directory `dir` (creating the directory), or throws a
 * {@link RunLockedError} at once if another process (or another part of this one) holds it.
 * Nothing in `dir` changes when the lock is refused. With `create: false` a directory that does
 * not exist yet is left alone, and `null` is returned. A directory that cannot be used (a
 * read-only disk, no permission, a file in the way, a full disk) gives a one-line
 * {@link FileSystemError}, and whatever this call created is removed again.
 *
 * @example
 * ```ts
 * const lock = await lockRunDir("data/runs/demo"); // a second process: RunLockedError
 * lock.release();
 * await lockRunDir("data/runs/new", { create: false }); // null: no such directory yet
 * await lockRunDir("/mnt/ro/run"); // FileSystemError: "cannot use /mnt/ro/run as a run directory: ..."
 * ```
 */
export async function lockRunDir(
  dir: string,
  opts?: LockOptions & { create?: true },
): Promise<RunLock>;
export async function lockRunDir(
  dir: string,
  opts: LockOptions & { create: false },
): Promise<RunLock | null>;
export async function lockRunDir(
  dir: string,
  { create = true, dirFlag = "--out", lockedHint = "" }: LockOptions = {},
): Promise<RunLock | null> {
  const other = `choose another directory (${dirFlag})`;
  const fail = async (e: unknown, existed: boolean, existing = dir) => {
    const p = fsProblem(e);
    if (!p) return e;
    const advice: Record<FsProblem["kind"], string> = {
      "read-only": existed
        ? `remount it read-write, or copy it to a writable disk (cp -r ${dir} NEW) and use the ` +
          `copy, or ${other}`
        : `${other} on a writable disk`,
      "permission": `give this user write access to it (chmod, chown), or ${other}`,
      "not-a-directory": `move that file away, or ${other}`,
      "is-a-directory": other,
      "no-space": `free some space, or ${other} on another disk`,
    };
    const why = p.kind === "no-space" ? `${p.what} (${await freeSpaceText(existing)})` : p.what;
    return new FileSystemError(
      `cannot use ${dir} as a run directory: ${why}; ${advice[p.kind]}` +
        (existed ? `. Nothing in ${dir} was changed` : ""),
      dir,
      { cause: e },
    );
  };
  const kind = await Deno.stat(dir).then((s) => (s.isDirectory ? "dir" : "file"), (e) => {
    if (e instanceof Deno.errors.NotFound) return "none";
    throw e;
  }).catch(async (e) => {
    throw await fail(e, false);
  });
  if (kind === "file") {
    throw new FileSystemError(
      `cannot use ${dir} as a run directory: it is a file, not a directory; ${other}`,
      dir,
    );
  }
  if (kind === "none" && !create) return null;
  // What this call creates (the first missing ancestor), removed again if the lock fails.
  const created = kind === "none" ? await firstMissing(dir) : undefined;
  const path = `${dir}/${LOCK_FILE}`;
  let file: Deno.FsFile | undefined;
  let locked = false;
  try {
    if (created) await Deno.mkdir(dir, { recursive: true });
    file = await Deno.open(path, { read: true, write: true, create: true });
    try {
      locked = await file.tryLock(true);
    } catch (e) {
      throw new Error(`cannot lock ${path} (${(e as Error).message})`, { cause: e });
    }
    if (!locked) {
      file.close();
      file = undefined;
      const holder = describe(await Deno.readTextFile(path).catch(() => ""));
      throw new RunLockedError(
        `${dir} is in use by ${holder}: wait for it to finish or stop it, or choose another ` +
          `directory (${dirFlag})${lockedHint}`,
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
  } catch (e) {
    if (e instanceof RunLockedError) throw e;
    // Undo what this call made: its directories, or a lock file it holds but could not fill in.
    if (created) await Deno.remove(created, { recursive: true }).catch(() => {});
    else if (locked) await Deno.remove(path).catch(() => {});
    try {
      file?.close();
    } catch { /* closed */ }
    throw await fail(e, kind === "dir", created ? parentOf(created) : dir);
  }
  const held = file;
  let holding = true;
  return {
    dir,
    release() {
      if (!holding) return;
      holding = false;
      try {
        held.unlockSync();
      } finally {
        held.close();
      }
    },
  };
}

/** The outermost missing directory on the way to `dir` (`dir` itself when its parent exists). */
async function firstMissing(dir: string): Promise<string> {
  let missing = dir;
  for (let up = parentOf(dir); up && up !== missing; up = parentOf(up)) {
    if (await Deno.stat(up).then(() => true, () => false)) break;
    missing = up;
  }
  return missing;
}

function parentOf(path: string): string {
  const trimmed = path.replace(/\/+$/, "");
  const i = trimmed.lastIndexOf("/");
  return i < 0 ? "." : i === 0 ? "/" : trimmed.slice(0, i);
}
