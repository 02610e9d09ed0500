/**
 * `deno task experiments`: runs the paper's studies (see `lib/experiments/suites.ts`) at a budget
 * and records them in `data/results/<suite>.csv`. Complete runs are skipped and stopped ones
 * resume, so the same command continues where an interrupted one stopped.
 *
 * ```sh
 * deno task experiments --suite all --budget smoke      # every suite in seconds (the tests)
 * deno task experiments --suite stability --budget cpu  # Fashion-MNIST on this machine
 * deno task experiments --suite all --budget cpu --jobs 2  # one run per core at once
 * deno task experiments --suite scaling,patch-size --budget gpu --backend tensorflow
 * deno task figures                                     # then draw them
 * # on a Slurm cluster: one array task per run, resubmit to redo the runs not done
 * deno task experiments --suite all --budget gpu --slurm --submit --slurm-opt --gres=gpu:1
 * deno task experiments --status all --budget gpu       # done, running, queued, missing
 * ```
 * @module
 */
import type { BackendName } from "../backends/mod.ts";
import { recordSuiteTime, RESULTS_DIR, RUNS_DIR, runSuite, suiteList } from "../experiments/run.ts";
import {
  type Budget,
  budgetConfigs,
  BUDGETS,
  budgetText,
  checkBudget,
  SUITE_NAMES,
  SUITES,
} from "../experiments/suites.ts";
import {
  batchScript,
  onPath,
  runsToSubmit,
  slurmOptions,
  statusText,
  submitScript,
  suiteStatus,
} from "../experiments/slurm.ts";
import { helpText } from "./args.ts";
import { BACKEND_FLAG } from "../backends/flags.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";
import { writeFileAtomic } from "../io/atomic.ts";
import { withStopSignal } from "./stop_signal.ts";

const FLAGS: FlagSpec[] = [
  {
    key: "suite",
    flag: "suite",
    kind: "string",
    choices: [...Object.keys(SUITES), "all"],
    list: true,
    help: "suite(s), comma-separated, or all",
  },
  {
    key: "budget",
    flag: "budget",
    kind: "string",
    choices: BUDGETS,
    help: "runs' size (default smoke)",
  },
  BACKEND_FLAG,
  {
    key: "resultsDir",
    flag: "results-dir",
    kind: "string",
    help: `result tables (default ${RESULTS_DIR})`,
  },
  {
    key: "runsDir",
    flag: "runs-dir",
    kind: "string",
    help: `run directories (default ${RUNS_DIR})`,
  },
  {
    key: "jobs",
    flag: "jobs",
    kind: "int",
    min: 1,
    help: "runs at once, each in its own process on cores / jobs threads (default 1)",
  },
  {
    key: "threads",
    flag: "threads",
    kind: "int",
    min: 0,
    help: "threads of each run (default 0: all cores, or cores / jobs)",
  },
  { key: "worker", flag: "worker", kind: "bool", help: "(internal) one process of --jobs" },
  {
    key: "index",
    flag: "index",
    kind: "int",
    min: 0,
    help: "only the run at this index of the suite's plan (a Slurm array task runs one)",
  },
  {
    key: "slurm",
    flag: "slurm",
    kind: "bool",
    help: "write a Slurm batch script: a job array of the runs not done, one task per run",
  },
  {
    key: "submit",
    flag: "submit",
    kind: "bool",
    help: "with --slurm: sbatch it, print the job id",
  },
  {
    key: "slurmOpt",
    flag: "slurm-opt",
    kind: "string",
    help: "sbatch option(s) for --slurm, repeatable or comma-separated " +
      "(--slurm-opt --partition=gpu,--time=2:00:00 --slurm-opt --gres=gpu:1)",
  },
  {
    key: "status",
    flag: "status",
    kind: "string",
    help: "suite(s) or all: which runs at --budget are done, running, queued, started, missing",
  },
  { key: "list", flag: "list", kind: "bool", help: "list the suites and budgets, run nothing" },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

function listing(): string {
  const suites = Object.values(SUITES).map((s) => `  ${s.name.padEnd(18)}${s.description}`);
  const budgets = BUDGETS.map((b) => `  ${b.padEnd(18)}${budgetText(b)}`);
  return `Suites:\n${suites.join("\n")}\n\nBudgets:\n${budgets.join("\n")}`;
}

/** Parses the flags and runs the suites one after another; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { rest: flagArgs, values: optValues } = takeSlurmOpts(args);
  const { values } = parseFlags(flagArgs, FLAGS);
  if (values.help) {
    const usage = "deno task experiments --suite NAME|all --budget B [flags]\n" +
      "       deno task experiments --status NAME|all --budget B";
    console.log(helpText(usage, FLAGS));
    console.log(`\n${listing()}`);
    return 0;
  }
  if (values.list) {
    console.log(listing());
    return 0;
  }
  if (values.submit && !values.slurm) {
    throw new UsageError("--submit submits the script of --slurm: add --slurm");
  }
  if (optValues.length && !values.slurm) {
    throw new UsageError("--slurm-opt sets options of the --slurm script: add --slurm");
  }
  if (values.status && (values.suite || values.slurm)) {
    throw new UsageError("--status reports and runs nothing: drop --suite and --slurm");
  }
  if (!values.suite && !values.status) {
    throw new UsageError(`--suite is required: one of ${SUITE_NAMES.join(", ")}, or all`);
  }
  let suites: string[];
  let budget;
  try {
    budget = checkBudget(String(values.budget ?? "smoke"));
    suites = suiteList(String(values.suite ?? values.status), budget);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const backend = values.backend as BackendName | undefined;
  const resultsDir = String(values.resultsDir ?? RESULTS_DIR);
  const runsDir = String(values.runsDir ?? RUNS_DIR);
  if (values.status) {
    for (const name of suites) {
      const { runIds, statuses } = await suiteStatus(name, budget, resultsDir, runsDir);
      console.log(statusText(name, budget, runIds, statuses));
    }
    return 0;
  }
  const jobs = Number(values.jobs ?? 1);
  const index = values.index === undefined ? undefined : Number(values.index);
  if (index !== undefined && (suites.length > 1 || jobs > 1 || values.slurm)) {
    throw new UsageError(
      "--index runs one run of one suite: give one --suite, no --jobs or --slurm",
    );
  }
  if (values.slurm) {
    if (jobs > 1) throw new UsageError("--jobs is for one machine; --slurm runs one run per task");
    if (values.submit && !(await onPath("sbatch"))) {
      throw new UsageError(
        "sbatch is not on PATH: install Slurm's client commands here (apt-get install " +
          "slurm-client), or drop --submit and copy the script to a machine that has them",
      );
    }
    const threadsFlag = values.threads === undefined ? undefined : Number(values.threads);
    for (const name of suites) {
      await slurmSuite(name, budget, {
        resultsDir,
        runsDir,
        backend,
        threads: threadsFlag,
        options: slurmOptions(optValues),
        submit: Boolean(values.submit),
      });
    }
    return 0;
  }
  const cores = navigator.hardwareConcurrency || 1;
  const threads = Number(values.threads ?? (jobs > 1 ? Math.max(1, Math.floor(cores / jobs)) : 0));
  const worker = Boolean(values.worker);

  const times: string[] = [];
  const code = await withStopSignal(
    "stopping after this step or evaluation batch; re-run to resume",
    async (signal) => {
      for (const name of suites) {
        const t0 = performance.now();
        const started = new Date().toISOString();
        if (jobs > 1 && !worker) {
          const common = ["--suite", name, "--budget", budget, "--results-dir", resultsDir];
          const rest = ["--runs-dir", runsDir, "--threads", String(threads)];
          const code = await runJobs(jobs, [
            ...common,
            ...rest,
            ...(backend ? ["--backend", backend] : []),
          ], signal);
          if (code) return code;
        }
        const res = await runSuite(name, budget, {
          resultsDir,
          runsDir,
          backend,
          signal,
          threads,
          worker,
          index,
        });
        if (worker) continue;
        if (index !== undefined) {
          const row = res.rows[0];
          if (!res.complete) {
            console.log("stopped; run the same command again to resume");
            return 130;
          }
          console.log(
            `${name} (${budget}) run ${index}: ${row.run_id} recorded in ` +
              `${resultsDir}/${name}.csv`,
          );
          continue;
        }
        if (jobs > 1) {
          // The runs were trained by the job processes: count those completed since this began.
          const fresh = new Set(res.rows.filter((r) => r.date >= started).map((r) => r.run_id));
          res.ran = res.rows.map((r) => r.run_id).filter((id) => fresh.has(id));
          res.skipped = res.rows.map((r) => r.run_id).filter((id) => !fresh.has(id));
          res.seconds = (performance.now() - t0) / 1000;
        }
        await recordSuiteTime(resultsDir, res);
        const line = `${name} (${budget}): ${res.rows.length} runs, ${res.ran.length} trained, ` +
          `${res.skipped.length} skipped, ${res.seconds.toFixed(0)} s -> ${resultsDir}/${name}.csv`;
        times.push(line);
        console.log(line);
        if (!res.complete) {
          console.log("stopped; run the same command again to resume");
          return 130;
        }
      }
      return 0;
    },
  );
  if (code) return code;
  if (times.length > 1) console.log(`\n${times.join("\n")}`);
  return 0;
}

/**
 * Takes every `--slurm-opt VALUE` / `--slurm-opt=VALUE` out of `args` (it may repeat, and its
 * value starts with dashes, which the flag parser would read as a flag of its own).
 */
function takeSlurmOpts(args: string[]): { rest: string[]; values: string[] } {
  const rest: string[] = [], values: string[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i] === "--") {
      rest.push(...args.slice(i));
      break;
    }
    if (args[i].startsWith("--slurm-opt=")) values.push(args[i].slice("--slurm-opt=".length));
    else if (args[i] !== "--slurm-opt") rest.push(args[i]);
    else if (i + 1 < args.length) values.push(args[++i]);
    else throw new UsageError("--slurm-opt needs a value (an sbatch option: --partition=gpu)");
  }
  return { rest, values };
}

/**
 * Writes the batch script of a suite's runs not done (and neither running nor queued) to
 * `<runsDir>/slurm/<suite>_<budget>.sbatch`, and with `submit` hands it to sbatch.
 */
async function slurmSuite(
  name: string,
  budget: Budget,
  o: {
    resultsDir: string;
    runsDir: string;
    backend?: BackendName;
    threads?: number;
    options: string[];
    submit: boolean;
  },
): Promise<void> {
  const { statuses } = await suiteStatus(name, budget, o.resultsDir, o.runsDir);
  const indices = runsToSubmit(statuses);
  const total = budgetConfigs(name, budget).length;
  const busy = statuses.filter((s) => s === "running" || s === "queued").length;
  if (indices.length === 0) {
    console.log(
      `${name} (${budget}): nothing to submit: ${total - busy} of ${total} runs done, ` +
        `${busy} running or queued`,
    );
    return;
  }
  const dir = `${o.runsDir}/slurm`;
  const workdir = Deno.cwd();
  const absolute = (p: string) => (p.startsWith("/") ? p : `${workdir}/${p}`);
  const script = batchScript({
    suite: name,
    budget,
    indices,
    total,
    workdir,
    deno: Deno.execPath(),
    entry: import.meta.filename!,
    resultsDir: o.resultsDir,
    runsDir: o.runsDir,
    logDir: absolute(dir),
    backend: o.backend,
    threads: o.threads,
    options: o.options,
  });
  const path = `${dir}/${name}_${budget}.sbatch`;
  await Deno.mkdir(dir, { recursive: true });
  await writeFileAtomic(path, new TextEncoder().encode(script));
  const what = `${indices.length} of ${total} runs` + (busy ? ` (${busy} running or queued)` : "");
  if (!o.submit) {
    console.log(
      `${name} (${budget}): wrote ${path}, a job array of ${what}; submit it with ` +
        `sbatch ${path}`,
    );
    return;
  }
  const job = await submitScript(path);
  console.log(
    `${name} (${budget}): submitted job ${job}, a job array of ${what} (${path}); ` +
      `logs in ${dir}, progress: deno task experiments --status ${name} --budget ${budget}`,
  );
}

/**
 * Runs `jobs` worker processes of this task on one suite (each takes the runs no other holds,
 * by the run directories' locks) and waits for them; a stop request is passed on to them.
 * Returns 0, or the first non-zero exit code.
 */
async function runJobs(jobs: number, args: string[], signal: { stop: boolean }): Promise<number> {
  const children = Array.from({ length: jobs }, (_, i) =>
    new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", import.meta.filename!, ...args, "--worker"],
      stdin: "null",
      env: { VITSSL_JOB: String(i + 1) },
    }).spawn());
  const forward = setInterval(() => {
    if (!signal.stop) return;
    for (const c of children) {
      try {
        c.kill("SIGTERM");
      } catch { /* already exited */ }
    }
    clearInterval(forward);
  }, 200);
  try {
    const codes = (await Promise.all(children.map((c) => c.status))).map((s) => s.code);
    if (signal.stop) return 130;
    return codes.find((c) => c !== 0) ?? 0;
  } finally {
    clearInterval(forward);
  }
}

if (import.meta.main) runMain(main);
