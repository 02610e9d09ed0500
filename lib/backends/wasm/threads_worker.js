/**
 * One pthread of tfjs-backend-wasm's threaded SIMD build, run as a `node:worker_threads` worker
 * by {@link ./threads.ts}. It speaks Emscripten's pthread worker protocol (`load`, `run`,
 * `cancel`, `processProxyingQueue`; replies `loaded` and forwards the glue's own messages), which
 * the stock `tfjs-backend-wasm-threaded-simd.worker.js` also speaks but cannot run under Deno (it
 * takes Deno for Node and `require`s modules that a Deno worker lacks).
 *
 * The Emscripten glue's source arrives in the `load` message (`urlOrBlob`) and is evaluated with
 * Node's globals hidden, so that the glue sees a plain web worker.
 * @module
 */
import { parentPort } from "node:worker_threads";

if (!parentPort) throw new Error("threads_worker.js must run as a node:worker_threads worker");
const port = parentPort;

/** The Emscripten module of this pthread (set by the glue through `startWorker`). */
let Module = {};
let initializedJS = false;
/** @type {number[]} proxying queues that arrived before the first `run` */
let pendingQueues = [];

/** Sends a message to the main thread (the glue's `postMessage`). */
function post(msg, transfer) {
  port.postMessage(msg, transfer);
}

/** Evaluates the glue with Node's and AMD's globals hidden; the glue then sees a web worker. */
function evalGlue(source) {
  const names = [
    "process",
    "require",
    "module",
    "exports",
    "define",
    "__filename",
    "__dirname",
    "importScripts",
    "postMessage",
    "startWorker",
    "self",
  ];
  const values = [
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    undefined,
    () => {}, // typeof importScripts == "function" marks a worker for the glue
    post,
    (instance) => {
      Module = instance;
      post({ cmd: "loaded" });
    },
    { location: { href: "wasm_threads_worker" } },
  ];
  const make = new Function(...names, `${source}\nreturn WasmBackendModuleThreadedSimd;`);
  return make(...values);
}

/** Runs a pthread's entry point (the `run` command). */
function run(d) {
  Module["__emscripten_thread_init"](d.pthread_ptr, 0, 0, 1);
  Module["establishStackSpace"]();
  Module["PThread"].receiveObjectTransfer(d);
  Module["PThread"].threadInitTLS();
  if (!initializedJS) {
    for (const q of pendingQueues) Module["executeNotifiedProxyingQueue"](q);
    pendingQueues = [];
    initializedJS = true;
  }
  try {
    Module["invokeEntryPoint"](d.start_routine, d.arg);
  } catch (ex) {
    if (ex === "unwind") return;
    if (ex instanceof Module["ExitStatus"]) {
      if (!Module["keepRuntimeAlive"]()) Module["__emscripten_thread_exit"](ex.status);
    } else {
      throw ex;
    }
  }
}

port.on("message", (d) => {
  try {
    if (d.cmd === "load") {
      const m = {
        wasmModule: d.wasmModule,
        wasmMemory: d.wasmMemory,
        buffer: d.wasmMemory.buffer,
        ENVIRONMENT_IS_PTHREAD: true,
        instantiateWasm: (imports, receive) => {
          const instance = new WebAssembly.Instance(m.wasmModule, imports);
          receive(instance);
          m.wasmModule = null;
          return instance.exports;
        },
      };
      for (const h of d.handlers) {
        m[h] = (...args) => post({ cmd: "callHandler", handler: h, args });
      }
      Module = m;
      evalGlue(d.urlOrBlob)(m);
    } else if (d.cmd === "run") {
      run(d);
    } else if (d.cmd === "cancel") {
      if (Module["_pthread_self"]()) Module["__emscripten_thread_exit"](-1);
    } else if (d.cmd === "processProxyingQueue") {
      if (initializedJS) Module["executeNotifiedProxyingQueue"](d.queue);
      else pendingQueues.push(d.queue);
    } else if (d.target === "setimmediate") {
      // nothing to do: Emscripten's setImmediate polyfill message
    } else if (d.cmd) {
      console.error(`threads_worker.js: unknown command ${d.cmd}`);
    }
  } catch (ex) {
    Module["__emscripten_thread_crashed"]?.();
    throw ex;
  }
});
