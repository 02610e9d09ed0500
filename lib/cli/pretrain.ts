/**
 * `deno task pretrain`: MoCo v3 pretraining from the command line.
 *
 * With no flags it runs the default recipe (`--preset default`: D 128, 10 epochs, bf16 matrix
 * products where the CPU has AVX512-BF16) on the embedded Fashion-MNIST,
 * prints progress, and ends with the run directory and the kNN top-1 accuracy on the test split.
 *
 * ```sh
 * deno task pretrain                                  # default recipe
 * deno task pretrain --preset fmnist-long --out data/runs/long
 * deno task pretrain --resume data/runs/long          # continue a stopped run
 * deno task pretrain --config data/runs/long/config.json --out data/runs/repeat
 * ```
 * @module
 */
import { CLI_DEFAULT_PRESET, FIELDS, PRESETS, type PretrainConfig } from "../train/config.ts";
import { pretrain, resolveConfig, resumeConfig } from "../train/pretrain.ts";
import { helpText } from "./args.ts";
import { type FlagSpec, parseFlags } from "../core/flags.ts";
import { runMain } from "./main.ts";
import { withStopSignal } from "./stop_signal.ts";
import { ConfigError } from "../core/errors.ts";

const EXTRA: FlagSpec[] = [
  {
    key: "preset",
    flag: "preset",
    kind: "string",
    choices: Object.keys(PRESETS),
    help: `the defaults to start from (default: ${CLI_DEFAULT_PRESET})`,
  },
  { key: "config", flag: "config", kind: "string", help: "repeat a run: its config.json" },
  {
    key: "resume",
    flag: "resume",
    kind: "string",
    help: "continue the run in this directory (a completed run: its final kNN again)",
  },
  { key: "force", flag: "force", kind: "bool", help: "resume even if the config differs" },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** A run's config.json (or a bare config object); `flag` names the flag that gave the path. */
export async function readRunConfig(path: string, flag: string): Promise<Partial<PretrainConfig>> {
  const text = await Deno.readTextFile(path).catch((e) => {
    throw new ConfigError(
      `${flag}: cannot read ${path} (${e.message}). ` +
        (flag === "--resume"
          ? "Give the run directory that holds config.json and checkpoint.safetensors; a run " +
            "killed before it wrote config.json is restarted by its original command"
          : "Give the config.json of an earlier run (RUN/config.json)"),
    );
  });
  let json;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(
      `${flag}: ${path} is not valid JSON (${(e as Error).message}): restore it, or start a ` +
        "new run with --out",
    );
  }
  const cfg = json?.config ?? json;
  if (typeof cfg !== "object" || cfg === null || Array.isArray(cfg)) {
    throw new ConfigError(`${flag}: ${path} holds no config object: give a run's config.json`);
  }
  return cfg;
}

/** Parses the arguments and runs pretraining; returns the process exit code. */
export async function main(args: string[]): Promise<number> {
  const specs = [...EXTRA, ...FIELDS];
  const { values } = parseFlags(args, specs);
  if (values.help) {
    console.log(helpText("deno task pretrain [flags]: MoCo v3 pretraining", specs));
    return 0;
  }
  const { preset, config, resume, force, help: _, ...overrides } = values;
  const chosen = { ...(preset ? { preset: String(preset) } : {}), ...overrides } as Partial<
    PretrainConfig
  >;
  let cfg: PretrainConfig;
  if (resume) {
    const saved = await readRunConfig(`${resume}/config.json`, "--resume");
    cfg = resumeConfig({ ...saved, outDir: String(resume) }, chosen);
  } else {
    const base = config ? { ...(await readRunConfig(String(config), "--config")), outDir: "" } : {};
    cfg = resolveConfig({ preset: CLI_DEFAULT_PRESET, ...base, ...chosen });
  }
  if (!cfg.outDir) {
    const stamp = new Date().toISOString().replace(/[-:]/g, "").replace(/\..*/, "");
    cfg.outDir = `data/runs/${cfg.preset}-${stamp}`;
  }
  const result = await withStopSignal(
    "stopping after this step or kNN batch",
    (signal) => pretrain(cfg, { signal, force: Boolean(force) }),
  );
  if (result.status === "done" && result.knnTop1 !== undefined) {
    console.log(`kNN top-1: ${result.knnTop1.toFixed(2)}% (${result.runDir})`);
  }
  return 0;
}

if (import.meta.main) runMain(main);
