/**
 * Choosing where tensors live: `tensorflow` (tfjs-node-gpu, CUDA), `webgpu` (Deno's
 * `navigator.gpu`), `native` (this project's C library through Deno's FFI, `./native/`; the only
 * backend that runs `--precision bf16`), `wasm` (XNNPACK, SIMD) or `cpu` (pure JS).
 *
 * `auto` tries them in that order and reports why it chose what it chose: without a CUDA binding
 * or a hardware GPU, on Linux x86-64 (the one platform the native library is built for) that is
 * `native`, elsewhere `wasm`. A backend named explicitly either starts or throws a
 * {@link BackendError} that says what to install: there is no silent fallback.
 *
 * @example
 * ```ts
 * import { initBackend } from "./mod.ts";
 * const info = await initBackend({ backend: "wasm" });
 * console.log(info.summary); // "wasm (SIMD, 1 thread)"
 * ```
 * @module
 */
import { UserError } from "../core/errors.ts";
import * as tf from "@tensorflow/tfjs-core";
// tfjs-core's npm entry registers no gradients, and its ESM files use extension-less imports
// that Deno cannot load; the union package's Node bundle registers them all (in tfjs's global
// registry, shared with tfjs-core), so tf.grads/variableGrads work on every backend.
import "@tensorflow/tfjs";
import { createRequire } from "node:module";
import { installWasmMatMulFastPath } from "./wasm/matmul.ts";
import { installWasmKernels } from "./wasm/kernels.ts";
import { useDefaultWasm, useThreadedWasm } from "./wasm/threads.ts";

/** Backend names that {@link initBackend} accepts. */
export const BACKENDS = ["auto", "tensorflow", "webgpu", "native", "wasm", "cpu"] as const;
/** A backend name, or `auto`. */
export type BackendName = typeof BACKENDS[number];

/**
 * Matrix-product precisions: `fp32`, `bf16` (mixed precision as PyTorch's CPU autocast: the
 * inputs of every matrix product rounded to bf16, float32 accumulation; all else float32), or
 * `auto`: `bf16` on the `native` backend of a CPU that multiplies bf16 in hardware (AVX512-BF16),
 * `fp32` everywhere else. Only the `native` backend runs `bf16`.
 *
 * @example
 * ```ts
 * await initBackend({ backend: "native", precision: PRECISIONS[1] }); // bf16 matmuls
 * (await initBackend({ precision: "auto" })).precision; // "bf16" or "fp32": what runs
 * ```
 */
export const PRECISIONS = ["fp32", "bf16", "auto"] as const;
/** A matrix-product precision, or `auto` (see {@link PRECISIONS}). */
export type Precision = typeof PRECISIONS[number];

/** Options of {@link initBackend}. */
export interface BackendOptions {
  /** Which backend to start; `auto` (the default) picks the fastest that starts. */
  backend?: BackendName;
  /**
   * Threads: wasm's (only the threaded build uses more than 1; default 1), or the native
   * library's pool (default: every core).
   */
  threads?: number;
  /** Accept a software WebGPU adapter (Mesa's lavapipe) in `auto` mode. Default false. */
  allowSoftwareWebGPU?: boolean;
  /** Print the choice to stderr. Default false. */
  verbose?: boolean;
  /** Matrix-product precision (default `fp32`); `bf16` starts only the `native` backend. */
  precision?: Precision;
}

/** What {@link initBackend} started, and why. */
export interface BackendInfo {
  /** The tfjs backend name now active: `tensorflow`, `webgpu`, `native`, `wasm` or `cpu`. */
  name: Exclude<BackendName, "auto">;
  /** Device or adapter description (GPU name, "SIMD" ...). */
  device: string;
  /** Threads used by the backend (1 for wasm's single-threaded build). */
  threads: number;
  /** One line: backend, device, threads. */
  summary: string;
  /** Why each backend before it was skipped (auto mode), in order. */
  skipped: string[];
  /** The matrix products' precision in use (`auto` resolved). */
  precision: "fp32" | "bf16";
}

/** A backend was asked for and cannot start; the message says why and what to do. */
export class BackendError extends UserError {
  override name = "BackendError";
}

/** Where the wasm binaries of tfjs-backend-wasm are on disk (as a file:// URL prefix). */
function wasmDir(): string {
  const req = createRequire(import.meta.url);
  const entry = req.resolve("@tensorflow/tfjs-backend-wasm");
  return "file://" + entry.replace(/[^/\\]+$/, "");
}

let wasmPathsSet = false;

async function tryWasm(threads: number): Promise<BackendInfo> {
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  if (threads > 1) {
    // tfjs-backend-wasm itself never starts its threaded build under Deno (it sees Node).
    try {
      await useThreadedWasm(threads);
    } catch (e) {
      throw new BackendError(
        `wasm with ${threads} threads cannot start: ${e instanceof Error ? e.message : e}. ` +
          "Use threads: 1 (the single-threaded SIMD build).",
      );
    }
  } else {
    try {
      await useDefaultWasm();
    } catch (e) {
      throw new BackendError(e instanceof Error ? e.message : String(e));
    }
    // tfjs-backend-wasm's own threaded path needs Node's worker_threads with a blob: URL, which
    // Deno refuses (ERR_WORKER_PATH). Its flag is false only while IS_NODE is true, and tryCpu
    // sets IS_NODE to false: pin the flag so the single-threaded SIMD build always loads.
    tf.env().set("WASM_HAS_MULTITHREAD_SUPPORT", false);
    if (!wasmPathsSet) {
      wasm.setWasmPaths(wasmDir());
      wasmPathsSet = true;
    }
  }
  if (!(await tf.setBackend("wasm"))) {
    throw new BackendError("the wasm backend failed to initialise (see the error above)");
  }
  // Send transposed and rank-3 matmuls (most of a training step's backward) to XNNPACK: ~10x.
  installWasmMatMulFastPath();
  // Fused LayerNorm, GELU and leading-axis sums, and batched matmuls (lib/backends/wasm/kernels.c).
  installWasmKernels();
  const simd = threads > 1 || await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT");
  const n = wasm.getThreadsCount();
  return info("wasm", simd ? "SIMD" : "no SIMD", n);
}

async function tryNative(
  threads: number | undefined,
  precision: Precision,
): Promise<BackendInfo> {
  const { startNative } = await import("./native/backend.ts");
  const { NativeLoadError } = await import("./native/ffi.ts");
  try {
    const r = await startNative({ threads, precision });
    if (r.gemm === "bf16-emulated") {
      console.error(
        "native: no AVX512-BF16 (this CPU lacks it, or VITSSL_NATIVE_ISA is below avx512): " +
          "--precision bf16 runs the emulated bf16 matmuls (float32 arithmetic on bf16-rounded " +
          "inputs: the same rounding, no speed-up)",
      );
    }
    const device = `C, ${r.isa}${r.gemm === "fp32" ? "" : `, ${r.gemm}`}`;
    return { ...info("native", device, r.threads), precision: r.gemm === "fp32" ? "fp32" : "bf16" };
  } catch (e) {
    if (e instanceof NativeLoadError) throw new BackendError(e.message);
    throw e;
  }
}

async function tryCpu(): Promise<BackendInfo> {
  await import("@tensorflow/tfjs-backend-cpu");
  // tfjs-backend-cpu prints a "use tfjs-node" banner on first use in Node-like runtimes.
  tf.env().set("IS_NODE", false);
  if (!(await tf.setBackend("cpu"))) throw new BackendError("the cpu backend failed to start");
  return info("cpu", "JavaScript", 1);
}

/**
 * Mesa's Vulkan drivers look for a Wayland display when an adapter is requested, and without
 * `XDG_RUNTIME_DIR` libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set in the
 * environment." although nothing is wrong (compute needs no display). Where the variable is unset,
 * point it at a private empty folder, so that the probe finds no display and says nothing.
 * Called before every adapter request here; call it before requesting an adapter yourself.
 *
 * @example
 * ```ts
 * quietWaylandProbe();
 * const adapter = await navigator.gpu.requestAdapter();
 * ```
 */
export function quietWaylandProbe(): void {
  if (Deno.build.os !== "linux" || Deno.env.get("XDG_RUNTIME_DIR")) return;
  const dir = `${Deno.env.get("TMPDIR") ?? "/tmp"}/vitssl-runtime-${Deno.uid() ?? 0}`;
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    Deno.env.set("XDG_RUNTIME_DIR", dir);
  } catch { /* no such folder: the probe may print its line, nothing else changes */ }
}

/** Returns the WebGPU adapter, or a reason why there is none. */
async function webgpuAdapter(): Promise<{ adapter?: GPUAdapter; reason?: string }> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) {
    return { reason: "navigator.gpu is missing: run Deno with --unstable-webgpu" };
  }
  quietWaylandProbe();
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) {
    return {
      reason: "no WebGPU adapter: install a Vulkan driver (NVIDIA's, or Debian's " +
        "mesa-vulkan-drivers for a software one)",
    };
  }
  return { adapter };
}

function adapterName(adapter: GPUAdapter): string {
  const i = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  if (!i) return "unknown adapter";
  const parts = [i.description, i.architecture].filter((s) => s && s !== "0");
  return parts.join(" ") || `vendor ${i.vendor} device ${i.device}`;
}

function isSoftwareAdapter(adapter: GPUAdapter, name: string): boolean {
  const fallback = (adapter as GPUAdapter & { info?: { isFallbackAdapter?: boolean } }).info
    ?.isFallbackAdapter;
  return !!fallback || /llvmpipe|lavapipe|swiftshader|software/i.test(name);
}

async function tryWebgpu(allowSoftware: boolean): Promise<BackendInfo> {
  const { adapter, reason } = await webgpuAdapter();
  if (!adapter) throw new BackendError(reason);
  const name = adapterName(adapter);
  if (!allowSoftware && isSoftwareAdapter(adapter, name)) {
    throw new BackendError(`only a software WebGPU adapter (${name})`);
  }
  await import("@tensorflow/tfjs-backend-webgpu");
  if (!(await tf.setBackend("webgpu"))) {
    throw new BackendError(`the webgpu backend failed to start on ${name}`);
  }
  return info("webgpu", name, 1);
}

async function tryTensorflow(): Promise<BackendInfo> {
  try {
    await import("@tensorflow/tfjs-node-gpu");
  } catch (e) {
    const msg = e instanceof Error ? e.message.split("\n")[0] : String(e);
    throw new BackendError(
      `@tensorflow/tfjs-node-gpu cannot load its native binding (${msg}). It needs libtensorflow ` +
        "2.9.1 (GPU build: CUDA 11.2 and cuDNN 8.1, Linux x86-64, NVIDIA driver): on such a " +
        "machine with internet, run `deno task setup-gpu` (it runs `deno install " +
        "--allow-scripts=npm:@tensorflow/tfjs-node-gpu`, which downloads libtensorflow and the " +
        "binding; README.md, section GPUs, has the offline recipe), or choose " +
        "--backend webgpu|wasm|cpu.",
    );
  }
  if (!(await tf.setBackend("tensorflow"))) {
    throw new BackendError("tfjs-node-gpu loaded but the tensorflow backend failed to start");
  }
  // libtensorflow runs on the CPU, with a warning only, when it cannot open the CUDA libraries.
  const be = tf.backend() as unknown as {
    isUsingGpuDevice?: boolean;
    binding?: { TF_Version?: string };
  };
  const version = be.binding?.TF_Version ?? "2.x";
  const where = be.isUsingGpuDevice
    ? "CUDA GPU"
    : "CPU only: CUDA 11.2/cuDNN 8.1 libraries not found";
  return info("tensorflow", `libtensorflow ${version}, ${where}`, 1);
}

function info(name: BackendInfo["name"], device: string, threads: number): BackendInfo {
  const summary = `${name} (${device}, ${threads} thread${threads === 1 ? "" : "s"})`;
  return { name, device, threads, summary, skipped: [], precision: "fp32" };
}

/**
 * Runs `f` with float32 matrix products: where the active backend is `native` in a bf16 mode, the
 * mode is switched off for `f` and back on after it. Evaluation runs in it, so that a final
 * report (and the baselines it caches) does not depend on the precision the model trained in,
 * as PyTorch's autocast is left for evaluation.
 *
 * @example
 * ```ts
 * const report = await withFp32Matmuls(() => finalReport(vit, init, train, test, opts));
 * ```
 */
export async function withFp32Matmuls<T>(f: () => Promise<T>): Promise<T> {
  if (tf.getBackend() !== "native") return await f();
  const { openNative } = await import("./native/ffi.ts");
  const lib = openNative();
  const before = lib.precision();
  if (before === "fp32") return await f();
  lib.setPrecision("fp32");
  try {
    return await f();
  } finally {
    lib.setPrecision(before);
  }
}

/**
 * Starts a tfjs backend and makes it the active one.
 *
 * `auto` prefers `tensorflow` (only if its native binding loads), then a hardware WebGPU
 * adapter, then `native` (if its C library loads and passes its self-check), then `wasm`, then
 * `cpu`. A backend named explicitly must start, or this throws a {@link BackendError} that says
 * what to install.
 */
export async function initBackend(opts: BackendOptions = {}): Promise<BackendInfo> {
  const backend = opts.backend ?? "auto";
  if (!(BACKENDS as readonly string[]).includes(backend)) {
    throw new BackendError(
      `unknown backend "${backend}": choose one of ${BACKENDS.join(", ")}`,
    );
  }
  const precision = opts.precision ?? "fp32";
  if (!(PRECISIONS as readonly string[]).includes(precision)) {
    throw new BackendError(
      `unknown precision "${precision}": choose one of ${PRECISIONS.join(", ")}`,
    );
  }
  const threads = opts.threads ?? 1;
  const fp32Only = (name: string, go: () => Promise<BackendInfo>) => () => {
    if (precision !== "bf16") return go();
    throw new BackendError(
      `--precision ${precision} runs only on the native backend, not ${name}: ` +
        "use --backend native, or --precision fp32",
    );
  };
  const start: Record<Exclude<BackendName, "auto">, () => Promise<BackendInfo>> = {
    tensorflow: fp32Only("tensorflow", tryTensorflow),
    webgpu: fp32Only(
      "webgpu",
      () => tryWebgpu(backend === "webgpu" || !!opts.allowSoftwareWebGPU),
    ),
    native: () => tryNative(opts.threads, precision),
    wasm: fp32Only("wasm", () => tryWasm(threads)),
    cpu: fp32Only("cpu", tryCpu),
  };
  let result: BackendInfo;
  if (backend !== "auto") {
    result = await start[backend]();
  } else {
    const skipped: string[] = [];
    let found: BackendInfo | undefined;
    for (const name of ["tensorflow", "webgpu", "native", "wasm", "cpu"] as const) {
      try {
        found = await start[name]();
        break;
      } catch (e) {
        skipped.push(`${name}: ${e instanceof Error ? e.message : e}`);
      }
    }
    if (!found) throw new BackendError(`no backend could start:\n  ${skipped.join("\n  ")}`);
    result = { ...found, skipped };
  }
  if (opts.verbose) {
    for (const s of result.skipped) console.error(`backend: skipped ${s}`);
    console.error(`backend: ${result.summary}`);
  }
  return result;
}
