/**
 * Tests of lib/train/export_moco_v3.ts and `deno task export-moco-v3`: the paper's ViT-S recipe
 * gives the command of moco-v3's CONFIG.md (ViT-Small, 1-node pre-training) with no warning; the
 * default CPU recipe gives a warning for each field main_moco.py cannot carry; every config
 * field has a row.
 */
import { assert, assertEquals, assertRejects, assertStringIncludes } from "@std/assert";
import { FIELDS, PRESETS, type PretrainConfig } from "../../lib/train/config.ts";
import { exportMocoV3 } from "../../lib/train/export_moco_v3.ts";
import { main } from "../../lib/cli/export_moco_v3.ts";

/** moco-v3's CONFIG.md, "ViT-Small, 1-node (8-GPU) pre-training", argument by argument. */
const CONFIG_MD = [
  "python main_moco.py",
  "-a vit_small -b 1024",
  "--optimizer=adamw --lr=1.5e-4 --weight-decay=.1",
  "--epochs=300 --warmup-epochs=40",
  "--stop-grad-conv1 --moco-m-cos --moco-t=.2",
  "--dist-url 'tcp://localhost:10001'",
  "--multiprocessing-distributed --world-size 1 --rank 0",
  "/data/imagenet",
].join(" ");

/** `--flag=value` / `-f value` / `--switch` / the positional DIR as a map, numbers parsed. */
function parse(command: string): Map<string, string | number | true> {
  const tokens = command.replace(/\\\n/g, " ").split(/\s+/).filter(Boolean).slice(2);
  const out = new Map<string, string | number | true>();
  const val = (s: string) => (/^[\d.e+-]+$/.test(s) ? Number(s) : s);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!t.startsWith("-")) out.set("DIR", t);
    else if (t.includes("=")) out.set(t.slice(0, t.indexOf("=")), val(t.slice(t.indexOf("=") + 1)));
    else if (i + 1 < tokens.length && !tokens[i + 1].startsWith("-")) out.set(t, val(tokens[++i]));
    else out.set(t, true);
  }
  return out;
}

const paperViTS: PretrainConfig = {
  ...PRESETS["paper-vit-small"],
  preset: "paper-vit-small",
  dataRoot: "/data/imagenet",
  freezePatchEmbed: true,
  temperature: 0.2,
};

Deno.test("the paper's ViT-S recipe exports to CONFIG.md's command, with no warning", () => {
  const out = exportMocoV3(paperViTS, { dataHasTrain: true });
  assertEquals(out.warnings, []);
  const got = parse(out.command);
  const want = parse(CONFIG_MD);
  for (const [flag, value] of want) {
    const mine = flag === "--wd" ? got.get("--weight-decay") : got.get(flag);
    assertEquals(mine, value, flag);
  }
  // Beyond CONFIG.md, main_moco.py's defaults are written out (and equal to the recipe's).
  assertEquals(got.get("--moco-m"), 0.99);
  assertEquals(got.get("--moco-dim"), 256);
  assertEquals(got.get("--moco-mlp-dim"), 4096);
  assertEquals(got.get("--crop-min"), 0.08);
});

Deno.test("the default CPU recipe: a warning for every field main_moco.py cannot carry", () => {
  const cfg: PretrainConfig = { ...PRESETS.fmnist, preset: "fmnist", maxSteps: 40 };
  const out = exportMocoV3(cfg);
  const starts = out.warnings.map((w) => w.split(" ").slice(0, 2).join(" "));
  assertEquals(starts, [
    "dataset fmnist",
    "image size",
    "1-channel images",
    "model vit_micro",
    "patch size",
    "width 64",
    "depth 4",
    "heads 4",
    "warmupEpochs 0.2",
    "maxSteps 40",
  ]);
  assertStringIncludes(out.warnings[1], "image size 28 (a 4x4 grid)");
  assertStringIncludes(out.warnings[1], "14x14 sin-cos grid");
  assertStringIncludes(out.command, "-a vit_small");
  assertStringIncludes(out.command, "--warmup-epochs=0");
  assert(out.command.endsWith("DIR"), "no ImageFolder: the data directory is a placeholder");
});

Deno.test("every config field has a row; several nodes get --world-size and NODE_RANK", () => {
  const out = exportMocoV3(paperViTS, { nodes: 4, master: "node0", port: 12345 });
  const fields = out.rows.map((r) => r.field);
  for (const f of FIELDS) assert(fields.includes(f.key), `no row for ${f.key}`);
  assertEquals(new Set(fields).size, fields.length);
  const got = parse(out.command);
  assertEquals(got.get("--world-size"), 4);
  assertEquals(got.get("--rank"), "NODE_RANK");
  assertEquals(got.get("--dist-url"), "'tcp://node0:12345'");
  const other = exportMocoV3({
    ...paperViTS,
    optimizer: "lamb",
    skipDecay: true,
    posEmb: "learned",
  });
  assertEquals(other.warnings.length, 3);
});

Deno.test("deno task export-moco-v3 prints the command, the table and the warnings", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(`${dir}/imagenet/train`, { recursive: true });
    const path = `${dir}/config.json`;
    await Deno.writeTextFile(
      path,
      JSON.stringify({ config: { ...paperViTS, dataRoot: `${dir}/imagenet`, channels: 1 } }),
    );
    const lines: string[] = [];
    const log = console.log;
    console.log = (s: string) => lines.push(s);
    try {
      assertEquals(await main(["--config", path]), 0);
    } finally {
      console.log = log;
    }
    const text = lines.join("\n");
    assertStringIncludes(text, "python main_moco.py \\\n  -a vit_small -b 1024");
    assertStringIncludes(text, "| freezePatchEmbed | true | `--stop-grad-conv1` |");
    assertEquals(lines.filter((l) => l.startsWith("warning: ")).length, 1);
    assertStringIncludes(text, "warning: 1-channel images cannot be carried");
    await assertRejects(() => main([]), Error, "give --config");
    await assertRejects(() => main(["--config", `${dir}/none.json`]), Error, "cannot read");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
