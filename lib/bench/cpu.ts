/**
 * The CPU a benchmark ran on, named from Linux's `/proc/cpuinfo`. One model name covers CPUs of
 * different arithmetic rates (BENCHMARKS.md has two "AMD EPYC" Zen 5 machines a factor 2 apart and
 * a Zen 4 under the same name), so the name carries the vendor's family and model numbers and the
 * instructions the native backend can use: a speed is compared only with speeds measured on the
 * same line.
 *
 * @example
 * ```ts
 * import { cpuLabel, readCpu } from "./cpu.ts";
 * console.log(cpuLabel(readCpu())); // "AMD EPYC (family 25, model 17), 2 CPUs, AVX-512, AVX512-BF16"
 * ```
 * @module
 */

/** What {@link parseCpuinfo} reads. */
export interface CpuInfo {
  /** `model name` of the first processor ("unknown CPU" where there is none). */
  name: string;
  /** `cpu family` and `model` (decimal, as Linux prints them); null where absent. */
  family: number | null;
  model: number | null;
  /** Logical CPUs listed. */
  cpus: number;
  /** The native backend's instructions this CPU has, by name (AVX2, AVX-512, AVX512-BF16, AMX-BF16). */
  features: string[];
}

// Linux flag(s) -> the name the project's docs use, in the order printed.
const FEATURES: [string[], string][] = [
  [["avx2", "fma"], "AVX2"],
  [["avx512f", "avx512bw", "avx512dq", "avx512vl"], "AVX-512"],
  [["avx512_bf16"], "AVX512-BF16"],
  [["amx_tile", "amx_bf16"], "AMX-BF16"],
];

/**
 * Parses the text of `/proc/cpuinfo` (x86 Linux layout: `key\t: value` lines, one block per
 * logical CPU). A feature counts where the first processor has all its flags.
 *
 * @example
 * ```ts
 * parseCpuinfo("processor\t: 0\nmodel name\t: AMD EPYC\ncpu family\t: 25\nmodel\t\t: 17\n").family; // 25
 * ```
 */
export function parseCpuinfo(text: string): CpuInfo {
  const first = new Map<string, string>();
  let cpus = 0;
  for (const line of text.split("\n")) {
    const at = line.indexOf(":");
    if (at < 0) continue;
    const key = line.slice(0, at).trim(), value = line.slice(at + 1).trim();
    if (key === "processor") cpus++;
    if (cpus <= 1 && !first.has(key)) first.set(key, value);
  }
  const num = (key: string) => {
    const v = first.get(key);
    return v !== undefined && /^\d+$/.test(v) ? Number(v) : null;
  };
  const flags = new Set((first.get("flags") ?? "").split(/\s+/));
  return {
    name: first.get("model name") || "unknown CPU",
    family: num("cpu family"),
    model: num("model"),
    cpus,
    features: FEATURES.filter(([need]) => need.every((f) => flags.has(f))).map(([, n]) => n),
  };
}

/**
 * One line naming the CPU: model name, family and model, logical CPUs, features.
 *
 * @example
 * ```ts
 * cpuLabel({ name: "AMD EPYC", family: 25, model: 17, cpus: 2, features: ["AVX2"] });
 * // "AMD EPYC (family 25, model 17), 2 CPUs, AVX2"
 * ```
 */
export function cpuLabel(c: CpuInfo): string {
  const id = c.family === null ? "" : ` (family ${c.family}, model ${c.model ?? "?"})`;
  const n = c.cpus > 0 ? `, ${c.cpus} CPU${c.cpus === 1 ? "" : "s"}` : "";
  return `${c.name}${id}${n}${c.features.length ? ", " + c.features.join(", ") : ""}`;
}

/**
 * This machine's CPU from `/proc/cpuinfo`; elsewhere (no such file) "unknown CPU" with
 * `navigator.hardwareConcurrency` logical CPUs.
 */
export function readCpu(): CpuInfo {
  try {
    return parseCpuinfo(Deno.readTextFileSync("/proc/cpuinfo"));
  } catch {
    const cpus = navigator.hardwareConcurrency ?? 0;
    return { name: "unknown CPU", family: null, model: null, cpus, features: [] };
  }
}
