/**
 * Suites on a Slurm cluster: a suite's planned runs become one job array, one array task per
 * (configuration, seed) run, each task running `deno task experiments --index I` for exactly the
 * run at index I of the plan (`budgetConfigs`). The array index is the plan index, so
 * `scancel JOB_I` and `--index I` name the same run. Each task takes its run directory's lock,
 * resumes from a checkpoint, and appends its row to `<suite>.csv` under the results lock, so
 * a resubmitted array (over the runs not done) completes the suite with every row once.
 *
 * The script text, the status of each run and the runs to submit are pure functions; `sbatch`
 * and `squeue` are called thinly by {@link submitScript} and {@link queuedTasks}.
 *
 * @example
 * ```ts
 * import { arraySpec, batchScript } from "./slurm.ts";
 * arraySpec([0, 1, 2, 5]); // "0-2,5"
 * const text = batchScript({
 *   suite: "posemb", budget: "smoke", indices: [0, 1], total: 12, workdir: "/shared/vitssl",
 *   deno: "/usr/bin/deno", entry: "lib/cli/experiments.ts", resultsDir: "data/results",
 *   runsDir: "data/runs/experiments", logDir: "data/runs/experiments/slurm", options: [],
 * });
 * ```
 * @module
 */
import { quote } from "../core/shell.ts";
import { ConfigError } from "../core/errors.ts";
import { LOCK_FILE } from "../io/lock.ts";
import { pathExists } from "../io/exists.ts";
import { RUN_FILES } from "../train/rundir.ts";
import { type Budget, budgetConfigs } from "./suites.ts";
import { readTable, suiteFile } from "./tables.ts";

/** What one planned run is, from the results table, its run directory and the queue. */
export type RunStatus = "done" | "running" | "queued" | "started" | "missing";

/** What is known of one planned run (see {@link classifyRun}). */
export interface RunState {
  /** Its row is in `<suite>.csv`. */
  row: boolean;
  /** Its run directory's lock is held by a process (training or evaluating it now). */
  locked: boolean;
  /** Its run directory holds a checkpoint or `result.json` (a stopped run; it resumes). */
  started: boolean;
  /** Its array task's state in `squeue` (`PENDING`, `RUNNING` ...), if it is queued. */
  queue?: string;
}

/**
 * The status of a run: `done` (its row is recorded), `running` (its directory is locked, or its
 * array task runs), `queued` (its array task is pending), `started` (a checkpoint or result
 * without a row and nobody on it: it resumes when run again), or `missing` (nothing yet).
 *
 * @example
 * ```ts
 * classifyRun({ row: false, locked: false, started: true }); // "started"
 * classifyRun({ row: false, locked: false, started: false, queue: "PENDING" }); // "queued"
 * ```
 */
export function classifyRun(s: RunState): RunStatus {
  if (s.row) return "done";
  if (s.locked || (s.queue !== undefined && s.queue !== "PENDING")) return "running";
  if (s.queue === "PENDING") return "queued";
  return s.started ? "started" : "missing";
}

/**
 * The plan indices to (re)submit: the runs neither done nor running nor queued.
 *
 * @example
 * ```ts
 * runsToSubmit(["done", "missing", "running", "started", "queued"]); // [1, 3]
 * ```
 */
export function runsToSubmit(statuses: RunStatus[]): number[] {
  return statuses.flatMap((s, i) => (s === "missing" || s === "started" ? [i] : []));
}

/**
 * Slurm's `--array` value for a set of indices: consecutive ones as ranges.
 *
 * @example
 * ```ts
 * arraySpec([5, 0, 1, 2, 7, 8]); // "0-2,5,7-8"
 * ```
 */
export function arraySpec(indices: number[]): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j === i ? `${sorted[i]}` : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

/**
 * Splits `--slurm-opt` values into sbatch options: each value may hold several, separated by
 * commas before a dash (`--partition=gpu,--time=2:00:00`); a comma inside an option's value
 * (`--gres=gpu:1,shard:2`) stays, and an option given without its dashes gets `--`.
 *
 * @example
 * ```ts
 * slurmOptions(["--partition=gpu,--time=2:00:00", "gres=gpu:1"]);
 * // ["--partition=gpu", "--time=2:00:00", "--gres=gpu:1"]
 * ```
 */
export function slurmOptions(values: string[]): string[] {
  return values.flatMap((v) => v.split(/,(?=\s*-)/))
    .map((o) => o.trim())
    .filter((o) => o !== "")
    .map((o) => (o.startsWith("-") ? o : `--${o}`));
}

/** Inputs of {@link batchScript}. */
export interface BatchScriptOptions {
  suite: string;
  budget: Budget;
  /** The plan indices this array runs (the array task ids). */
  indices: number[];
  /** Runs in the whole plan. */
  total: number;
  /** The repository root on the shared file system (`#SBATCH --chdir`). */
  workdir: string;
  /** The deno executable the tasks run (an absolute path on the shared file system). */
  deno: string;
  /** The experiments CLI module (`lib/cli/experiments.ts`). */
  entry: string;
  resultsDir: string;
  runsDir: string;
  /** Where each task's output goes (`<logDir>/<suite>_<budget>_<job>_<task>.out`). */
  logDir: string;
  backend?: string;
  /** `--threads` of each run; by default the task's `SLURM_CPUS_PER_TASK` (0, all cores, unset). */
  threads?: number;
  /** More sbatch options (`--partition=gpu`, `--gres=gpu:1`), one `#SBATCH` line each, last. */
  options: string[];
}

/**
 * The batch script of a suite's job array: `#SBATCH` lines (name, array, working directory,
 * output, one task of one node, then the given options), and one command running the array
 * task's run.
 *
 * @example
 * ```ts
 * batchScript({ suite: "posemb", budget: "smoke", indices: [3], total: 12, workdir: "/w",
 *   deno: "/bin/deno", entry: "lib/cli/experiments.ts", resultsDir: "data/results",
 *   runsDir: "data/runs/experiments", logDir: "/w/logs", options: [] }).split("\n")[2];
 * // "#SBATCH --array=3"
 * ```
 */
export function batchScript(o: BatchScriptOptions): string {
  const name = `${o.suite}_${o.budget}`;
  const threads = o.threads === undefined ? '"${SLURM_CPUS_PER_TASK:-0}"' : String(o.threads);
  const args = [
    quote(o.deno),
    "run -A --unstable-webgpu",
    quote(o.entry),
    `--suite ${quote(o.suite)} --budget ${o.budget}`,
    `--results-dir ${quote(o.resultsDir)} --runs-dir ${quote(o.runsDir)}`,
    ...(o.backend ? [`--backend ${o.backend}`] : []),
    `--threads ${threads} --index "$SLURM_ARRAY_TASK_ID"`,
  ];
  return [
    "#!/bin/bash",
    `#SBATCH --job-name=${jobName(o.suite, o.budget)}`,
    `#SBATCH --array=${arraySpec(o.indices)}`,
    `#SBATCH --chdir=${quote(o.workdir)}`,
    `#SBATCH --output=${quote(`${o.logDir}/${name}_%A_%a.out`)}`,
    "#SBATCH --nodes=1",
    "#SBATCH --ntasks=1",
    ...o.options.map((opt) => `#SBATCH ${opt}`),
    `# vitssl: suite ${o.suite} at budget ${o.budget}, ${o.indices.length} of its ${o.total} ` +
    "runs; the array task id is the run's",
    "# index in the plan. Resubmitting skips the runs done; see their status with",
    `#   deno task experiments --status ${o.suite} --budget ${o.budget}`,
    "export DENO_NO_UPDATE_CHECK=1",
    `exec ${args.join(" \\\n  ")}`,
    "",
  ].join("\n");
}

/**
 * The job name of a suite's array (`squeue -n` finds its tasks).
 *
 * @example
 * ```ts
 * jobName("posemb", "cpu"); // "vitssl_posemb_cpu"
 * ```
 */
export function jobName(suite: string, budget: Budget): string {
  return `vitssl_${suite}_${budget}`;
}

/**
 * The status lines of a suite: a count per status, a line per run not done, and what to run
 * to submit the rest.
 *
 * @example
 * ```ts
 * statusText("posemb", "smoke", ["a", "b"], ["done", "missing"]);
 * // "posemb (smoke): 2 runs: 1 done, 0 running, 0 queued, 0 started, 1 missing\n  1 missing  b\n..."
 * ```
 */
export function statusText(
  suite: string,
  budget: Budget,
  runIds: string[],
  statuses: RunStatus[],
): string {
  const kinds: RunStatus[] = ["done", "running", "queued", "started", "missing"];
  const counts = kinds.map((k) => `${statuses.filter((s) => s === k).length} ${k}`);
  const lines = [`${suite} (${budget}): ${runIds.length} runs: ${counts.join(", ")}`];
  for (const [i, s] of statuses.entries()) {
    if (s !== "done") lines.push(`  ${String(i).padStart(3)} ${s.padEnd(8)} ${runIds[i]}`);
  }
  const todo = runsToSubmit(statuses).length;
  if (todo) {
    lines.push(
      `submit the ${todo} missing or started: deno task experiments --suite ${suite} ` +
        `--budget ${budget} --slurm --submit (or without --slurm on this machine)`,
    );
  }
  return lines.join("\n");
}

/**
 * The status of every planned run of a suite, from its results table, its run directories and
 * (where `squeue` is installed) the queue of its job arrays.
 *
 * @example
 * ```ts
 * const { runIds, statuses } = await suiteStatus("posemb", "smoke", "data/results",
 *   "data/runs/experiments");
 * console.log(statusText("posemb", "smoke", runIds, statuses));
 * ```
 */
export async function suiteStatus(
  suite: string,
  budget: Budget,
  resultsDir: string,
  runsDir: string,
): Promise<{ runIds: string[]; statuses: RunStatus[] }> {
  const table = await readTable(suiteFile(resultsDir, suite));
  const rows = new Set(table.numRows() ? (table.array("run_id") as unknown[]).map(String) : []);
  const queue = await queuedTasks(jobName(suite, budget));
  const runIds = budgetConfigs(suite, budget).map((r) => r.runId);
  const statuses: RunStatus[] = [];
  for (const [i, id] of runIds.entries()) {
    const dir = `${runsDir}/${id}`;
    statuses.push(classifyRun({
      row: rows.has(id),
      locked: await lockHeld(dir),
      started: await pathExists(`${dir}/${RUN_FILES.checkpoint}`) ||
        await pathExists(`${dir}/${RUN_FILES.result}`),
      queue: queue.get(i),
    }));
  }
  return { runIds, statuses };
}

/**
 * Whether a run directory's lock is held by a process, without taking it for longer than the
 * probe (and without writing to the lock file).
 */
export async function lockHeld(dir: string): Promise<boolean> {
  let file: Deno.FsFile;
  try {
    file = await Deno.open(`${dir}/${LOCK_FILE}`, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
  try {
    if (!(await file.tryLock(true))) return true;
    await file.unlock();
    return false;
  } finally {
    file.close();
  }
}

/**
 * The state in `squeue` of each array task (by index) of the jobs named `name`; empty where
 * `squeue` is not installed or fails (with a warning line: no controller reachable).
 */
export async function queuedTasks(name: string): Promise<Map<number, string>> {
  const tasks = new Map<number, string>();
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command("squeue", {
      args: ["-h", "-r", "-n", name, "-o", "%i %T"],
      stdout: "piped",
      stderr: "piped",
    }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return tasks;
    throw e;
  }
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n").pop();
    console.error(`warning: squeue failed (${why}); queued array tasks are not shown`);
    return tasks;
  }
  for (const line of new TextDecoder().decode(out.stdout).split("\n")) {
    const m = /^\d+_(\d+)\s+(\S+)/.exec(line.trim());
    if (m) tasks.set(Number(m[1]), m[2]);
  }
  return tasks;
}

/** Whether `cmd` is an executable on PATH. */
export async function onPath(cmd: string): Promise<boolean> {
  for (const dir of (Deno.env.get("PATH") ?? "").split(":")) {
    if (!dir) continue;
    const info = await Deno.stat(`${dir}/${cmd}`).catch(() => null);
    if (info?.isFile && (info.mode ?? 0o111) & 0o111) return true;
  }
  return false;
}

/**
 * Submits a batch script with `sbatch --parsable`; returns the job id.
 *
 * @example
 * ```ts
 * await submitScript("data/runs/experiments/slurm/posemb_smoke.sbatch"); // "1234"
 * ```
 */
export async function submitScript(path: string): Promise<string> {
  const out = await new Deno.Command("sbatch", {
    args: ["--parsable", path],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || !/^\d+/.test(text)) {
    const err = new TextDecoder().decode(out.stderr).trim().replace(/\s*\n\s*/g, "; ");
    throw new ConfigError(
      `sbatch ${path} failed (exit ${out.code}): ${err || text}; check the --slurm-opt options`,
    );
  }
  return text.split(";")[0];
}
