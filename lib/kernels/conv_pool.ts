/**
 * Typed wrappers of the fused first tokenizer stage (`shaders/conv_pool.ts`): conv2d (no bias: CCT's tokenizer
 * convs followed by pooling have none) ▸ ReLU ▸ max-pool forward, writing only the pooled output and its argmax,
 * and the conv weight gradient straight from the pooled gradient, never materialising the conv-sized tensors.
 * For stages with few input channels (C_in 1 or 3) whose input gradient is not needed (the first stage).
 *
 * The contract is the unfused path's (lib/kernels/conv.ts): pooled and argmax have the layout and encoding of
 * maxPool2dForward (NCHW [B, C, PH, PW], or `outLayout: "tokens"` [B, PH·PW, C]; argmax int32 = ch·CW + cw, the
 * position in the conv output plane; the first maximum in window scan order wins ties, padding never wins), and
 * the values are bit-identical to conv2dForward(relu) + maxPool2dForward, so maxPool2dBackward still applies.
 * Arguments: outputs, inputs, weights, options.
 */
import { grid1d, type Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import { CONV_WORKGROUP, convSplitReduceWgsl, convWeightTransposeWgsl } from "../../shaders/conv.ts";
import {
  conv2dReluMaxPoolBackwardWeightsWgsl,
  conv2dReluMaxPoolForwardWgsl,
  type ConvPoolDims,
  type ConvPoolShape,
} from "../../shaders/conv_pool.ts";
import { type Conv2dOptions, conv2dWeightTransposeSize, convOutputSize } from "./conv.ts";
import { positiveInt } from "./_check.ts";

/** A max-pool window (square). */
export interface PoolWindow {
  kernel: number;
  stride: number;
  padding: number;
}

/** CCT's MaxPool2d(kernel 3, stride 2, padding 1). */
export const CCT_POOL: PoolWindow = { kernel: 3, stride: 2, padding: 1 };

/**
 * Sizes of a fused conv ▸ ReLU ▸ max-pool stage: the conv's {@link Conv2dOptions} (its `outLayout` is the layout
 * of the pooled output, argmax and their gradient; `variant` and `gemmTile` are ignored) and the pool window.
 */
export interface Conv2dReluMaxPoolOptions extends Conv2dOptions {
  /** The max-pool window; default {@link CCT_POOL}. */
  pool?: PoolWindow;
}

/** Options of the fused forward. */
export interface Conv2dReluMaxPoolForwardOptions extends Conv2dReluMaxPoolOptions {
  /**
   * Buffer of ≥ conv2dWeightTransposeSize(o, "forward") elements for the transposed weight; created when omitted
   * (once, while the plan is recorded).
   */
  weightScratch?: Tensor;
  /** Pooled outputs per invocation along a row (for benchmarks); default {@link poolRowBlockFused}. */
  rowBlock?: number;
  /** vec4s of output channels per invocation (looped; for benchmarks); default all of them up to 16. */
  channelVecs?: number;
}

/** Options of the fused weight gradient. */
export interface Conv2dReluMaxPoolBackwardWeightsOptions extends Conv2dReluMaxPoolOptions {
  /** Add into dw instead of overwriting it (gradients accumulate). */
  accumulate?: boolean;
  /** Ways to split the B·PH·PW reduction; default {@link conv2dReluMaxPoolWeightSplits}. */
  splits?: number;
  /** Partial-sum buffer of ≥ {@link conv2dReluMaxPoolWeightScratchSize} elements (splits > 1); created when omitted. */
  scratch?: Tensor;
  /** vec4s of output channels per invocation (register-blocked; for benchmarks); default from C_in·k². */
  channelVecs?: number;
  /**
   * Gather each channel's k² taps from x at its argmax (k²·C_in per-lane gathers per channel) instead of loading
   * the window's input patch once and selecting; for the benchmark comparison (it is slower).
   */
  gatherTaps?: boolean;
}

/** Spatial sizes of a stage: conv output (the pool's input) and pooled output. */
export interface ConvPoolSizes {
  convH: number;
  convW: number;
  pooledH: number;
  pooledW: number;
  /** Shape of pooled, argmax and dy in the stage's layout. */
  pooledShape: number[];
}

interface Geometry {
  b: number;
  dims: ConvPoolDims;
  shape: ConvPoolShape;
  layout: "nchw" | "tokens";
  pooledShape: number[];
}

function geometry(kernel: string, o: Conv2dReluMaxPoolOptions): Geometry {
  for (const name of ["batch", "inChannels", "height", "width", "outChannels", "kernel", "stride"] as const) {
    positiveInt(kernel, name, o[name]);
  }
  if (!Number.isInteger(o.padding) || o.padding < 0 || o.padding >= o.kernel) {
    throw new RangeError(`${kernel}: padding must be an integer in [0, kernel), got ${o.padding}`);
  }
  const pool = o.pool ?? CCT_POOL;
  positiveInt(kernel, "pool.kernel", pool.kernel);
  positiveInt(kernel, "pool.stride", pool.stride);
  if (!Number.isInteger(pool.padding) || pool.padding < 0 || 2 * pool.padding > pool.kernel) {
    throw new RangeError(`${kernel}: pool.padding must be an integer in [0, kernel/2], got ${pool.padding}`);
  }
  const ch = convOutputSize(o.height, o.kernel, o.stride, o.padding);
  const cw = convOutputSize(o.width, o.kernel, o.stride, o.padding);
  if (ch < 1 || cw < 1) {
    throw new RangeError(`${kernel}: kernel ${o.kernel} does not fit ${o.height}×${o.width}`);
  }
  const ph = convOutputSize(ch, pool.kernel, pool.stride, pool.padding);
  const pw = convOutputSize(cw, pool.kernel, pool.stride, pool.padding);
  if (ph < 1 || pw < 1) {
    throw new RangeError(`${kernel}: pool window ${pool.kernel} does not fit ${ch}×${cw}`);
  }
  const layout = o.outLayout ?? "nchw";
  return {
    b: o.batch,
    dims: { cin: o.inChannels, h: o.height, w: o.width, cout: o.outChannels, ch, cw, ph, pw },
    shape: {
      kernel: o.kernel,
      stride: o.stride,
      padding: o.padding,
      poolKernel: pool.kernel,
      poolStride: pool.stride,
      poolPadding: pool.padding,
    },
    layout,
    pooledShape: layout === "tokens" ? [o.batch, ph * pw, o.outChannels] : [o.batch, o.outChannels, ph, pw],
  };
}

/** The conv and pooled sizes of a stage, and the shape its pooled output, argmax and dy have. */
export function conv2dReluMaxPoolSizes(o: Conv2dReluMaxPoolOptions): ConvPoolSizes {
  const g = geometry("conv2dReluMaxPoolSizes", o);
  return {
    convH: g.dims.ch,
    convW: g.dims.cw,
    pooledH: g.dims.ph,
    pooledW: g.dims.pw,
    pooledShape: g.pooledShape,
  };
}

function expectSize(kernel: string, t: Tensor, shape: number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (t.size !== n) {
    throw new TypeError(`${kernel}: ${t.label} has ${t.size} elements [${t.shape}], expected [${shape}]`);
  }
}

/**
 * Pooled outputs per forward invocation along a row, given C_in: each invocation holds the input under its r
 * windows in registers ((pk − 1)·s + k rows × ((r − 1)·ps + pk − 1)·s + k columns × C_in), and the overlapping
 * windows recompute shared conv outputs. Measured at batch 128 on lavapipe: 1→64 on 28×28 r = 2 ≈ 10–25% faster
 * than r = 4 (17 vs 19 ms, r = 1 and 3 slower); 3→64 on 32×32 r = 4 best (91 vs 96 ms r = 3, 102 ms r = 2).
 */
export function poolRowBlockFused(pw: number, inChannels: number): number {
  return Math.min(pw, inChannels === 1 ? 2 : 4);
}

/**
 * Max vec4 accumulators per weight-gradient invocation: more output channels per invocation share each loaded
 * input patch. Measured at batch 128 (lavapipe): 3→64 on 32×32 q = 4 vec4s (108 accumulators) 54–72 ms vs 78–101
 * ms q = 3, 86–122 ms q = 2, 178 ms q = 1; 1→64 on 28×28 q = 2…4 within noise (16–19 ms), q = 1 27 ms.
 */
const WEIGHT_ACCUMULATORS = 108;
/** Most vec4s of output channels per weight-gradient invocation. */
const WEIGHT_MAX_VECS = 4;
/**
 * Invocations the weight gradient aims for before it stops splitting: on 2 cores fewer, longer splits won (1→64:
 * 256 invocations 16 ms vs 4096 19 ms; 3→64: 54 vs 72 ms).
 */
const WEIGHT_TARGET_INVOCATIONS = 512;
/** Shortest run of pooled positions a split is given. */
const WEIGHT_MIN_CHUNK = 64;

function weightVecs(g: Geometry, wanted: number | undefined): number {
  const cout4 = Math.ceil(g.dims.cout / 4);
  const taps = g.dims.cin * g.shape.kernel * g.shape.kernel;
  const q = wanted ?? Math.max(1, Math.min(WEIGHT_MAX_VECS, Math.floor(WEIGHT_ACCUMULATORS / taps)));
  positiveInt("conv2dReluMaxPoolBackwardWeights", "channelVecs", q);
  return Math.min(q, cout4);
}

function splitsOf(g: Geometry, q: number): number {
  const blocks = Math.ceil(Math.ceil(g.dims.cout / 4) / q);
  const m = g.b * g.dims.ph * g.dims.pw;
  const want = Math.ceil(WEIGHT_TARGET_INVOCATIONS / blocks);
  return Math.max(1, Math.min(want, Math.floor(m / WEIGHT_MIN_CHUNK)));
}

/** How many ways the fused weight gradient splits its pooled-position reduction by default (1: no scratch). */
export function conv2dReluMaxPoolWeightSplits(o: Conv2dReluMaxPoolBackwardWeightsOptions): number {
  const g = geometry("conv2dReluMaxPoolWeightSplits", o);
  return splitsOf(g, weightVecs(g, o.channelVecs));
}

/** Elements of the partial-sum buffer the fused weight gradient needs with `o.splits` (default: its choice). */
export function conv2dReluMaxPoolWeightScratchSize(o: Conv2dReluMaxPoolBackwardWeightsOptions): number {
  const splits = o.splits ?? conv2dReluMaxPoolWeightSplits(o);
  return splits > 1 ? splits * o.outChannels * o.inChannels * o.kernel * o.kernel : 0;
}

/**
 * pooled, argmax = maxPool(ReLU(conv2d(x, w))) in one pass: x [B, C_in, H, W], w [C_out, C_in, k, k] (no bias);
 * pooled (f32) and argmax (i32) [B, C_out, PH, PW], or [B, PH·PW, C_out] with `outLayout: "tokens"` — exactly
 * what conv2dForward(relu) + maxPool2dForward write (bit-identical), without the [B, C_out, CH, CW] conv output.
 * Records a tiny weight transpose, then the fused kernel.
 */
export function conv2dReluMaxPoolForward(
  plan: Plan,
  pooled: Tensor,
  argmax: Tensor,
  x: Tensor,
  w: Tensor,
  o: Conv2dReluMaxPoolForwardOptions,
): void {
  const name = "conv2dReluMaxPoolForward";
  const g = geometry(name, o);
  const d = g.dims, k = g.shape.kernel;
  expectSize(name, pooled, g.pooledShape);
  expectSize(name, argmax, g.pooledShape);
  expectSize(name, x, [g.b, d.cin, d.h, d.w]);
  expectSize(name, w, [d.cout, d.cin, k, k]);
  const r = o.rowBlock ?? poolRowBlockFused(d.pw, d.cin);
  positiveInt(name, "rowBlock", r);
  const cout4 = Math.ceil(d.cout / 4);
  const q = Math.min(o.channelVecs ?? 16, cout4);
  positiveInt(name, "channelVecs", q);
  // The forward transpose of conv.ts: [k·k, C_in, C_out'] read as vec4s along output channels.
  const need = conv2dWeightTransposeSize(o, "forward");
  const wt = o.weightScratch ?? createTensor(plan.gpu, [need], `${name}:weight`);
  if (wt.size < need) throw new TypeError(`${name}: ${wt.label} has ${wt.size} elements, needs ${need}`);
  const convDims = { cin: d.cin, h: d.h, w: d.w, cout: d.cout, oh: d.ch, ow: d.cw, blocks: 0, coBlocks: 0 };
  plan.dispatch(
    `${name}:transposeWeight`,
    convWeightTransposeWgsl({ dims: convDims, kernel: k, forData: false }),
    [{ uniform: [1, 1, 1] }, wt, w],
    grid1d(need, CONV_WORKGROUP),
  );
  const n = g.b * Math.ceil(cout4 / q) * d.ph * Math.ceil(d.pw / r);
  plan.dispatch(
    name,
    conv2dReluMaxPoolForwardWgsl({ ...g.shape, dims: d, layout: g.layout, r, q }),
    [{ uniform: [n] }, pooled, argmax, x, wt],
    grid1d(n, CONV_WORKGROUP),
  );
}

/**
 * dw (+)= the conv weight gradient of the fused stage from the pooled gradient: Σ over batch and pooled positions
 * p of dy[b, co, p]·[pooled > 0]·x[b, ci, argmax(p)·s − pad + (kh, kw)] — what maxPool2dBackward (with the ReLU
 * mask) + conv2dBackwardWeights compute, as a gather with no [B, C_out, CH, CW] gradient. dw [C_out, C_in, k, k];
 * dy, argmax and pooled (the forward's outputs) in `outLayout`; x [B, C_in, H, W]. Split partial sums are folded
 * by a second dispatch (deterministic).
 */
export function conv2dReluMaxPoolBackwardWeights(
  plan: Plan,
  dw: Tensor,
  dy: Tensor,
  argmax: Tensor,
  pooled: Tensor,
  x: Tensor,
  o: Conv2dReluMaxPoolBackwardWeightsOptions,
): void {
  const name = "conv2dReluMaxPoolBackwardWeights";
  const g = geometry(name, o);
  const d = g.dims, k = g.shape.kernel;
  expectSize(name, dw, [d.cout, d.cin, k, k]);
  expectSize(name, dy, g.pooledShape);
  expectSize(name, argmax, g.pooledShape);
  expectSize(name, pooled, g.pooledShape);
  expectSize(name, x, [g.b, d.cin, d.h, d.w]);
  const accumulate = o.accumulate ?? false;
  const q = weightVecs(g, o.channelVecs);
  const splits = o.splits ?? splitsOf(g, q);
  positiveInt(name, "splits", splits);
  const m = g.b * d.ph * d.pw;
  const chunk = Math.ceil(m / splits);
  const sizes = [m, splits, chunk];
  const blocks = Math.ceil(Math.ceil(d.cout / 4) / q);
  const groups = grid1d(blocks * splits, CONV_WORKGROUP);
  const kernel = (split: boolean) =>
    conv2dReluMaxPoolBackwardWeightsWgsl({
      ...g.shape,
      dims: d,
      layout: g.layout,
      q,
      accumulate: accumulate && !split,
      split,
      gather: o.gatherTaps ?? false,
    });
  if (splits === 1) {
    plan.dispatch(name + (o.gatherTaps ? "Gather" : ""), kernel(false), [
      { uniform: sizes },
      dw,
      dy,
      argmax,
      pooled,
      x,
    ], groups);
    return;
  }
  const n = d.cout * d.cin * k * k;
  const need = splits * n;
  const scratch = o.scratch ?? createTensor(plan.gpu, [need], `${name}:scratch`);
  if (scratch.size < need) {
    throw new TypeError(`${name}: scratch ${scratch.label} has ${scratch.size} elements, needs ${need}`);
  }
  plan.dispatch(
    `${name}:partial`,
    kernel(true),
    [{ uniform: sizes }, scratch, dy, argmax, pooled, x],
    groups,
  );
  const convDims = { cin: d.cin, h: d.h, w: d.w, cout: d.cout, oh: d.ch, ow: d.cw, blocks: 0, coBlocks: 0 };
  plan.dispatch(
    `${name}:reduce`,
    convSplitReduceWgsl({ dims: convDims, kernel: k, accumulate }),
    [{ uniform: sizes }, dw, scratch],
    grid1d(n, CONV_WORKGROUP),
  );
}
