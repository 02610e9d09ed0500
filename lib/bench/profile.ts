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

function group(items: { key: string; ms: number }[], total: number): KernelRow[] {
  const m = new Map<string, KernelRow>();
  for (const { key, ms } of items) {
    const r = m.get(key) ?? { kernel: key, calls: 0, ms: 0, pct: 0 };
    r.calls++;
    r.ms += ms;
    m.set(key, r);
  }
  const rows = [...m.values()].sort((a, b) => b.ms - a.ms);
  for (const r of rows) r.pct = total > 0 ? (100 * r.ms) / total : 0;
  return rows;
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
  const items = info.kernels.map((k) => {
    const ms = typeof k.kernelTimeMs === "number" ? k.kernelTimeMs : 0;
    const shapes = k.inputShapes.filter((s) => s).map((s) => s.length ? s.join("x") : "scalar");
    return { name: k.name, shapes, ms };
  });
  const kernelMs = items.reduce((s, k) => s + k.ms, 0);
  return {
    wallMs,
    kernelMs,
    kernels: items.length,
    byKernel: group(items.map((k) => ({ key: k.name, ms: k.ms })), kernelMs),
    byShape: group(
      items.map((k) => ({ key: `${k.name} ${k.shapes.join(" · ")}`, ms: k.ms })),
      kernelMs,
    ),
  };
}

/** The first `top` rows as a Markdown table (kernel, calls, ms, % of kernel time). */
export function profileTable(rows: KernelRow[], top = 15): string {
  const lines = ["| kernel | calls | ms | % |", "|---|---:|---:|---:|"];
  for (const r of rows.slice(0, top)) {
    lines.push(`| ${r.kernel} | ${r.calls} | ${r.ms.toFixed(1)} | ${r.pct.toFixed(1)} |`);
  }
  return lines.join("\n");
}
