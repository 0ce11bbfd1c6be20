/**
 * Training plots as standalone SVG 1.1 text: loss / accuracy curves over epochs and a confusion-matrix heatmap.
 * No dependencies and no randomness: the same input gives byte-identical output, so plots can be compared and
 * rewritten atomically after every epoch. Light theme, system-ui font, an accessible `<title>` and `<desc>`.
 *
 * @module
 */

/** One curve of a {@link lineChart}. */
export interface LineSeries {
  /** Shown in the legend. */
  name: string;
  /** `[x, y]` pairs in drawing order; non-finite coordinates break the line and are otherwise skipped. */
  points: [number, number][];
  /** Which y axis the series uses (default `"left"`); right-axis series are drawn dashed. */
  axis?: "left" | "right";
  /** Any SVG colour; a palette colour by position when not given. */
  color?: string;
}

/** What {@link lineChart} draws. */
export interface LineChartOptions {
  /** Heading above the chart, also the document's accessible title. */
  title: string;
  /** Label under the x axis. */
  xLabel: string;
  /** The curves, drawn in order (later ones on top). */
  series: LineSeries[];
  /** Label of the left axis. */
  yLabel?: string;
  /** Label of the right axis. */
  y2Label?: string;
  /**
   * Label the right axis in percent. By default it does so when every right-axis value lies in 0–1 (a ratio,
   * shown ×100) or in 0–100 with some value above 1; the axis is then also clamped to that range.
   */
  y2Percent?: boolean;
  /** Canvas width in pixels (default 720). */
  width?: number;
  /** Canvas height in pixels (default 400). */
  height?: number;
}

/** Evenly spaced "nice" tick values (steps of 1, 2 or 5 × 10^k) covering a range. */
export interface Ticks {
  /** First tick: the axis domain's lower end. */
  min: number;
  /** Last tick: the axis domain's upper end. */
  max: number;
  /** Distance between ticks: 1, 2 or 5 × 10^k. */
  step: number;
  /** The tick values from `min` to `max`, rounded to the step's decimals. */
  ticks: number[];
}

/** Tableau 10: distinct on white and in greyscale order. */
const PALETTE = [
  "#1f77b4",
  "#d62728",
  "#2ca02c",
  "#ff7f0e",
  "#9467bd",
  "#8c564b",
  "#e377c2",
  "#7f7f7f",
  "#bcbd22",
  "#17becf",
];
const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";
const INK = "#222222";
const MUTED = "#555555";
const GRID = "#e5e5e5";

/**
 * Escapes text for XML content or a double-quoted attribute, and drops characters XML 1.0 forbids (control
 * characters other than tab / newline / return, lone surrogates, U+FFFE, U+FFFF), so any string is safe.
 *
 * @param text arbitrary text
 * @returns the escaped text
 * @example
 * ```ts
 * import { escapeXml } from "./svg.ts";
 * console.log(escapeXml(`a<b & "c"`)); // "a&lt;b &amp; &quot;c&quot;"
 * ```
 */
export function escapeXml(text: string): string {
  let out = "";
  for (const ch of text) {
    const c = ch.codePointAt(0)!;
    if (c < 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) continue;
    if ((c >= 0xd800 && c <= 0xdfff) || c === 0xfffe || c === 0xffff) continue;
    switch (ch) {
      case "&":
        out += "&amp;";
        break;
      case "<":
        out += "&lt;";
        break;
      case ">":
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case "'":
        out += "&apos;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

/** 1, 2, 5 or 10 × 10^k: the smallest such value ≥ `raw`. */
function niceStep(raw: number): number {
  const power = 10 ** Math.floor(Math.log10(raw));
  const f = raw / power;
  // Tolerance so that 2.0000000001 (from float division) still counts as 2.
  const m = f <= 1 + 1e-9 ? 1 : f <= 2 + 1e-9 ? 2 : f <= 5 + 1e-9 ? 5 : 10;
  return m * power;
}

/** Decimal places that print every multiple of `step` exactly. */
function stepDecimals(step: number): number {
  return Math.max(0, Math.min(12, -Math.floor(Math.log10(step) + 1e-9)));
}

/**
 * Nice tick values covering `[lo, hi]` with about `target` intervals: the step is 1, 2 or 5 × 10^k and the ends
 * are rounded outwards to multiples of it. A zero-width range is widened (by 10 %, or ±1 around 0); non-finite
 * ends give 0–1.
 *
 * @param lo smallest value to cover
 * @param hi largest value to cover
 * @param target desired number of intervals (default 5)
 * @returns the domain, the step and the tick values (rounded to the step's decimals)
 * @example
 * ```ts
 * import { niceTicks } from "./svg.ts";
 * console.log(niceTicks(0.13, 2.31).ticks); // [0, 0.5, 1, 1.5, 2, 2.5]
 * ```
 */
export function niceTicks(lo: number, hi: number, target = 5): Ticks {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) [lo, hi] = [0, 1];
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const step = niceStep((hi - lo) / Math.max(1, target));
  const decimals = stepDecimals(step);
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks: number[] = [];
  for (let i = first; i <= last; i++) ticks.push(roundTo(i * step, decimals));
  return { min: ticks[0], max: ticks[ticks.length - 1], step, ticks };
}

function roundTo(v: number, decimals: number): number {
  const r = Number(v.toFixed(decimals));
  return Object.is(r, -0) ? 0 : r;
}

/** A tick label: as many decimals as the step needs; exponent form for very large or small steps. */
function formatTick(v: number, step: number): string {
  if (step >= 1e6 || step < 1e-5) return v === 0 ? "0" : Number(v.toPrecision(6)).toExponential();
  return v.toFixed(stepDecimals(step));
}

/** A coordinate with at most 2 decimals (sub-pixel precision is enough and keeps files small). */
function n(v: number): string {
  const r = Math.round(v * 100) / 100;
  return String(Object.is(r, -0) ? 0 : r);
}

/** Rough width of `text` at `fontSize` in a proportional sans-serif font. */
function textWidth(text: string, fontSize: number): number {
  return [...text].length * fontSize * 0.6;
}

/** Cuts `text` to at most `max` characters, marking the cut with an ellipsis. */
function clip(text: string, max: number): string {
  const chars = [...text];
  return chars.length <= max ? text : chars.slice(0, Math.max(1, max - 1)).join("") + "…";
}

function svgOpen(width: number, height: number, title: string, desc: string): string[] {
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" ` +
    `viewBox="0 0 ${width} ${height}" role="img" font-family="${FONT}" font-size="12" fill="${INK}">`,
    `<title>${escapeXml(title)}</title>`,
    `<desc>${escapeXml(desc)}</desc>`,
    `<rect x="0" y="0" width="${width}" height="${height}" fill="#ffffff"/>`,
  ];
}

interface Axis {
  ticks: Ticks;
  /** Tick label for a value. */
  label(v: number): string;
}

/** A y axis fitted to values; clamped to [0, scale] and labelled in percent when `percentScale` is set. */
function fitAxis(values: number[], percentScale: number | undefined): Axis {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  if (values.length === 0) [lo, hi] = percentScale ? [0, percentScale] : [0, 1];
  const t = niceTicks(lo, hi);
  if (!percentScale) return { ticks: t, label: (v) => formatTick(v, t.step) };
  // Every 1/2/5 step of a range ≤ scale divides the scale, so the clamped ends stay on ticks.
  const ticks = t.ticks.filter((v) => v >= 0 && v <= percentScale);
  const clamped: Ticks = { min: ticks[0], max: ticks[ticks.length - 1], step: t.step, ticks };
  const toPercent = 100 / percentScale;
  const decimals = stepDecimals(t.step * toPercent);
  return { ticks: clamped, label: (v) => `${(v * toPercent).toFixed(decimals)}%` };
}

/**
 * The x axis: starts at a nice tick and ends at the last value, so no empty stretch follows the run's last epoch;
 * about 8 intervals (epochs have room for more ticks than values do).
 */
function fitXAxis(values: number[]): Axis {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) {
    lo = Math.min(lo, v);
    hi = Math.max(hi, v);
  }
  const t = values.length ? niceTicks(lo, hi, 8) : niceTicks(0, 1);
  const label = (v: number) => formatTick(v, t.step);
  if (!(hi > lo)) return { ticks: t, label };
  const ticks = t.ticks.filter((v) => v <= hi + t.step * 1e-9);
  return { ticks: { min: t.min, max: hi, step: t.step, ticks }, label };
}

/**
 * A line chart of training curves: loss on the left axis, accuracy on the right, epochs (fractional allowed)
 * along x. Ticks are nice values, each series gets a colour and a legend entry, series with few points get
 * markers, and a single point is drawn as a dot. Non-finite points are skipped (breaking the line); a chart
 * with no finite points still renders its frame with a "no data" note.
 *
 * @param options title, axis labels and series
 * @returns the SVG document
 * @example
 * ```ts
 * import { lineChart } from "./svg.ts";
 * const svg = lineChart({
 *   title: "CCT-7/3x1 on CIFAR-10",
 *   xLabel: "epoch",
 *   yLabel: "loss",
 *   y2Label: "accuracy",
 *   series: [
 *     { name: "train loss", points: [[0.5, 2.1], [1, 1.7], [1.5, 1.4], [2, 1.2]] },
 *     { name: "test top-1", axis: "right", points: [[1, 0.41], [2, 0.55]] },
 *   ],
 * });
 * console.log(svg.length);
 * ```
 */
export function lineChart(options: LineChartOptions): string {
  const width = options.width ?? 720, height = options.height ?? 400;
  const series = options.series.map((s, i) => ({
    name: s.name,
    axis: s.axis ?? "left",
    color: s.color ?? PALETTE[i % PALETTE.length],
    points: s.points,
  }));
  const finite = (p: [number, number]) => Number.isFinite(p[0]) && Number.isFinite(p[1]);
  const xs: number[] = [], left: number[] = [], right: number[] = [];
  for (const s of series) {
    for (const p of s.points) {
      if (!finite(p)) continue;
      xs.push(p[0]);
      (s.axis === "right" ? right : left).push(p[1]);
    }
  }
  const hasLeft = series.some((s) => s.axis === "left") || series.length === 0;
  const hasRight = series.some((s) => s.axis === "right");
  let percentScale: number | undefined;
  const autoPercent = right.length > 0 && right.every((v) => v >= 0 && v <= 100);
  if (options.y2Percent ?? autoPercent) percentScale = right.every((v) => v >= 0 && v <= 1) ? 1 : 100;
  const xAxis = fitXAxis(xs);
  const leftAxis = fitAxis(left, undefined);
  const rightAxis = fitAxis(right, percentScale);

  // Legend entries laid out in rows above the plot.
  const marginLeft = hasLeft ? 68 : 28, marginRight = hasRight ? 68 : 28;
  const plotLeft = marginLeft, plotRight = width - marginRight;
  const legend: { x: number; row: number; s: (typeof series)[number] }[] = [];
  let lx = plotLeft, row = 0;
  for (const s of series) {
    const label = clip(s.name, 40);
    const w = 24 + textWidth(label, 12) + 18;
    if (lx + w > plotRight && lx > plotLeft) {
      row++;
      lx = plotLeft;
    }
    legend.push({ x: lx, row, s: { ...s, name: label } });
    lx += w;
  }
  const legendRows = series.length ? row + 1 : 0;
  const plotTop = 40 + legendRows * 18 + 10, plotBottom = height - 50;
  const sx = (v: number) =>
    plotLeft + (v - xAxis.ticks.min) / (xAxis.ticks.max - xAxis.ticks.min) * (plotRight - plotLeft);
  const syFor = (a: Axis) => (v: number) =>
    plotBottom - (v - a.ticks.min) / (a.ticks.max - a.ticks.min) * (plotBottom - plotTop);
  const syLeft = syFor(leftAxis), syRight = syFor(rightAxis);

  const desc = series.length
    ? `Line chart of ${series.map((s) => s.name).join(", ")} against ${options.xLabel}.`
    : `Empty line chart against ${options.xLabel}.`;
  const out = svgOpen(width, height, options.title, desc);
  out.push(
    `<text x="${n(width / 2)}" y="24" text-anchor="middle" font-size="16" font-weight="600">` +
      `${escapeXml(options.title)}</text>`,
  );

  // Grid: vertical lines at x ticks, horizontal lines at the main y axis' ticks.
  const gridAxis = hasLeft ? leftAxis : rightAxis, gridY = hasLeft ? syLeft : syRight;
  out.push(`<g stroke="${GRID}" stroke-width="1">`);
  for (const t of xAxis.ticks.ticks) {
    out.push(`<line x1="${n(sx(t))}" y1="${n(plotTop)}" x2="${n(sx(t))}" y2="${n(plotBottom)}"/>`);
  }
  for (const t of gridAxis.ticks.ticks) {
    out.push(`<line x1="${n(plotLeft)}" y1="${n(gridY(t))}" x2="${n(plotRight)}" y2="${n(gridY(t))}"/>`);
  }
  out.push(`</g>`);
  out.push(
    `<rect x="${n(plotLeft)}" y="${n(plotTop)}" width="${n(plotRight - plotLeft)}" ` +
      `height="${n(plotBottom - plotTop)}" fill="none" stroke="#999999" stroke-width="1"/>`,
  );

  // Tick labels and axis titles.
  out.push(`<g font-size="11" fill="${MUTED}">`);
  for (const t of xAxis.ticks.ticks) {
    out.push(
      `<text x="${n(sx(t))}" y="${n(plotBottom + 16)}" text-anchor="middle">${
        escapeXml(xAxis.label(t))
      }</text>`,
    );
  }
  if (hasLeft) {
    for (const t of leftAxis.ticks.ticks) {
      out.push(
        `<text x="${n(plotLeft - 6)}" y="${n(syLeft(t) + 4)}" text-anchor="end">${
          escapeXml(leftAxis.label(t))
        }</text>`,
      );
    }
  }
  if (hasRight) {
    for (const t of rightAxis.ticks.ticks) {
      out.push(
        `<text x="${n(plotRight + 6)}" y="${n(syRight(t) + 4)}" text-anchor="start">${
          escapeXml(rightAxis.label(t))
        }</text>`,
      );
    }
  }
  out.push(`</g>`);
  const midY = (plotTop + plotBottom) / 2;
  out.push(
    `<text x="${n((plotLeft + plotRight) / 2)}" y="${n(height - 12)}" text-anchor="middle">` +
      `${escapeXml(options.xLabel)}</text>`,
  );
  if (hasLeft && options.yLabel) {
    out.push(
      `<text x="16" y="${n(midY)}" text-anchor="middle" transform="rotate(-90 16 ${n(midY)})">` +
        `${escapeXml(options.yLabel)}</text>`,
    );
  }
  if (hasRight && options.y2Label) {
    const x = width - 12;
    out.push(
      `<text x="${n(x)}" y="${n(midY)}" text-anchor="middle" transform="rotate(90 ${n(x)} ${n(midY)})">` +
        `${escapeXml(options.y2Label)}</text>`,
    );
  }

  // Series: one path each, broken at non-finite points; markers for sparse series and isolated points.
  for (const s of series) {
    const sy = s.axis === "right" ? syRight : syLeft;
    const dash = s.axis === "right" ? ` stroke-dasharray="6 3"` : "";
    const segments: [number, number][][] = [[]];
    for (const p of s.points) {
      if (finite(p)) segments[segments.length - 1].push(p);
      else if (segments[segments.length - 1].length) segments.push([]);
    }
    const count = segments.reduce((a, seg) => a + seg.length, 0);
    if (count === 0) continue;
    const d = segments.filter((seg) => seg.length > 1).map((seg) =>
      seg.map((p, i) => `${i ? "L" : "M"}${n(sx(p[0]))} ${n(sy(p[1]))}`).join("")
    ).join("");
    out.push(`<g>`);
    out.push(`<title>${escapeXml(s.name)}</title>`);
    if (d) {
      out.push(
        `<path d="${d}" fill="none" stroke="${escapeXml(s.color)}" stroke-width="2" ` +
          `stroke-linejoin="round" stroke-linecap="round"${dash}/>`,
      );
    }
    const markAll = count <= 60;
    for (const seg of segments) {
      if (!markAll && seg.length !== 1) continue;
      for (const p of seg) {
        out.push(
          `<circle cx="${n(sx(p[0]))}" cy="${n(sy(p[1]))}" r="3" fill="${escapeXml(s.color)}"/>`,
        );
      }
    }
    out.push(`</g>`);
  }
  if (xs.length === 0) {
    out.push(
      `<text x="${n((plotLeft + plotRight) / 2)}" y="${n(midY)}" text-anchor="middle" fill="${MUTED}">` +
        `no data</text>`,
    );
  }

  // Legend.
  out.push(`<g>`);
  for (const { x, row, s } of legend) {
    const y = 44 + row * 18;
    const dash = s.axis === "right" ? ` stroke-dasharray="6 3"` : "";
    out.push(
      `<line x1="${n(x)}" y1="${n(y)}" x2="${n(x + 18)}" y2="${n(y)}" stroke="${escapeXml(s.color)}" ` +
        `stroke-width="2"${dash}/>`,
    );
    out.push(`<text x="${n(x + 24)}" y="${n(y + 4)}">${escapeXml(s.name)}</text>`);
  }
  out.push(`</g>`);
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}

/** What {@link confusionMatrixSvg} draws. */
export interface ConfusionMatrixOptions {
  /** Heading above the heatmap, also the document's accessible title. */
  title: string;
  /** Class names, in label order. */
  classes: string[];
  /** `matrix[true][predicted]` counts. */
  matrix: number[][];
}

/**
 * White → dark blue by the square root of a share ∈ [0, 1] (a sequential scale readable in greyscale): the root
 * lets a 1 % confusion show as a visible tint next to a 95 % diagonal.
 */
function heat(share: number): string {
  const t = Math.sqrt(Math.min(1, Math.max(0, share)));
  const from = [255, 255, 255], to = [8, 48, 107];
  const c = from.map((f, i) => Math.round(f + (to[i] - f) * t));
  return `#${c.map((v) => v.toString(16).padStart(2, "0")).join("")}`;
}

/** A count with thousands separators, independent of the locale. */
function groupThousands(v: number): string {
  return String(Math.round(v)).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/**
 * A confusion-matrix heatmap: rows are true labels, columns predicted labels, each cell coloured by its share of
 * the row (so rare classes read as clearly as common ones; square-root scale so small confusions show) and, up to 20 classes, labelled with its count. Class
 * names go on both axes (column names rotated when long; with many classes only every k-th name is written).
 * Every non-empty cell carries a tooltip. Handles about 100 classes.
 *
 * @param options title, class names and `matrix[true][predicted]` counts
 * @returns the SVG document
 * @throws {TypeError} when the matrix is not classes × classes
 * @throws {RangeError} when a count is negative or not finite
 * @example
 * ```ts
 * import { confusionMatrixSvg } from "./svg.ts";
 * const svg = confusionMatrixSvg({ title: "test", classes: ["cat", "dog"], matrix: [[9, 1], [2, 8]] });
 * console.log(svg.length);
 * ```
 */
export function confusionMatrixSvg(options: ConfusionMatrixOptions): string {
  const { classes, matrix } = options;
  const k = classes.length;
  if (matrix.length !== k || matrix.some((row) => row.length !== k)) {
    throw new TypeError(
      `confusionMatrixSvg: matrix must be ${k}×${k} (one row and column per class), got ${matrix.length} rows ` +
        `of lengths ${[...new Set(matrix.map((r) => r.length))].join("/") || "none"}`,
    );
  }
  for (const row of matrix) {
    for (const v of row) {
      if (!Number.isFinite(v) || v < 0) {
        throw new RangeError(`confusionMatrixSvg: counts must be ≥ 0, got ${v}`);
      }
    }
  }
  const rowTotals = matrix.map((row) => row.reduce((a, b) => a + b, 0));
  const total = rowTotals.reduce((a, b) => a + b, 0);
  let correct = 0;
  for (let i = 0; i < k; i++) correct += matrix[i][i];

  const cell = Math.max(6, Math.min(48, Math.floor(560 / Math.max(1, k))));
  const showCounts = k <= 20;
  // With small cells label every `every`-th class so names do not overlap.
  const labelFont = Math.min(12, Math.max(9, cell * 0.7));
  const every = Math.max(1, Math.ceil((labelFont + 2) / cell));
  const names = classes.map((c) => clip(c, 18));
  const longest = Math.max(1, ...names.map((s) => textWidth(s, labelFont)));
  // Long column names are turned 45°, or 90° when the cells are too narrow for slanted text to clear.
  const rotate = longest > cell - 4 ? (k > 20 ? 90 : 45) : 0;
  const colLabelHeight = rotate === 90
    ? longest + 4
    : rotate
    ? longest * Math.SQRT1_2 + labelFont
    : labelFont + 4;
  const gridLeft = 36 + Math.ceil(longest) + 8, gridTop = 64;
  const gridSize = cell * k;
  const barX = gridLeft + gridSize + 24, barW = 14;
  const width = Math.ceil(Math.max(barX + barW + 52, gridLeft + gridSize / 2 + 200));
  const height = Math.ceil(gridTop + gridSize + 8 + colLabelHeight + 32);

  const accuracy = total ? correct / total : 0;
  const subtitle = `${k} classes, ${groupThousands(total)} samples, accuracy ${(accuracy * 100).toFixed(1)}%`;
  const out = svgOpen(
    width,
    height,
    options.title,
    `Confusion matrix heatmap, rows true class, columns predicted class, colour is the share of the row: ${subtitle}.`,
  );
  out.push(
    `<text x="${n(width / 2)}" y="24" text-anchor="middle" font-size="16" font-weight="600">` +
      `${escapeXml(options.title)}</text>`,
    `<text x="${n(width / 2)}" y="42" text-anchor="middle" font-size="11" fill="${MUTED}">` +
      `${escapeXml(subtitle)}</text>`,
  );

  // Cells: empty cells are left to the white background, which keeps 100-class files small.
  out.push(`<g>`);
  for (let i = 0; i < k; i++) {
    for (let j = 0; j < k; j++) {
      const v = matrix[i][j];
      if (v === 0) continue;
      const share = rowTotals[i] ? v / rowTotals[i] : 0;
      const tip = `true ${classes[i]}, predicted ${classes[j]}: ${groupThousands(v)} ` +
        `(${(share * 100).toFixed(1)}% of ${classes[i]})`;
      out.push(
        `<rect x="${n(gridLeft + j * cell)}" y="${n(gridTop + i * cell)}" width="${cell}" height="${cell}" ` +
          `fill="${heat(share)}"><title>${escapeXml(tip)}</title></rect>`,
      );
    }
  }
  out.push(`</g>`);
  if (showCounts) {
    out.push(`<g text-anchor="middle">`);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        const v = matrix[i][j];
        const share = rowTotals[i] ? v / rowTotals[i] : 0;
        const label = groupThousands(v);
        const size = Math.min(12, cell * 0.4, (cell - 4) / (label.length * 0.6));
        out.push(
          `<text x="${n(gridLeft + (j + 0.5) * cell)}" y="${n(gridTop + (i + 0.5) * cell + size * 0.35)}" ` +
            `font-size="${n(size)}" fill="${share > 0.36 ? "#ffffff" : v ? INK : "#bbbbbb"}">${label}</text>`,
        );
      }
    }
    out.push(`</g>`);
  }
  out.push(
    `<rect x="${gridLeft}" y="${gridTop}" width="${gridSize}" height="${gridSize}" fill="none" ` +
      `stroke="#999999" stroke-width="1"/>`,
  );
  // The diagonal (correct predictions) outlined so it reads even when a class is mostly wrong.
  if (k <= 40) {
    out.push(`<g fill="none" stroke="#444444" stroke-width="1">`);
    for (let i = 0; i < k; i++) {
      out.push(
        `<rect x="${n(gridLeft + i * cell + 0.5)}" y="${n(gridTop + i * cell + 0.5)}" ` +
          `width="${n(cell - 1)}" height="${n(cell - 1)}"/>`,
      );
    }
    out.push(`</g>`);
  }

  // Class names: rows on the left, columns below.
  out.push(`<g font-size="${n(labelFont)}">`);
  for (let i = 0; i < k; i += every) {
    out.push(
      `<text x="${n(gridLeft - 6)}" y="${n(gridTop + (i + 0.5) * cell + labelFont * 0.35)}" ` +
        `text-anchor="end">${escapeXml(names[i])}</text>`,
    );
  }
  const colY = gridTop + gridSize + 6;
  for (let j = 0; j < k; j += every) {
    const x = gridLeft + (j + 0.5) * cell;
    if (rotate) {
      // The anchor is shifted so the rotated baseline's centre, not its foot, lines up with the column.
      const ax = rotate === 90 ? x + labelFont * 0.35 : x, ay = rotate === 90 ? colY : colY + labelFont * 0.5;
      out.push(
        `<text x="${n(ax)}" y="${n(ay)}" text-anchor="end" transform="rotate(-${rotate} ${n(ax)} ${
          n(ay)
        })">` +
          `${escapeXml(names[j])}</text>`,
      );
    } else {
      out.push(
        `<text x="${n(x)}" y="${n(colY + labelFont)}" text-anchor="middle">${escapeXml(names[j])}</text>`,
      );
    }
  }
  out.push(`</g>`);
  const gridMid = gridTop + gridSize / 2;
  out.push(
    `<text x="14" y="${n(gridMid)}" text-anchor="middle" transform="rotate(-90 14 ${n(gridMid)})">` +
      `true label</text>`,
    `<text x="${n(gridLeft + gridSize / 2)}" y="${
      n(height - 10)
    }" text-anchor="middle">predicted label</text>`,
  );

  // Colour bar: share of the true class, on the same square-root scale as the cells (linear in colour).
  const barTop = gridTop, barH = Math.max(60, Math.min(gridSize, 240));
  out.push(
    `<defs><linearGradient id="cm-scale" x1="0" y1="1" x2="0" y2="0">` +
      `<stop offset="0" stop-color="${heat(0)}"/><stop offset="1" stop-color="${heat(1)}"/>` +
      `</linearGradient></defs>`,
    `<rect x="${barX}" y="${barTop}" width="${barW}" height="${n(barH)}" fill="url(#cm-scale)" ` +
      `stroke="#999999" stroke-width="1"/>`,
    `<g font-size="10" fill="${MUTED}">`,
  );
  for (const share of [1, 0.5, 0.1, 0.01, 0]) {
    const y = barTop + barH * (1 - Math.sqrt(share));
    out.push(
      `<line x1="${barX + barW}" y1="${n(y)}" x2="${barX + barW + 3}" y2="${n(y)}" stroke="#999999"/>`,
      `<text x="${barX + barW + 5}" y="${n(y + 3.5)}">${share * 100}%</text>`,
    );
  }
  out.push(
    `<text x="${n(barX + barW / 2)}" y="${n(barTop + barH + 16)}" text-anchor="middle">of row</text>`,
    `</g>`,
  );
  out.push(`</svg>`);
  return out.join("\n") + "\n";
}
