/**
 * Checkpoint adapters: matching a state dict against a model's parameter table (all problems reported at once),
 * and the non-strict fine-tuning conversions (drop the classifier on a class-count change, resize a learnable
 * positional embedding to a new token grid, adapt the first conv to another input channel count).
 */
import { type ModelConfig, parameterSpecs, tokenizerGeometry } from "./config.ts";
import { sinePositionalTable } from "./init.ts";

/** A tensor as read from a weight file. */
export interface HostTensor {
  /** Dimensions, outermost first (PyTorch order). */
  shape: number[];
  /** The elements, row-major; integer tensors are rejected by {@link matchStateDict}. */
  data: Float32Array | Int32Array;
}

/** Options of {@link matchStateDict}. */
export interface MatchOptions {
  /** Reject anything that does not match exactly (default). Non-strict adapts what it can and drops the head. */
  strict?: boolean;
  /** Label of the source in error messages (a file path). */
  source?: string;
}

/** What a non-strict load changed, for the caller to report. */
export interface MatchReport {
  /** Parameters not taken from the file (kept at their initial values). */
  reinitialised: string[];
  /** Parameters converted (positional embedding resized, first conv adapted to other input channels). */
  adapted: string[];
  /** Names in the file that the model does not have. */
  ignored: string[];
}

/**
 * Maps a state dict onto `config`'s parameter table. Strict: every name present with its exact shape, nothing
 * unexpected, else one TypeError listing every problem. Non-strict: `classifier.fc.*` of another class count is
 * skipped (re-initialised), a learnable positional embedding of another grid is resized bilinearly, a sine table is
 * regenerated, the first conv of another input channel count is adapted where {@link canAdaptChannels} allows
 * ({@link adaptInputChannels}), unknown names are ignored; other mismatches still fail.
 *
 * Nothing is uploaded: `CompactTransformer.loadWeights` uses this and then writes `values` to the GPU.
 *
 * @param config The model the state dict is for.
 * @param tensors The state dict, official name → tensor (e.g. from `parseSafetensors` or `parsePth`).
 * @param options `strict` (default true) and the `source` label used in error messages.
 * @returns A float32 value for every parameter taken from the file, and what a non-strict match changed.
 * @throws {TypeError} Listing every missing, misshaped, integer or unexpected tensor.
 *
 * @example Check a checkpoint against a 100-class model before loading it
 * ```ts
 * import { matchStateDict, modelConfig, readPthFile } from "@compact-transformers/cct";
 *
 * const config = modelConfig("cct_7_3x1_32", { numClasses: 100 });
 * const tensors = await readPthFile("cct_7_3x1_32_cifar10_300epochs.pth");
 * const { values, report } = matchStateDict(config, tensors, { strict: false, source: "cifar10.pth" });
 * console.log(report.reinitialised); // ["classifier.fc.weight", "classifier.fc.bias"]
 * console.log(values.has("classifier.fc.weight")); // false: the head keeps its initial values
 * ```
 */
export function matchStateDict(
  config: ModelConfig,
  tensors: Map<string, HostTensor>,
  { strict = true, source = "state dict" }: MatchOptions = {},
): { values: Map<string, Float32Array>; report: MatchReport } {
  const values = new Map<string, Float32Array>();
  const report: MatchReport = { reinitialised: [], adapted: [], ignored: [] };
  const missing: string[] = [], misshaped: string[] = [], wrongType: string[] = [];
  const specs = parameterSpecs(config);
  const known = new Set(specs.map((s) => s.name));
  const unexpected = [...tensors.keys()].filter((n) => !known.has(n));

  for (const spec of specs) {
    const t = tensors.get(spec.name);
    if (!t) {
      if (!strict && (spec.name.startsWith("classifier.fc.") || spec.init === "sine")) {
        report.reinitialised.push(spec.name);
      } else missing.push(spec.name);
      continue;
    }
    if (!(t.data instanceof Float32Array)) {
      wrongType.push(`${spec.name} (integer data)`);
      continue;
    }
    if (sameShape(t.shape, spec.shape)) {
      values.set(spec.name, t.data);
      continue;
    }
    if (!strict && spec.name.startsWith("classifier.fc.")) {
      report.reinitialised.push(spec.name);
    } else if (!strict && spec.name === "classifier.positional_emb" && spec.init === "sine") {
      values.set(spec.name, sinePositionalTable(spec.shape[1], spec.shape[2]));
      report.adapted.push(spec.name);
    } else if (
      !strict && spec.name === "classifier.positional_emb" && t.shape.length === 3 &&
      t.shape[2] === spec.shape[2]
    ) {
      const resized = resizePositionalEmbedding(t.data, t.shape[1], config);
      if (resized) {
        values.set(spec.name, resized);
        report.adapted.push(spec.name);
      } else misshaped.push(describe(spec.name, t.shape, spec.shape));
    } else if (
      !strict && spec.name === FIRST_CONV && t.shape.length === 4 && t.shape[0] === spec.shape[0] &&
      t.shape[2] === spec.shape[2] && t.shape[3] === spec.shape[3] &&
      canAdaptChannels(t.shape[1], spec.shape[1])
    ) {
      values.set(spec.name, adaptInputChannels(t.data, t.shape[1], spec.shape));
      report.adapted.push(spec.name);
    } else misshaped.push(describe(spec.name, t.shape, spec.shape));
  }
  if (!strict) report.ignored.push(...unexpected);
  const problems = [
    missing.length ? `missing ${missing.length}: ${missing.join(", ")}` : "",
    strict && unexpected.length ? `unexpected ${unexpected.length}: ${unexpected.join(", ")}` : "",
    misshaped.length ? `wrong shape ${misshaped.length}: ${misshaped.join(", ")}` : "",
    wrongType.length ? `wrong dtype: ${wrongType.join(", ")}` : "",
  ].filter((p) => p);
  if (problems.length) {
    throw new TypeError(`${source}: does not fit model ${config.name}: ${problems.join("; ")}`);
  }
  return { values, report };
}

/** The convolution that reads the image: CCT's first tokenizer layer, the ViT-Lite/CVT patch embedding. */
const FIRST_CONV = "tokenizer.conv_layers.0.0.weight";

/**
 * Whether {@link adaptInputChannels} handles `from` → `to` input channels: from three (timm's rule), and between
 * one channel and any count.
 */
export function canAdaptChannels(from: number, to: number): boolean {
  return from !== to && (from === 3 || from === 1 || to === 1);
}

/**
 * A first-layer conv weight [out, from, kh, kw] for `to` input channels. One target channel gets the sum over the
 * saved ones, so a gray image scores as the same image with equal channels did (timm's `adapt_input_conv` for an
 * RGB source); from one channel the saved one is repeated and divided by `to`, which keeps that response too;
 * from three (timm's rule otherwise) the saved channels repeat cyclically, scaled by 3/`to`.
 *
 * @param weight The saved weight, row-major [out, from, kh, kw].
 * @param from Its input channel count.
 * @param shape The model's weight shape [out, to, kh, kw].
 * @returns The adapted weight, row-major in `shape`.
 * @throws {RangeError} If `weight` does not have that size, or the pair is not one {@link canAdaptChannels} allows.
 */
export function adaptInputChannels(
  weight: Float32Array,
  from: number,
  shape: readonly number[],
): Float32Array {
  const [out, to, kh, kw] = shape;
  const taps = kh * kw;
  if (weight.length !== out * from * taps) {
    throw new RangeError(`adaptInputChannels: ${weight.length} values for [${out}, ${from}, ${kh}, ${kw}]`);
  }
  if (!canAdaptChannels(from, to)) throw new RangeError(`adaptInputChannels: ${from} → ${to} channels`);
  const adapted = new Float32Array(out * to * taps);
  const add = (dst: number, src: number, scale: number) => {
    for (let i = 0; i < taps; i++) adapted[dst + i] += weight[src + i] * scale;
  };
  for (let o = 0; o < out; o++) {
    if (to === 1) {
      for (let c = 0; c < from; c++) add(o * taps, (o * from + c) * taps, 1);
    } else {
      for (let c = 0; c < to; c++) add((o * to + c) * taps, (o * from + (c % from)) * taps, from / to);
    }
  }
  return adapted;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

function describe(name: string, got: readonly number[], want: readonly number[]): string {
  return `${name} [${got}] (model expects [${want}])`;
}

/**
 * Resizes a learnable positional table [1, N', d] saved for a square grid to this model's token grid by 2-D
 * bilinear interpolation (align_corners false, as `F.interpolate`), keeping a ViT-Lite class-token row.
 * Returns undefined when the saved table is not a square grid.
 */
export function resizePositionalEmbedding(
  table: Float32Array,
  savedRows: number,
  config: ModelConfig,
): Float32Array | undefined {
  const d = config.dim;
  const extra = config.family === "vit" ? 1 : 0;
  const side = Math.round(Math.sqrt(savedRows - extra));
  if (side * side !== savedRows - extra) return undefined;
  const { tokensH: oh, tokensW: ow } = tokenizerGeometry(config);
  const out = new Float32Array((oh * ow + extra) * d);
  if (extra) out.set(table.subarray(0, d), 0);
  const src = (y: number, x: number, c: number) => table[(extra + y * side + x) * d + c];
  for (let y = 0; y < oh; y++) {
    // align_corners=false: source coordinate = (dst + 0.5)·scale − 0.5, clamped at 0
    const sy = Math.max(0, (y + 0.5) * (side / oh) - 0.5);
    const y0 = Math.min(Math.floor(sy), side - 1), y1 = Math.min(y0 + 1, side - 1), fy = sy - y0;
    for (let x = 0; x < ow; x++) {
      const sx = Math.max(0, (x + 0.5) * (side / ow) - 0.5);
      const x0 = Math.min(Math.floor(sx), side - 1), x1 = Math.min(x0 + 1, side - 1), fx = sx - x0;
      for (let c = 0; c < d; c++) {
        out[(extra + y * ow + x) * d + c] = (1 - fy) * ((1 - fx) * src(y0, x0, c) + fx * src(y0, x1, c)) +
          fy * ((1 - fx) * src(y1, x0, c) + fx * src(y1, x1, c));
      }
    }
  }
  return out;
}
