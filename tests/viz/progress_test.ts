/**
 * Displays complete when a cell's code finishes: in a stand-in for the Deno kernel (a
 * `Deno.jupyter.broadcast` that records each message and when it was sent), every new display
 * and every live display's `finish` return only after the kernel has had its publishing time
 * (`FLUSH_BASE_MS` plus the queued bytes at `FLUSH_BYTES_PER_MS`, computed here from the
 * messages recorded), the progress display's final state is its last message, and nothing is
 * sent after `finish` returns.
 */
import { assert, assertEquals, assertStringIncludes } from "@std/assert";
import {
  FLUSH_BASE_MS,
  FLUSH_BYTES_PER_MS,
  flushWaitMs,
  showMarkdown,
} from "../../lib/viz/display.ts";
import { liveDisplay, liveLog, trainProgress } from "../../lib/viz/progress.ts";
import type { LogRow } from "../../lib/train/rundir.ts";

interface Sent {
  type: string;
  content: { data: Record<string, string>; transient: { display_id?: string } };
  at: number;
  bytes: number;
}

/** Runs `fn` with a recording `Deno.jupyter`, restored afterwards. */
async function inFakeKernel(fn: (sent: Sent[]) => Promise<void>): Promise<void> {
  // Outside `deno jupyter` reading Deno.jupyter throws; its setter takes a stand-in.
  const deno = Deno as unknown as { jupyter?: unknown };
  const sent: Sent[] = [];
  deno.jupyter = {
    broadcast: (type: string, content: Sent["content"]) => {
      sent.push({ type, content, at: performance.now(), bytes: JSON.stringify(content).length });
    },
  };
  try {
    await fn(sent);
  } finally {
    deno.jupyter = undefined;
  }
}

/** Timer slack: a timeout fires no earlier than asked, up to clock rounding. */
const SLACK_MS = 2;

Deno.test("flushWaitMs: the base plus the bytes at 10 kB/ms; off at 0", () => {
  assertEquals(FLUSH_BASE_MS, 50);
  assertEquals(FLUSH_BYTES_PER_MS, 10_000);
  assertEquals(flushWaitMs(0, 50), 50);
  assertEquals(flushWaitMs(200_000, 50), 70); // 50 + 200,000 / 10,000
  assertEquals(flushWaitMs(1_000_000, 0), 0);
});

Deno.test("showMarkdown in a kernel returns only after the kernel's time to publish it", async () => {
  await inFakeKernel(async (sent) => {
    const md = "**done** " + "x".repeat(100_000);
    await showMarkdown(md);
    const done = performance.now();
    assertEquals(sent.length, 1);
    assertEquals(sent[0].type, "display_data");
    assertEquals(sent[0].content.data["text/markdown"], md);
    // The message: {"data":{"text/markdown":md,"text/plain":md},"metadata":{},"transient":{}}.
    const bytes = 2 * md.length +
      '{"data":{"text/markdown":"","text/plain":""},"metadata":{},"transient":{}}'.length;
    assertEquals(sent[0].bytes, bytes);
    const wait = 50 + bytes / 10_000; // about 70 ms
    assert(done - sent[0].at >= wait - SLACK_MS, `returned ${done - sent[0].at} ms after`);
  });
});

Deno.test("liveDisplay: updates return at once, finish waits for the last one", async () => {
  await inFakeKernel(async (sent) => {
    const live = await liveDisplay("start"); // a new display: flushed
    const t0 = performance.now();
    for (let i = 1; i <= 3; i++) await live.update(`<b>${i}/3</b>`, `${i}/3`);
    // Three updates without a flush between them (each would add >= 50 ms).
    assert(performance.now() - t0 < 3 * 50, "updates do not wait");
    await live.finish();
    const done = performance.now();
    assertEquals(sent.map((s) => s.type), [
      "display_data",
      "update_display_data",
      "update_display_data",
      "update_display_data",
    ]);
    const id = sent[0].content.transient.display_id;
    assert(id && sent.every((s) => s.content.transient.display_id === id), "one display id");
    assertEquals(sent[3].content.data["text/plain"], "3/3");
    const queued = sent[1].bytes + sent[2].bytes + sent[3].bytes;
    assert(done - sent[3].at >= 50 + queued / 10_000 - SLACK_MS, "finish waited");
  });
});

/** A run directory whose config.json plans `steps` steps. */
async function runDir(steps: number): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "vitssl-progress-" });
  await Deno.writeTextFile(
    `${dir}/config.json`,
    JSON.stringify({ config: { maxSteps: 0 }, resolved: { totalSteps: steps } }),
  );
  return dir;
}

function logRow(step: number, loss: number): LogRow {
  return {
    step,
    epoch: 0,
    loss,
    lr: 1e-3,
    momentum: 0.99,
    grad_patch: 1,
    grad_first_block: 1,
    grad_last_block: 1,
    grad_heads: 1,
    grad_total: 1,
    images_per_s: 100,
  };
}

Deno.test("trainProgress.finish: the final state is the last message, published before it returns", async () => {
  const dir = await runDir(3);
  try {
    await inFakeKernel(async (sent) => {
      // A long interval: only the first step and the kNN row render before finish.
      const progress = await trainProgress(dir, 60_000);
      progress.onStep!(logRow(0, 4.5));
      progress.onStep!(logRow(1, 4.25));
      progress.onKnn!({
        step: 2,
        epoch: 0,
        top1: 41.5,
        top5: 80,
        k: 20,
        train_size: 60000,
        test_size: 10000,
      });
      progress.onStep!(logRow(2, 4.125));
      await progress.finish();
      const done = performance.now();
      const n = sent.length;
      const last = sent[n - 1];
      assertEquals(last.type, "update_display_data");
      assertStringIncludes(last.content.data["text/plain"], "step 3/3");
      assertStringIncludes(last.content.data["text/plain"], "loss 4.1250");
      assertStringIncludes(last.content.data["text/plain"], "kNN top-1 41.50% @ 2");
      assert(done - last.at >= 50 - SLACK_MS, `finish returned ${done - last.at} ms after`);
      // Nothing is sent after finish returns (no update left in flight).
      await new Promise((r) => setTimeout(r, 100));
      assertEquals(sent.length, n);
      // Its baselines go to the repository's cache, wherever the kernel runs.
      assert(progress.baselineCacheDir!.endsWith("/data/cache/baselines"));
      assert(progress.baselineCacheDir!.startsWith("/"), "an absolute path");
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("liveLog.finish: every printed line shown, published before it returns", async () => {
  await inFakeKernel(async (sent) => {
    const log = await liveLog(2);
    for (const line of ["a", "b", "c"]) log.print(line);
    await log.finish();
    const done = performance.now();
    const last = sent[sent.length - 1];
    assertEquals(last.content.data["text/plain"], "b\nc"); // the last 2 lines
    assertEquals(sent.length, 4); // the display and one update per line
    assert(done - last.at >= 50 - SLACK_MS, "finish waited");
  });
});

Deno.test("outside a kernel: show* print their text, live updates print, nothing waits", async () => {
  const printed: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => printed.push(args.join(" "));
  try {
    await showMarkdown("**hi**");
    const live = await liveDisplay("<b>start</b>");
    await live.update("<b>1/2</b>");
    await live.finish();
  } finally {
    console.log = log;
  }
  assertEquals(printed, ["**hi**", "start", "1/2"]);
});
