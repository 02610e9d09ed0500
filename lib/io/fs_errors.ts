/**
 * File-system errors a user can fix, as one line: a read-only disk, missing permission, a file
 * where a directory should be, a full disk. {@link fsProblem} tells them apart (by the OS error
 * code), and {@link FileSystemError} carries the line that names the path, the cause and what to
 * do; the task runner prints it as `error: ...` with exit code 2 (lib/cli/main.ts).
 *
 * @example
 * ```ts
 * import { fileSystemErrorOr } from "./fs_errors.ts";
 * try { await Deno.writeTextFile("run/log.csv", "x"); }
 * catch (e) { throw fileSystemErrorOr(e, "run/log.csv", "could not write run/log.csv"); }
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";

/**
 * A path that cannot be used: the message names it, why (read-only, permission denied, not a
 * directory, disk full) and what to do; nothing was changed there.
 */
export class FileSystemError extends UserError {
  override name = "FileSystemError";
  /** The path at fault. */
  path: string;
  /** @param message the whole line; @param path the path at fault. */
  constructor(message: string, path: string, options?: ErrorOptions) {
    super(message, options);
    this.path = path;
  }
}

/** What went wrong, in words, and the usual way out. */
export interface FsProblem {
  /** The kind, by the OS error code. */
  kind: "read-only" | "permission" | "not-a-directory" | "is-a-directory" | "no-space";
  /** "it is on a read-only file system" ... */
  what: string;
  /** "make the disk writable (remount it read-write), or use another one" ... */
  advice: string;
}

const PROBLEMS: Record<string, FsProblem> = {
  EROFS: {
    kind: "read-only",
    what: "it is on a read-only file system",
    advice: "make the disk writable (remount it read-write), or use another one",
  },
  EACCES: {
    kind: "permission",
    what: "permission denied",
    advice: "give this user write access (chmod, chown), or use another path",
  },
  ENOTDIR: {
    kind: "not-a-directory",
    what: "a part of its path is a file, not a directory",
    advice: "move that file away, or use another path",
  },
  EISDIR: {
    kind: "is-a-directory",
    what: "it is a directory",
    advice: "give the path of a file",
  },
  ENOSPC: {
    kind: "no-space",
    what: "the disk is full",
    advice: "free some space (or use another disk)",
  },
};
PROBLEMS.EPERM = PROBLEMS.EACCES;
PROBLEMS.EDQUOT = PROBLEMS.ENOSPC;

/** The OS error code of a Deno error ("EROFS"), from `code` or the "(os error N)" text. */
function errorCode(e: unknown): string | undefined {
  if (!(e instanceof Error)) return undefined;
  const code = (e as { code?: unknown }).code;
  if (typeof code === "string") return code;
  const n = /\(os error (\d+)\)/.exec(e.message)?.[1];
  const byNumber: Record<string, string> = {
    "1": "EPERM",
    "13": "EACCES",
    "20": "ENOTDIR",
    "21": "EISDIR",
    "28": "ENOSPC",
    "30": "EROFS",
    "122": "EDQUOT",
  };
  return n ? byNumber[n] : undefined;
}

/**
 * The problem behind a file-system error, when it is one a user can fix (read-only, permission
 * denied, not a directory, is a directory, disk full); `undefined` for anything else.
 *
 * @example
 * ```ts
 * try { await Deno.mkdir("/proc/x"); } catch (e) { console.log(fsProblem(e)?.what); }
 * ```
 */
export function fsProblem(e: unknown): FsProblem | undefined {
  const code = errorCode(e) ?? errorCode((e as { cause?: unknown } | undefined)?.cause);
  return code ? PROBLEMS[code] : undefined;
}

/**
 * `e` as a {@link FileSystemError} "`doing`: `what`; `advice`" when {@link fsProblem} knows it,
 * else `e` unchanged.
 *
 * @example
 * ```ts
 * fileSystemErrorOr(e, path, `could not write ${path}`); // "could not write x: it is on a read-only file system; ..."
 * ```
 */
export function fileSystemErrorOr(
  e: unknown,
  path: string,
  doing: string,
  note = "",
): unknown {
  if (e instanceof FileSystemError) return e;
  const p = fsProblem(e);
  if (!p) return e;
  return new FileSystemError(`${doing}: ${p.what}${note}; ${p.advice}`, path, { cause: e });
}
