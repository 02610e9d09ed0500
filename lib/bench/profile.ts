/**
 * Per-kernel profile of one step, from `tf.profile` (each kernel timed by the backend's timer:
 * wall time around the kernel on wasm and cpu, GPU timestamps on WebGPU where the adapter has
 * them). Kernels are grouped by name, and separately by name and input shapes, so the next
 * optimisation is chosen from data ("BatchMatMul [256,17,32]x[256,17,32]: 30% of the step").
 *
 * @example
 * ```ts
 * import { profileStep, profileTable } from "./profile.ts";
 * const p = await profileStep(() => runner.run(x1, x2));
 * console.log(profileTable(p.byKernel, 10));
 * ```
 * @module
 */
import * as tf from "@tensorflow/tfjs-core";

/** Time spent in one kernel (or one kernel at one set of input shapes) during a step. */
export interface KernelRow {
  /** Kernel name, with input shapes in the by-shape grouping (`BatchMatMul 128x1024·1024x256`). */
  kernel: string;
  /** Calls during the step. */
  calls: number;
  /** Total time, ms. */
  ms: number;
  /** Share of the summed kernel time, percent. */
  pct: number;
  /** Achieved GFLOP/s, for matrix products ({@link kernelFlops} / time). */
  gflops?: number;
}

/** What {@link profileStep} returns. */
export interface StepProfile {
  /** Wall time of the profiled step, ms (profiling adds a little overhead). */
  wallMs: number;
  /** Sum of all kernel times, ms. */
  kernelMs: number;
  /** Kernel launches in the step. */
  kernels: number;
  /** Grouped by kernel name, slowest first. */
  byKernel: KernelRow[];
  /** Grouped by kernel name and input shapes, slowest first. */
  byShape: KernelRow[];
}

const MATMULS = new Set(["BatchMatMul", "_FusedMatMul"]);

/**
 * FLOPs of one kernel call from its input and output shapes (a multiply-add counts 2), for the
 * matrix products: `BatchMatMul` and `_FusedMatMul` (inner dimension size(a) / (batch x M),
 * whichever side of `a` was transposed: `a` is not broadcast in this project's matmuls), the
 * fused linear layers (`VitsslLinear`, `VitsslLinearGelu`: x [M, K] @ w [N, K]^T;
 * `VitsslLinearGrad`: dx and dw, twice that) and attention's two products per head
 * (`VitsslAttention`: Q K^T and P V; its gradient: four). 0 for other kernels.
 *
 * @example
 * ```ts
 * kernelFlops("VitsslLinear", [[2176, 128], [512, 128]], [[2176, 512]]); // 2 * 2176 * 512 * 128
 * ```
 */
export function kernelFlops(
  name: string,
  inputs: (number[] | undefined)[],
  outputs: (number[] | undefined)[],
): number {
  const size = (s: number[]) => s.reduce((p, q) => p * q, 1);
  const [a, w] = inputs, out = outputs[0];
  if (MATMULS.has(name)) {
    if (!a || !out || out.length < 2) return 0;
    return 2 * size(out) * (size(a) / size(out.slice(0, -1)));
  }
  // The weight w [N, K] is the second input of the linear layers; dy [M, N] the gradient's first.
  if (name === "VitsslLinear" && w && out) return 2 * size(out) * w[1];
  if (name === "VitsslLinearGelu" && w && outputs[1]) return 2 * size(outputs[1]) * w[1];
  if (name === "VitsslLinearGrad" && a && inputs[2]) return 4 * size(a) * inputs[2][1];
  // probs [B, H, T, T]: an output of the forward, the last input of the gradient (after dout
  // [B*T, D] and qkv [B*T, 3D]); a head's width is D / H.
  const probs = name === "VitsslAttention" ? outputs[1] : inputs[inputs.length - 1];
  if (!a || !probs || probs.length !== 4) return 0;
  if (name === "VitsslAttention") return 4 * size(probs) * (a[1] / 3 / probs[1]);
  if (name === "VitsslAttentionGrad") return 8 * size(probs) * (a[1] / probs[1]);
  return 0;
}

/**
 * A kernel's input shapes as one label, at most `max` of them: a kernel that takes many tensors
 * (the in-place optimiser takes every parameter and its state) shows the first few and the count,
 * so that its profile row stays one readable line.
 *
 * @example
 * ```ts
 * shapesLabel(["64x192", "192"]); // "64x192 · 192"
 * shapesLabel(["4", "4", "4", "4", "4", "4", "4"], 3); // "4 · 4 · 4 · ... (7 inputs)"
 * ```
 */
export function shapesLabel(shapes: string[], max = 6): string {
  if (shapes.length <= max) return shapes.join(" · ");
  return `${shapes.slice(0, max).join(" · ")} · ... (${shapes.length} inputs)`;
}

function group(items: { key: string; ms: number; flops: number }[], total: number): KernelRow[] {
  const m = new Map<string, KernelRow & { flops: number }>();
  for (const { key, ms, flops } of items) {
    const r = m.get(key) ?? { kernel: key, calls: 0, ms: 0, pct: 0, flops: 0 };
    r.calls++;
    r.ms += ms;
    r.flops += flops;
    m.set(key, r);
  }
  return [...m.values()].sort((a, b) => b.ms - a.ms).map(({ flops, ...r }) => ({
    ...r,
    pct: total > 0 ? (100 * r.ms) / total : 0,
    ...(flops > 0 && r.ms > 0 ? { gflops: flops / r.ms / 1e6 } : {}),
  }));
}

/**
 * Profiles one call of `step` (which must leave no new tensors behind) and groups its kernels.
 * The backward pass's kernels are included: they run through the same engine.
 */
export async function profileStep(step: () => Promise<unknown>): Promise<StepProfile> {
  const t0 = performance.now();
  const info = await tf.profile(async () => {
    await step();
  });
  const wallMs = performance.now() - t0;
  // A tf.customGrad forward shows as a record named after the enclosing scope ("unnamed scope")
  // whose time includes the kernels it runs, timed too: only registered kernels are counted.
  const backend = tf.getBackend();
  const items = info.kernels.filter((k) => tf.getKernel(k.name, backend)).map((k) => {
    const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    const shapes = k.inputShapes.filter((s) => s).map((s) => s.length ? s.join("x") : "scalar");
    const flops = kernelFlops(k.name, k.inputShapes, k.outputShapes);
    return { name: k.name, shapes, ms, flops };
  });
  const kernelMs = items.reduce((s, k) => s + k.ms, 0);
  return {
    wallMs,
    kernelMs,
    kernels: items.length,
    byKernel: group(items.map((k) => ({ key: k.name, ms: k.ms, flops: k.flops })), kernelMs),
    byShape: group(
      items.map((k) => ({ key: `${k.name} ${shapesLabel(k.shapes)}`, ms: k.ms, flops: k.flops })),
      kernelMs,
    ),
  };
}

/**
 * The first `top` rows as a Markdown table: kernel, calls, ms, % of kernel time, and achieved
 * GFLOP/s for matrix products ("" for other kernels); with `peakOf` (a row's kernel name to this
 * CPU's measured peak for the arithmetic it runs in, GFLOP/s; see `NativeLib.peakGflops`), also
 * the share of that peak reached.
 *
 * @example
 * ```ts
 * console.log(profileTable(p.byKernel, 10, () => 466));
 * ```
 */
export function profileTable(
  rows: KernelRow[],
  top = 15,
  peakOf?: (kernel: string) => number | null,
): string {
  const lines = peakOf
    ? ["| kernel | calls | ms | % | GFLOP/s | % of peak |", "|---|---:|---:|---:|---:|---:|"]
    : ["| kernel | calls | ms | % | GFLOP/s |", "|---|---:|---:|---:|---:|"];
  for (const r of rows.slice(0, top)) {
    const cells = [r.kernel, r.calls, r.ms.toFixed(1), r.pct.toFixed(1)];
    cells.push(r.gflops === undefined ? "" : r.gflops.toFixed(1));
    if (peakOf) {
      const peak = r.gflops === undefined ? null : peakOf(r.kernel);
      cells.push(peak ? (100 * r.gflops! / peak).toFixed(0) : "");
    }
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}
