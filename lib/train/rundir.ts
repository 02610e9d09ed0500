/**
 * A run directory, in one place: its files ({@link RUN_FILES}), its append-only CSV logs
 * (`log.csv`, `knn.csv`, `rollbacks.csv`) and their rows, and reading a run back (its rows, its
 * planned steps, whether it finished). Training writes it; resume,
 * experiments, notebooks and evaluation read it through here.
 *
 * The logs survive a crash: a resumed run first cuts every row at or after its checkpoint's step
 * (and any half-written last line, {@link truncateLogs}), so that step numbers stay contiguous
 * with no row lost or duplicated. arquero reads them with `aq.loadCSV`/`aq.fromCSV`.
 *
 * @example
 * ```ts
 * import { appendRows, readRunLogs, RUN_FILES } from "./rundir.ts";
 * await appendRows(`${dir}/${RUN_FILES.log}`, ["step", "loss"], [{ step: 0, loss: 4.1 }]);
 * const { log, knn } = await readRunLogs(dir);
 * ```
 * @module
 */
import * as aq from "arquero";
import { diskFullOr, isAtomicTempFile, writeFileAtomic } from "../io/atomic.ts";
import { pathExists } from "../io/exists.ts";
import { fileSystemErrorOr } from "../io/fs_errors.ts";

/** The files of a run directory. */
export const RUN_FILES = {
  /** The config, the resolved config and the versions. */
  config: "config.json",
  /** One row per iteration ({@link LogRow}). */
  log: "log.csv",
  /** One row per kNN evaluation ({@link KnnRow}). */
  knn: "knn.csv",
  /** One row per rollback of `--on-nan rollback` ({@link RollbackRow}); absent if none. */
  rollbacks: "rollbacks.csv",
  /** Everything needed to resume (model, momentum encoder, optimiser slots). */
  checkpoint: "checkpoint.safetensors",
  /** The final report (`--final-eval`): backbone, random init and raw pixels on the full splits. */
  final: "final.json",
  /**
   * Under `--on-nan rollback`: the checkpoint before the last one (a second rollback target,
   * {@link keepPreviousCheckpoint}).
   */
  previousCheckpoint: "checkpoint.prev.safetensors",
  /** The online backbone with timm's names, for evaluation and PyTorch. */
  backbone: "backbone.safetensors",
  /** An experiment run's result row. */
  result: "result.json",
} as const;

/** One row of `log.csv`. */
export interface LogRow {
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  momentum: number;
  grad_patch: number;
  grad_first_block: number;
  grad_last_block: number;
  grad_heads: number;
  grad_total: number;
  images_per_s: number;
}

/** One row of `knn.csv`. */
export interface KnnRow {
  step: number;
  epoch: number;
  top1: number;
  top5: number;
  k: number;
  train_size: number;
  test_size: number;
  /**
   * Top-1 (percent) of the online linear probe on the same test subset; only in the rows of a
   * run with the probe (`--online-probe`), absent in older runs and with `--no-online-probe`.
   */
  probe_top1?: number;
}

/**
 * One row of `rollbacks.csv`: iteration `step` (0-based, as in `log.csv`; messages and the
 * progress bar show step + 1) had a non-finite `nonfinite` ("loss", "gradient" or
 * "loss+gradient"); `loss` is its loss, `grad_group` the first group in forward order
 * (patch_embed, blocks.0, ..., heads, or "total" when only the sum is non-finite) whose gradient
 * norm is non-finite ("" when every norm is finite). The run went back to the checkpoint of
 * `restored_step` and continued with the lr multiplied by `lr_scale`.
 */
export interface RollbackRow {
  step: number;
  epoch: number;
  nonfinite: "loss" | "gradient" | "loss+gradient";
  loss: number;
  grad_group: string;
  restored_step: number;
  lr_scale: number;
}

/** The columns of `rollbacks.csv`, in order. */
export const ROLLBACK_COLUMNS: (keyof RollbackRow)[] = [
  "step",
  "epoch",
  "nonfinite",
  "loss",
  "grad_group",
  "restored_step",
  "lr_scale",
];

/** The columns of `log.csv`, in order. */
export const LOG_COLUMNS: (keyof LogRow)[] = [
  "step",
  "epoch",
  "loss",
  "lr",
  "momentum",
  "grad_patch",
  "grad_first_block",
  "grad_last_block",
  "grad_heads",
  "grad_total",
  "images_per_s",
];

/** The columns of `knn.csv`, in order. */
export const KNN_COLUMNS: (keyof KnnRow)[] = [
  "step",
  "epoch",
  "top1",
  "top5",
  "k",
  "train_size",
  "test_size",
];

/** The columns `knn.csv` adds after {@link KNN_COLUMNS} in a run with the online probe. */
export const PROBE_COLUMNS: (keyof KnnRow)[] = ["probe_top1"];

/**
 * The columns of a run's `knn.csv`: {@link KNN_COLUMNS}, plus {@link PROBE_COLUMNS} with the
 * online probe (so that a run without it, and every older run, keeps its header).
 *
 * @example
 * ```ts
 * knnColumns(true).at(-1); // "probe_top1"
 * ```
 */
export function knnColumns(probe: boolean): (keyof KnnRow)[] {
  return probe ? [...KNN_COLUMNS, ...PROBE_COLUMNS] : KNN_COLUMNS;
}

/**
 * A run's `log.csv` and `knn.csv` rows, numbers parsed (a missing file gives no rows).
 *
 * @example
 * ```ts
 * const { log, knn } = await readRunLogs("data/runs/demo"); // log[0].loss, knn.at(-1)?.top1
 * ```
 */
export async function readRunLogs(dir: string): Promise<{ log: LogRow[]; knn: KnnRow[] }> {
  const read = async (file: string) => {
    try {
      const text = await Deno.readTextFile(`${dir}/${file}`);
      return aq.fromCSV(text, { autoType: true }).objects();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return [];
      throw e;
    }
  };
  return {
    log: (await read(RUN_FILES.log)) as unknown as LogRow[],
    knn: (await read(RUN_FILES.knn)) as unknown as KnnRow[],
  };
}

/**
 * The steps a run directory's `config.json` plans (all epochs, or `maxSteps` when fewer); 0 when
 * it has no readable `config.json` yet.
 *
 * @example
 * ```ts
 * plannedSteps("data/runs/smoke"); // 16
 * ```
 */
export function plannedSteps(dir: string): number {
  try {
    const { config, resolved } = JSON.parse(Deno.readTextFileSync(`${dir}/${RUN_FILES.config}`));
    const steps = config.maxSteps > 0
      ? Math.min(config.maxSteps, resolved.totalSteps)
      : resolved.totalSteps;
    return Number.isFinite(steps) ? steps : 0;
  } catch {
    return 0;
  }
}

/**
 * Whether a run directory holds a finished run: its `log.csv` has a row for every step its
 * `config.json` planned ({@link plannedSteps}).
 *
 * @example
 * ```ts
 * if (!(await runFinished(dir))) await pretrain(cfg);
 * ```
 */
export async function runFinished(dir: string): Promise<boolean> {
  const last = plannedSteps(dir);
  return last > 0 && (await readRunLogs(dir)).log.length >= last;
}

/**
 * Cuts the logs back to a checkpoint at `step`: `log.csv` rows are iterations (row s is the
 * update from s to s + 1, so rows < step stay); `knn.csv` rows are measured after `step`
 * updates (rows <= step stay, the checkpoint holds those weights).
 *
 * @example
 * ```ts
 * await truncateLogs("data/runs/demo", 40); // resuming from the checkpoint of step 40
 * ```
 */
export async function truncateLogs(dir: string, step: number): Promise<void> {
  await truncateRows(`${dir}/${RUN_FILES.log}`, LOG_COLUMNS, step);
  await truncateRows(`${dir}/${RUN_FILES.knn}`, [knnColumns(false), knnColumns(true)], step + 1);
}

/**
 * Keeps the first `n` complete rows of `rollbacks.csv`: a resumed run keeps the rollbacks its
 * checkpoint records (a rollback's row is written before the checkpoint that records it).
 *
 * @example
 * ```ts
 * await truncateRollbacks("data/runs/demo", 2); // the checkpoint records 2 rollbacks
 * ```
 */
export async function truncateRollbacks(dir: string, n: number): Promise<void> {
  await keepRows(`${dir}/${RUN_FILES.rollbacks}`, ROLLBACK_COLUMNS, (_, i) => i < n);
}

/**
 * Keeps the run's checkpoint as `checkpoint.prev.safetensors` before a new one is written over
 * it: a hard link (no copy) where the file system allows, else a copy, renamed into place so that
 * a kill leaves the old or the new previous checkpoint; `checkpoint.safetensors` is not touched.
 *
 * @example
 * ```ts
 * await keepPreviousCheckpoint("data/runs/demo"); // then write checkpoint.safetensors
 * ```
 */
export async function keepPreviousCheckpoint(dir: string): Promise<void> {
  const prev = `${dir}/${RUN_FILES.previousCheckpoint}`;
  const tmp = `${dir}/.${RUN_FILES.previousCheckpoint}.tmp-${crypto.randomUUID().slice(0, 8)}`;
  try {
    try {
      await Deno.link(`${dir}/${RUN_FILES.checkpoint}`, tmp);
    } catch {
      await Deno.copyFile(`${dir}/${RUN_FILES.checkpoint}`, tmp);
    }
    await Deno.rename(tmp, prev);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw await diskFullOr(e, prev);
  }
}

/**
 * Removes the hidden temp files (`.checkpoint.safetensors.tmp-1a2b3c4d`, ...) that an atomic
 * write killed before its rename leaves behind; the files they were meant to replace are intact.
 *
 * @example
 * ```ts
 * await removeStaleTempFiles("data/runs/demo");
 * ```
 */
export async function removeStaleTempFiles(dir: string): Promise<void> {
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && isAtomicTempFile(e.name)) {
      await Deno.remove(`${dir}/${e.name}`).catch(() => {});
    }
  }
}

/**
 * Appends rows (objects keyed by column) to a CSV, writing the header first if it is new. A full
 * disk is a `DiskFullError`, a read-only disk or missing permission a `FileSystemError`.
 */
export async function appendRows<T extends object>(
  path: string,
  columns: (keyof T & string)[],
  rows: T[],
): Promise<void> {
  let text = (await pathExists(path)) ? "" : columns.join(",") + "\n";
  for (const row of rows) {
    text += columns.map((c) => formatCell((row as Record<string, unknown>)[c])).join(",") + "\n";
  }
  try {
    await Deno.writeTextFile(path, text, { append: true });
  } catch (e) {
    // A torn last line is cut by truncateRows when the run resumes.
    const full = await diskFullOr(e, path, "", new TextEncoder().encode(text).length);
    throw fileSystemErrorOr(full, path, `could not append to ${path}`);
  }
}

/**
 * A number as text. A float32 value (a loss or a norm read back from a tensor) gets the shortest
 * text that parses back to the same float32, so that two runs' logs compare bit for bit; other
 * numbers (an lr computed in float64) get 7 significant digits.
 */
export function formatNumber(v: number): string {
  if (Number.isInteger(v) || !Number.isFinite(v)) return String(v);
  if (Math.fround(v) === v) {
    for (let p = 6; p < 9; p++) {
      const s = v.toPrecision(p);
      if (Math.fround(Number(s)) === v) return String(Number(s));
    }
    return String(Number(v.toPrecision(9)));
  }
  return v.toPrecision(7);
}

function formatCell(v: unknown): string {
  if (typeof v === "number") return formatNumber(v);
  const s = String(v ?? "");
  return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/**
 * Keeps only the complete rows whose `step` column is below `below` (atomically rewriting the
 * file). A missing file is left missing. Throws if the header is not `columns` (or, given a
 * list of headers, none of them).
 */
export async function truncateRows(
  path: string,
  columns: string[] | string[][],
  below: number,
): Promise<void> {
  await keepRows(
    path,
    columns,
    (cells, _, header) => Number(cells[header.indexOf("step")]) < below,
  );
}

/**
 * Keeps the complete rows that `keep` accepts (it gets a row's cells, how many rows were kept
 * before it and the file's header); see {@link truncateRows}. `columns` is the expected header,
 * or a list of the headers accepted.
 */
async function keepRows(
  path: string,
  columns: string[] | string[][],
  keep: (cells: string[], i: number, header: string[]) => boolean,
): Promise<void> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw e;
  }
  const lines = text.split("\n");
  const headers = (Array.isArray(columns[0]) ? columns : [columns]) as string[][];
  const header = headers.find((h) => lines[0] === h.join(","));
  if (!header) {
    throw new Error(
      `${path}: expected the header "${headers.map((h) => h.join(",")).join('" or "')}", ` +
        `found "${lines[0]}"; move the file away to start a new log`,
    );
  }
  const kept = [lines[0]];
  // Only newline-terminated lines are complete; the text after the last "\n" is a torn write.
  for (const line of lines.slice(1, -1)) {
    const cells = line.split(",");
    if (cells.length !== header.length) continue;
    if (keep(cells, kept.length - 1, header)) kept.push(line);
  }
  await writeFileAtomic(path, new TextEncoder().encode(kept.join("\n") + "\n"));
}
