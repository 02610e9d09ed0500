/**
 * Writing files whole, safely: every file that vitssl writes in one piece (checkpoints, backbone
 * files, config.json, the dataset and feature caches, rewritten result tables and logs) goes
 * through {@link writeFileAtomic}. Readers see either the old file or the complete new one, never
 * half of it, and two writers of the same path (two processes building one cache) both succeed.
 *
 * A full disk becomes a {@link DiskFullError} that names the file, the free space left and the
 * size of the write; a read-only disk, missing permission or a file in the way of a directory
 * becomes a one-line `FileSystemError` (lib/io/fs_errors.ts).
 *
 * @example
 * ```ts
 * import { writeFileAtomic } from "./atomic.ts";
 * await writeFileAtomic("/tmp/config.json", new TextEncoder().encode("{}\n"));
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import { FileSystemError, fileSystemErrorOr } from "./fs_errors.ts";

/** Options for {@link writeFileAtomic}. */
export interface AtomicWriteOptions {
  /**
   * Writes all of `bytes` to the open temp file. Default: `file.write` until done. Tests replace
   * it to simulate failures (disk full) mid-write.
   */
  writer?: (file: Deno.FsFile, bytes: Uint8Array) => Promise<void>;
}

/**
 * The disk filled up while writing `path`. The message names the file, the space left and the
 * size of the write, then what to do (`advice`); the file that was there before is unchanged.
 */
export class DiskFullError extends UserError {
  override name = "DiskFullError";
  /** Exit code 1: the input was fine; the run could not go on. */
  override exitCode = 1;
  /** The file that could not be written. */
  path: string;
  /**
   * What happened, without the advice: "the disk is full: could not write ... (... free; ... to
   * write)".
   */
  detail: string;
  /** The size of the write that failed, in bytes, when known. */
  bytes?: number;
  constructor(
    detail: string,
    path: string,
    advice = "free some space (or write to another disk) and try again",
    options?: ErrorOptions & { bytes?: number },
  ) {
    super(`${detail}; ${advice}`, options);
    this.path = path;
    this.detail = detail;
    this.bytes = options?.bytes;
  }
}

/**
 * A size in bytes as text, in binary units: "812 B", "1.5 KiB", "440.0 MiB".
 *
 * @example
 * ```ts
 * formatBytes(3 * 2 ** 20); // "3.0 MiB"
 * ```
 */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes, u = 0;
  while (v >= 1024 && u < units.length - 1) [v, u] = [v / 1024, u + 1];
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/**
 * Whether an error is the OS saying the disk (or a quota) is full.
 *
 * @example
 * ```ts
 * isDiskFull(new Error("No space left on device (os error 28)")); // true
 * ```
 */
export function isDiskFull(e: unknown): boolean {
  const msg = e instanceof Error ? `${e.message} ${(e.cause as Error | undefined)?.message}` : "";
  return e instanceof DiskFullError || /no space left|os error 28|ENOSPC|quota exceeded/i.test(msg);
}

/**
 * Free space, as text ("1.2 MiB free"), on the filesystem that holds `dir` (from `df`; "free space
 * unknown" where `df` is not there).
 *
 * @example
 * ```ts
 * console.log(await freeSpaceText("/tmp")); // "21.3 GiB free"
 * ```
 */
export async function freeSpaceText(dir: string): Promise<string> {
  try {
    const out = await new Deno.Command("df", {
      args: ["-Pk", dir],
      stdout: "piped",
      stderr: "null",
    })
      .output();
    const fields = new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!.split(/\s+/);
    const kib = Number(fields[3]);
    if (!out.success || !Number.isFinite(kib)) return "free space unknown";
    return `${kib < 1024 ? `${kib} KiB` : formatBytes(kib * 1024)} free`;
  } catch {
    return "free space unknown";
  }
}

/**
 * Turns a full-disk error from writing `bytes` bytes to `path` into a {@link DiskFullError} (with
 * the free space and the size of the write, then `note`); returns any other error unchanged.
 *
 * @example
 * ```ts
 * try { await Deno.writeTextFile("run/log.csv", row, { append: true }); }
 * catch (e) { throw await diskFullOr(e, "run/log.csv", "", row.length); }
 * // "the disk is full: could not write run/log.csv (12 KiB free; 84 B to write)"
 * ```
 */
export async function diskFullOr(
  e: unknown,
  path: string,
  note = "",
  bytes?: number,
): Promise<unknown> {
  if (e instanceof DiskFullError || !isDiskFull(e)) return e;
  const free = await freeSpaceText(splitPath(path).dir);
  const size = bytes === undefined ? "" : `; ${formatBytes(bytes)} to write`;
  const detail = `the disk is full: could not write ${path} (${free}${size})${note}`;
  return new DiskFullError(detail, path, undefined, { cause: e, bytes });
}

/** A path's directory (`"."` for a bare name) and its last component. */
function splitPath(path: string): { dir: string; name: string } {
  const i = Math.max(path.lastIndexOf("/"), path.lastIndexOf("\\"));
  return {
    dir: i < 0 ? "." : i === 0 ? path.slice(0, 1) : path.slice(0, i),
    name: path.slice(i + 1),
  };
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

/**
 * Writes `data` (bytes, or parts written one after another) to `path` atomically: a temp file with
 * a unique name in the same directory is written, fsynced and renamed over `path`, then the
 * directory is fsynced where the OS allows. On failure the temp file is removed, any existing file
 * at `path` is left untouched, and an error naming `path` is thrown (a {@link DiskFullError} when
 * the disk is full, a `FileSystemError` for a read-only disk, missing permission or a file in the
 * way; the original error as `cause`).
 *
 * @example
 * ```ts
 * await writeFileAtomic("run/config.json", new TextEncoder().encode("{}"));
 * await writeFileAtomic("cache.bin", [header, body]); // parts, without concatenating them
 * ```
 */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | Uint8Array[],
  options: AtomicWriteOptions = {},
): Promise<void> {
  const { dir, name } = splitPath(path);
  const tmp = `${path.slice(0, path.length - name.length)}.${name}.tmp-${
    crypto.randomUUID().slice(0, 8)
  }`;
  let file: Deno.FsFile | undefined;
  try {
    file = await Deno.open(tmp, { write: true, createNew: true, mode: 0o644 });
    for (const part of Array.isArray(data) ? data : [data]) {
      await (options.writer ?? writeAll)(file, part);
    }
    await file.sync();
    file.close();
    file = undefined;
    await Deno.rename(tmp, path);
  } catch (e) {
    try {
      file?.close();
    } catch { /* already closed */ }
    await Deno.remove(tmp).catch(() => {});
    const parts = Array.isArray(data) ? data : [data];
    const bytes = parts.reduce((n, p) => n + p.length, 0);
    const full = await diskFullOr(e, path, "; the file that was there before is unchanged", bytes);
    if (full instanceof DiskFullError) throw full;
    const unchanged = "; any existing file there was left unchanged";
    const fsError = fileSystemErrorOr(e, path, `could not write ${path}`, unchanged);
    if (fsError instanceof FileSystemError) throw fsError;
    throw new Error(
      `could not write ${path} (${
        (e as Error).message
      }); any existing file there was left unchanged`,
      { cause: e },
    );
  }
  // Persist the rename itself. Directories cannot be opened/synced on every OS: best effort.
  try {
    const d = await Deno.open(dir, { read: true });
    try {
      await d.sync();
    } finally {
      d.close();
    }
  } catch { /* not supported here */ }
}

/**
 * Whether `name` is a temp file that {@link writeFileAtomic} leaves behind when it is killed
 * before its rename (`.checkpoint.safetensors.tmp-1a2b3c4d`); the file it was to replace is intact.
 *
 * @example
 * ```ts
 * isAtomicTempFile(".config.json.tmp-0f3a9c21"); // true
 * ```
 */
export function isAtomicTempFile(name: string): boolean {
  return /^\..+\.tmp-[0-9a-f]{8}$/.test(name);
}
