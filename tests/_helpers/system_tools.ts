/**
 * Optional system tools that some tests need (Chromium, Jupyter, a Vulkan adapter, a small
 * filesystem to fill). A test module asks {@link requireTool} whether to run its tests: where the
 * tool is missing it prints one line saying what to install, and the tests are skipped. Under
 * `CI=true` (where `.ci/run` installs the tools) a missing tool is a failing test instead, so CI
 * cannot pass by skipping.
 *
 * @example
 * ```ts
 * const skip = requireTool("chromium", await commandStatus("chromium", ["--version"]),
 *   "apt-get install chromium");
 * Deno.test({ name: "PNG via Chromium", ignore: skip, fn: () => {} });
 * ```
 */

/** Whether a tool is usable here, and if not, why. */
export interface ToolStatus {
  ok: boolean;
  /** Why not (empty when ok). */
  why: string;
}

import { quietWaylandProbe } from "../../lib/backends/mod.ts";
import { findChromium } from "../../lib/viz/render.ts";

const CI = Deno.env.get("CI") === "true";

/**
 * Runs `cmd args` and reports whether it exited 0. Never throws: a missing program (which
 * `Deno.Command` reports by throwing at spawn) is a `ToolStatus` with `ok: false`.
 */
export async function commandStatus(cmd: string, args: string[]): Promise<ToolStatus> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "null" }).output();
    return out.success
      ? { ok: true, why: "" }
      : { ok: false, why: `${cmd} ${args.join(" ")} failed` };
  } catch (e) {
    return {
      ok: false,
      why: e instanceof Deno.errors.NotFound ? `${cmd} is not installed` : `${cmd}: ${e}`,
    };
  }
}

/** The Chromium that figures render with (the renderer's own lookup, `findChromium`). */
export function chromiumStatus(): Promise<ToolStatus> {
  const path = findChromium();
  return path
    ? commandStatus(path, ["--version"])
    : Promise.resolve({ ok: false, why: "Chromium is not installed" });
}

/** Whether a WebGPU adapter (a Vulkan driver; Mesa's lavapipe counts) is available. */
export async function webgpuStatus(): Promise<ToolStatus> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return { ok: false, why: "navigator.gpu is missing (run deno with --unstable-webgpu)" };
  quietWaylandProbe();
  const adapter = await gpu.requestAdapter().catch(() => null);
  return adapter
    ? { ok: true, why: "" }
    : { ok: false, why: "no WebGPU adapter (no Vulkan driver)" };
}

/**
 * Returns `true` (skip) when `status` is not ok, after printing one line with `install`; under
 * `CI=true` it registers a failing test instead and returns `true`, so the suite fails.
 * `optionalInCi` keeps a tool optional in CI too (libtensorflow cannot be installed there).
 */
export function requireTool(
  what: string,
  status: ToolStatus,
  install: string,
  { optionalInCi = false } = {},
): boolean {
  if (status.ok) return false;
  if (CI && !optionalInCi) {
    Deno.test(`${what} is available (CI=true)`, () => {
      throw new Error(`CI=true but ${status.why}: ${install}`);
    });
  } else {
    console.log(`skipping the ${what} tests: ${status.why}; to run them: ${install}`);
  }
  return true;
}

/** A small filesystem of its own (a size-limited tmpfs), for full-disk tests. */
export interface SmallDisk {
  /** Where it is mounted. */
  path: string;
  /** Changes its size (KiB); files on it stay. */
  resize(kib: number): Promise<void>;
  /** Unmounts it and removes the mount point. */
  close(): Promise<void>;
}

async function mountCmd(args: string[]): Promise<void> {
  const out = await new Deno.Command("mount", { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr).trim());
}

/**
 * Mounts a tmpfs of `kib` KiB (needs root and `mount`); throws if it cannot.
 *
 * @example
 * ```ts
 * const disk = await smallDisk(1024);
 * try { await Deno.writeFile(`${disk.path}/x`, new Uint8Array(2 << 20)); } // ENOSPC
 * finally { await disk.close(); }
 * ```
 */
export async function smallDisk(kib: number): Promise<SmallDisk> {
  const path = await Deno.makeTempDir({ prefix: "vitssl-small-disk-" });
  try {
    await mountCmd(["-t", "tmpfs", "-o", `size=${kib}k`, "tmpfs", path]);
  } catch (e) {
    await Deno.remove(path).catch(() => {});
    throw e;
  }
  return {
    path,
    resize: (k) => mountCmd(["-o", `remount,size=${k}k`, path]),
    close: async () => {
      await new Deno.Command("umount", { args: [path], stderr: "null" }).output().catch(() => {});
      await Deno.remove(path, { recursive: true }).catch(() => {});
    },
  };
}

/** Whether {@link smallDisk} works here (root, `mount`, tmpfs). */
export async function smallDiskStatus(): Promise<ToolStatus> {
  try {
    await (await smallDisk(64)).close();
    return { ok: true, why: "" };
  } catch (e) {
    return { ok: false, why: `cannot mount a small tmpfs (${(e as Error).message || e})` };
  }
}
