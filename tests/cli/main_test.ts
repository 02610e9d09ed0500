/**
 * How a task ends on an error (lib/cli/main.ts): an error meant for a user (a `UserError`,
 * lib/core/errors.ts) prints one line and exits with its own code; anything else prints its stack
 * and exits 1. `runMain` calls `Deno.exit`, so each case runs in a child process.
 */
import { assert, assertEquals, assertInstanceOf, assertStringIncludes } from "@std/assert";
import { ConfigError, UserError } from "../../lib/core/errors.ts";
import { UsageError } from "../../lib/core/flags.ts";
import { StoppedError } from "../../lib/core/stop.ts";
import { DiskFullError } from "../../lib/io/atomic.ts";
import { FileSystemError } from "../../lib/io/fs_errors.ts";
import { RunLockedError } from "../../lib/io/lock.ts";
import { PthError } from "../../lib/io/pth.ts";
import { SafetensorsError } from "../../lib/io/safetensors.ts";
import { BackendError } from "../../lib/backends/mod.ts";
import { DataError } from "../../lib/data/dataset.ts";
import { ResultsError } from "../../lib/eval/results.ts";
import { CheckpointError } from "../../lib/train/checkpoint.ts";
import { DivergenceError } from "../../lib/train/run_checkpoints.ts";
import { removeOnUnload } from "../_helpers/temp.ts";

const ROOT = new URL("../..", import.meta.url).pathname;
const lib = (path: string) => new URL(`../../lib/${path}`, import.meta.url).href;

const dirs: string[] = [];
removeOnUnload(dirs);

/** Runs `runMain` on a main whose body is `body` (after `prelude`) in a child; its exit and stderr. */
async function runMainWith(prelude: string, body: string): Promise<{ code: number; err: string }> {
  const dir = await Deno.makeTempDir({ prefix: "vitssl_main_" });
  dirs.push(dir);
  const script = `${dir}/task.ts`;
  await Deno.writeTextFile(
    script,
    `import { runMain } from "${lib("cli/main.ts")}";\n` +
      `import { UserError } from "${lib("core/errors.ts")}";\n` +
      `${prelude}\n` +
      `runMain(async (_args: string[]) => { ${body} });\n`,
  );
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", `${ROOT}deno.json`, script],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, err: new TextDecoder().decode(out.stderr) };
}

Deno.test("runMain: a new UserError subclass is one line with its own exit code", async () => {
  const prelude = "class QuotaError extends UserError {\n" +
    '  override name = "QuotaError";\n' +
    "  override exitCode = 3;\n" +
    "}\n" +
    "class LateError extends UserError {}";
  const quota = await runMainWith(prelude, 'throw new QuotaError("no quota left: ask for more");');
  assertEquals(quota, { code: 3, err: "error: no quota left: ask for more\n" });
  // Without its own code: 2, bad input.
  const late = await runMainWith(prelude, 'throw new LateError("too late");');
  assertEquals(late, { code: 2, err: "error: too late\n" });
});

Deno.test("runMain: a plain Error shows its stack and exits 1; a main's code is the exit code", async () => {
  const plain = await runMainWith("", 'throw new Error("boom in the loop");');
  assertEquals(plain.code, 1, plain.err);
  assertStringIncludes(plain.err, "Error: boom in the loop");
  assert(/\n\s+at .*task\.ts/.test(plain.err), `no stack:\n${plain.err}`);
  assert(!plain.err.startsWith("error: "), plain.err);
  // An Error whose name is a user error's is still a plain Error (the class decides, not the name).
  const named = await runMainWith(
    "",
    'const e = new Error("looks like config"); e.name = "ConfigError"; throw e;',
  );
  assertEquals(named.code, 1, named.err);
  assert(/\n\s+at /.test(named.err), `no stack:\n${named.err}`);
  assertEquals(await runMainWith("", "return 7;"), { code: 7, err: "" });
});

Deno.test("every user-facing error is a UserError with the exit code and line the CLI gives it", () => {
  // Bad input: 2 and `error: <message>`.
  const badInput: UserError[] = [
    new UsageError("m"),
    new ConfigError("m"),
    new DataError("m", "f"),
    new BackendError("m"),
    new CheckpointError("m"),
    new SafetensorsError("f", "m"),
    new PthError("f", "m"),
    new ResultsError("m", "f"),
    new RunLockedError("m"),
    new FileSystemError("m", "p"),
  ];
  for (const e of badInput) {
    assertInstanceOf(e, UserError, e.name);
    assertEquals([e.exitCode, e.line()], [2, `error: ${e.message}`], e.name);
  }
  // The input was fine but the run could not go on: 1, one line.
  for (const e of [new DivergenceError("m"), new DiskFullError("full", "/p", "free space")]) {
    assertInstanceOf(e, UserError, e.name);
    assertEquals([e.exitCode, e.line()], [1, `error: ${e.message}`], e.name);
  }
  // Stopped by the user: 130, the message alone.
  const stopped = new StoppedError("the linear probe");
  assertEquals([stopped.exitCode, stopped.line()], [130, "stopped during the linear probe"]);
  // Each keeps its own name (messages print it).
  assertEquals(
    [...badInput, stopped].map((e) => e.name),
    [
      "UsageError",
      "ConfigError",
      "DataError",
      "BackendError",
      "CheckpointError",
      "SafetensorsError",
      "PthError",
      "ResultsError",
      "RunLockedError",
      "FileSystemError",
      "StoppedError",
    ],
  );
});
