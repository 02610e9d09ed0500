/**
 * `deno task notebooks`: executes the notebooks in `notebooks/` headlessly with
 * `jupyter nbconvert --to notebook --execute` through the Deno kernel, at a budget, in place or
 * into an output directory, and optionally renders them to HTML.
 *
 * ```sh
 * deno task notebooks --budget smoke                 # all, in place, seconds each
 * deno task notebooks --budget cpu --only 04,05,06,07,08   # the committed-executed ones
 * deno task notebooks --budget smoke --out /tmp/nb --html   # to a directory, plus HTML
 * deno task notebooks --clear --only 00,01,02,03,09     # clear outputs again before committing
 * deno task notebooks --budget smoke --only 05 --overwrite  # replace committed cpu outputs
 * ```
 *
 * Each executed notebook records its budget in its metadata (`metadata.vitssl.budget`, set by
 * `notebooks/nbconvert_config.py`). Executing in place refuses, before running anything, to
 * replace the outputs of a notebook made at another budget (or at an unknown one): the
 * committed `cpu` outputs of 04-08 are not overwritten by a `smoke` run unless `--overwrite` is
 * given (or `--out` writes elsewhere).
 *
 * Needs Jupyter (Debian: `apt-get install jupyter-nbconvert jupyter-client python3-ipykernel`,
 * or `pip install nbconvert ipykernel`) and the Deno kernel (`deno jupyter --install`).
 * `notebooks/nbconvert_config.py` makes nbconvert keep the outputs the Deno kernel sends just
 * after a cell's "idle" status (see that file).
 * @module
 */
import { fileURLToPath } from "node:url";
import { type Budget, BUDGETS, NOTEBOOKS } from "../viz/budget.ts";
import { helpText } from "./args.ts";
import { type FlagSpec, parseFlags, UsageError } from "../core/flags.ts";
import { runMain } from "./main.ts";

/** The notebooks directory (absolute). */
export const NOTEBOOK_DIR: string = fileURLToPath(new URL("../../notebooks/", import.meta.url));

/** The nbconvert config every execution uses (absolute). */
export const NBCONVERT_CONFIG = `${NOTEBOOK_DIR}nbconvert_config.py`;

/** What to install when Jupyter or the Deno kernel is missing. */
export const INSTALL_HINT = "install Jupyter (Debian: apt-get install jupyter-nbconvert " +
  "jupyter-client python3-ipykernel; elsewhere: pip install nbconvert ipykernel), then " +
  "register the Deno kernel with `deno jupyter --install`";

/** Whether notebooks can be executed here, and if not, why. */
export interface JupyterStatus {
  ok: boolean;
  /** One line: the versions found, or what is missing and how to install it. */
  message: string;
}

async function run(
  cmd: string,
  args: string[],
): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  try {
    const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped" }).output();
    const dec = new TextDecoder();
    return { ok: out.success, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
  } catch (e) {
    return { ok: false, stdout: "", stderr: (e as Error).message };
  }
}

/**
 * Checks that `jupyter nbconvert` runs and that a kernel named `deno` is registered.
 *
 * @example
 * ```ts
 * const s = await jupyterStatus();
 * if (!s.ok) console.log(s.message);
 * ```
 */
export async function jupyterStatus(): Promise<JupyterStatus> {
  const nbc = await run("jupyter", ["nbconvert", "--version"]);
  if (!nbc.ok) {
    return { ok: false, message: `jupyter nbconvert is not installed: ${INSTALL_HINT}` };
  }
  const specs = await run("jupyter", ["kernelspec", "list", "--json"]);
  let hasDeno = false;
  try {
    hasDeno = "deno" in (JSON.parse(specs.stdout).kernelspecs ?? {});
  } catch { /* unreadable: treat as missing */ }
  if (!hasDeno) {
    return {
      ok: false,
      message: "the Deno Jupyter kernel is not registered: run `deno jupyter --install` " +
        "(jupyter kernelspec list should then show deno)",
    };
  }
  return { ok: true, message: `jupyter nbconvert ${nbc.stdout.trim()} with the deno kernel` };
}

/**
 * The notebooks to run, sorted: every `notebooks/NN_*.ipynb`, or those whose name starts with
 * one of `only` (`["02", "05_positional"]`). Throws a {@link UsageError} naming the choices when
 * an entry of `only` matches none.
 */
export async function listNotebooks(only: string[] = [], dir = NOTEBOOK_DIR): Promise<string[]> {
  const names: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && /^\d\d_.*\.ipynb$/.test(e.name)) names.push(e.name.replace(/\.ipynb$/, ""));
  }
  names.sort();
  if (only.length === 0) return names.map((n) => `${dir.replace(/\/$/, "")}/${n}.ipynb`);
  const picked = new Set<string>();
  for (const o of only) {
    const hits = names.filter((n) => n.startsWith(o.replace(/\.ipynb$/, "")));
    if (hits.length === 0) {
      throw new UsageError(`--only ${o} matches no notebook; choose among ${names.join(", ")}`);
    }
    hits.forEach((h) => picked.add(h));
  }
  return names.filter((n) => picked.has(n)).map((n) => `${dir.replace(/\/$/, "")}/${n}.ipynb`);
}

/** What a notebook holds: its code cells' outputs, and the budget that made them. */
export interface NotebookOutputs {
  /** Outputs of all its code cells. */
  outputs: number;
  /** `metadata.vitssl.budget`: the budget of the execution that made them (absent: unknown). */
  budget?: string;
}

/**
 * Reads a notebook's outputs and the budget recorded in its metadata.
 *
 * @example
 * ```ts
 * await notebookOutputs("notebooks/05_positional_embedding.ipynb"); // { outputs: 4, budget: "cpu" }
 * ```
 */
export async function notebookOutputs(path: string): Promise<NotebookOutputs> {
  const nb = JSON.parse(await Deno.readTextFile(path)) as {
    cells: { outputs?: unknown[] }[];
    metadata?: { vitssl?: { budget?: string } };
  };
  const outputs = nb.cells.reduce((n, c) => n + (c.outputs?.length ?? 0), 0);
  const budget = nb.metadata?.vitssl?.budget;
  return budget ? { outputs, budget } : { outputs };
}

/**
 * The notebooks among `paths` whose outputs an execution at `budget` in place would replace
 * although they were made at another budget (or at one not recorded): `name (budget)` each.
 * Notebooks without outputs never clash.
 *
 * @example
 * ```ts
 * await overwriteClashes(["notebooks/05_positional_embedding.ipynb"], "smoke");
 * // ["05_positional_embedding (cpu)"]
 * ```
 */
export async function overwriteClashes(paths: string[], budget: Budget): Promise<string[]> {
  const out: string[] = [];
  for (const p of paths) {
    const o = await notebookOutputs(p);
    if (o.outputs > 0 && o.budget !== budget) {
      out.push(`${p.split("/").pop()!.replace(/\.ipynb$/, "")} (${o.budget ?? "unknown budget"})`);
    }
  }
  return out;
}

/** Options of {@link executeNotebook}. */
export interface ExecuteOptions {
  budget: Budget;
  /** Write the executed notebook here (same file name); absent: execute in place. */
  outDir?: string;
  /** Extra environment for the kernel (e.g. `VITSSL_RUNS`). */
  env?: Record<string, string>;
  /** Seconds per cell before nbconvert gives up (default: no limit). */
  cellTimeout?: number;
}

/** What {@link executeNotebook} did. */
export interface ExecuteResult {
  name: string;
  ok: boolean;
  seconds: number;
  /** The executed notebook. */
  output: string;
  /** On failure: the end of nbconvert's report (the failing cell and its error). */
  error?: string;
}

/**
 * Executes one notebook with `jupyter nbconvert --to notebook --execute` (Deno kernel) at a
 * budget. A cell error makes `ok` false, with the failing cell and error in `error`.
 */
export async function executeNotebook(path: string, opts: ExecuteOptions): Promise<ExecuteResult> {
  const name = path.split("/").pop()!.replace(/\.ipynb$/, "");
  const args = [
    "nbconvert",
    "--config",
    NBCONVERT_CONFIG,
    "--to",
    "notebook",
    "--execute",
    path,
    ...(opts.outDir ? ["--output-dir", opts.outDir] : ["--inplace"]),
    ...(opts.cellTimeout ? [`--ExecutePreprocessor.timeout=${opts.cellTimeout}`] : []),
  ];
  const t0 = performance.now();
  const out = await new Deno.Command("jupyter", {
    args,
    env: { ...opts.env, VITSSL_BUDGET: opts.budget },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const seconds = (performance.now() - t0) / 1000;
  const output = opts.outDir ? `${opts.outDir.replace(/\/$/, "")}/${name}.ipynb` : path;
  if (out.success) return { name, ok: true, seconds, output };
  const text = new TextDecoder().decode(out.stderr);
  // nbconvert's report ends with the failing cell's source and the kernel's error.
  const at = text.lastIndexOf("An error occurred while executing the following cell");
  const error = (at >= 0 ? text.slice(at) : text.split("\n").slice(-40).join("\n")).trim();
  return { name, ok: false, seconds, output, error };
}

/** Renders an (executed) notebook to `<htmlDir>/<name>.html` with `nbconvert --to html`. */
export async function renderHtml(ipynb: string, htmlDir: string): Promise<string> {
  const r = await run("jupyter", ["nbconvert", "--to", "html", "--output-dir", htmlDir, ipynb]);
  const name = ipynb.split("/").pop()!.replace(/\.ipynb$/, "");
  if (!r.ok) throw new Error(`nbconvert --to html failed for ${ipynb}:\n${r.stderr.slice(-2000)}`);
  return `${htmlDir.replace(/\/$/, "")}/${name}.html`;
}

/**
 * Clears every output and execution count of a notebook, in place (and the budget its metadata
 * recorded: see `notebooks/nbconvert_config.py`).
 */
export async function clearOutputs(ipynb: string): Promise<void> {
  const r = await run("jupyter", [
    "nbconvert",
    "--config",
    NBCONVERT_CONFIG,
    "--clear-output",
    "--inplace",
    ipynb,
  ]);
  if (!r.ok) throw new Error(`nbconvert --clear-output failed for ${ipynb}:\n${r.stderr}`);
}

const SPECS: FlagSpec[] = [
  {
    key: "budget",
    flag: "budget",
    kind: "string",
    choices: BUDGETS,
    help: "runs' size (default: $VITSSL_BUDGET, else cpu)",
  },
  { key: "only", flag: "only", kind: "string", help: "comma-separated name prefixes (02,05)" },
  {
    key: "out",
    flag: "out",
    kind: "string",
    help: "write executed notebooks here (default: in place)",
  },
  { key: "html", flag: "html", kind: "bool", help: "also render each to HTML" },
  {
    key: "htmlDir",
    flag: "html-dir",
    kind: "string",
    help: "where the HTML goes (default: OUT/html, or figures/notebooks)",
  },
  { key: "timeout", flag: "timeout", kind: "int", help: "seconds per cell (default: no limit)" },
  { key: "clear", flag: "clear", kind: "bool", help: "clear outputs in place instead of running" },
  {
    key: "overwrite",
    flag: "overwrite",
    kind: "bool",
    help: "replace in place outputs made at another budget (default: refuse)",
  },
  {
    key: "dir",
    flag: "dir",
    kind: "string",
    help: "the notebooks' directory (default notebooks/)",
  },
  { key: "help", flag: "help", kind: "bool", help: "show this help" },
];

/** Parses the arguments and executes (or clears) the notebooks; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  const { values: v } = parseFlags(args, SPECS);
  if (v.help) {
    const list = NOTEBOOKS.map((n) => `  ${n.name.padEnd(26)}${n.shows}`).join("\n");
    console.log(
      helpText("deno task notebooks [flags]: execute the notebooks headlessly", SPECS) +
        `\n\nNotebooks:\n${list}`,
    );
    return 0;
  }
  const b = String(v.budget ?? Deno.env.get("VITSSL_BUDGET") ?? "cpu");
  if (!(BUDGETS as readonly string[]).includes(b)) {
    throw new UsageError(`--budget must be one of ${BUDGETS.join(", ")}, got "${b}"`);
  }
  const only = v.only ? String(v.only).split(",").map((s) => s.trim()).filter(Boolean) : [];
  const paths = await listNotebooks(
    only,
    v.dir ? `${String(v.dir).replace(/\/$/, "")}/` : undefined,
  );
  if (!v.clear && !v.out && !v.overwrite) {
    const clash = await overwriteClashes(paths, b as Budget);
    if (clash.length) {
      throw new UsageError(
        `refusing to replace the outputs of ${clash.join(", ")} with budget ${b} in place: ` +
          "pass --overwrite to replace them, or --out DIR to write elsewhere",
      );
    }
  }
  const status = await jupyterStatus();
  if (!status.ok) {
    console.error(`error: ${status.message}`);
    return 2;
  }
  if (v.clear) {
    for (const p of paths) {
      await clearOutputs(p);
      console.log(`cleared ${p}`);
    }
    return 0;
  }
  const outDir = v.out ? String(v.out) : undefined;
  if (outDir) await Deno.mkdir(outDir, { recursive: true });
  const htmlDir = v.htmlDir
    ? String(v.htmlDir)
    : outDir
    ? `${outDir}/html`
    : fileURLToPath(new URL("../../figures/notebooks/", import.meta.url));
  console.log(`${status.message}; budget ${b}; ${paths.length} notebook(s)`);
  const t0 = performance.now();
  let failed = 0;
  for (const p of paths) {
    const r = await executeNotebook(p, {
      budget: b as Budget,
      outDir,
      cellTimeout: v.timeout as number | undefined,
    });
    let html = "";
    if (r.ok && v.html) {
      await Deno.mkdir(htmlDir, { recursive: true });
      html = `, ${await renderHtml(r.output, htmlDir)}`;
    }
    console.log(
      `${r.ok ? "ok  " : "FAIL"} ${r.name.padEnd(26)} ${r.seconds.toFixed(1).padStart(6)} s  ` +
        `${r.output}${html}`,
    );
    if (!r.ok) {
      failed++;
      console.error(r.error);
    }
  }
  const total = (performance.now() - t0) / 1000;
  console.log(`${paths.length - failed} ok, ${failed} failed, ${total.toFixed(1)} s`);
  return failed ? 1 : 0;
}

if (import.meta.main) runMain(main);
