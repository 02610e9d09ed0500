/**
 * The docs' references resolve. In README.md and docs/*.md, every relative markdown link names a
 * file or folder of the repository (and, after `#`, a heading of the markdown file it names), every
 * backticked repository path (`lib/...`, `tests/...`, `notebooks/...`, `figures/...`, `docs/...`,
 * `data/...`) names a file or folder, and every `deno task NAME` names a task of deno.json.
 *
 * Paths that runs create (under `data/cache/` and `data/runs/`) are not in a clean clone: they are
 * allowed by {@link RUN_TIME}. A token with a placeholder (`data/results/<suite>.csv`, `figures/*.png`)
 * is a pattern, not a path, and is not checked.
 */
import { assertEquals } from "@std/assert";

const ROOT = new URL("../../", import.meta.url);

/** Paths created at run time, not committed: references under them are not checked. */
const RUN_TIME = ["data/cache/", "data/runs/"];

/** A backticked token that looks like a path of the repository. */
const REPO_PATH = /^(lib|tests|notebooks|figures|docs|data)\/[A-Za-z0-9_.\/-]*$/;

const TASKS = new Set(
  Object.keys(JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT))).tasks),
);

/** Whether a path relative to the repository root exists (a file or a folder). */
async function exists(rel: string): Promise<boolean> {
  try {
    await Deno.stat(new URL(rel, ROOT));
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** `a/b/../c/./d` -> `a/c/d`, for paths relative to the root (`..` above it is kept). */
function normalise(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "." || part === "") continue;
    if (part === ".." && out.length > 0 && out[out.length - 1] !== "..") out.pop();
    else out.push(part);
  }
  return out.join("/") + (path.endsWith("/") && out.length > 0 ? "/" : "");
}

/** Fenced code blocks (``` ... ```) of a markdown text, and the text without them. */
function splitFences(text: string): { prose: string; code: string[] } {
  const code: string[] = [];
  const prose = text.replace(/^```[^\n]*\n([\s\S]*?)^```[ \t]*$/gm, (_, body: string) => {
    code.push(body);
    return "";
  });
  return { prose, code };
}

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens. */
function slug(heading: string): string {
  return heading
    .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/** Every anchor of a markdown text's headings (a repeated heading gets `-1`, `-2`, ...). */
function anchors(text: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  for (const m of splitFences(text).prose.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const base = slug(m[1]);
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

/**
 * The broken references of one markdown text, as `file: why: reference` lines; `file` is the
 * text's path relative to the repository root (links resolve against its folder).
 */
async function brokenReferences(file: string, text: string): Promise<string[]> {
  const problems: string[] = [];
  const dir = file.includes("/") ? file.slice(0, file.lastIndexOf("/") + 1) : "";
  const { prose, code } = splitFences(text);

  for (const m of prose.matchAll(/!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
    const target = m[1];
    if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
    const [pathPart, fragment] = target.split("#", 2);
    const rel = pathPart === "" ? file : normalise(dir + decodeURIComponent(pathPart));
    if (rel !== file && (rel.startsWith("..") || !(await exists(rel)))) {
      problems.push(`${file}: missing link target: ${target}`);
      continue;
    }
    if (fragment !== undefined && rel.endsWith(".md")) {
      const headings = anchors(rel === file ? text : await Deno.readTextFile(new URL(rel, ROOT)));
      if (!headings.has(fragment.toLowerCase())) {
        problems.push(`${file}: missing heading: ${target}`);
      }
    }
  }

  const spans = [...prose.matchAll(/`([^`]+)`/g)].map((m) => m[1]).concat(code);
  for (const span of spans) {
    for (const raw of span.split(/[\s"'=(),;]+/)) {
      const token = raw.replace(/[.,:;]+$/, "");
      if (!REPO_PATH.test(token)) continue;
      if (RUN_TIME.some((p) => token.startsWith(p) || token === p.slice(0, -1))) continue;
      if (!(await exists(token))) problems.push(`${file}: missing path: ${token}`);
    }
  }

  for (const m of text.matchAll(/\bdeno(?:@[0-9.]+)?\s+task\s+([a-z][a-z0-9-]*)/g)) {
    if (!TASKS.has(m[1])) problems.push(`${file}: missing task: deno task ${m[1]}`);
  }
  return [...new Set(problems)];
}

/** README.md and every docs/*.md, relative to the root. */
async function docFiles(): Promise<string[]> {
  const files = ["README.md"];
  for await (const e of Deno.readDir(new URL("docs/", ROOT))) {
    if (e.isFile && e.name.endsWith(".md")) files.push(`docs/${e.name}`);
  }
  return files.sort();
}

Deno.test("docs: every link, path and task named in README.md and docs/*.md exists", async () => {
  const files = await docFiles();
  assertEquals(files.includes("docs/recipes.md"), true, files.join(", "));
  const problems: string[] = [];
  for (const f of files) {
    problems.push(...await brokenReferences(f, await Deno.readTextFile(new URL(f, ROOT))));
  }
  assertEquals(problems, []);
});

Deno.test("docs link check: a made-up page's missing path, link, heading and task are reported", async () => {
  const page = [
    "# A page",
    "",
    "## Second heading",
    "",
    "Exists: `lib/mod.ts`, [the README](../README.md), [its results](../README.md#results),",
    "[here](#second-heading), `deno task test`, a run dir `data/runs/demo/log.csv`, a pattern",
    "`data/results/<suite>.csv`, [the paper](https://arxiv.org/abs/2104.02057).",
    "",
    "Missing: `lib/no_such_folder/x.ts`, [a page](no_such_page.md),",
    "[a heading](../README.md#no-such-heading), and `deno task no-such-task`.",
    "",
    "```sh",
    "bash tests/no_such_script.sh",
    "npx --yes deno@2.9.6 task pretrain",
    "```",
  ].join("\n");
  assertEquals(await brokenReferences("docs/made_up.md", page), [
    "docs/made_up.md: missing link target: no_such_page.md",
    "docs/made_up.md: missing heading: ../README.md#no-such-heading",
    "docs/made_up.md: missing path: lib/no_such_folder/x.ts",
    "docs/made_up.md: missing path: tests/no_such_script.sh",
    "docs/made_up.md: missing task: deno task no-such-task",
  ]);
});

Deno.test("docs link check: GitHub's heading anchors", () => {
  // Worked by hand from GitHub's rule: lower case, drop punctuation but - and _, space -> hyphen.
  assertEquals(slug("native: the C backend (AVX-512, AVX2)"), "native-the-c-backend-avx-512-avx2");
  assertEquals(slug("The studies' base preset `fmnist`"), "the-studies-base-preset-fmnist");
  assertEquals(slug("See [the docs](docs/x.md) now"), "see-the-docs-now");
  assertEquals([...anchors("# A\n\n```\n# not a heading\n```\n\n## A\n")], ["a", "a-1"]);
  assertEquals(normalise("docs/../figures/./README.md"), "figures/README.md");
});
