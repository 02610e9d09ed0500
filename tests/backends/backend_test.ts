import {
  assert,
  assertEquals,
  assertInstanceOf,
  assertMatch,
  assertRejects,
  assertStringIncludes,
} from "@std/assert";
import * as tf from "@tensorflow/tfjs-core";
import { BackendError, BACKENDS, initBackend, quietWaylandProbe } from "../../lib/backends/mod.ts";

// The wasm module and the WebGPU device stay alive for the whole process, by design.
const opts = { sanitizeOps: false, sanitizeResources: false };

/** A small computation checked against a hand-computed answer, read back asynchronously. */
async function computesCorrectly(): Promise<void> {
  const a = tf.tensor2d([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = tf.tensor2d([1, 0, -1, 2, 0.5, 1], [3, 2]);
  const c = tf.matMul(a, b);
  // [1 2 3; 4 5 6] @ [1 0; -1 2; .5 1] = [0.5 7; 2 16]
  assertEquals(Array.from(await c.data()), [0.5, 7, 2, 16]);
  tf.dispose([a, b, c]);
}

/** Whether a WebGPU adapter exists here, and whether it is a software rasteriser. */
async function probeWebgpu(): Promise<{ adapter: boolean; software: boolean; why: string }> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return { adapter: false, software: false, why: "navigator.gpu is missing" };
  quietWaylandProbe();
  const adapter = await gpu.requestAdapter();
  if (!adapter) return { adapter: false, software: false, why: "no WebGPU adapter" };
  const info = (adapter as GPUAdapter & { info?: GPUAdapterInfo }).info;
  const text = info ? `${info.description} ${info.architecture} ${info.device}` : "";
  const software = /llvmpipe|lavapipe|swiftshader/i.test(text) ||
    !!(info as GPUAdapterInfo & { isFallbackAdapter?: boolean })?.isFallbackAdapter;
  return { adapter: true, software, why: text };
}

/** Whether tfjs-node-gpu's native binding loads in this process. */
/** Whether the native C library (lib/backends/native) opens and passes its self-check here. */
async function nativeLibraryLoads(): Promise<boolean> {
  const { openNative } = await import("../../lib/backends/native/ffi.ts");
  const { selfCheck } = await import("../../lib/backends/native/backend.ts");
  try {
    selfCheck(openNative());
    return true;
  } catch {
    return false;
  }
}

async function nativeBindingLoads(): Promise<boolean> {
  try {
    await import("@tensorflow/tfjs-node-gpu");
    return true;
  } catch {
    return false;
  }
}

Deno.test({
  ...opts,
  name: "cpu starts and reports itself",
  fn: async () => {
    const info = await initBackend({ backend: "cpu" });
    assertEquals(info.name, "cpu");
    assertEquals(tf.getBackend(), "cpu");
    assertEquals(info.threads, 1);
    assertEquals(info.skipped, []);
    assertEquals(info.summary, "cpu (JavaScript, 1 thread)");
    await computesCorrectly();
  },
});

Deno.test({
  ...opts,
  name: "wasm starts (single-threaded SIMD build), also after cpu",
  fn: async () => {
    await initBackend({ backend: "cpu" });
    const info = await initBackend({ backend: "wasm" });
    assertEquals(info.name, "wasm");
    assertEquals(tf.getBackend(), "wasm");
    assertEquals(info.threads, 1);
    assertMatch(info.device, /^(no )?SIMD$/);
    assertEquals(info.summary, `wasm (${info.device}, 1 thread)`);
    await computesCorrectly();
    await initBackend({ backend: "cpu" });
  },
});

Deno.test({
  ...opts,
  name: "unknown backend name: BackendError listing the choices, backend unchanged",
  fn: async () => {
    await initBackend({ backend: "cpu" });
    const e = await assertRejects(
      // deno-lint-ignore no-explicit-any
      () => initBackend({ backend: "cuda" as any }),
      BackendError,
    );
    assertStringIncludes(e.message, '"cuda"');
    for (const b of ["auto", "tensorflow", "webgpu", "native", "wasm", "cpu"]) {
      assertStringIncludes(e.message, b);
    }
    assertEquals([...BACKENDS], ["auto", "tensorflow", "webgpu", "native", "wasm", "cpu"]);
    assertEquals(tf.getBackend(), "cpu");
  },
});

Deno.test({
  ...opts,
  name: "tensorflow without its native binding: BackendError with the fix, no fallback",
  fn: async () => {
    for (const before of ["cpu", "wasm"] as const) {
      await initBackend({ backend: before });
      if (await nativeBindingLoads()) {
        const info = await initBackend({ backend: "tensorflow" });
        assertEquals(info.name, "tensorflow");
        assertEquals(tf.getBackend(), "tensorflow");
        await computesCorrectly();
        continue;
      }
      const e = await assertRejects(() => initBackend({ backend: "tensorflow" }), BackendError);
      assertInstanceOf(e, BackendError);
      assertEquals(e.name, "BackendError");
      assertStringIncludes(e.message, "tfjs-node-gpu");
      assertStringIncludes(e.message, "libtensorflow");
      assertStringIncludes(e.message, "setup-gpu");
      // No silent fallback: the backend active before is still active and still works.
      assertEquals(tf.getBackend(), before);
      await computesCorrectly();
    }
    await initBackend({ backend: "cpu" });
  },
});

Deno.test({
  ...opts,
  name: "webgpu: starts on an adapter (software included when named), or says why not",
  fn: async () => {
    await initBackend({ backend: "cpu" });
    const probe = await probeWebgpu();
    if (!probe.adapter) {
      console.log(`no WebGPU here (${probe.why}): checking the error instead`);
      const e = await assertRejects(() => initBackend({ backend: "webgpu" }), BackendError);
      assertMatch(e.message, /--unstable-webgpu|Vulkan/);
      assertEquals(tf.getBackend(), "cpu");
      return;
    }
    const info = await initBackend({ backend: "webgpu" });
    assertEquals(info.name, "webgpu");
    assertEquals(tf.getBackend(), "webgpu");
    assert(info.device.length > 0);
    if (probe.software) assertMatch(info.device, /llvmpipe|lavapipe|swiftshader|unknown/i);
    await computesCorrectly();
    await initBackend({ backend: "cpu" });
  },
});

Deno.test({
  ...opts,
  name: "auto: tries tensorflow, webgpu, native, wasm, cpu in order and says why it skipped each",
  fn: async () => {
    await initBackend({ backend: "cpu" });
    const order = ["tensorflow", "webgpu", "native", "wasm", "cpu"];
    const c = await nativeLibraryLoads();
    const native = await nativeBindingLoads();
    const probe = await probeWebgpu();
    for (const allowSoftwareWebGPU of [false, true]) {
      const info = await initBackend({ backend: "auto", allowSoftwareWebGPU });
      assertEquals(tf.getBackend(), info.name);
      const pos = order.indexOf(info.name);
      assert(pos >= 0);
      // Exactly the backends before the chosen one were skipped, in order, each with a reason.
      assertEquals(info.skipped.map((s) => s.split(":")[0]), order.slice(0, pos));
      for (const s of info.skipped) assert(s.split(": ").slice(1).join(": ").length > 10, s);
      // What this machine should give, from independent probes.
      let expected = c ? "native" : "wasm";
      if (native) expected = "tensorflow";
      else if (probe.adapter && (!probe.software || allowSoftwareWebGPU)) expected = "webgpu";
      assertEquals(info.name, expected, info.skipped.join("\n"));
      if (!native) assertStringIncludes(info.skipped[0], "libtensorflow");
      if (!native && probe.adapter && probe.software && !allowSoftwareWebGPU) {
        assertStringIncludes(info.skipped[1], "software");
      }
      await computesCorrectly();
    }
    await initBackend({ backend: "cpu" });
  },
});

Deno.test({
  ...opts,
  name: "verbose prints the skipped backends and the choice to stderr",
  fn: async () => {
    const lines: string[] = [];
    const orig = console.error;
    console.error = (...a: unknown[]) => lines.push(a.join(" "));
    try {
      const info = await initBackend({ backend: "auto", verbose: true });
      assertEquals(lines.length, info.skipped.length + 1);
      for (let i = 0; i < info.skipped.length; i++) {
        assertEquals(lines[i], `backend: skipped ${info.skipped[i]}`);
      }
      assertEquals(lines.at(-1), `backend: ${info.summary}`);
      lines.length = 0;
      await initBackend({ backend: "auto" });
      await initBackend({ backend: "cpu" });
      assertEquals(lines, [], "not verbose: nothing printed");
    } finally {
      console.error = orig;
    }
  },
});
