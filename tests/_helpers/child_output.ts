/**
 * Reading a child process's output while it runs, for the tests that signal a child at a given
 * point of its output (tests/train/eval_stop_test.ts, tests/cli/eval_stop_test.ts).
 * @module
 */

/** A child's stdout and stderr, collected as they arrive. */
export interface ChildOutput {
  /** Resolves true once stdout or stderr contains `marker`, false if both end without it. */
  seen(marker: string): Promise<boolean>;
  /** Everything written to stdout and stderr so far (stdout first), once both have ended. */
  all(): Promise<{ stdout: string; stderr: string }>;
}

/** Collects a spawned child's piped stdout and stderr. */
export function collectOutput(child: Deno.ChildProcess): ChildOutput {
  const text = { stdout: "", stderr: "" };
  const waiters: (() => void)[] = [];
  const pump = async (name: "stdout" | "stderr") => {
    for await (const chunk of child[name].pipeThrough(new TextDecoderStream())) {
      text[name] += chunk;
      for (const w of waiters.splice(0)) w();
    }
  };
  let ended = false;
  const done = Promise.all([pump("stdout"), pump("stderr")]).then(() => {
    ended = true;
    for (const w of waiters.splice(0)) w();
  });
  return {
    async seen(marker) {
      while (!(text.stdout + text.stderr).includes(marker)) {
        if (ended) return false;
        await new Promise<void>((r) => waiters.push(r));
      }
      return true;
    },
    async all() {
      await done;
      return { ...text };
    },
  };
}
