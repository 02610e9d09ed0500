/**
 * Shared by the tests that run `deno task pretrain` as a child process (crash_test.ts,
 * graceful_stop_test.ts): the child is `deno run -A --unstable-webgpu lib/cli/pretrain.ts`, what
 * `deno task pretrain` runs (killing `deno task` itself would signal its shell, not the trainer).
 * @module
 */

const ROOT = new URL("../..", import.meta.url).pathname;
const CLI = new URL("../../lib/cli/pretrain.ts", import.meta.url).pathname;

/** Starts `deno run -A --unstable-webgpu lib/cli/pretrain.ts ...args` with piped output. */
export function spawnPretrain(args: string[]): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-webgpu", CLI, ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * Steps of the complete (newline-terminated) rows of a run's log.csv, `[]` if it does not exist
 * yet; a torn last line is ignored.
 */
export async function logSteps(path: string): Promise<number[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    return [];
  }
  const lines = text.split("\n").slice(1, -1); // header ... last complete line
  return lines.map((l) => Number(l.split(",")[0]));
}
