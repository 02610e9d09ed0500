/**
 * PyTorch beside `deno task bench`, measured in the same run on the same CPU: the reference step
 * `tests/reference/moco_step_torch.py` (the same MoCo v3 step, ViT, heads and AdamW in plain
 * torch) in float32 and under `torch.autocast("cpu", dtype=torch.bfloat16)`, with Debian's
 * `python3-torch`. `deno task bench --pytorch` runs both after each workload and prints vitssl's
 * speed as a multiple of each (`peerLine`).
 *
 * @example
 * ```ts
 * import { runTorchPeer } from "./peer.ts";
 * const fp32 = await runTorchPeer({ workload: "small28", threads: 2, bf16: false });
 * console.log(fp32.images_per_s);
 * ```
 * @module
 */
import { fileURLToPath } from "node:url";

/** The reference script, relative to this module. */
export const TORCH_STEP_SCRIPT: string = fileURLToPath(
  new URL("../../tests/reference/moco_step_torch.py", import.meta.url),
);

/** Debian's interpreter (where `apt-get install python3-torch` puts torch), else `python3`. */
export function defaultPython(): string {
  try {
    Deno.statSync("/usr/bin/python3");
    return "/usr/bin/python3";
  } catch {
    return "python3";
  }
}

/** One PyTorch measurement (the fields of the script's JSON line that the comparison uses). */
export interface PeerRun {
  workload: string;
  /** `fp32` or `bf16-autocast`. */
  precision: string;
  threads: number;
  batch: number;
  steps: number;
  images_per_s: number;
  /** `torch.__version__`. */
  torch: string;
  /** The BLAS libraries mapped into the process (`/proc/self/maps`). */
  blas: string[];
}

/** PyTorch could not run here (no interpreter, no torch): the message is one line saying what to do. */
export class PeerUnavailable extends Error {
  override name = "PeerUnavailable";
}

/** What {@link runTorchPeer} runs. */
export interface PeerOptions {
  workload: string;
  threads: number;
  /** `torch.autocast` to bf16 around the forwards. */
  bf16: boolean;
  /** `step` or `forward` (default: the script's, forward for vit_small224). */
  mode?: "step" | "forward";
  /** Minimum timed seconds (default 10) unless `steps`. */
  seconds?: number;
  /** Exactly this many timed steps. */
  steps?: number;
  warmup?: number;
  batch?: number;
  /** The interpreter (default {@link defaultPython}). */
  python?: string;
}

/**
 * Parses the script's JSON line into a {@link PeerRun}; throws on anything else.
 *
 * @example
 * ```ts
 * parsePeerLine('{"workload":"small28","precision":"fp32","threads":2,"batch":128,"steps":9,' +
 *   '"images_per_s":300.5,"torch":"1.13.1","blas":[]}').images_per_s; // 300.5
 * ```
 */
export function parsePeerLine(line: string): PeerRun {
  const j = JSON.parse(line);
  if (typeof j?.images_per_s !== "number" || typeof j?.workload !== "string") {
    throw new Error(`not a reference step result: ${line.slice(0, 120)}`);
  }
  return {
    workload: j.workload,
    precision: String(j.precision ?? "fp32"),
    threads: Number(j.threads),
    batch: Number(j.batch),
    steps: Number(j.steps),
    images_per_s: j.images_per_s,
    torch: String(j.torch ?? "?"),
    blas: Array.isArray(j.blas) ? j.blas.map(String) : [],
  };
}

/**
 * Runs the reference step once in a child process and returns its result. Throws
 * {@link PeerUnavailable} (one line: what to install) where the interpreter or torch is missing,
 * and an `Error` with the script's last line of error output where it fails otherwise.
 */
export async function runTorchPeer(opts: PeerOptions): Promise<PeerRun> {
  const python = opts.python ?? defaultPython();
  const args = [TORCH_STEP_SCRIPT, "--workload", opts.workload, "--threads", String(opts.threads)];
  if (opts.steps !== undefined) args.push("--steps", String(opts.steps));
  else args.push("--seconds", String(opts.seconds ?? 10));
  if (opts.warmup !== undefined) args.push("--warmup", String(opts.warmup));
  if (opts.batch !== undefined) args.push("--batch", String(opts.batch));
  if (opts.mode !== undefined) args.push("--mode", opts.mode);
  if (opts.bf16) args.push("--bf16");
  const install = "apt-get install python3-torch libopenblas0-openmp";
  let out: Deno.CommandOutput;
  try {
    out = await new Deno.Command(python, { args, stdout: "piped", stderr: "piped" }).output();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new PeerUnavailable(`no ${python} to run PyTorch beside vitssl (${install})`);
    }
    throw e;
  }
  const err = new TextDecoder().decode(out.stderr);
  if (!out.success) {
    if (/No module named .?torch/.test(err)) {
      throw new PeerUnavailable(`${python} has no torch (${install}, or --python PATH)`);
    }
    const last = err.trim().split("\n").pop() ?? "";
    throw new Error(`the PyTorch reference step failed (exit ${out.code}): ${last}`);
  }
  const lines = new TextDecoder().decode(out.stdout).trim().split("\n");
  return parsePeerLine(lines[lines.length - 1]);
}

/**
 * A warning where PyTorch runs on the pthread build of OpenBLAS: under PyTorch's OpenMP threads it
 * runs float32 steps several times slower (2.2-3.7x on the Zen 4 of BENCHMARKS.md), which is not
 * the PyTorch a user of Debian's OpenMP build gets. null otherwise.
 *
 * @example
 * ```ts
 * blasWarning(["/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblasp-r0.3.21.so"]); // "PyTorch ..."
 * ```
 */
export function blasWarning(blas: string[]): string | null {
  if (!blas.some((p) => p.includes("openblas-pthread"))) return null;
  return "PyTorch ran on the pthread OpenBLAS, much slower in float32 under its OpenMP threads: " +
    "update-alternatives --set libopenblas.so.0-x86_64-linux-gnu " +
    "/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0 (and libblas.so.3 likewise)";
}

/**
 * A PyTorch run's precision as the ratios name it: `autocast` for `bf16-autocast`, else as given.
 *
 * @example
 * ```ts
 * peerName("bf16-autocast"); // "autocast"
 * ```
 */
export function peerName(precision: string): string {
  return precision === "bf16-autocast" ? "autocast" : precision;
}

/**
 * vitssl's images/s as a multiple of each PyTorch run's, one line: the peers' speeds, then the
 * ratios (vitssl / PyTorch: above 1, vitssl is faster).
 *
 * @example
 * ```ts
 * peerLine("small28", "bf16", 600, [
 *   { workload: "small28", precision: "fp32", threads: 2, batch: 128, steps: 9, images_per_s: 300, torch: "1.13.1", blas: [] },
 * ]);
 * // "small28 beside PyTorch 1.13.1 (2 threads, same run): fp32 300.0 images/s; vitssl bf16 600.0: 2.00x PyTorch fp32"
 * ```
 */
export function peerLine(
  workload: string,
  precision: string,
  imagesPerS: number,
  peers: PeerRun[],
): string {
  if (!peers.length) return `${workload}: no PyTorch run`;
  const speed = (p: PeerRun) => peerName(p.precision) + (p.precision === "fp32" ? "" : " bf16");
  const speeds = peers.map((p) => `${speed(p)} ${p.images_per_s.toFixed(1)}`).join(", ");
  const ratios = peers.map((p) =>
    `${(imagesPerS / p.images_per_s).toFixed(2)}x PyTorch ${peerName(p.precision)}`
  ).join(", ");
  return `${workload} beside PyTorch ${peers[0].torch} (${peers[0].threads} threads, same run): ` +
    `${speeds} images/s; vitssl ${precision} ${imagesPerS.toFixed(1)}: ${ratios}`;
}
