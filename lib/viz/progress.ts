/**
 * Live progress in notebooks: one display replaced in place (`update_display_data`), a log of
 * the last lines, a loss sparkline, and the progress of a `pretrain` run (its hooks). Outside a
 * kernel each update prints its text.
 *
 * The run hooks' types come from `lib/train/pretrain.ts` as types only: this module does not
 * load the training loop; the caller passes its hooks to `pretrain`.
 *
 * @example
 * ```ts
 * import { trainProgress } from "./progress.ts";
 * const progress = await trainProgress(cfg.outDir);
 * await pretrain(cfg, progress);
 * await progress.finish();
 * ```
 * @module
 */
import type { RunHooks } from "../train/pretrain.ts";
import { type KnnRow, type LogRow, plannedSteps } from "../train/rundir.ts";
import { display, escapeHtml, flushDisplays, inNotebook, stripTags } from "./display.ts";
import { repoPath } from "./runs.ts";

/** A display that is replaced in place by each {@link LiveDisplay.update}. */
export interface LiveDisplay {
  /** Replaces the display's content (HTML, with a plain-text alternative). */
  update(html: string, text?: string): Promise<void>;
  /**
   * Waits until the last update is published ({@link flushDisplays}): call it after the last
   * update of a cell, or the cell's end can overtake it.
   */
  finish(): Promise<void>;
}

/**
 * A display updated in place (`update_display_data`). Outside a kernel, each update prints its
 * text.
 *
 * @example
 * ```ts
 * const live = await liveDisplay("starting...");
 * for (let i = 1; i <= 3; i++) await live.update(`<b>${i}/3</b>`, `${i}/3`);
 * await live.finish();
 * ```
 */
export async function liveDisplay(html = "", text = ""): Promise<LiveDisplay> {
  const displayId = `vitssl-live-${crypto.randomUUID()}`;
  const bundle = (h: string, t: string) => ({
    "text/html": h,
    "text/plain": t || stripTags(h),
  });
  await display(bundle(html, text), { displayId });
  return {
    update: async (h, t = "") => {
      if (inNotebook()) await display(bundle(h, t), { displayId, update: true });
      else console.log(t || stripTags(h));
    },
    finish: flushDisplays,
  };
}

/** What {@link liveLog} returns. */
export interface LiveLog {
  /** Adds a line (pass as a `print` option). */
  print: (line: string) => void;
  /** Waits for pending updates, until they are published ({@link flushDisplays}). */
  finish(): Promise<void>;
}

/**
 * A log shown in one display updated in place (the last `keep` lines), for the `print` option of
 * long library calls such as `evaluate`.
 *
 * @example
 * ```ts
 * const log = await liveLog();
 * await evaluate({ checkpoint, print: log.print });
 * await log.finish();
 * ```
 */
export async function liveLog(keep = 20): Promise<LiveLog> {
  const live = await liveDisplay("<i>starting...</i>", "starting...");
  const lines: string[] = [];
  let chain = Promise.resolve();
  return {
    print: (line) => {
      lines.push(line);
      const text = lines.slice(-keep).join("\n");
      const html = `<pre style="margin:0;font-size:11px">${escapeHtml(text)}</pre>`;
      if (inNotebook()) chain = chain.then(() => live.update(html, text)).catch(() => {});
      else console.log(line);
    },
    finish: async () => {
      await chain;
      await live.finish();
    },
  };
}

/** A tiny inline SVG line of `ys` (the loss so far), `w x h` pixels. */
export function sparkline(ys: number[], w = 240, h = 40): string {
  const v = ys.filter(Number.isFinite);
  if (v.length < 2) return "";
  const lo = Math.min(...v), hi = Math.max(...v);
  const pts = v.map((y, i) =>
    `${((i / (v.length - 1)) * (w - 2) + 1).toFixed(1)},` +
    `${(h - 1 - ((y - lo) / (hi - lo || 1)) * (h - 2)).toFixed(1)}`
  );
  return `<svg width="${w}" height="${h}" style="vertical-align:middle">` +
    `<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="${pts.join(" ")}"/></svg>`;
}

/** What {@link trainProgress} returns: run hooks for `pretrain`, and `finish` to call after. */
export interface TrainProgress extends RunHooks {
  /**
   * Shows the final state and waits until it is published (so that it is the display's content
   * when the cell ends, {@link flushDisplays}).
   */
  finish(): Promise<void>;
  /** Every step row seen (the loss curve) and every kNN row. */
  steps: LogRow[];
  knn: KnnRow[];
}

/**
 * Live progress of a `pretrain` run in one display updated in place: a progress bar, the last
 * loss, lr and speed, a loss sparkline, the last kNN accuracy (and online probe accuracy) and the
 * run's printed lines. The total step count is read from the run directory's `config.json`
 * (written before step 0). Updates at most every `intervalMs` (default 500 ms). The final
 * report's baselines are cached in the repository's `data/cache/baselines` (the kernel runs in
 * `notebooks/`).
 *
 * @example
 * ```ts
 * const progress = await trainProgress(cfg.outDir);
 * await pretrain(cfg, progress);
 * await progress.finish();
 * ```
 */
export async function trainProgress(runDir: string, intervalMs = 500): Promise<TrainProgress> {
  const live = await liveDisplay("<i>starting...</i>", "starting...");
  const steps: LogRow[] = [];
  const knn: KnnRow[] = [];
  const lines: string[] = [];
  const t0 = performance.now();
  let total = 0;
  let last = 0;
  let chain = Promise.resolve();
  // config.json is written before step 0; until then the total is unknown (0).
  const lastStep = (): number => total || (total = plannedSteps(runDir));
  const render = () => {
    const row = steps[steps.length - 1];
    const done = row ? row.step + 1 : 0;
    const of = lastStep();
    const secs = (performance.now() - t0) / 1000;
    const k = knn[knn.length - 1];
    const text =
      (row
        ? `step ${done}/${of || "?"}  epoch ${row.epoch + 1}  loss ${row.loss.toFixed(4)}  ` +
          `lr ${row.lr.toExponential(2)}  ${row.images_per_s.toFixed(0)} img/s  ` +
          `${secs.toFixed(0)} s`
        : "starting...") +
      (k ? `  kNN top-1 ${k.top1.toFixed(2)}% @ ${k.step}` : "") +
      (k?.probe_top1 === undefined ? "" : `, online probe ${k.probe_top1.toFixed(2)}%`);
    const bar = of ? `<progress value="${done}" max="${of}" style="width:240px"></progress> ` : "";
    const html = `<div style="font-family:monospace;font-size:12px">${bar}${escapeHtml(text)}` +
      `<br>${sparkline(steps.map((s) => s.loss))}` +
      (lines.length
        ? `<pre style="margin:2px 0;font-size:11px">${escapeHtml(lines.slice(-6).join("\n"))}</pre>`
        : "") +
      `</div>`;
    chain = chain.then(() => live.update(html, text)).catch(() => {});
  };
  const maybeRender = (force = false) => {
    const now = performance.now();
    if (force || now - last >= intervalMs) {
      last = now;
      render();
    }
  };
  return {
    steps,
    knn,
    // The repository's cache, not one under the kernel's working directory (notebooks/).
    baselineCacheDir: repoPath("data/cache/baselines"),
    print: (line) => {
      lines.push(line);
      if (!inNotebook()) console.log(line);
    },
    onStep: (row) => {
      steps.push(row);
      maybeRender();
    },
    onKnn: (row) => {
      knn.push(row);
      maybeRender(true);
    },
    finish: async () => {
      render();
      await chain;
      await live.finish();
    },
  };
}
