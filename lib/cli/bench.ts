/**
 * `deno task bench`: throughput of the standard workloads (see `workloads.ts`) on one backend.
 *
 * Per workload it prints one line: with `--json`, a JSON object (images/s, ms/step, analytic
 * FLOPs and GFLOP/s, peak RSS, `tf.memory()` and its growth, augmentation and loader images/s,
 * backend and threads); otherwise a readable summary. Progress goes to stderr, so `--json`
 * output is exactly one JSON line per workload on stdout.
 *
 * ```sh
 * deno task bench                                      # every workload, auto backend, 10 s each
 * deno task bench --workload small28 --backend wasm --json  # a worker per core (default)
 * deno task bench --workload small28 --backend wasm --workers 1 --threads 2 --json
 * deno task bench --workload small28 --profile          # + the top kernels of one step
 * deno task bench --workload small28 --backend native --precision bf16 --json  # bf16 matmuls
 * deno task bench --workload tiny32 --steps 200 --json  # memory check: tf_bytes_growth 0
 * deno task bench --smoke --json                        # seconds: the harness still works
 * deno task bench --workload tiny32 --precision bf16 --pytorch --rounds 4  # beside PyTorch
 * ```
 * @module
 */
import { BackendError, type BackendName, initBackend, type Precision } from "../backends/mod.ts";
import { helpText } from "./args.ts";
import { BACKEND_FLAG, PRECISION_FLAG } from "../backends/flags.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";
import { profileTable } from "../bench/profile.ts";
import { type BenchResult, benchWorkload, isGpuBackend } from "../bench/run.ts";
import {
  blasWarning,
  defaultPython,
  peerLine,
  peerName,
  type PeerRun,
  PeerUnavailable,
  runTorchPeer,
} from "../bench/peer.ts";
import { median, spreadNote } from "../bench/measure.ts";
import { WORKLOADS } from "../bench/workloads.ts";

const SPECS: FlagSpec[] = [
  {
    key: "workload",
    flag: "workload",
    kind: "string",
    choices: WORKLOADS,
    list: true,
    help: "workload(s), comma-separated (default: all)",
  },
  { ...BACKEND_FLAG, help: "tensor backend (default auto: native on a CPU with the library)" },
  { ...PRECISION_FLAG, help: PRECISION_FLAG.help + " (default fp32)" },
  {
    key: "threads",
    flag: "threads",
    kind: "int",
    min: 1,
    help: "backend threads (wasm: default 1; native: default every core)",
  },
  {
    key: "workers",
    flag: "workers",
    kind: "int",
    min: 1,
    help: "data-parallel Deno workers of a step, each with its own backend (default: one per " +
      "core on wasm/cpu with 1 thread, else 1)",
  },
  { key: "json", flag: "json", kind: "bool", help: "one JSON line per workload on stdout" },
  { key: "seconds", flag: "seconds", kind: "number", help: "minimum timed seconds (default 10)" },
  { key: "warmup", flag: "warmup", kind: "int", help: "untimed warm-up steps (default 2)" },
  {
    key: "steps",
    flag: "steps",
    kind: "int",
    min: 1,
    help: "exactly this many timed steps (ignores --seconds)",
  },
  {
    key: "batch",
    flag: "batch",
    kind: "int",
    help: "override the workload's batch (not for the table)",
  },
  {
    key: "mode",
    flag: "mode",
    kind: "string",
    choices: ["step", "forward"],
    help: "step or forward (default: forward for vit_small224 on CPUs)",
  },
  {
    key: "auxSeconds",
    flag: "aux-seconds",
    kind: "number",
    help: "seconds of the augmentation and loader timings (default 3)",
  },
  { key: "profile", flag: "profile", kind: "bool", help: "also profile one step per kernel" },
  {
    key: "pytorch",
    flag: "pytorch",
    kind: "bool",
    help: "after each workload, time PyTorch's reference step on this CPU (float32, then bf16 " +
      "autocast; Debian's python3-torch) and print vitssl's speed as a multiple of each",
  },
  {
    key: "rounds",
    flag: "rounds",
    kind: "int",
    min: 1,
    help: "with --pytorch: alternate vitssl and PyTorch this many times a workload, then print " +
      "the median ratios (default 1)",
  },
  {
    key: "python",
    flag: "python",
    kind: "string",
    help: "interpreter with torch for --pytorch (default /usr/bin/python3, else python3)",
  },
  { key: "top", flag: "top", kind: "int", help: "profile rows to print (default 15)" },
  {
    key: "smoke",
    flag: "smoke",
    kind: "bool",
    help: "a few seconds: batch <= 8, one step (for tests)",
  },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** A profile row's peak: attention multiplies in float32 in both precisions, the rest as the run. */
function peakOfKernel(r: BenchResult): (kernel: string) => number | null {
  return (kernel) => kernel.startsWith("VitsslAttention") ? r.peak_fp32_gflops : r.peak_gflops;
}

/** A readable summary of one result (and its profile tables). */
export function formatResult(r: BenchResult, top = 15): string {
  const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
  const lines = [
    `${r.workload} [${r.mode}, ${r.precision}] on ${r.backend} (${r.device}, ` +
    `${r.threads} thread(s)` +
    `${r.workers > 1 ? `, ${r.workers} workers` : ""}), batch ` +
    `${r.batch}: ${r.images_per_s.toFixed(1)} images/s, ${r.ms_per_step.toFixed(0)} ms/step ` +
    `(median ${r.ms_per_step_median.toFixed(0)}, p10-p90 ${r.ms_per_step_p10.toFixed(0)}-` +
    `${r.ms_per_step_p90.toFixed(0)}), ${(r.flops_per_step / 1e9).toFixed(2)} GFLOP/step, ` +
    `${r.gflops_per_s.toFixed(1)} GFLOP/s` +
    (r.peak_gflops
      ? ` (${(100 * r.gflops_per_s / r.peak_gflops).toFixed(0)}% of this CPU's peak for ` +
        `these products, ${r.peak_gflops.toFixed(0)} GFLOP/s measured)`
      : ""),
    `  ${r.cpu}; ${r.steps} steps in ${r.seconds.toFixed(1)} s; peak RSS ${
      mb(r.peak_rss_bytes)
    }; tf ` +
    `${mb(r.tf_bytes)} (growth ${r.tf_bytes_growth} B, ${r.tf_tensors_growth} tensors); ` +
    `augmentation ${r.augment_images_per_s} img/s; loader ${r.loader_images_per_s} img/s; ` +
    `load ${r.load_avg_start} -> ${r.load_avg_end}`,
  ];
  if (r.profile) {
    const p = r.profile;
    const peakOf = r.peak_gflops === null ? undefined : peakOfKernel(r);
    lines.push(
      "",
      `profile of one step: ${p.wallMs.toFixed(0)} ms wall, ${p.kernelMs.toFixed(0)} ms in ` +
        `${p.kernels} kernels (${(p.wallMs - p.kernelMs).toFixed(0)} ms outside kernels)`,
      "",
      profileTable(p.byKernel, top, peakOf),
      "",
      profileTable(p.byShape, top, peakOf),
    );
  }
  return lines.join("\n");
}

/** Parses the arguments and runs the benchmark; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const { values: v, positional } = parseFlags(args, SPECS);
  if (v.help) {
    console.log(helpText("deno task bench [flags]: training-step throughput", SPECS));
    return 0;
  }
  if (positional.length) {
    throw new UsageError(`unexpected argument "${positional[0]}": use --workload NAME`);
  }
  const names = v.workload ? String(v.workload).split(",").filter((s) => s) : WORKLOADS;
  const backend = String(v.backend ?? "auto");
  const mode = v.mode === undefined ? undefined : String(v.mode) as "step" | "forward";
  const steps = v.steps as number | undefined;
  // native's pool defaults to every core (undefined, also for auto); wasm's build to one thread.
  const threads = (v.threads as number | undefined) ??
    (backend === "native" || backend === "auto" ? undefined : 1);
  const workers = v.workers as number | undefined;

  const precision = (v.precision ?? "fp32") as Precision;
  const info = await initBackend({ backend: backend as BackendName, threads, precision });
  const log = (s: string) => console.error(s);
  log(`bench: ${info.summary}`);
  const rounds = (v.rounds as number | undefined) ?? 1;
  if (rounds > 1 && !v.pytorch) {
    throw new UsageError("--rounds alternates vitssl with PyTorch: add --pytorch");
  }
  const bench = (workload: string) =>
    benchWorkload({
      workload,
      backend: info,
      precision,
      mode,
      batch: v.batch as number | undefined,
      seconds: steps !== undefined ? 0 : (v.seconds as number | undefined),
      warmup: v.warmup as number | undefined,
      minSteps: steps,
      maxSteps: steps,
      auxSeconds: v.auxSeconds as number | undefined,
      profile: !!v.profile,
      smoke: !!v.smoke,
      workers,
      log,
    }).catch((e) => {
      // Emscripten aborts (or, once the heap is at 4 GiB, its malloc faults) when memory runs
      // out: the 32-bit wasm heap stops at 4 GiB.
      if (info.name === "wasm" && /Aborted\(\)|memory access out of bounds/.test(String(e))) {
        throw new BackendError(
          `wasm aborted during ${workload}: most likely its heap reached the 4 GiB limit of ` +
            "32-bit WebAssembly (a training step keeps every forward intermediate for the " +
            "backward pass). Rerun with a smaller --batch, or on --backend cpu or webgpu.",
        );
      }
      throw e;
    });
  const python = v.python === undefined ? defaultPython() : String(v.python);
  let peerOff = !v.pytorch;
  if (v.pytorch && isGpuBackend(info)) {
    log("PyTorch skipped: its reference step runs on the CPU, this run on a GPU");
    peerOff = true;
  }
  for (const workload of names) {
    const ratios = new Map<string, number[]>();
    for (let round = 0; round < rounds; round++) {
      const r: BenchResult & { pytorch?: PeerRun[] } = await bench(workload);
      const peers: PeerRun[] = [];
      for (const bf16 of peerOff ? [] : [false, true]) {
        log(`${workload}: PyTorch ${bf16 ? "bf16 autocast" : "fp32"} (${python})`);
        const peer = await runTorchPeer({
          workload,
          // As many threads as the vitssl run used cores (workers x threads each).
          threads: r.threads * r.workers,
          bf16,
          mode: r.mode,
          python,
          ...(v.smoke
            ? { steps: 1, warmup: 0, batch: r.batch }
            : { seconds: v.seconds as number | undefined, steps, batch: v.batch as number }),
        }).catch((e) => {
          if (!(e instanceof PeerUnavailable)) throw e;
          log(`PyTorch skipped: ${e.message}`);
          peerOff = true;
          return null;
        });
        if (!peer) break;
        const warn = round === 0 && !bf16 ? blasWarning(peer.blas) : null;
        if (warn) log(`warning: ${warn}`);
        peers.push(peer);
        const key = peer.precision;
        ratios.set(key, [...ratios.get(key) ?? [], r.images_per_s / peer.images_per_s]);
      }
      if (peers.length) r.pytorch = peers;
      const uneven = spreadNote(r.ms_per_step_p10, r.ms_per_step_p90);
      if (uneven) log(`note: ${r.workload}: ${uneven}`);
      console.log(
        v.json ? JSON.stringify(r) : formatResult(r, (v.top as number | undefined) ?? 15),
      );
      if (peers.length && !v.json) {
        console.log(peerLine(workload, r.precision, r.images_per_s, peers));
      }
    }
    if (rounds > 1 && ratios.size) {
      const parts = [...ratios].map(([p, xs]) =>
        `${peerName(p)} median ${median(xs).toFixed(2)} (${xs.map((x) => x.toFixed(2)).join(", ")})`
      );
      (v.json ? log : console.log)(
        `${workload}: vitssl / PyTorch over ${rounds} rounds: ${parts.join("; ")}`,
      );
    }
  }
  return 0;
}

if (import.meta.main) runMain(main);
