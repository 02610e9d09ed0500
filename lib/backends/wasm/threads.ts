/**
 * Runs tfjs-backend-wasm's threaded SIMD build (Emscripten pthreads + XNNPACK's thread pool)
 * under Deno.
 *
 * tfjs-backend-wasm refuses threads when it believes it runs in Node (`IS_NODE`), and forcing
 * `WASM_HAS_MULTITHREAD_SUPPORT` fails with `ERR_WORKER_PATH`: its Node glue hands a `blob:` URL
 * to `node:worker_threads`. Here the original Emscripten glue (`wasm-out/...-threaded-simd.js`) is
 * evaluated with Node's globals hidden, its pthreads are `node:worker_threads` workers running
 * {@link ./threads_worker.js} (unref'd, so they never keep Deno alive), and the resulting
 * module is handed to the package's own `BackendWasm` under the name `wasm`, so every wasm kernel
 * works unchanged.
 *
 * @example
 * ```ts
 * import * as tf from "@tensorflow/tfjs-core";
 * import { useThreadedWasm } from "./threads.ts";
 * await useThreadedWasm(2); // registers "wasm" as the threaded build with 2 threads
 * await tf.setBackend("wasm");
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";
import { createRequire } from "node:module";
import { Worker as NodeWorker } from "node:worker_threads";
import type { BackendWasm } from "@tensorflow/tfjs-backend-wasm";

// deno-lint-ignore no-explicit-any
type EmModule = Record<string, any>;
type Factory = (m: EmModule) => Promise<EmModule>;
/** The module type that `BackendWasm` takes. */
type BackendWasmModule = ConstructorParameters<typeof BackendWasm>[0];

const WASM_PRIORITY = 2;
const WORKER_URL = new URL("./threads_worker.js", import.meta.url);

/** The directory of `@tensorflow/tfjs-backend-wasm`'s `package.json` (a file path, ends in /). */
function packageDir(): string {
  const req = createRequire(import.meta.url);
  return req.resolve("@tensorflow/tfjs-backend-wasm").replace(/dist[/\\][^/\\]+$/, "");
}

/**
 * Why the threaded wasm build cannot run here, or `undefined` if it can: it needs
 * `SharedArrayBuffer`, shared `WebAssembly.Memory` and wasm atomics.
 */
export function wasmThreadsUnsupportedReason(): string | undefined {
  if (typeof SharedArrayBuffer !== "function") return "SharedArrayBuffer is missing";
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  } catch (e) {
    return `shared WebAssembly.Memory is unavailable (${e})`;
  }
  // A module with a shared memory and one atomic load (from wasm-feature-detect).
  const atomics = Uint8Array.from(
    atob("AGFzbQEAAAABBAFgAAADAgEABQQBAwEBCgsBCQBBAP4QAgAaCw=="),
    (c) => c.charCodeAt(0),
  );
  if (!WebAssembly.validate(atomics)) return "this runtime's WebAssembly lacks atomics (threads)";
  return undefined;
}

/**
 * A `Worker` look-alike for the Emscripten glue (`onmessage`, `onerror`, `postMessage`,
 * `terminate`) backed by a `node:worker_threads` worker, which Deno can unref.
 */
class PthreadWorker {
  onmessage: ((e: { data: EmModule }) => void) | null = null;
  onerror: ((e: unknown) => void) | null = null;
  #w: NodeWorker;
  constructor() {
    this.#w = new NodeWorker(WORKER_URL);
    this.#w.on("message", (data: EmModule) => {
      // Emscripten's Node glue unrefs a worker once it has loaded; the pthread pool's idle
      // workers must not keep the process alive.
      if (data?.cmd === "loaded") this.#w.unref();
      this.onmessage?.({ data });
    });
    this.#w.on("error", (e: unknown) => this.onerror?.(e));
  }
  postMessage(msg: unknown, transfer?: Transferable[]): void {
    // deno-lint-ignore no-explicit-any
    this.#w.postMessage(msg, transfer as any);
  }
  terminate(): void {
    this.#w.terminate();
  }
}

/**
 * Evaluates the Emscripten glue with Node's and AMD's globals hidden, `Worker` replaced by
 * {@link PthreadWorker}, and `navigator.hardwareConcurrency` set to `2 * threads`: the C++ side
 * takes half the logical cores as its thread cap (it assumes hyper-threading), so on a 2-core
 * machine it would otherwise never use more than 1 thread.
 */
function evalGlue(source: string, threads: number): Factory {
  const names = ["process", "require", "module", "exports", "define", "__filename", "__dirname"];
  const make = new Function(
    ...names,
    "Worker",
    "navigator",
    `${source}\nreturn WasmBackendModuleThreadedSimd;`,
  );
  const nav = { hardwareConcurrency: 2 * threads };
  return make(...names.map(() => undefined), PthreadWorker, nav) as Factory;
}

interface ThreadedBuild {
  source: string;
  compiled: WebAssembly.Module;
}

/** Reads the glue and compiles the threaded SIMD binary (once per process). */
async function readThreadedBuild(): Promise<ThreadedBuild> {
  const dir = packageDir();
  const gluePath = dir + "wasm-out/tfjs-backend-wasm-threaded-simd.js";
  const wasmPath = dir + "dist/tfjs-backend-wasm-threaded-simd.wasm";
  try {
    const source = await Deno.readTextFile(gluePath);
    const compiled = await WebAssembly.compile(await Deno.readFile(wasmPath));
    return { source, compiled };
  } catch (e) {
    throw new Error(
      `cannot load tfjs's threaded wasm build (${gluePath}, ${wasmPath}): ${e}. Reinstall ` +
        "@tensorflow/tfjs-backend-wasm@4.22.0 (deno install).",
    );
  }
}

/**
 * Instantiates a fresh threaded module (with its own pthread pool of 8 workers) and adds the
 * `tfjs` wrappers that `BackendWasm` expects. A fresh one per backend: `BackendWasm.dispose`
 * terminates the module's threads.
 */
async function loadThreadedModule(
  { source, compiled }: ThreadedBuild,
  threads: number,
): Promise<BackendWasmModule> {
  let aborted: unknown;
  let memory: WebAssembly.Memory | undefined;
  const module = await evalGlue(source, threads)({
    mainScriptUrlOrBlob: source, // the workers evaluate the same glue
    locateFile: (path: string) => path,
    instantiateWasm: (
      imports: WebAssembly.Imports,
      receive: (i: WebAssembly.Instance, m: WebAssembly.Module) => void,
    ) => {
      // The shared memory is an import; lib/backends/wasm/kernels.ts instantiates on it too.
      memory = Object.values(imports).flatMap((ns) => Object.values(ns))
        .find((v): v is WebAssembly.Memory => v instanceof WebAssembly.Memory);
      WebAssembly.instantiate(compiled, imports).then((inst) => receive(inst, compiled));
      return {};
    },
    onAbort: (what: unknown) => {
      aborted = what;
    },
    // The glue warns once that the main thread blocks (it cannot in a browser; Deno's can).
    printErr: (text: string) => {
      if (!text.startsWith("Blocking on the main thread")) console.error(text);
    },
  });
  if (aborted !== undefined) throw new Error(`the threaded wasm module aborted: ${aborted}`);
  module.wasmMemory = memory;
  module.tfjs = {
    init: module.cwrap("init", null, []),
    initWithThreadsCount: module.cwrap("init_with_threads_count", null, ["number"]),
    getThreadsCount: module.cwrap("get_threads_count", "number", []),
    registerTensor: module.cwrap("register_tensor", null, ["number", "number", "number"]),
    disposeData: module.cwrap("dispose_data", null, ["number"]),
    dispose: module.cwrap("dispose", null, []),
  };
  return module as BackendWasmModule;
}

let originalFactory: (() => tf.KernelBackend | Promise<tf.KernelBackend>) | undefined;
let build: Promise<ThreadedBuild> | undefined;

/**
 * Registers the `wasm` backend as tfjs's threaded SIMD build with `threads` threads; the caller
 * then runs `tf.setBackend("wasm")`, which loads the module and starts its pthread pool (8 idle
 * workers; `threads - 1` of them compute, the main thread is the other one).
 * Throws with the reason if this runtime cannot run wasm threads.
 */
export async function useThreadedWasm(threads: number): Promise<void> {
  if (!Number.isInteger(threads) || threads < 1) {
    throw new Error(`threads must be a positive integer, got ${threads}`);
  }
  const reason = wasmThreadsUnsupportedReason();
  if (reason) throw new Error(`wasm threads are unavailable: ${reason}`);
  const wasm = await import("@tensorflow/tfjs-backend-wasm");
  originalFactory ??= tf.findBackendFactory("wasm") ?? undefined;
  build ??= readThreadedBuild();
  let b: ThreadedBuild;
  try {
    b = await build;
  } catch (e) {
    build = undefined;
    throw e;
  }
  wasm.setThreadsCount(threads);
  if (tf.findBackend("wasm") || tf.findBackendFactory("wasm")) tf.removeBackend("wasm");
  tf.registerBackend(
    "wasm",
    async () => {
      const module = await loadThreadedModule(b, threads);
      const backend = new wasm.BackendWasm(module); // starts XNNPACK's pool: threads - 1 pthreads
      // Emscripten pre-spawns 8 workers; the idle rest cost ~13 MiB each. (A later pthread, which
      // tfjs never asks for, would spawn a fresh worker.)
      const idle = (module as unknown as EmModule).PThread.unusedWorkers as PthreadWorker[];
      for (const w of idle.splice(0)) w.terminate();
      return backend;
    },
    WASM_PRIORITY,
  );
}

/**
 * Puts back tfjs-backend-wasm's own `wasm` backend (its single-threaded SIMD build under Deno) if
 * {@link useThreadedWasm} replaced it. Call it before the first `tf.removeBackend("wasm")`: the
 * package's factory cannot be rebuilt once it is gone from the registry and was never seen here.
 */
export async function useDefaultWasm(): Promise<void> {
  await import("@tensorflow/tfjs-backend-wasm");
  originalFactory ??= tf.findBackendFactory("wasm") ?? undefined;
  if (!originalFactory) {
    throw new Error(
      "tfjs-backend-wasm's `wasm` backend was removed from the registry before " +
        "lib/backends/wasm/threads.ts saw it: call initBackend/useDefaultWasm before tf.removeBackend",
    );
  }
  if (tf.findBackendFactory("wasm") === originalFactory) return;
  if (tf.findBackend("wasm") || tf.findBackendFactory("wasm")) tf.removeBackend("wasm");
  tf.registerBackend("wasm", originalFactory, WASM_PRIORITY);
}
