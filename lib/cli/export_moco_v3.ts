/**
 * `deno task export-moco-v3`: the official MoCo v3 command line for a run's config, to pretrain
 * at paper scale with facebookresearch/moco-v3's `main_moco.py` on GPUs; its checkpoints
 * (`checkpoint_%04d.pth.tar`) are read back by `deno task eval --checkpoint`.
 *
 * ```sh
 * deno task export-moco-v3 --config data/runs/x/config.json
 * deno task export-moco-v3 --config RUN/config.json --nodes 4 --master node0 --port 10001
 * ```
 * @module
 */
import { type PretrainConfig, savedRunConfig, validateConfig } from "../train/config.ts";
import { exportMocoV3 } from "../train/export_moco_v3.ts";
import { pathExists } from "../io/exists.ts";
import { helpText } from "./args.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";
import { readRunConfig } from "./pretrain.ts";

const SPECS: FlagSpec[] = [
  { key: "config", flag: "config", kind: "string", help: "a run's config.json" },
  { key: "nodes", flag: "nodes", kind: "int", min: 1, help: "nodes (machines) to run on (1)" },
  { key: "master", flag: "master", kind: "string", help: "address of the first node" },
  { key: "port", flag: "port", kind: "int", min: 1, help: "port of --dist-url (10001)" },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** Parses the arguments and prints the export; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values: v } = parseFlags(args, SPECS);
  if (v.help) {
    console.log(
      helpText("deno task export-moco-v3 --config RUN/config.json: main_moco.py's command", SPECS),
    );
    return 0;
  }
  if (!v.config) throw new UsageError("give --config RUN/config.json (a run's config)");
  const cfg = savedRunConfig(await readRunConfig(String(v.config), "--config")) as PretrainConfig;
  validateConfig(cfg);
  const dataHasTrain = cfg.dataset === "imagefolder" && cfg.dataRoot
    ? await pathExists(`${cfg.dataRoot}/train`)
    : undefined;
  const nodes = (v.nodes as number | undefined) ?? 1;
  const out = exportMocoV3(cfg, {
    nodes,
    master: v.master as string | undefined,
    port: v.port as number | undefined,
    dataHasTrain,
  });
  console.log(`# facebookresearch/moco-v3 main_moco.py for ${v.config}`);
  console.log(
    nodes > 1
      ? `# on each of the ${nodes} nodes, with NODE_RANK 0 on the first node, ..., ${nodes - 1}; ` +
        "it starts one process per GPU itself (not under torchrun)"
      : "# on one node; it starts one process per GPU itself (not under torchrun)",
  );
  console.log(out.command);
  console.log("");
  console.log("| field | value | main_moco.py | note |");
  console.log("|---|---|---|---|");
  for (const r of out.rows) {
    console.log(`| ${r.field} | ${r.value} | ${r.flag ? `\`${r.flag}\`` : "-"} | ${r.note} |`);
  }
  console.log("");
  for (const w of out.warnings) console.log(`warning: ${w}`);
  console.log(
    out.warnings.length
      ? `${out.warnings.length} field(s) not carried; its checkpoints load back with deno task ` +
        "eval --checkpoint checkpoint_NNNN.pth.tar"
      : "every field carried; its checkpoints load back with deno task eval --checkpoint " +
        "checkpoint_NNNN.pth.tar",
  );
  return 0;
}

if (import.meta.main) runMain(main);
