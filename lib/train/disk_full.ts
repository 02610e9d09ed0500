/**
 * What a run says when the disk fills up: the advice appended to its `DiskFullError`, from what
 * the run directory holds (a checkpoint to resume from, and the space the next one needs; or
 * nothing to resume yet).
 *
 * @example
 * ```ts
 * import { diskFullAdvice } from "./disk_full.ts";
 * await diskFullAdvice("data/runs/x", e); // "the last checkpoint and the log of data/runs/x are intact: ..."
 * ```
 * @module
 */
import { type DiskFullError, formatBytes } from "../io/atomic.ts";
import { RUN_FILES } from "./rundir.ts";

/**
 * What to do after a full disk, from what the run directory holds: with a checkpoint, that it and
 * the log are intact, how much the next checkpoint needs (the checkpoint and backbone files are
 * written beside the old ones before they replace them) and the resume command; without one, that
 * there is nothing to resume yet, and how large the checkpoint that failed was.
 *
 * @example
 * ```ts
 * throw new DiskFullError(e.detail, e.path, await diskFullAdvice(dir, e), { cause: e, bytes: e.bytes });
 * ```
 */
export async function diskFullAdvice(dir: string, e: DiskFullError): Promise<string> {
  const size = (name: string) => Deno.stat(`${dir}/${name}`).then((s) => s.size, () => undefined);
  const ckpt = await size(RUN_FILES.checkpoint);
  if (ckpt === undefined) {
    const need = e.path.endsWith(RUN_FILES.checkpoint) && e.bytes
      ? ` (the checkpoint needs about ${formatBytes(e.bytes)})`
      : "";
    return `no checkpoint was written yet, so there is nothing to resume: free some space${need}, ` +
      "then run the same command again";
  }
  const next = ckpt + ((await size(RUN_FILES.backbone)) ?? 0);
  return `the last checkpoint and the log of ${dir} are intact: free about ${formatBytes(next)} ` +
    "(a checkpoint and backbone are written beside the old ones before replacing them), then " +
    `resume with: deno task pretrain --resume ${dir}`;
}
