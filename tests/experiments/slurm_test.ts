import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { main } from "../../lib/cli/experiments.ts";
import {
  arraySpec,
  batchScript,
  classifyRun,
  lockHeld,
  type RunState,
  runsToSubmit,
  slurmOptions,
  statusText,
  suiteStatus,
} from "../../lib/experiments/slurm.ts";
import { budgetConfigs } from "../../lib/experiments/suites.ts";
import { readTable } from "../../lib/experiments/tables.ts";
import { lockRunDir } from "../../lib/io/lock.ts";
import { RUN_FILES } from "../../lib/train/rundir.ts";

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");
const CLI = `${ROOT}/lib/cli/experiments.ts`;
/** The smallest suite at the smoke budget (6 runs). */
const SUITE = "patch-size";

Deno.test("arraySpec: consecutive indices as ranges, sorted, once each", () => {
  assertEquals(arraySpec([0, 1, 2, 3, 4, 5]), "0-5");
  assertEquals(arraySpec([7, 0, 2, 1, 9, 8, 4]), "0-2,4,7-9");
  assertEquals(arraySpec([3]), "3");
  assertEquals(arraySpec([1, 3, 5]), "1,3,5");
  assertEquals(arraySpec([2, 2, 3]), "2-3");
});

Deno.test("slurmOptions: repeated and comma-separated, commas inside a value kept", () => {
  assertEquals(
    slurmOptions(["--partition=gpu,--time=2:00:00", "--gres=gpu:1,shard:2", "qos=high", " -N 1 "]),
    ["--partition=gpu", "--time=2:00:00", "--gres=gpu:1,shard:2", "--qos=high", "-N 1"],
  );
  assertEquals(slurmOptions([]), []);
});

Deno.test("classifyRun: a row wins, then a held lock or a running task, then the queue", () => {
  const s = (o: Partial<RunState>): RunState => ({
    row: false,
    locked: false,
    started: false,
    ...o,
  });
  assertEquals(classifyRun(s({})), "missing");
  assertEquals(classifyRun(s({ started: true })), "started");
  assertEquals(classifyRun(s({ row: true, started: true, locked: true })), "done");
  assertEquals(classifyRun(s({ row: true, queue: "RUNNING" })), "done");
  assertEquals(classifyRun(s({ locked: true })), "running");
  assertEquals(classifyRun(s({ locked: true, started: true })), "running");
  assertEquals(classifyRun(s({ queue: "RUNNING" })), "running");
  assertEquals(classifyRun(s({ queue: "COMPLETING", started: true })), "running");
  assertEquals(classifyRun(s({ queue: "PENDING" })), "queued");
  assertEquals(classifyRun(s({ queue: "PENDING", started: true })), "queued");
  assertEquals(classifyRun(s({ queue: "PENDING", locked: true })), "running");
});

Deno.test("runsToSubmit: the missing and started runs, by plan index", () => {
  assertEquals(runsToSubmit(["done", "missing", "running", "started", "queued", "missing"]), [
    1,
    3,
    5,
  ]);
  assertEquals(runsToSubmit(["done", "done", "running", "queued"]), []);
  assertEquals(runsToSubmit([]), []);
});

Deno.test("batchScript: the whole text of a job array over three runs", () => {
  const text = batchScript({
    suite: "posemb",
    budget: "smoke",
    indices: [5, 0, 1],
    total: 12,
    workdir: "/shared/vit ssl",
    deno: "/home/me/.deno/bin/deno",
    entry: "/shared/vit ssl/lib/cli/experiments.ts",
    resultsDir: "data/results",
    runsDir: "/scratch/runs",
    logDir: "/scratch/runs/slurm",
    options: ["--partition=gpu", "--gres=gpu:1"],
  });
  assertEquals(
    text,
    `#!/bin/bash
#SBATCH --job-name=vitssl_posemb_smoke
#SBATCH --array=0-1,5
#SBATCH --chdir='/shared/vit ssl'
#SBATCH --output=/scratch/runs/slurm/posemb_smoke_%A_%a.out
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --partition=gpu
#SBATCH --gres=gpu:1
# vitssl: suite posemb at budget smoke, 3 of its 12 runs; the array task id is the run's
# index in the plan. Resubmitting skips the runs done; see their status with
#   deno task experiments --status posemb --budget smoke
export DENO_NO_UPDATE_CHECK=1
exec /home/me/.deno/bin/deno \\
  run -A --unstable-webgpu \\
  '/shared/vit ssl/lib/cli/experiments.ts' \\
  --suite posemb --budget smoke \\
  --results-dir data/results --runs-dir /scratch/runs \\
  --threads "\${SLURM_CPUS_PER_TASK:-0}" --index "$SLURM_ARRAY_TASK_ID"
`,
  );
  const withFlags = batchScript({
    suite: "scaling",
    budget: "gpu",
    indices: [2],
    total: 9,
    workdir: "/w",
    deno: "/bin/deno",
    entry: "/w/lib/cli/experiments.ts",
    resultsDir: "/w/r",
    runsDir: "/w/runs",
    logDir: "/w/logs",
    backend: "tensorflow",
    threads: 8,
    options: [],
  });
  assertEquals(withFlags.split("\n").slice(1, 3), [
    "#SBATCH --job-name=vitssl_scaling_gpu",
    "#SBATCH --array=2",
  ]);
  assertEquals(
    withFlags.split("\n").slice(-3),
    ["  --backend tensorflow \\", '  --threads 8 --index "$SLURM_ARRAY_TASK_ID"', ""],
  );
});

Deno.test("statusText: counts, a line per run not done, the command that submits the rest", () => {
  assertEquals(
    statusText("posemb", "smoke", ["a", "b", "c", "d", "e"], [
      "done",
      "running",
      "queued",
      "started",
      "missing",
    ]),
    `posemb (smoke): 5 runs: 1 done, 1 running, 1 queued, 1 started, 1 missing
    1 running  b
    2 queued   c
    3 started  d
    4 missing  e
submit the 2 missing or started: deno task experiments --suite posemb --budget smoke --slurm ` +
      "--submit (or without --slurm on this machine)",
  );
  assertEquals(
    statusText("scaling", "cpu", ["a", "b"], ["done", "done"]),
    "scaling (cpu): 2 runs: 2 done, 0 running, 0 queued, 0 started, 0 missing",
  );
});

Deno.test("experiments CLI: bad Slurm input is one line (UsageError, exit 2)", async () => {
  const usage = (args: string[], text: string) =>
    assertRejects(() => main(args), Error, text).then((e: Error) =>
      assertEquals(e.name, "UsageError")
    );
  await usage(
    ["--suite", SUITE, "--submit"],
    "--submit submits the script of --slurm: add --slurm",
  );
  await usage(["--suite", SUITE, "--slurm-opt", "--time=5"], "add --slurm");
  await usage(["--status", "nosuch", "--budget", "smoke"], 'unknown suite "nosuch"');
  await usage(["--suite", "posemb,scaling", "--index", "1"], "--index runs one run of one suite");
  await usage(["--suite", SUITE, "--slurm", "--jobs", "2"], "--jobs is for one machine");
  const path = Deno.env.get("PATH");
  const empty = await Deno.makeTempDir();
  Deno.env.set("PATH", empty);
  try {
    await usage(
      ["--suite", SUITE, "--slurm", "--submit", "--runs-dir", `${empty}/runs`],
      "sbatch is not on PATH: install Slurm's client commands here (apt-get install " +
        "slurm-client), or drop --submit and copy the script to a machine that has them",
    );
  } finally {
    Deno.env.set("PATH", path ?? "");
  }
  // Nothing was written before the refusal.
  assertEquals([...Deno.readDirSync(empty)], []);
  await assertRejects(
    () => main(["--suite", SUITE, "--index", "6", "--runs-dir", `${empty}/runs`]),
    Error,
    "--index 6 is not a run of patch-size at budget smoke: choose 0 to 5",
  );
  // As a process: the message is one line on stderr and the exit code is 2.
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "--status", "nosuch"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assertEquals(out.code, 2);
  const err = new TextDecoder().decode(out.stderr).trim();
  assertEquals(err.split("\n").length, 1, err);
  assertStringIncludes(err, 'unknown suite "nosuch"');
  await Deno.remove(empty, { recursive: true });
});

Deno.test("--index runs exactly one planned run; --status and --slurm see what is left", async () => {
  const dir = await Deno.makeTempDir();
  const r = `${dir}/results`, runs = `${dir}/runs`;
  const flags = ["--budget", "smoke", "--results-dir", r, "--runs-dir", runs];
  const plan = budgetConfigs(SUITE, "smoke").map((p) => p.runId);
  assertEquals(plan.length, 6);
  try {
    assertEquals(await main(["--suite", SUITE, ...flags, "--index", "2"]), 0);
    const ids = () =>
      readTable(`${r}/${SUITE}.csv`).then((t) => (t.array("run_id") as unknown[]).map(String));
    assertEquals(await ids(), [plan[2]]);
    // Again: the run is complete, skipped, and its row is not added twice.
    assertEquals(await main(["--suite", SUITE, ...flags, "--index", "2"]), 0);
    assertEquals(await ids(), [plan[2]]);
    // Run 0 started (a checkpoint, no row); run 4 is being trained (its lock is held).
    await Deno.mkdir(`${runs}/${plan[0]}`, { recursive: true });
    await Deno.writeTextFile(`${runs}/${plan[0]}/${RUN_FILES.checkpoint}`, "");
    const lock = await lockRunDir(`${runs}/${plan[4]}`);
    try {
      assertEquals(await lockHeld(`${runs}/${plan[4]}`), true);
      assertEquals(await lockHeld(`${runs}/${plan[2]}`), false, "released after the run");
      assertEquals(await lockHeld(`${runs}/${plan[5]}`), false, "no directory yet");
      const { runIds, statuses } = await suiteStatus(SUITE, "smoke", r, runs);
      assertEquals(runIds, plan);
      assertEquals(statuses, ["started", "missing", "done", "missing", "running", "missing"]);
      // The script's array holds the runs neither done nor running.
      assertEquals(await main(["--suite", SUITE, ...flags, "--slurm"]), 0);
      const script = await Deno.readTextFile(`${runs}/slurm/${SUITE}_smoke.sbatch`);
      assertStringIncludes(script, "\n#SBATCH --array=0-1,3,5\n");
      assertStringIncludes(script, `\n#SBATCH --chdir=${Deno.cwd()}\n`);
      assertStringIncludes(script, `\nexec ${Deno.execPath()} \\\n`);
    } finally {
      lock.release();
    }
    assertEquals(await lockHeld(`${runs}/${plan[4]}`), false);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// --- A real single-node Slurm cluster (munged, slurmctld, slurmd on this machine) ------------

const SLURM_TOOLS = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel"];

async function which(cmd: string): Promise<string | undefined> {
  for (const d of [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/sbin", "/sbin"]) {
    if (d && (await Deno.stat(`${d}/${cmd}`).then((s) => s.isFile, () => false))) {
      return `${d}/${cmd}`;
    }
  }
  return undefined;
}

const missingTools: string[] = [];
for (const t of SLURM_TOOLS) if (!(await which(t))) missingTools.push(t);
const isRoot = Deno.uid() === 0;
const inCI = Deno.env.get("CI") === "true";
const slurmAbsent = missingTools.length > 0 || !isRoot;
if (slurmAbsent && !inCI) {
  console.log(
    `slurm_test: skipping the single-node Slurm test (${
      isRoot ? `missing ${missingTools.join(", ")}` : "needs root"
    }; apt-get install slurm-wlm munge)`,
  );
}

async function sh(cmd: string, args: string[], env: Record<string, string> = {}) {
  const out = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

/** `deno task experiments` on the smoke budget of SUITE, in a child process. */
function smokeSuite(
  results: string,
  runs: string,
  extra: string[] = [],
  env: Record<string, string> = {},
) {
  return sh(Deno.execPath(), [
    "run",
    "-A",
    "--unstable-webgpu",
    CLI,
    "--suite",
    SUITE,
    "--budget",
    "smoke",
    "--results-dir",
    results,
    "--runs-dir",
    runs,
    ...extra,
  ], env);
}

/** Polls until `ok()` or the timeout; returns whether it held. */
async function until(ok: () => Promise<boolean>, seconds: number, everyMs = 200) {
  const end = Date.now() + seconds * 1000;
  while (Date.now() < end) {
    if (await ok()) return true;
    await new Promise((res) => setTimeout(res, everyMs));
  }
  return false;
}

/**
 * Starts munged, slurmctld and slurmd with everything (key, socket, config, state, spool, logs,
 * pid files) in `base`, on random ports; returns the config path and a stop function that
 * cancels what is queued and ends the three daemons by their pid files.
 */
async function startCluster(base: string) {
  await Deno.chmod(base, 0o755);
  const munge = `${base}/munge`;
  await Deno.mkdir(munge, { mode: 0o711 });
  await Deno.chmod(munge, 0o711); // munged wants its socket's directory searchable by all
  for (const d of ["state", "spool", "log"]) await Deno.mkdir(`${base}/${d}`);
  const conf = `${base}/slurm.conf`;
  const env = { SLURM_CONF: conf };
  const host = Deno.hostname().split(".")[0];
  const cpus = Math.max(1, Math.min(2, navigator.hardwareConcurrency || 1));
  const port = 20000 + Math.floor(Math.random() * 20000);
  await Deno.writeTextFile(
    conf,
    [
      "ClusterName=vitssl",
      `SlurmctldHost=${host}(127.0.0.1)`,
      `SlurmctldPort=${port}`,
      `SlurmdPort=${port + 1}`,
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      "CredType=cred/munge",
      `AuthInfo=socket=${munge}/socket`,
      "MpiDefault=none",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_Core",
      "ReturnToService=2",
      "JobCompType=jobcomp/none",
      "JobAcctGatherType=jobacct_gather/none",
      "AccountingStorageType=accounting_storage/none",
      "MailProg=/bin/true",
      "KillWait=5",
      `StateSaveLocation=${base}/state`,
      `SlurmdSpoolDir=${base}/spool`,
      `SlurmctldPidFile=${base}/slurmctld.pid`,
      `SlurmdPidFile=${base}/slurmd.pid`,
      `SlurmctldLogFile=${base}/log/slurmctld.log`,
      `SlurmdLogFile=${base}/log/slurmd.log`,
      `NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} State=UNKNOWN`,
      "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
      "",
    ].join("\n"),
  );
  const pidFiles: string[] = [];
  const stop = async () => {
    await sh("scancel", ["--full", "-u", "root"], env).catch(() => {});
    await until(async () => (await sh("squeue", ["-h"], env)).text.trim() === "", 30);
    for (const f of pidFiles.reverse()) {
      const pid = Number((await Deno.readTextFile(f).catch(() => "")).trim());
      if (!pid) continue;
      try {
        Deno.kill(pid, "SIGTERM");
      } catch { /* gone */ }
      const gone = await until(() => Promise.resolve(!processAlive(pid)), 10);
      if (!gone) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch { /* gone */ }
      }
    }
  };
  const daemon = async (cmd: string, args: string[], pidFile: string) => {
    pidFiles.push(pidFile);
    const out = await new Deno.Command((await which(cmd))!, {
      args,
      env,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).output();
    if (out.code !== 0) throw new Error(`${cmd} exited ${out.code}; logs in ${base}`);
  };
  try {
    const key = await sh((await which("mungekey"))!, ["--create", `--keyfile=${munge}/munge.key`]);
    assertEquals(key.code, 0, key.text);
    await daemon("munged", [
      `--socket=${munge}/socket`,
      `--key-file=${munge}/munge.key`,
      `--pid-file=${munge}/munged.pid`,
      `--log-file=${munge}/munged.log`,
      `--seed-file=${munge}/munged.seed`,
    ], `${munge}/munged.pid`);
    await daemon("slurmctld", ["-i"], `${base}/slurmctld.pid`);
    await daemon("slurmd", [], `${base}/slurmd.pid`);
    const idle = await until(
      async () => /^(idle|mix|alloc)/.test((await sh("sinfo", ["-h", "-o", "%t"], env)).text),
      60,
      500,
    );
    assert(idle, `the node did not come up: ${(await sh("sinfo", [], env)).text}`);
  } catch (e) {
    await stop();
    throw e;
  }
  return { conf, env, stop };
}

function processAlive(pid: number): boolean {
  try {
    Deno.kill(pid, "SIGCONT");
    return !/^\S+\s+\S+\s+Z/.test(
      Deno.readTextFileSync(`/proc/${pid}/stat`).replace(/\(.*\)/, "x"),
    );
  } catch {
    return false;
  }
}

/** The columns that differ between two runs of the same configuration (time, place, host). */
const NOT_COMPARED = new Set(["seconds", "images_per_s", "backend", "run_dir", "date"]);

Deno.test({
  name: "slurm: a job array on a single-node cluster equals the local rows, survives scancel",
  ignore: slurmAbsent && !inCI,
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    assert(!slurmAbsent, `CI needs Slurm: missing ${missingTools.join(", ")} (or not root)`);
    const base = await Deno.makeTempDir({ prefix: "vitssl-slurm-" });
    const { env, stop } = await startCluster(base);
    const before = Deno.env.get("SLURM_CONF");
    Deno.env.set("SLURM_CONF", env.SLURM_CONF);
    try {
      const plan = budgetConfigs(SUITE, "smoke").map((p) => p.runId);
      // The reference: the same suite run here, in another results directory, in a process of
      // its own as each Slurm task is (not in this one, where other test files share the native
      // library's process-wide settings).
      const local = `${base}/local`;
      const ref = await smokeSuite(`${local}/results`, `${local}/runs`);
      assertEquals(ref.code, 0, ref.text);
      const r = `${base}/slurm/results`, runs = `${base}/slurm/runs`;
      const submit = async () => {
        const out = await smokeSuite(
          r,
          runs,
          ["--slurm", "--submit", "--slurm-opt", "--time=10"],
          env,
        );
        assertEquals(out.code, 0, out.text);
        const job = /submitted job (\d+)/.exec(out.text)?.[1];
        assert(job, out.text);
        return job as string;
      };
      const tasks = async (job: string) =>
        (await sh("squeue", ["-h", "-r", "-j", job, "-o", "%i %T"], env)).text.trim().split("\n")
          .filter((l) => l.trim() !== "").map((l) => l.split(/\s+/));
      const waitJob = async (job: string) => {
        const done = await until(async () => (await tasks(job)).length === 0, 300, 500);
        assert(done, `job ${job} still queued after 300 s`);
      };
      const rowIds = async () => {
        const t = await readTable(`${r}/${SUITE}.csv`);
        return t.numRows() ? (t.array("run_id") as unknown[]).map(String) : [];
      };

      // 1. The whole array; the first task seen running is cancelled mid-run.
      const job = await submit();
      let cancelled: number | undefined;
      await until(
        async () => {
          const running = (await tasks(job)).find(([, state]) => state === "RUNNING");
          if (!running) return false;
          cancelled = Number(running[0].split("_")[1]);
          const out = await sh("scancel", [running[0]], env);
          assertEquals(out.code, 0, out.text);
          return true;
        },
        120,
        100,
      );
      assert(cancelled !== undefined, "no array task was seen running");
      await waitJob(job);
      const after = await rowIds();
      const done = plan.filter((id) => after.includes(id));
      assertEquals(after.length, done.length, "no duplicate rows");
      // (The task is cancelled within a fraction of a second of starting, in deno's start-up;
      // should it have finished first anyway, the resubmission below has nothing to redo.)
      const missing = plan.map((_, i) => i).filter((i) => !after.includes(plan[i]));
      const { statuses } = await suiteStatus(SUITE, "smoke", r, runs);
      assertEquals(runsToSubmit(statuses), missing);
      if (!after.includes(plan[cancelled!])) {
        assertEquals(missing, [cancelled!], "only the cancelled task's run is missing");
      } else {
        console.log(`slurm_test: task ${cancelled} finished before scancel reached it`);
      }

      // 2. Resubmitted: an array over the missing runs only, and then the suite is complete.
      if (missing.length) {
        const again = await submit();
        const script = await Deno.readTextFile(`${runs}/slurm/${SUITE}_smoke.sbatch`);
        assertStringIncludes(script, `\n#SBATCH --array=${arraySpec(missing)}\n`);
        await waitJob(again);
      }
      const final = await suiteStatus(SUITE, "smoke", r, runs);
      assertEquals(final.statuses, plan.map(() => "done"));
      // Nothing left to submit.
      const none = await sh(Deno.execPath(), [
        "run",
        "-A",
        CLI,
        "--suite",
        SUITE,
        "--results-dir",
        r,
        "--runs-dir",
        runs,
        "--slurm",
        "--submit",
      ], env);
      assertStringIncludes(none.text, "nothing to submit: 6 of 6 runs done, 0 running or queued");

      // 3. Every row exactly once, whole, and equal to the local run's (same runs, same numbers).
      const text = await Deno.readTextFile(`${r}/${SUITE}.csv`);
      const lines = text.trim().split("\n");
      assertEquals(lines.length, 1 + plan.length, text);
      const slurmRows = (await readTable(`${r}/${SUITE}.csv`)).objects() as Record<
        string,
        unknown
      >[];
      const localRows = (await readTable(`${local}/results/${SUITE}.csv`)).objects() as Record<
        string,
        unknown
      >[];
      assertEquals(slurmRows.map((x) => x.run_id).sort(), [...plan].sort());
      const strip = (x: Record<string, unknown>) =>
        Object.fromEntries(Object.entries(x).filter(([k]) => !NOT_COMPARED.has(k)));
      for (const id of plan) {
        const a = slurmRows.find((x) => x.run_id === id)!;
        const b = localRows.find((x) => x.run_id === id)!;
        assertEquals(strip(a), strip(b), id);
        assert(Number.isFinite(a.knn_top1) && Number.isFinite(a.linear_top1), id);
      }
      // The curves: each run's once, equal to the local ones.
      const curves = async (dir: string) => {
        const t = await readTable(`${dir}/${SUITE}.curves.csv`);
        const rows = t.objects() as Record<string, unknown>[];
        return plan.map((id) => rows.filter((x) => x.run_id === id));
      };
      assertEquals(await curves(r), await curves(`${local}/results`));
      // Each task's log ends with its run recorded.
      const logs = [...Deno.readDirSync(`${runs}/slurm`)].filter((e) => e.name.endsWith(".out"));
      assert(logs.length >= plan.length, logs.map((e) => e.name).join(" "));
    } finally {
      if (before === undefined) Deno.env.delete("SLURM_CONF");
      else Deno.env.set("SLURM_CONF", before);
      await stop();
      await Deno.remove(base, { recursive: true }).catch(() => {});
    }
  },
});
