/**
 * lib/'s floor plan: its folders in dependency order, bottom to top, and no file imports from a
 * folder above its own. `lib/mod.ts`, the public entry, is the top and may import anything; a
 * subfolder (`backends/native`) belongs to its parent. Every import (values, types, re-exports,
 * dynamic imports) is read from Deno's own module graph (`deno info --json`), so comments and
 * strings that look like imports do not count.
 * @module
 */
import { assert, assertEquals } from "@std/assert";
import { relative } from "node:path";
import { fileURLToPath } from "node:url";

/** lib/'s folders, bottom to top: a file may import only from its own folder and those before. */
const ORDER = [
  "core",
  "io",
  "backends",
  "data",
  "model",
  "methods",
  "optim",
  "eval",
  "parallel",
  "train",
  "experiments",
  "viz",
  "bench",
  "cli",
];
/** The public entry: above every folder. */
const ENTRY = "lib/mod.ts";

/** An import of `to` by `from`, both repository-relative paths. */
interface Import {
  from: string;
  to: string;
}

/** The folder of a lib/ file (`lib/backends/native/ffi.ts` -> `backends`), or "" at lib/'s root. */
function folderOf(path: string): string {
  const parts = path.split("/");
  return parts.length > 2 ? parts[1] : "";
}

/** Where a lib/ file stands in {@link ORDER} (the entry above all), or -1 if nowhere. */
function rank(path: string): number {
  if (path === ENTRY) return ORDER.length;
  return ORDER.indexOf(folderOf(path));
}

/**
 * What breaks the floor plan, one line each: a lib/ file outside the ordered folders (other than
 * the entry), an import from a folder above the importer's, an import of a file outside lib/.
 */
function layoutProblems(files: string[], imports: Import[]): string[] {
  const problems: string[] = [];
  for (const f of files) {
    if (rank(f) < 0) {
      problems.push(`${f}: its folder "${folderOf(f)}" is not in the order (${ORDER.join(", ")})`);
    }
  }
  for (const { from, to } of imports) {
    if (!to.startsWith("lib/")) {
      problems.push(`${from} imports ${to}, outside lib/`);
    } else if (rank(from) >= 0 && rank(to) > rank(from)) {
      problems.push(
        `${from} imports ${to}: ${folderOf(to) || "lib/"} is above ${folderOf(from)}`,
      );
    } else if (rank(to) < 0) {
      problems.push(`${from} imports ${to}, whose folder is not in the order`);
    }
  }
  return problems;
}

const ROOT = fileURLToPath(new URL("../", import.meta.url));

/** Every .ts file under lib/, repository-relative. */
async function libFiles(dir = `${ROOT}lib`): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...await libFiles(path));
    else if (e.isFile && e.name.endsWith(".ts")) out.push(relative(ROOT, path));
  }
  return out.sort();
}

/** The local imports of every lib/ file, from one `deno info --json` of an entry that loads all. */
async function libImports(files: string[]): Promise<Import[]> {
  const dir = await Deno.makeTempDir({ prefix: "vitssl_layout_" });
  try {
    const entry = `${dir}/all.ts`;
    const lines = files.map((f) => `import "${new URL(f, `file://${ROOT}`).href}";`);
    await Deno.writeTextFile(entry, lines.join("\n") + "\n");
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--config", `${ROOT}deno.json`, entry],
      cwd: ROOT,
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert(out.success, new TextDecoder().decode(out.stderr));
    const graph = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: {
        specifier: string;
        dependencies?: { code?: { specifier: string }; type?: { specifier: string } }[];
      }[];
    };
    const local = (url: string) =>
      url.startsWith("file://") ? relative(ROOT, fileURLToPath(url)) : undefined;
    const imports: Import[] = [];
    for (const m of graph.modules) {
      const from = local(m.specifier);
      if (!from?.startsWith("lib/")) continue;
      for (const d of m.dependencies ?? []) {
        for (const target of [d.code?.specifier, d.type?.specifier]) {
          const to = target && local(target);
          if (to) imports.push({ from, to });
        }
      }
    }
    return imports;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("layout checker: reports an upward import, a folder not in the order, nothing else", () => {
  const files = [
    "lib/core/rng.ts",
    "lib/backends/native/ffi.ts",
    "lib/backends/mod.ts",
    "lib/eval/knn.ts",
    "lib/train/pretrain.ts",
    "lib/scratch/tmp.ts",
    "lib/mod.ts",
  ];
  const imports: Import[] = [
    { from: "lib/train/pretrain.ts", to: "lib/eval/knn.ts" }, // eval is below train: fine
    { from: "lib/backends/native/ffi.ts", to: "lib/backends/mod.ts" }, // its parent: fine
    { from: "lib/backends/mod.ts", to: "lib/core/rng.ts" }, // down: fine
    { from: "lib/mod.ts", to: "lib/train/pretrain.ts" }, // the entry imports anything
    { from: "lib/eval/knn.ts", to: "lib/train/pretrain.ts" }, // up: reported
    { from: "lib/core/rng.ts", to: "lib/mod.ts" }, // the entry is the top: reported
  ];
  assertEquals(layoutProblems(files, imports), [
    'lib/scratch/tmp.ts: its folder "scratch" is not in the order (core, io, backends, data, ' +
    "model, methods, optim, eval, parallel, train, experiments, viz, bench, cli)",
    "lib/eval/knn.ts imports lib/train/pretrain.ts: train is above eval",
    "lib/core/rng.ts imports lib/mod.ts: lib/ is above core",
  ]);
});

Deno.test("lib/: every folder is in the order, and no file imports from a folder above its own", async () => {
  const files = await libFiles();
  assert(files.includes(ENTRY) && files.length > 80, `found ${files.length} files`);
  const imports = await libImports(files);
  // The graph is read: the training loop's imports are there (a downward one among them).
  assert(
    imports.some((i) => i.from === "lib/train/pretrain.ts" && i.to === "lib/core/rng.ts"),
    "pretrain.ts imports core/rng.ts",
  );
  assertEquals(layoutProblems(files, imports), []);
});
