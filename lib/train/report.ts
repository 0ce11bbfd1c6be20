/**
 * How a training run shows itself: a redrawn progress bar for terminals, plain progress lines for logs, an epoch
 * summary, a confusion-matrix table, the `metrics.jsonl` log (append-only, resumable) and the SVG plots drawn
 * from it. Pure TypeScript, no GPU; the field names match the trainer's `ProgressMetrics` / `EpochSummary`, so
 * those objects can be passed straight in.
 *
 * @module
 */
import { writeFileAtomic } from "../io/atomic.ts";
import { confusionMatrixSvg, lineChart, type LineSeries } from "../io/svg.ts";

/** What a progress report shows (a structural subset of the trainer's `ProgressMetrics`). */
export interface ProgressFields {
  /** Epoch being trained, 1-based. */
  epoch: number;
  /** The run's epoch count. */
  epochs: number;
  /** Steps done in this epoch. */
  step: number;
  /** Steps per epoch. */
  steps: number;
  /** Mean training loss since the previous report. */
  loss: number;
  /** Mean training accuracy (a 0–1 fraction) since the previous report. */
  accuracy: number;
  /** Current learning rate. */
  lr: number;
  /** Training throughput since the previous report. */
  imagesPerSecond: number;
  /** Seconds left in the run. */
  etaSeconds: number;
}

/** What an epoch summary shows (the trainer's `EpochSummary` plus the epoch count and the best flag). */
export interface EpochFields {
  /** Epochs completed (the epoch just finished, 1-based). */
  epoch: number;
  /** The run's epoch count. */
  epochs: number;
  /** Mean training loss over the epoch. */
  trainLoss: number;
  /** Training accuracy over the epoch, a 0–1 fraction. */
  trainAccuracy: number;
  /** Evaluation on the test split (fractions); absent when there is none. */
  test?: { loss: number; top1: number; top5: number };
  /** The same evaluation of the weights' moving average, when the run keeps one. */
  testEma?: { loss: number; top1: number; top5: number };
  /** Learning rate at the end of the epoch. */
  lr: number;
  /** Wall time of the epoch's training. */
  seconds: number;
  /** Training throughput over the epoch. */
  imagesPerSecond: number;
  /** Whether this epoch set a new best test top-1 (of the moving average, when there is one). */
  best: boolean;
}

/**
 * A duration for humans: `"12.3s"` below a minute, `"3m05s"` below an hour, `"1h02m"` above; `"--"` when
 * unknown (negative or not finite).
 *
 * @param seconds the duration
 * @returns the compact text
 * @example
 * ```ts
 * import { formatDuration } from "./report.ts";
 * console.log(formatDuration(185)); // "3m05s"
 * ```
 */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "--";
  if (Math.round(seconds * 10) < 600) return `${(Math.round(seconds * 10) / 10).toFixed(1)}s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)}m${String(whole % 60).padStart(2, "0")}s`;
  const minutes = Math.round(seconds / 60);
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

/** A rounded count with thousands separators, independent of the locale. */
function groupThousands(v: number): string {
  return String(Math.round(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Images per second: one decimal below 10, whole and grouped above. */
function formatRate(v: number): string {
  if (!Number.isFinite(v)) return "--";
  return v < 9.95 ? v.toFixed(1) : groupThousands(v);
}

/** A 0–1 fraction as a percentage with one decimal. */
function formatPercent(v: number): string {
  return Number.isFinite(v) ? `${(v * 100).toFixed(1)}%` : "--";
}

/** A loss with four decimals (`"nan"` / `"inf"` so a diverged run is obvious). */
function formatLoss(v: number): string {
  if (Number.isNaN(v)) return "nan";
  if (!Number.isFinite(v)) return v > 0 ? "inf" : "-inf";
  return v.toFixed(4);
}

/** A learning rate in short scientific notation: `8.7e-4`. */
function formatLr(v: number): string {
  if (v === 0) return "0";
  return Number.isFinite(v) ? v.toExponential(1) : "--";
}

/** `step/steps` with the step padded to the width of `steps`, so redrawn lines do not jitter. */
function stepOf(step: number, steps: number): string {
  const total = String(steps);
  return `${String(step).padStart(total.length)}/${total}`;
}

/** The fields after the bar, shared by the bar and the plain line. */
function progressTail(m: ProgressFields): string {
  return `loss ${formatLoss(m.loss)} acc ${formatPercent(m.accuracy)} lr ${formatLr(m.lr)} ` +
    `${formatRate(m.imagesPerSecond)} img/s ETA ${formatDuration(m.etaSeconds)}`;
}

const EIGHTHS = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];

/**
 * A bar of `cells` characters filled to `fraction` with eighth-block precision, between `▕` and `▏`.
 *
 * @param fraction how full, clamped to 0–1 (NaN counts as 0)
 * @param cells the bar's inner width in characters
 * @returns the bar including its two end caps
 * @example
 * ```ts
 * import { progressBar } from "./report.ts";
 * console.log(progressBar(0.5, 4)); // "▕██  ▏"
 * ```
 */
export function progressBar(fraction: number, cells: number): string {
  const f = Number.isFinite(fraction) ? Math.min(1, Math.max(0, fraction)) : 0;
  const eighths = Math.floor(f * cells * 8 + 1e-9);
  const full = Math.floor(eighths / 8);
  const partial = full < cells ? EIGHTHS[eighths % 8] : "";
  const used = full + (partial ? 1 : 0);
  return `▕${"█".repeat(full)}${partial}${" ".repeat(cells - used)}▏`;
}

/**
 * One terminal line showing training progress with a bar that takes the width the fields leave, e.g.
 * `epoch 3/20 ▕████▌      ▏ 120/468 loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s`. The line never
 * exceeds `width` characters (so `\r` redraws cleanly): the bar shrinks, disappears below 5 cells, and as a last
 * resort the line is cut with `…`. No ANSI escapes; the caller writes `\r` before it.
 *
 * @param m the progress fields
 * @param width terminal columns (default 100)
 * @returns the line, without `\r` or newline
 * @example
 * ```ts
 * import { formatProgressBar } from "./report.ts";
 * const line = formatProgressBar({
 *   epoch: 3, epochs: 20, step: 120, steps: 468, loss: 0.42134, accuracy: 0.8612,
 *   lr: 8.7e-4, imagesPerSecond: 1234.4, etaSeconds: 252,
 * }, 80);
 * console.log(line);
 * ```
 */
export function formatProgressBar(m: ProgressFields, width = 100): string {
  const head = `epoch ${m.epoch}/${m.epochs}`;
  const tail = `${stepOf(m.step, m.steps)} ${progressTail(m)}`;
  // Two spaces around the bar and its two caps.
  const cells = width - head.length - tail.length - 4;
  if (cells >= 5) return `${head} ${progressBar(m.step / m.steps, cells)} ${tail}`;
  const line = `${head} ${tail}`;
  const chars = [...line];
  return chars.length <= width ? line : chars.slice(0, Math.max(0, width - 1)).join("") + "…";
}

/**
 * The plain progress line for logs and non-terminals: the same fields as {@link formatProgressBar} without the
 * bar, with the epoch's percentage, e.g.
 * `epoch 3/20 step 120/468 (25.6%) loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s`.
 *
 * @param m the progress fields
 * @returns the line, without newline
 */
export function formatProgressLine(m: ProgressFields): string {
  const done = m.steps > 0 ? formatPercent(m.step / m.steps) : "--";
  return `epoch ${m.epoch}/${m.epochs} step ${stepOf(m.step, m.steps)} (${done}) ${progressTail(m)}`;
}

/**
 * One line summing up an epoch, e.g.
 * `epoch 3/20 train loss 0.4213 acc 86.1% | test loss 0.3900 top-1 87.2% top-5 99.1% | lr 8.7e-4 1m05s
 * 1,234 img/s ★ best`.
 *
 * @param s the epoch's results
 * @returns the line, without newline
 */
export function formatEpochSummary(s: EpochFields): string {
  const parts = [
    `epoch ${s.epoch}/${s.epochs} train loss ${formatLoss(s.trainLoss)} acc ${
      formatPercent(s.trainAccuracy)
    }`,
  ];
  if (s.test) {
    parts.push(
      `test loss ${formatLoss(s.test.loss)} top-1 ${formatPercent(s.test.top1)} top-5 ${
        formatPercent(s.test.top5)
      }`,
    );
  }
  if (s.testEma) {
    parts.push(`EMA loss ${formatLoss(s.testEma.loss)} top-1 ${formatPercent(s.testEma.top1)}`);
  }
  parts.push(
    `lr ${formatLr(s.lr)} ${formatDuration(s.seconds)} ${formatRate(s.imagesPerSecond)} img/s` +
      (s.best ? " ★ best" : ""),
  );
  return parts.join(" | ");
}

/** Cuts `text` to at most `max` characters, marking the cut with `…`. */
function truncate(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : chars.slice(0, Math.max(1, max - 1)).join("") + "…";
}

function checkSquare(classes: string[], matrix: number[][], where: string): void {
  const k = classes.length;
  if (matrix.length !== k || matrix.some((row) => row.length !== k)) {
    throw new TypeError(
      `${where}: matrix must be ${k}×${k} (one row and column per class), got ${matrix.length} rows`,
    );
  }
}

/**
 * The confusion matrix as an aligned text table: rows are true classes, columns predicted classes, then each
 * row's total and recall; the last rows give the column totals and per-class precision, and a final line the
 * overall accuracy. Row names are cut to `nameWidth` characters, column headers to the column width (the widest
 * count, the longest name up to 8, at least 6), with `…` marking a cut. Undefined ratios print `-`.
 *
 * @param classes class names
 * @param matrix `matrix[true][predicted]` counts
 * @param nameWidth longest row name before cutting (default 16)
 * @returns the table, lines joined by `\n`, no trailing newline
 * @throws {TypeError} when the matrix is not classes × classes
 * @example
 * ```ts
 * import { confusionMatrixText } from "./report.ts";
 * console.log(confusionMatrixText(["cat", "dog"], [[9, 1], [2, 8]]));
 * ```
 */
export function confusionMatrixText(classes: string[], matrix: number[][], nameWidth = 16): string {
  checkSquare(classes, matrix, "confusionMatrixText");
  const k = classes.length;
  const rowTotals = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const colTotals = classes.map((_, j) => matrix.reduce((a, row) => a + row[j], 0));
  const total = rowTotals.reduce((a, b) => a + b, 0);
  const countWidth = Math.max(1, ...matrix.flat().map((v) => String(v).length));
  const longestName = Math.max(0, ...classes.map((c) => [...c].length));
  // At least 6 wide so the precision row ("100.0%") aligns.
  const col = Math.max(6, countWidth, Math.min(8, longestName));
  const names = classes.map((c) => truncate(c, nameWidth));
  const labelTitle = "true \\ pred", precisionTitle = "precision";
  const labelWidth = Math.max(labelTitle.length, precisionTitle.length, ...names.map((s) => [...s].length));
  const totalWidth = Math.max(5, String(total).length);
  const recallWidth = 6;
  const padEnd = (s: string, w: number) => s + " ".repeat(Math.max(0, w - [...s].length));
  const padStart = (s: string, w: number) => " ".repeat(Math.max(0, w - [...s].length)) + s;
  const ratio = (a: number, b: number) => b > 0 ? formatPercent(a / b) : "-";
  const line = (label: string, cells: string[], totalCell: string, recallCell: string) =>
    (padEnd(label, labelWidth) + " " + cells.map((c) => padStart(c, col)).join(" ") + " | " +
      padStart(totalCell, totalWidth) + " " + padStart(recallCell, recallWidth)).trimEnd();
  const lines = [line(labelTitle, classes.map((c) => truncate(c, col)), "total", "recall")];
  for (let i = 0; i < k; i++) {
    lines.push(
      line(names[i], matrix[i].map(String), String(rowTotals[i]), ratio(matrix[i][i], rowTotals[i])),
    );
  }
  lines.push(line("total", colTotals.map(String), String(total), ""));
  lines.push(line(precisionTitle, colTotals.map((t, j) => ratio(matrix[j][j], t)), "", ""));
  let correct = 0;
  for (let i = 0; i < k; i++) correct += matrix[i][i];
  lines.push(`accuracy ${ratio(correct, total)} (${correct} of ${total})`);
  return lines.join("\n");
}

/** A progress report as logged: the progress fields plus where the run stands. */
export interface ProgressRecord {
  /** Record kind. */
  type: "progress";
  /** Epoch being trained, 1-based. */
  epoch: number;
  /** Steps done in this epoch. */
  step: number;
  /** Steps per epoch. */
  steps: number;
  /** Optimizer steps since the start of the run. */
  globalStep?: number;
  /** Mean training loss since the previous report. */
  loss: number;
  /** Mean training accuracy (0–1) since the previous report. */
  accuracy: number;
  /** Learning rate. */
  lr: number;
  /** Training throughput since the previous report. */
  imagesPerSecond: number;
  /** ISO time the record was written. */
  time?: string;
}

/** An epoch as logged. */
export interface EpochRecord {
  /** Record kind. */
  type: "epoch";
  /** Epochs completed (1-based number of the epoch just finished). */
  epoch: number;
  /** Mean training loss over the epoch. */
  trainLoss: number;
  /** Training accuracy (0–1) over the epoch. */
  trainAccuracy: number;
  /** Test-split evaluation (fractions) and the number of test images. */
  test?: { loss: number; top1: number; top5: number; count?: number };
  /** The same evaluation of the weights' moving average, when the run keeps one. */
  testEma?: { loss: number; top1: number; top5: number; count?: number };
  /** Learning rate at the end of the epoch. */
  lr: number;
  /** Wall time of the epoch's training. */
  seconds: number;
  /** Training throughput over the epoch. */
  imagesPerSecond: number;
  /** Whether the epoch set a new best test top-1. */
  best?: boolean;
  /** ISO time the record was written. */
  time?: string;
}

/** One line of `metrics.jsonl`. Non-finite numbers are stored as `null` by JSON; readers treat them as NaN. */
export type MetricsRecord = ProgressRecord | EpochRecord;

const newline = 0x0a;

/**
 * The run's `metrics.jsonl`: one JSON object per line, appended as the run goes (one per epoch, optionally one
 * per progress report), with the history kept in memory to redraw the curves. Appends are queued so they land
 * in call order. {@link MetricsLog.load} reopens a log to resume, ignoring a last line a crash cut short (the
 * next append first cuts it off the file).
 *
 * @example
 * ```ts
 * import { MetricsLog } from "./report.ts";
 * const dir = await Deno.makeTempDir();
 * const log = await MetricsLog.load(`${dir}/metrics.jsonl`);
 * await log.logProgress({ epoch: 1, step: 20, steps: 390, loss: 2.1, accuracy: 0.2, lr: 1e-4, imagesPerSecond: 900 });
 * ```
 */
export class MetricsLog {
  /** Every record, oldest first. */
  readonly history: MetricsRecord[];
  #queue: Promise<void> = Promise.resolve();
  /** Byte length of the file's good part when its tail must be cut before the next append. */
  #truncateTo: number | undefined;
  /** Whether the good part lacks its final newline. */
  #needsNewline: boolean;

  /**
   * A log at `path` (created on the first append) starting from `history`. Use {@link MetricsLog.load} to
   * continue an existing file.
   */
  constructor(readonly path: string, history: MetricsRecord[] = []) {
    this.history = [...history];
    this.#needsNewline = false;
  }

  /**
   * Reads an existing log (or starts an empty one when the file does not exist). A last line that does not parse
   * is a write cut short by a crash: it is left out of the history and removed from the file on the next append.
   *
   * @param path the `metrics.jsonl` file
   * @returns the log, its history loaded
   * @throws {SyntaxError} when a line other than the last is not a JSON object with a `type`
   */
  static async load(path: string): Promise<MetricsLog> {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(path);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return new MetricsLog(path);
      throw error;
    }
    const decoder = new TextDecoder();
    const history: MetricsRecord[] = [];
    let start = 0, lineNumber = 0, goodEnd = 0;
    let truncated = false;
    while (start < bytes.length) {
      let end = bytes.indexOf(newline, start);
      const last = end < 0;
      if (last) end = bytes.length;
      lineNumber++;
      const text = decoder.decode(bytes.subarray(start, end)).trim();
      if (text) {
        const record = parseRecord(text);
        if (record) {
          history.push(record);
        } else if (last) {
          truncated = true;
          break;
        } else {
          throw new SyntaxError(
            `${path}:${lineNumber}: expected a JSON object with a "type", got ${text.slice(0, 80)}`,
          );
        }
      }
      start = last ? end : end + 1;
      goodEnd = start;
    }
    const log = new MetricsLog(path, history);
    if (truncated) log.#truncateTo = goodEnd;
    log.#needsNewline = goodEnd > 0 && bytes[goodEnd - 1] !== newline;
    return log;
  }

  /**
   * Appends one record to the file and the history.
   *
   * @param record the record (written as one JSON line)
   * @returns when the line is written
   */
  append(record: MetricsRecord): Promise<void> {
    this.history.push(record);
    const line = JSON.stringify(record) + "\n";
    const write = async () => {
      if (this.#truncateTo !== undefined) {
        await Deno.truncate(this.path, this.#truncateTo);
        this.#truncateTo = undefined;
      }
      const prefix = this.#needsNewline ? "\n" : "";
      await Deno.writeTextFile(this.path, prefix + line, { append: true });
      this.#needsNewline = false;
    };
    // A failed write was reported to its own caller; it must not block the writes queued after it.
    this.#queue = this.#queue.catch(() => {}).then(write);
    return this.#queue;
  }

  /**
   * Logs a progress report (extra fields such as `epochs` or `etaSeconds` are not stored).
   *
   * @param m the trainer's progress metrics
   */
  logProgress(
    m: Omit<ProgressRecord, "type" | "time"> & Partial<ProgressFields>,
  ): Promise<void> {
    return this.append({
      type: "progress",
      epoch: m.epoch,
      step: m.step,
      steps: m.steps,
      ...(m.globalStep !== undefined ? { globalStep: m.globalStep } : {}),
      loss: m.loss,
      accuracy: m.accuracy,
      lr: m.lr,
      imagesPerSecond: m.imagesPerSecond,
      time: new Date().toISOString(),
    });
  }

  /**
   * Logs an epoch summary (the confusion matrix, if present, is not stored: it goes to `confusion.svg`).
   *
   * @param s the trainer's epoch summary, with `best` when known
   */
  logEpoch(s: {
    epoch: number;
    trainLoss: number;
    trainAccuracy: number;
    test?: { loss: number; top1: number; top5: number; count?: number };
    testEma?: { loss: number; top1: number; top5: number; count?: number };
    lr: number;
    seconds: number;
    imagesPerSecond: number;
    best?: boolean;
  }): Promise<void> {
    const evaluation = (t: { loss: number; top1: number; top5: number; count?: number }) => ({
      loss: t.loss,
      top1: t.top1,
      top5: t.top5,
      ...(t.count !== undefined ? { count: t.count } : {}),
    });
    return this.append({
      type: "epoch",
      epoch: s.epoch,
      trainLoss: s.trainLoss,
      trainAccuracy: s.trainAccuracy,
      ...(s.test ? { test: evaluation(s.test) } : {}),
      ...(s.testEma ? { testEma: evaluation(s.testEma) } : {}),
      lr: s.lr,
      seconds: s.seconds,
      imagesPerSecond: s.imagesPerSecond,
      ...(s.best !== undefined ? { best: s.best } : {}),
      time: new Date().toISOString(),
    });
  }

  /**
   * Forgets everything after `epochs` completed epochs (progress of later epochs, their summaries) and rewrites
   * the file atomically: call it when resuming from a checkpoint so the curves continue without duplicates.
   *
   * @param epochs epochs completed at the checkpoint
   */
  async rewind(epochs: number): Promise<void> {
    await this.#queue;
    // Both kinds carry the 1-based epoch they belong to, so one test covers progress and summaries.
    const kept = this.history.filter((r) => r.epoch <= epochs);
    this.history.splice(0, this.history.length, ...kept);
    const text = kept.map((r) => JSON.stringify(r) + "\n").join("");
    await writeFileAtomic(this.path, new TextEncoder().encode(text));
    this.#truncateTo = undefined;
    this.#needsNewline = false;
  }

  /** Resolves when every queued append has been written. */
  flush(): Promise<void> {
    return this.#queue;
  }
}

/** A parsed record, or undefined when the line is not a JSON object with a string `type`. */
function parseRecord(text: string): MetricsRecord | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
  if (typeof (value as { type?: unknown }).type !== "string") return undefined;
  return value as MetricsRecord;
}

/** A logged number, NaN for the `null` JSON writes in place of NaN / Infinity. */
function num(v: unknown): number {
  return typeof v === "number" ? v : NaN;
}

/** Options of {@link writeRunPlots}. */
export interface RunPlotOptions {
  /** Class names for the confusion matrix (default: class indices). */
  classes?: string[];
  /** The latest `confusion[true][predicted]` counts; without it no `confusion.svg` is written. */
  confusion?: number[][];
  /** Chart titles' prefix, e.g. the model and data set. */
  title?: string;
}

/**
 * The training curves of a history as {@link lineChart} series: training loss per progress report (per epoch
 * when there are no progress records) and test loss on the left axis, training accuracy and test top-1 per epoch
 * (also the weights' moving average's, when logged) on the right. Progress at step `s` of `n` in epoch `e` sits at x = e − 1 + s / n; an epoch summary at x = e.
 *
 * @param history the log's records
 * @returns the series, empty ones left out
 */
export function curveSeries(history: readonly MetricsRecord[]): LineSeries[] {
  const progressLoss: [number, number][] = [], trainLoss: [number, number][] = [];
  const testLoss: [number, number][] = [],
    trainAcc: [number, number][] = [],
    testTop1: [number, number][] = [],
    emaTop1: [number, number][] = [];
  for (const r of history) {
    if (r.type === "progress") {
      progressLoss.push([num(r.epoch) - 1 + num(r.step) / num(r.steps), num(r.loss)]);
    } else if (r.type === "epoch") {
      const x = num(r.epoch);
      trainLoss.push([x, num(r.trainLoss)]);
      trainAcc.push([x, num(r.trainAccuracy)]);
      if (r.test) {
        testLoss.push([x, num(r.test.loss)]);
        testTop1.push([x, num(r.test.top1)]);
      }
      if (r.testEma) emaTop1.push([x, num(r.testEma.top1)]);
    }
  }
  const series: LineSeries[] = [
    { name: "train loss", points: progressLoss.length ? progressLoss : trainLoss, color: "#1f77b4" },
    { name: "test loss", points: testLoss, color: "#d62728" },
    { name: "train accuracy", points: trainAcc, axis: "right", color: "#2ca02c" },
    { name: "test top-1", points: testTop1, axis: "right", color: "#ff7f0e" },
    { name: "EMA test top-1", points: emaTop1, axis: "right", color: "#9467bd" },
  ];
  return series.filter((s) => s.points.length > 0);
}

/**
 * Writes `curves.svg` (loss and accuracy over epochs, see {@link curveSeries}) and, when a confusion matrix is
 * given, `confusion.svg` into `dir`, each atomically so a viewer never sees half a file.
 *
 * @param dir the run's folder (must exist)
 * @param history the log's records
 * @param options class names, the confusion matrix, a title
 * @returns the paths written
 * @throws {TypeError} when the confusion matrix does not match the classes
 */
export async function writeRunPlots(
  dir: string,
  history: readonly MetricsRecord[],
  options: RunPlotOptions = {},
): Promise<string[]> {
  const base = dir.replace(/\/+$/, "") || "/";
  const join = (name: string) => base === "/" ? `/${name}` : `${base}/${name}`;
  const encoder = new TextEncoder();
  const prefix = options.title ? `${options.title}: ` : "";
  const written: string[] = [];
  const curves = lineChart({
    title: `${prefix}training curves`,
    xLabel: "epoch",
    yLabel: "loss",
    y2Label: "accuracy",
    series: curveSeries(history),
  });
  await writeFileAtomic(join("curves.svg"), encoder.encode(curves));
  written.push(join("curves.svg"));
  if (options.confusion) {
    const classes = options.classes ?? options.confusion.map((_, i) => String(i));
    checkSquare(classes, options.confusion, "writeRunPlots");
    const lastEpoch = history.findLast((r) => r.type === "epoch");
    const svg = confusionMatrixSvg({
      title: `${prefix}test confusion matrix${lastEpoch ? ` after epoch ${lastEpoch.epoch}` : ""}`,
      classes,
      matrix: options.confusion,
    });
    await writeFileAtomic(join("confusion.svg"), encoder.encode(svg));
    written.push(join("confusion.svg"));
  }
  return written;
}
