/**
 * The training loop's progress display: an in-place bar on a terminal, a plain line every 10 s
 * elsewhere (and for the first and last step), with the epoch, step, loss, lr, images per second
 * and the time left.
 *
 * @example
 * ```ts
 * import { progressPrinter } from "./progress.ts";
 * const progress = progressPrinter(console.log, 100, 25);
 * progress(row); // after each step: "epoch 1/4 step 1/100 loss 4.1520 lr 0.00e+0 512 img/s ETA 0m40s"
 * ```
 * @module
 */
import type { LogRow } from "./rundir.ts";

/**
 * A progress display of a run to `lastStep` (`stepsPerEpoch` steps an epoch), fed each step's log
 * row: on a terminal (when `print` is `console.log`) one bar redrawn in place, elsewhere a plain
 * line at most every 10 s, and for the first and the last step.
 *
 * @example
 * ```ts
 * const progress = progressPrinter((s) => lines.push(s), 100, 25);
 * ```
 */
export function progressPrinter(
  print: (s: string) => void,
  lastStep: number,
  stepsPerEpoch: number,
): (row: LogRow) => void {
  const tty = print === console.log && Deno.stdout.isTerminal();
  const start = performance.now();
  let first = -1;
  let ran = 0; // steps run by this process (a rollback repeats steps)
  let lastPrint = 0;
  return (row) => {
    if (first < 0) first = row.step;
    ran++;
    const done = row.step + 1;
    const elapsed = (performance.now() - start) / 1000;
    const rate = ran / Math.max(elapsed, 1e-9);
    const eta = (lastStep - done) / Math.max(rate, 1e-9);
    const pct = done / lastStep;
    const epochs = Math.ceil(lastStep / stepsPerEpoch);
    const text = `epoch ${row.epoch + 1}/${epochs} step ${done}/${lastStep} loss ` +
      `${row.loss.toFixed(4)} lr ${row.lr.toExponential(2)} ${row.images_per_s.toFixed(0)} img/s ` +
      `ETA ${formatSeconds(eta)}`;
    if (tty) {
      const width = 24;
      const bar = "#".repeat(Math.round(pct * width)).padEnd(width, ".");
      Deno.stdout.writeSync(new TextEncoder().encode(`\r[${bar}] ${text}\x1b[K`));
      if (done === lastStep) Deno.stdout.writeSync(new TextEncoder().encode("\n"));
    } else if (elapsed - lastPrint >= 10 || done === lastStep || done === first + 1) {
      lastPrint = elapsed;
      print(text);
    }
  };
}

/**
 * Seconds as `XmYYs`, or `XhYYm` from an hour on; `?` when not finite.
 *
 * @example
 * ```ts
 * formatSeconds(125); // "2m05s"
 * formatSeconds(3700); // "1h01m"
 * ```
 */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s)) return "?";
  const m = Math.floor(s / 60), sec = Math.round(s % 60);
  return m >= 60
    ? `${Math.floor(m / 60)}h${String(m % 60).padStart(2, "0")}m`
    : `${m}m${String(sec).padStart(2, "0")}s`;
}
