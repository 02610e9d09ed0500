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
 * ```
 * @module
 */
import type { BackendName } from "../backends/mod.ts";
import { recordSuiteTime, RESULTS_DIR, RUNS_DIR, runSuite, suiteList } from "../experiments/run.ts";
import { BUDGETS, budgetText, checkBudget, SUITE_NAMES, SUITES } from "../experiments/suites.ts";
import { BACKEND_FLAG, type FlagSpec, helpText, parseFlags, UsageError } from "./args.ts";
import { runMain } from "./main.ts";
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
  const { values } = parseFlags(args, FLAGS);
  if (values.help) {
    console.log(helpText("deno task experiments --suite NAME|all --budget B [flags]", FLAGS));
    console.log(`\n${listing()}`);
    return 0;
  }
  if (values.list) {
    console.log(listing());
    return 0;
  }
  if (!values.suite) {
    throw new UsageError(`--suite is required: one of ${SUITE_NAMES.join(", ")}, or all`);
  }
  let suites: string[];
  let budget;
  try {
    suites = suiteList(String(values.suite));
    budget = checkBudget(String(values.budget ?? "smoke"));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const backend = values.backend as BackendName | undefined;
  const resultsDir = String(values.resultsDir ?? RESULTS_DIR);
  const runsDir = String(values.runsDir ?? RUNS_DIR);
  const jobs = Number(values.jobs ?? 1);
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
        });
        if (worker) continue;
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
