/**
 * Typed wrappers of the convolutional tokenizer kernels (`shaders/conv.ts`): conv2d forward (bias, ReLU and the
 * tokens layout fused) and backward (data, weights, bias), max-pool with argmax and its gather backward (ReLU's
 * backward fused), ReLU backward and the NCHW ↔ tokens layout change. Arguments: outputs, inputs, weights, options.
 *
 * Layouts follow PyTorch: input NCHW, weight [C_out, C_in, k, k]; an output in `"tokens"` layout is
 * [B, OH·OW, C] with token = oh·OW + ow, and a backward given that layout reads dy the same way.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d, type Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  conv2dBackwardBiasWgsl,
  conv2dBackwardDataNaiveWgsl,
  conv2dBackwardDataSubgroupWgsl,
  conv2dBackwardDataWgsl,
  conv2dBackwardWeightsGemmSubgroupWgsl,
  conv2dBackwardWeightsNaiveWgsl,
  conv2dBackwardWeightsRowGemmSubgroupWgsl,
  conv2dBackwardWeightsSubgroupWgsl,
  conv2dBackwardWeightsWgsl,
  conv2dForwardNaiveWgsl,
  conv2dForwardSubgroupWgsl,
  conv2dForwardWgsl,
  conv2dGemmSubgroupWgsl,
  CONV_WORKGROUP,
  convChannelsLastInvocations,
  convChannelsLastWgsl,
  type ConvDims,
  type ConvLayout,
  convLayoutWgsl,
  convSplitReduceWgsl,
  convWeightTransposeWgsl,
  maxPool2dBackwardBlockedWgsl,
  maxPool2dBackwardWgsl,
  maxPool2dForwardBlockedWgsl,
  maxPool2dForwardWgsl,
  paddedChannels,
  type PoolDims,
  poolRowBlock,
  reluBackwardWgsl,
  tapRowsPerBlock,
} from "../../shaders/conv.ts";
import { positiveInt } from "./_check.ts";
import { conv2dWinograd, type WinogradScratch, type WinogradTile } from "./winograd.ts";

export type { ConvLayout } from "../../shaders/conv.ts";

/** Kernel variants of the conv2d family. */
export type ConvVariant = "winograd" | "subgroupGemm" | "subgroup" | "blocked" | "naive";

/** Sizes of one conv2d layer. */
export interface Conv2dOptions {
  batch: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  /** Square kernel size k. */
  kernel: number;
  stride: number;
  padding: number;
  /** Layout of y (forward) and of dy (backward); default "nchw". */
  outLayout?: ConvLayout;
  /**
   * Kernel choice for the forward and backward-data where subgroups of width 8 exist (Vulkan lavapipe):
   * "subgroupGemm" (implicit GEMM over a channels-last copy of x or dy; the default when the pass reduces over
   * ≥ 8 channels) or "subgroup" (the default below that: the first layer); on every adapter "blocked"
   * (register-blocked; the default without subgroups) or "naive" (one output per invocation, for comparison).
   * The weight gradient has its own implicit-GEMM kernel for "subgroupGemm" (the default with subgroups from
   * {@link WEIGHT_GEMM_MIN_CHANNELS} input channels on); its "subgroup" kernel needs C_out = 4·n and ≥ 7 (input
   * channel, tap-row) blocks (a kernel past 3×3 has one per tap row: the 1-channel 7×7 stem of a `cct_*_7x1`
   * qualifies, the 1-channel 3×3 first layer does not), otherwise it runs the blocked kernel.
   * "winograd" (3×3 stride-1 forward and backward-data on any adapter, `lib/kernels/winograd.ts`) computes
   * the conv as F(m×m, 3×3) transforms around one batched matmul; the weight gradient then takes its default.
   */
  variant?: ConvVariant;
  /**
   * Tile of the "subgroupGemm" variant (for benchmarks): pixels per subgroup (8·n), output channels per lane
   * (4·n) and reduction vec4s per inner-loop iteration; default {@link GEMM_TILE}.
   */
  gemmTile?: { pixels: number; channels: number; unroll: number };
  /** Output tile of the "winograd" variant (forward and backward-data of 3×3 stride-1 convs): F(2×2) or F(4×4). */
  winogradTile?: WinogradTile;
}

/** Options of the conv2d forward. */
export interface Conv2dForwardOptions extends Conv2dOptions {
  /** Fuse y = max(y, 0). */
  relu?: boolean;
  /**
   * Buffer of ≥ {@link conv2dWeightTransposeSize} elements for the weight in the blocked kernel's layout; when
   * omitted the wrapper creates one (once, while the plan is recorded).
   */
  weightScratch?: Tensor;
  /**
   * For the "subgroupGemm" variant: a buffer of ≥ {@link convChannelsLastSize}(B, C_in, H·W) elements that
   * receives x channels-last; created when omitted.
   */
  inputScratch?: Tensor;
  /** For the "winograd" variant: its scratch buffers (see `winogradScratchSizes`); created when omitted. */
  winogradScratch?: WinogradScratch;
}

/** Options of the conv2d backwards. */
export interface Conv2dBackwardOptions extends Conv2dOptions {
  /** Add into the gradient instead of overwriting it. */
  accumulate?: boolean;
}

/**
 * One channels-last copy of a conv's dy shared by its backward-data and weight gradient (see
 * {@link prepareConvGradient}): the first of them that needs the copy records it, the other reuses it.
 */
export interface PreparedConvGradient {
  readonly plan: Plan;
  readonly dy: Tensor;
  /** "B C_out OH·OW layout" of the conv it was made for. */
  readonly key: string;
  readonly scratch?: Tensor;
  /** The copy, once recorded (or dy itself when it is tokens with C_out = 4·n). */
  channelsLast?: Tensor;
}

/** Options of the conv2d backward-data. */
export interface Conv2dBackwardDataOptions extends Conv2dBackwardOptions {
  /** As {@link Conv2dForwardOptions.weightScratch} (a separate buffer: the layouts differ). */
  weightScratch?: Tensor;
  /**
   * For the "subgroupGemm" variant: a buffer of ≥ {@link convChannelsLastSize}(B, C_out, OH·OW) elements that
   * receives dy channels-last (not needed, and not used, when dy is tokens with C_out = 4·n); created when omitted.
   * Its size rounds C_out up to 4·n, so it may be larger than the weight gradient's own `dyScratch` (dy.size).
   */
  dyScratch?: Tensor;
  /** dy's channels-last copy shared with the weight gradient ({@link prepareConvGradient}); `dyScratch` is then unused. */
  preparedDy?: PreparedConvGradient;
  /** For the "winograd" variant: its scratch buffers (see `winogradScratchSizes`); created when omitted. */
  winogradScratch?: WinogradScratch;
}

/** Options of the weight gradient, whose pixel reduction may be split for parallelism. */
export interface Conv2dBackwardWeightsOptions extends Conv2dBackwardOptions {
  /** Ways to split the B·OH·OW reduction; default chosen from the sizes ({@link conv2dWeightSplits}). */
  splits?: number;
  /**
   * Partial-sum buffer of ≥ {@link conv2dWeightScratchSize} elements, needed when splits > 1; when omitted the
   * wrapper creates one (once, while the plan is recorded, owned by the caller's plan lifetime).
   */
  scratch?: Tensor;
  /**
   * For an NCHW dy with C_out a multiple of 4: a buffer of dy's size that first receives dy in tokens layout (so
   * the kernel loads vec4s); created when omitted. The "subgroupGemm" kernel needs ≥
   * {@link convChannelsLastSize}(B, C_out, OH·OW) elements here (C_out rounded up to 4·n), and uses it also for a
   * tokens dy whose C_out is not 4·n.
   */
  dyScratch?: Tensor;
  /**
   * For the "subgroupGemm" kernel: a buffer of ≥ {@link convChannelsLastSize}(B, C_in, H·W) elements that receives
   * x channels-last; created when omitted.
   */
  inputScratch?: Tensor;
  /**
   * dy's channels-last copy shared with backward-data ({@link prepareConvGradient}); `dyScratch` is then unused.
   * (Used where the kernel reads a relaid dy: "subgroupGemm", and an NCHW dy with C_out = 4·n otherwise.)
   */
  preparedDy?: PreparedConvGradient;
  /**
   * Tile of the "subgroupGemm" weight gradient (for benchmarks): output channels per subgroup (32·n), columns
   * ((tap, 4 input channels) pairs) per lane and pixels per loop iteration; default {@link WEIGHT_GEMM_TILE}.
   */
  weightTile?: WeightGemmTile;
}

/** Tile of the implicit-GEMM weight gradient; see {@link Conv2dBackwardWeightsOptions.weightTile}. */
export interface WeightGemmTile {
  channels: number;
  columns: number;
  unroll: number;
  /**
   * Stride 1 only: the sliding-window kernel (a lane owns all k taps of a tap row and walks output rows, loading
   * each input once); `columns` and `unroll` are then unused.
   */
  row?: boolean;
}

/** Sizes of one pooling layer (the pool's input is NCHW). */
export interface MaxPool2dOptions {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernel: number;
  stride: number;
  padding: number;
  /** Layout of y and argmax (forward) and of dy and argmax (backward); default "nchw". */
  outLayout?: ConvLayout;
  /**
   * "blocked" (the default: several outputs or stride cells per invocation, each input or window loaded once) or
   * "naive" (one element per invocation, for comparison).
   */
  variant?: PoolVariant;
}

/** Kernel variants of the max-pool family. */
export type PoolVariant = "blocked" | "naive";

/** Options of the max-pool backward. */
export interface MaxPool2dBackwardOptions extends MaxPool2dOptions {
  /** The ReLU output that fed the pool: dx is multiplied by [reluOutput > 0] (ReLU's backward, fused). */
  reluOutput?: Tensor;
}

/** Sizes of a feature map for the layout change. */
export interface FeatureMapOptions {
  batch: number;
  channels: number;
  height: number;
  width: number;
}

/** Output size of a conv or pool along one axis: ⌊(n + 2p − k)/s⌋ + 1. */
export function convOutputSize(n: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((n + 2 * padding - kernel) / stride) + 1;
}

/** Pixels per invocation of the forward and backward-data kernels (× up to 16 channels: 8×16 measured best). */
const PIXEL_BLOCK = 8;
/** Pixels per lane of the subgroup variants (× 32 channels; 4 measured faster than 2). */
const SUBGROUP_PIXELS = 4;

/**
 * Reduction channels (C_in for the forward, C_out for backward-data) from which the implicit-GEMM variant is the
 * default: it pads them to whole vec4s, so 1 or 3 channels waste 3/4 or 1/4 of its work and it lost to "subgroup"
 * there (CCT conv1 1→64: 90 vs 35 ms; 3→256 k3: 482 vs 381 ms); from 8 channels on it won (8→64: 16 vs 22 ms,
 * conv2 64→128: ≈ 1.6×).
 */
const GEMM_MIN_REDUCTION = 8;

/** The sizes {@link conv2dWinograd} takes from a conv's options. */
function winogradSizes(o: Conv2dOptions) {
  return {
    batch: o.batch,
    inChannels: o.inChannels,
    height: o.height,
    width: o.width,
    outChannels: o.outChannels,
    padding: o.padding,
    outLayout: o.outLayout ?? "nchw",
    ...(o.winogradTile ? { tile: o.winogradTile } : {}),
  };
}

/**
 * The variant used when the caller names none (given the reduction channels of the pass), or validates a named
 * one against the adapter.
 */
function chooseVariant(
  kernel: string,
  plan: Plan,
  wanted: ConvVariant | undefined,
  reduction: number,
  o: Conv2dOptions,
): ConvVariant {
  if (wanted === "winograd") {
    if (o.kernel !== 3 || o.stride !== 1) {
      throw new RangeError(
        `${kernel}: the winograd variant needs a 3×3 kernel of stride 1, got ${o.kernel}×${o.kernel} stride ${o.stride}`,
      );
    }
    return wanted;
  }
  const subgroups = plan.gpu.hasSubgroups && plan.gpu.subgroupSize === 8;
  if ((wanted === "subgroup" || wanted === "subgroupGemm") && !subgroups) {
    throw new RangeError(
      `${kernel}: the subgroup variant needs subgroups of width 8 (this adapter has none)`,
    );
  }
  if (wanted) return wanted;
  if (!subgroups) return "blocked";
  return reduction >= GEMM_MIN_REDUCTION ? "subgroupGemm" : "subgroup";
}

/**
 * Default tile of the implicit-GEMM variant: pixels per subgroup (shared by broadcast) × output channels per lane
 * (a subgroup: 8× this). Measured side by side on CCT conv2 (64→128 k3 14×14, batch 128), forward / data ms:
 * 48×4 and 24×8 best (≈ 150 / 146 next to "subgroup" 242 / 240), 32×4 157 / 156, 64×4 155 / 158, 16×8 171 / 176;
 * unroll 2 was ≈ 20% slower (more live values to spill).
 */
export const GEMM_TILE = { pixels: 48, channels: 4, unroll: 1 };

function gemmTile(o: Conv2dOptions): { pixels: number; channels: number; unroll: number } {
  const t = o.gemmTile ?? GEMM_TILE;
  if (
    t.pixels % 8 !== 0 || t.channels % 4 !== 0 || t.pixels < 8 || t.channels < 4 ||
    !Number.isInteger(t.unroll) ||
    t.unroll < 1
  ) {
    throw new RangeError(
      `gemmTile ${t.pixels}×${t.channels} unroll ${t.unroll}: pixels must be 8·n, channels 4·n, unroll a positive integer`,
    );
  }
  return t;
}

/** Workgroups (one subgroup each) of the implicit-GEMM variant for `m` pixels × `channels` outputs. */
function gemmGroups(
  m: number,
  channels: number,
  t: { pixels: number; channels: number },
): [number, number, number] {
  const blocks = Math.ceil(channels / (8 * t.channels)) * Math.ceil(m / t.pixels);
  return grid1d(blocks * 8, 8);
}

/** Elements of the channels-last copy the implicit-GEMM variant reads: B·H·W·⌈C/4⌉·4. */
export function convChannelsLastSize(batch: number, channels: number, pixels: number): number {
  return batch * pixels * Math.ceil(channels / 4) * 4;
}

/**
 * `t` ([B, C, pixels] NCHW or [B, pixels, C] tokens) as channels-last vec4s for the implicit-GEMM variant: a
 * tokens tensor with C = 4·n is used as it is, anything else is copied into `scratch` (created when not given).
 */
function channelsLast(
  plan: Plan,
  name: string,
  t: Tensor,
  channels: number,
  batch: number,
  pixels: number,
  layout: ConvLayout,
  scratch: Tensor | undefined,
): Tensor {
  if (layout === "tokens" && channels % 4 === 0) return t;
  const need = convChannelsLastSize(batch, channels, pixels);
  const out = scratch ?? createTensor(plan.gpu, [need], `${name}:channelsLast`);
  if (out.size < need) throw new TypeError(`${name}: ${out.label} has ${out.size} elements, needs ${need}`);
  channelsLastDispatch(plan, `${name}:channelsLast`, out, t, channels, batch, pixels, layout === "tokens");
  return out;
}

/**
 * Prepares one channels-last copy of `dy` (the conv's output gradient, in `o.outLayout`) for both backwards of
 * the conv in `plan`: pass the result as `preparedDy` to {@link conv2dBackwardData} and
 * {@link conv2dBackwardWeights} (same plan, same dy, dy unchanged between them). Records nothing itself: the first
 * backward that reads a relaid dy records the copy (into `scratch`, ≥ {@link convChannelsLastSize}(B, C_out,
 * OH·OW) elements, created when omitted), the other reuses it, so a pass that needs no copy costs nothing.
 */
export function prepareConvGradient(
  plan: Plan,
  dy: Tensor,
  o: Conv2dOptions,
  scratch?: Tensor,
): PreparedConvGradient {
  const g = geometry("prepareConvGradient", o);
  expectSize("prepareConvGradient", dy, outShape(g));
  return { plan, dy, key: gradientKey(g), scratch };
}

function gradientKey(g: ConvGeometry): string {
  return `${g.b} ${g.cout} ${g.oh * g.ow} ${g.layout}`;
}

/** dy channels-last: the prepared copy when given (recorded on first use), else {@link channelsLast}. */
function dyChannelsLast(
  plan: Plan,
  name: string,
  dy: Tensor,
  g: ConvGeometry,
  prepared: PreparedConvGradient | undefined,
  scratch: Tensor | undefined,
): Tensor {
  const plane = g.oh * g.ow;
  if (!prepared) return channelsLast(plan, name, dy, g.cout, g.b, plane, g.layout, scratch);
  if (prepared.plan !== plan || prepared.dy !== dy || prepared.key !== gradientKey(g)) {
    throw new TypeError(`${name}: preparedDy was made for another plan, dy tensor or conv shape`);
  }
  prepared.channelsLast ??= channelsLast(
    plan,
    "convGradient",
    dy,
    g.cout,
    g.b,
    plane,
    g.layout,
    prepared.scratch,
  );
  return prepared.channelsLast;
}

function channelsLastDispatch(
  plan: Plan,
  name: string,
  out: Tensor,
  t: Tensor,
  channels: number,
  batch: number,
  pixels: number,
  fromTokens: boolean,
): void {
  const n = convChannelsLastInvocations(batch, channels, pixels, fromTokens);
  plan.dispatch(
    name,
    convChannelsLastWgsl({ c: channels, hw: pixels, fromTokens }),
    [{ uniform: convSizes({ m: n }) }, out, t],
    grid1d(n, CONV_WORKGROUP),
  );
}

/** Channels per invocation: 16 (four vec4s) when there are that many, else the fewest whole vec4s. */
function channelBlock(channels: number): number {
  return channels >= 16 ? 16 : Math.ceil(channels / 4) * 4;
}

/**
 * Elements of the transposed-weight buffer the fast forward (`pass: "forward"`) or backward-data (`pass: "data"`)
 * kernels read: k·k·C_in·C_out with the vec4 side padded to a multiple of 32.
 */
export function conv2dWeightTransposeSize(o: Conv2dOptions, pass: "forward" | "data"): number {
  const [vec, other] = pass === "forward" ? [o.outChannels, o.inChannels] : [o.inChannels, o.outChannels];
  return o.kernel * o.kernel * other * paddedChannels(vec);
}

/** Records the weight transpose into `scratch` (created when not given) and returns it. */
function transposedWeight(
  plan: Plan,
  name: string,
  w: Tensor,
  g: ConvGeometry,
  o: Conv2dOptions,
  forData: boolean,
  scratch: Tensor | undefined,
): Tensor {
  const need = conv2dWeightTransposeSize(o, forData ? "data" : "forward");
  const out = scratch ?? createTensor(plan.gpu, [need], `${name}:weight`);
  if (out.size < need) throw new TypeError(`${name}: ${out.label} has ${out.size} elements, needs ${need}`);
  plan.dispatch(
    `${name}:transposeWeight`,
    convWeightTransposeWgsl({ dims: convDims(g), kernel: o.kernel, forData }),
    [{ uniform: convSizes({ m: 1 }) }, out, w],
    grid1d(need, CONV_WORKGROUP),
  );
  return out;
}
/** Invocations the weight gradient aims for before it stops splitting the reduction (2 cores × SIMD × slack). */
const WEIGHT_TARGET_INVOCATIONS = 4096;
/** Taps per dy element (C_in·k·k) from which relaying an NCHW dy as tokens pays for its extra pass. */
const RELAYOUT_MIN_REDUCTION = 64;
/** Shortest pixel run a weight-gradient split is given. */
const WEIGHT_MIN_CHUNK = 64;

function expectSize(kernel: string, t: Tensor, shape: number[]): void {
  const n = shape.reduce((a, b) => a * b, 1);
  if (t.size !== n) {
    throw new TypeError(`${kernel}: ${t.label} has ${t.size} elements [${t.shape}], expected [${shape}]`);
  }
}

interface ConvGeometry {
  b: number;
  cin: number;
  h: number;
  w: number;
  cout: number;
  oh: number;
  ow: number;
  layout: ConvLayout;
}

function geometry(kernel: string, o: Conv2dOptions): ConvGeometry {
  for (const name of ["batch", "inChannels", "height", "width", "outChannels", "kernel", "stride"] as const) {
    positiveInt(kernel, name, o[name]);
  }
  if (!Number.isInteger(o.padding) || o.padding < 0 || o.padding >= o.kernel) {
    throw new RangeError(`${kernel}: padding must be an integer in [0, kernel), got ${o.padding}`);
  }
  const oh = convOutputSize(o.height, o.kernel, o.stride, o.padding);
  const ow = convOutputSize(o.width, o.kernel, o.stride, o.padding);
  if (oh < 1 || ow < 1) {
    throw new RangeError(`${kernel}: kernel ${o.kernel} does not fit the ${o.height}×${o.width} input`);
  }
  return {
    b: o.batch,
    cin: o.inChannels,
    h: o.height,
    w: o.width,
    cout: o.outChannels,
    oh,
    ow,
    layout: o.outLayout ?? "nchw",
  };
}

function outShape(g: ConvGeometry): number[] {
  return g.layout === "tokens" ? [g.b, g.oh * g.ow, g.cout] : [g.b, g.cout, g.oh, g.ow];
}

/** The batch-dependent sizes uniform ({ m, splits, chunk }); the geometry is baked in as constants. */
function convSizes(f: { m: number; splits?: number; chunk?: number }): number[] {
  return [f.m, f.splits ?? 1, f.chunk ?? f.m];
}

function convDims(g: ConvGeometry, blocks = 0, coBlocks = 0): ConvDims {
  return { cin: g.cin, h: g.h, w: g.w, cout: g.cout, oh: g.oh, ow: g.ow, blocks, coBlocks };
}

/**
 * y = conv2d(x, w) (+ bias) (ReLU when `relu`), x [B, C_in, H, W], w [C_out, C_in, k, k], bias [C_out];
 * y [B, C_out, OH, OW] or, with `outLayout: "tokens"`, [B, OH·OW, C_out]. The patch embedding is this with
 * kernel = stride = P, padding 0, a bias and the tokens layout.
 */
export function conv2dForward(
  plan: Plan,
  y: Tensor,
  x: Tensor,
  w: Tensor,
  bias: Tensor | undefined,
  o: Conv2dForwardOptions,
): void {
  const g = geometry("conv2dForward", o);
  expectSize("conv2dForward", y, outShape(g));
  expectSize("conv2dForward", x, [g.b, g.cin, g.h, g.w]);
  expectSize("conv2dForward", w, [g.cout, g.cin, o.kernel, o.kernel]);
  if (bias) expectSize("conv2dForward", bias, [g.cout]);
  const m = g.b * g.oh * g.ow;
  const shape = {
    kernel: o.kernel,
    stride: o.stride,
    padding: o.padding,
    dims: convDims(g),
    relu: o.relu ?? false,
    bias: bias !== undefined,
    layout: g.layout,
  };
  const bindings = bias ? [y, x, w, bias] : [y, x, w];
  const variant = chooseVariant("conv2dForward", plan, o.variant, g.cin, o);
  if (variant === "winograd") {
    conv2dWinograd(plan, y, x, w, {
      ...winogradSizes(o),
      pass: "forward",
      ...(bias ? { bias } : {}),
      relu: o.relu ?? false,
      scratch: o.winogradScratch,
    });
    return;
  }
  if (variant === "naive") {
    plan.dispatch(
      "conv2dForwardNaive",
      conv2dForwardNaiveWgsl(shape),
      [{ uniform: convSizes({ m }) }, ...bindings],
      grid1d(m * g.cout, CONV_WORKGROUP),
    );
    return;
  }
  const wt = transposedWeight(plan, "conv2dForward", w, g, o, false, o.weightScratch);
  if (variant === "subgroupGemm") {
    const tile = gemmTile(o);
    const a = channelsLast(plan, "conv2dForward", x, g.cin, g.b, g.h * g.w, "nchw", o.inputScratch);
    plan.dispatch(
      "conv2dForwardGemmSubgroup",
      conv2dGemmSubgroupWgsl({
        ...shape,
        pass: "forward",
        accumulate: false,
        tm: tile.pixels,
        tn: tile.channels,
        unroll: tile.unroll,
      }),
      [{ uniform: convSizes({ m }) }, y, a, wt, ...(bias ? [bias] : [])],
      gemmGroups(m, g.cout, tile),
    );
    return;
  }
  if (variant === "subgroup") {
    const blocks = Math.ceil(g.cout / 32), px = SUBGROUP_PIXELS;
    plan.dispatch(
      "conv2dForwardSubgroup",
      conv2dForwardSubgroupWgsl({ ...shape, px }),
      [{ uniform: convSizes({ m }) }, y, x, wt, ...(bias ? [bias] : [])],
      grid1d(blocks * Math.ceil(m / (8 * px)) * 8, CONV_WORKGROUP),
    );
    return;
  }
  const co = channelBlock(g.cout);
  const blocks = Math.ceil(g.cout / co);
  plan.dispatch(
    "conv2dForward",
    conv2dForwardWgsl({ ...shape, dims: convDims(g, blocks), co, px: PIXEL_BLOCK }),
    [{ uniform: convSizes({ m }) }, y, x, wt, ...(bias ? [bias] : [])],
    grid1d(blocks * Math.ceil(m / PIXEL_BLOCK), CONV_WORKGROUP),
  );
}

/** dx (+)= the gradient of conv2d w.r.t. its input: dx [B, C_in, H, W], dy in `outLayout`, w [C_out, C_in, k, k]. */
export function conv2dBackwardData(
  plan: Plan,
  dx: Tensor,
  dy: Tensor,
  w: Tensor,
  o: Conv2dBackwardDataOptions,
): void {
  const g = geometry("conv2dBackwardData", o);
  expectSize("conv2dBackwardData", dx, [g.b, g.cin, g.h, g.w]);
  expectSize("conv2dBackwardData", dy, outShape(g));
  expectSize("conv2dBackwardData", w, [g.cout, g.cin, o.kernel, o.kernel]);
  const m = g.b * g.h * g.w;
  const shape = {
    kernel: o.kernel,
    stride: o.stride,
    padding: o.padding,
    dims: convDims(g),
    layout: g.layout,
    accumulate: o.accumulate ?? false,
  };
  const variant = chooseVariant("conv2dBackwardData", plan, o.variant, g.cout, o);
  if (variant === "winograd") {
    conv2dWinograd(plan, dx, dy, w, {
      ...winogradSizes(o),
      pass: "data",
      accumulate: o.accumulate ?? false,
      scratch: o.winogradScratch,
    });
    return;
  }
  if (variant === "naive") {
    plan.dispatch(
      "conv2dBackwardDataNaive",
      conv2dBackwardDataNaiveWgsl(shape),
      [{ uniform: convSizes({ m }) }, dx, dy, w],
      grid1d(m * g.cin, CONV_WORKGROUP),
    );
    return;
  }
  const wt = transposedWeight(plan, "conv2dBackwardData", w, g, o, true, o.weightScratch);
  if (variant === "subgroupGemm") {
    const tile = gemmTile(o);
    const a = dyChannelsLast(plan, "conv2dBackwardData", dy, g, o.preparedDy, o.dyScratch);
    plan.dispatch(
      "conv2dBackwardDataGemmSubgroup",
      conv2dGemmSubgroupWgsl({
        ...shape,
        pass: "data",
        relu: false,
        bias: false,
        tm: tile.pixels,
        tn: tile.channels,
        unroll: tile.unroll,
      }),
      [{ uniform: convSizes({ m }) }, dx, a, wt],
      gemmGroups(m, g.cin, tile),
    );
    return;
  }
  if (variant === "subgroup") {
    const blocks = Math.ceil(g.cin / 32), px = SUBGROUP_PIXELS;
    plan.dispatch(
      "conv2dBackwardDataSubgroup",
      conv2dBackwardDataSubgroupWgsl({ ...shape, px }),
      [{ uniform: convSizes({ m }) }, dx, dy, wt],
      grid1d(blocks * Math.ceil(m / (8 * px)) * 8, CONV_WORKGROUP),
    );
    return;
  }
  const ci = channelBlock(g.cin);
  const blocks = Math.ceil(g.cin / ci);
  plan.dispatch(
    "conv2dBackwardData",
    conv2dBackwardDataWgsl({ ...shape, dims: convDims(g, blocks), ci, px: PIXEL_BLOCK }),
    [{ uniform: convSizes({ m }) }, dx, dy, wt],
    grid1d(blocks * Math.ceil(m / PIXEL_BLOCK), CONV_WORKGROUP),
  );
}

/** Tap rows per lane of the subgroup weight gradient (3×3: all 3 rows, 9 taps × 32 channels per lane). */
const SUBGROUP_WEIGHT_ROWS = 3;

/** (Input channel, tap row) blocks from which the subgroup weight gradient runs: 7 of 8 lanes busy. */
const SUBGROUP_WEIGHT_MIN_BLOCKS = 7;

/**
 * Input channels from which the implicit-GEMM weight gradient is the default where subgroups of width 8 exist.
 * Below it the channels-last copies of dy and x cost more than the GEMM saves (measured at batch 128, loaded
 * machine, ms total / main kernel: CCT conv1 1→64 28×28 45 / 28 vs blocked 37 / 35; CCT-7 conv 3→256 32×32
 * 447 / 307 vs 368 / 367).
 */
export const WEIGHT_GEMM_MIN_CHANNELS = 8;

/**
 * Default tile of the implicit-GEMM weight gradient: 64 output channels per subgroup × two (tap, 4 input
 * channels) columns per lane, one pixel per loop iteration (128 vec4 accumulators, ≈ 2 s to compile). Measured
 * side by side on CCT conv2 (64→128 k3 14×14, batch 128, loaded machine, medians of 9 alternating runs, main
 * kernel ms): "subgroup" 187; 64×2 u1 125, 64×2 u2 126, 64×3 u1 120 (6 s to compile), row 64 125, 64×1 u2 147,
 * 32×2 u2 ≈ 137, 32×1 u4 ≈ 169; 256 accumulators (64×4, 128×2) 1.6–1.9× slower; every lane loading the dy vec4s
 * at a uniform address instead of broadcasting them 2.2× slower.
 */
export const WEIGHT_GEMM_TILE: WeightGemmTile = { channels: 64, columns: 2, unroll: 1 };

/** Whether the implicit-GEMM weight gradient runs its sliding-window row kernel. */
function rowWeightKernel(tile: WeightGemmTile, stride: number): boolean {
  return (tile.row ?? false) && stride === 1;
}

function weightGemmTile(o: Conv2dBackwardWeightsOptions): WeightGemmTile {
  const t = o.weightTile ?? WEIGHT_GEMM_TILE;
  const ok = (v: number) => Number.isInteger(v) && v >= 1;
  if (t.channels % 32 !== 0 || !ok(t.channels) || !ok(t.columns) || !ok(t.unroll)) {
    throw new RangeError(
      `weightTile ${t.channels}×${t.columns} unroll ${t.unroll}: channels must be 32·n, columns and unroll positive integers`,
    );
  }
  return t;
}

interface WeightBlocking {
  /** The kernel that runs: "subgroup" only where it applies (see {@link Conv2dOptions.variant}). */
  variant: ConvVariant;
  co: number;
  coBlocks: number;
  /** (ci, tap-row) blocks. */
  rBlocks: number;
  /** Tap rows per block. */
  rows: number;
  /** Invocations per split of the reduction. */
  invocations: number;
  m: number;
}

function weightBlocking(
  g: ConvGeometry,
  kernel: number,
  variant: ConvVariant,
  tile: WeightGemmTile,
  stride: number,
): WeightBlocking {
  const m = g.b * g.oh * g.ow;
  if (variant === "subgroupGemm") {
    const coBlocks = Math.ceil(Math.ceil(g.cout / 4) / (tile.channels / 4));
    const row = rowWeightKernel(tile, stride);
    const colBlocks = row
      ? Math.ceil(kernel * Math.ceil(g.cin / 4) / 8)
      : Math.ceil(kernel * kernel * Math.ceil(g.cin / 4) / (8 * tile.columns));
    return {
      variant,
      co: tile.channels,
      coBlocks,
      rBlocks: colBlocks,
      rows: kernel,
      invocations: coBlocks * colBlocks * 8,
      // The row kernel splits output rows.
      m: row ? g.b * g.oh : m,
    };
  }
  if (variant === "subgroup") {
    // Kernels past 3×3 go one tap row per lane: more (ci, row) blocks to fill the 8 lanes (a one-channel 7×7
    // stem has 7 instead of 3 of 8 busy).
    const rows = kernel <= SUBGROUP_WEIGHT_ROWS ? kernel : 1;
    const rBlocks = g.cin * Math.ceil(kernel / rows);
    if (g.cout % 4 === 0 && rBlocks >= SUBGROUP_WEIGHT_MIN_BLOCKS) {
      const coBlocks = Math.ceil(g.cout / 32);
      return {
        variant,
        co: 32,
        coBlocks,
        rBlocks,
        rows,
        invocations: Math.ceil(rBlocks / 8) * 8 * coBlocks,
        m,
      };
    }
  }
  const rows = tapRowsPerBlock(kernel);
  const taps = rows * kernel;
  // 16 channels × 9 taps measured ~15% faster than 8 × 9 (more FMAs per load); wider taps keep 4.
  const co = taps > 9 || g.cout <= 4 ? 4 : g.cout >= 16 ? 16 : 8;
  const coBlocks = Math.ceil(g.cout / co);
  const rBlocks = g.cin * Math.ceil(kernel / rows);
  const blocked = variant === "naive" ? "naive" : "blocked";
  return { variant: blocked, co, coBlocks, rBlocks, rows, invocations: coBlocks * rBlocks, m };
}

function weightSplits(k: WeightBlocking): number {
  // The implicit-GEMM kernel runs one subgroup per workgroup; 256 of them measured as fast as 512 (less scratch).
  const target = k.variant === "subgroupGemm" ? WEIGHT_TARGET_INVOCATIONS / 2 : WEIGHT_TARGET_INVOCATIONS;
  const want = Math.ceil(target / k.invocations);
  return Math.max(1, Math.min(want, Math.floor(k.m / WEIGHT_MIN_CHUNK)));
}

/**
 * The weight-gradient variant for `o` on `gpu`: `o.variant`, else where subgroups of width 8 exist
 * "subgroupGemm" from {@link WEIGHT_GEMM_MIN_CHANNELS} input channels on and "subgroup" below, else "blocked".
 */
function weightVariant(o: Conv2dOptions, gpu: Gpu | undefined): ConvVariant {
  // The weight gradient has no Winograd form here: that variant takes the default kernel.
  if (o.variant && o.variant !== "winograd") return o.variant;
  if (!(gpu?.hasSubgroups && gpu.subgroupSize === 8)) return "blocked";
  return o.inChannels >= WEIGHT_GEMM_MIN_CHANNELS ? "subgroupGemm" : "subgroup";
}

/**
 * How many ways the weight gradient splits its pixel reduction by default (1: no split, no scratch), for the
 * variant `o.variant` or, when unset, the one the wrapper picks on `gpu` (blocked when no `gpu` is given).
 */
export function conv2dWeightSplits(o: Conv2dBackwardWeightsOptions, gpu?: Gpu): number {
  const g = geometry("conv2dWeightSplits", o);
  return weightSplits(weightBlocking(g, o.kernel, weightVariant(o, gpu), weightGemmTile(o), o.stride));
}

/**
 * Elements of the partial-sum buffer the weight gradient needs with `splits` (default: its own choice). Without
 * `o.variant` or `gpu`, the larger need of the blocked and subgroup variants (enough on any adapter).
 */
export function conv2dWeightScratchSize(o: Conv2dBackwardWeightsOptions, gpu?: Gpu): number {
  const n = o.outChannels * o.inChannels * o.kernel * o.kernel;
  const variants: ConvVariant[] = (o.variant && o.variant !== "winograd") || gpu
    ? [weightVariant(o, gpu)]
    : ["blocked", "subgroup", "subgroupGemm"];
  const splits = o.splits ?? Math.max(...variants.map((variant) => conv2dWeightSplits({ ...o, variant })));
  return splits > 1 ? splits * n : 0;
}

/**
 * dw (+)= Σ over batch and pixels of dy ⊗ (the input patch), dw [C_out, C_in, k, k], dy in `outLayout`,
 * x [B, C_in, H, W]. Register-blocked, or with subgroups an implicit GEMM over channels-last copies of dy and x
 * (from {@link WEIGHT_GEMM_MIN_CHANNELS} input channels); when the weight alone has too little parallelism (the
 * first layer: 64×9 weights over 100k pixels) the reduction is split and a second dispatch folds the partial sums
 * (deterministic).
 */
export function conv2dBackwardWeights(
  plan: Plan,
  dw: Tensor,
  dy: Tensor,
  x: Tensor,
  o: Conv2dBackwardWeightsOptions,
): void {
  const name = "conv2dBackwardWeights";
  const g = geometry(name, o);
  expectSize(name, dw, [g.cout, g.cin, o.kernel, o.kernel]);
  expectSize(name, dy, outShape(g));
  expectSize(name, x, [g.b, g.cin, g.h, g.w]);
  const accumulate = o.accumulate ?? false;
  chooseVariant(name, plan, o.variant === "winograd" ? undefined : o.variant, 0, o); // refuses what the adapter lacks
  const k = weightBlocking(g, o.kernel, weightVariant(o, plan.gpu), weightGemmTile(o), o.stride);
  const n = g.cout * g.cin * o.kernel * o.kernel;
  const dims = convDims(g, k.rBlocks, k.coBlocks);
  const geo = { kernel: o.kernel, stride: o.stride, padding: o.padding, layout: g.layout, dims };
  if (k.variant === "naive") {
    plan.dispatch(
      "conv2dBackwardWeightsNaive",
      conv2dBackwardWeightsNaiveWgsl({ ...geo, accumulate }),
      [{ uniform: convSizes({ m: k.m }) }, dw, dy, x],
      grid1d(n, CONV_WORKGROUP),
    );
    return;
  }
  const splits = o.splits ?? weightSplits(k);
  positiveInt(name, "splits", splits);
  if (k.variant === "subgroupGemm") {
    weightsGemm(plan, dw, dy, x, o, g, k, splits);
    return;
  }
  // An NCHW dy is first laid out as tokens so the kernel loads it as vec4s: halves the loads of a deep layer
  // (the subgroup kernel reads only tokens).
  let dyRead = dy, layout = g.layout;
  const relay = k.variant === "subgroup" || g.cin * o.kernel * o.kernel >= RELAYOUT_MIN_REDUCTION;
  if (layout === "nchw" && g.cout % 4 === 0 && relay) {
    // C_out = 4·n: the channels-last copy is exactly the tokens layout (and ≈ 5× faster than layoutChange).
    if (o.preparedDy) dyRead = dyChannelsLast(plan, name, dy, g, o.preparedDy, undefined);
    else {
      dyRead = o.dyScratch ?? createTensor(plan.gpu, [dy.size], `${name}:dyTokens`);
      expectSize(name, dyRead, [dy.size]);
      channelsLastDispatch(plan, `${name}:dyTokens`, dyRead, dy, g.cout, g.b, g.oh * g.ow, false);
    }
    layout = "tokens";
  }
  const tiled = { ...geo, layout };
  const chunk = Math.ceil(k.m / splits);
  const sizes = convSizes({ m: k.m, splits, chunk });
  const groups = grid1d(k.invocations * splits, CONV_WORKGROUP);
  const kernel = (split: boolean) =>
    k.variant === "subgroup"
      ? conv2dBackwardWeightsSubgroupWgsl({ ...tiled, accumulate: accumulate && !split, split, rows: k.rows })
      : conv2dBackwardWeightsWgsl({ ...tiled, accumulate: accumulate && !split, split, co: k.co });
  const suffix = k.variant === "subgroup" ? "Subgroup" : "";
  if (splits === 1) {
    plan.dispatch(name + suffix, kernel(false), [{ uniform: sizes }, dw, dyRead, x], groups);
    return;
  }
  const need = splits * n;
  const scratch = o.scratch ?? createTensor(plan.gpu, [need], "conv2dBackwardWeights:scratch");
  if (scratch.size < need) {
    throw new TypeError(`${name}: scratch ${scratch.label} has ${scratch.size} elements, needs ${need}`);
  }
  plan.dispatch(`${name}${suffix}:partial`, kernel(true), [{ uniform: sizes }, scratch, dyRead, x], groups);
  plan.dispatch(
    `${name}:reduce`,
    convSplitReduceWgsl({ dims, kernel: o.kernel, accumulate }),
    [{ uniform: sizes }, dw, scratch],
    grid1d(n, CONV_WORKGROUP),
  );
}

/** The implicit-GEMM weight gradient: channels-last copies of dy (unless usable as is) and x, then the GEMM. */
function weightsGemm(
  plan: Plan,
  dw: Tensor,
  dy: Tensor,
  x: Tensor,
  o: Conv2dBackwardWeightsOptions,
  g: ConvGeometry,
  k: WeightBlocking,
  splits: number,
): void {
  const name = "conv2dBackwardWeights";
  const tile = weightGemmTile(o);
  const accumulate = o.accumulate ?? false;
  const n = g.cout * g.cin * o.kernel * o.kernel;
  const dyA = dyChannelsLast(plan, name, dy, g, o.preparedDy, o.dyScratch);
  const xA = channelsLast(plan, `${name}:input`, x, g.cin, g.b, g.h * g.w, "nchw", o.inputScratch);
  const chunk = Math.ceil(k.m / splits);
  const sizes = convSizes({ m: k.m, splits, chunk });
  const groups = grid1d(k.invocations * splits, 8);
  const shape = { kernel: o.kernel, stride: o.stride, padding: o.padding, dims: convDims(g) };
  const kernel = (split: boolean) =>
    rowWeightKernel(tile, o.stride)
      ? conv2dBackwardWeightsRowGemmSubgroupWgsl({
        ...shape,
        accumulate: accumulate && !split,
        split,
        dq: tile.channels / 32,
      })
      : conv2dBackwardWeightsGemmSubgroupWgsl({
        ...shape,
        accumulate: accumulate && !split,
        split,
        dq: tile.channels / 32,
        nc: tile.columns,
        unroll: tile.unroll,
      });
  if (splits === 1) {
    plan.dispatch(`${name}GemmSubgroup`, kernel(false), [{ uniform: sizes }, dw, dyA, xA], groups);
    return;
  }
  const need = splits * n;
  const scratch = o.scratch ?? createTensor(plan.gpu, [need], `${name}:scratch`);
  if (scratch.size < need) {
    throw new TypeError(`${name}: scratch ${scratch.label} has ${scratch.size} elements, needs ${need}`);
  }
  plan.dispatch(`${name}GemmSubgroup:partial`, kernel(true), [{ uniform: sizes }, scratch, dyA, xA], groups);
  plan.dispatch(
    `${name}:reduce`,
    convSplitReduceWgsl({ dims: convDims(g), kernel: o.kernel, accumulate }),
    [{ uniform: sizes }, dw, scratch],
    grid1d(n, CONV_WORKGROUP),
  );
}

/** db (+)= Σ over batch and pixels of dy: db [C_out], dy in `outLayout` (the patch embedding's bias). */
export function conv2dBackwardBias(plan: Plan, db: Tensor, dy: Tensor, o: Conv2dBackwardOptions): void {
  const g = geometry("conv2dBackwardBias", o);
  expectSize("conv2dBackwardBias", db, [g.cout]);
  expectSize("conv2dBackwardBias", dy, outShape(g));
  plan.dispatch(
    "conv2dBackwardBias",
    conv2dBackwardBiasWgsl({ dims: convDims(g), layout: g.layout, accumulate: o.accumulate ?? false }),
    [{ uniform: convSizes({ m: g.b * g.oh * g.ow }) }, db, dy],
    grid1d(g.cout, CONV_WORKGROUP),
  );
}

interface PoolGeometry {
  b: number;
  c: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
  layout: ConvLayout;
}

function poolGeometry(kernel: string, o: MaxPool2dOptions): PoolGeometry {
  for (const name of ["batch", "channels", "height", "width", "kernel", "stride"] as const) {
    positiveInt(kernel, name, o[name]);
  }
  if (!Number.isInteger(o.padding) || o.padding < 0 || 2 * o.padding > o.kernel) {
    throw new RangeError(`${kernel}: padding must be an integer in [0, kernel/2], got ${o.padding}`);
  }
  const oh = convOutputSize(o.height, o.kernel, o.stride, o.padding);
  const ow = convOutputSize(o.width, o.kernel, o.stride, o.padding);
  if (oh < 1 || ow < 1) {
    throw new RangeError(`${kernel}: window ${o.kernel} does not fit ${o.height}×${o.width}`);
  }
  return { b: o.batch, c: o.channels, h: o.height, w: o.width, oh, ow, layout: o.outLayout ?? "nchw" };
}

function poolShape(
  g: PoolGeometry,
  o: MaxPool2dOptions,
): { dims: PoolDims; kernel: number; stride: number; padding: number } {
  return {
    dims: { c: g.c, h: g.h, w: g.w, oh: g.oh, ow: g.ow },
    kernel: o.kernel,
    stride: o.stride,
    padding: o.padding,
  };
}

function poolOutShape(g: PoolGeometry): number[] {
  return g.layout === "tokens" ? [g.b, g.oh * g.ow, g.c] : [g.b, g.c, g.oh, g.ow];
}

/**
 * Max-pool: y = the window maximum (padding is -inf and never wins; ties keep the first in scan order, as PyTorch),
 * argmax (int32) = its position ih·W + iw in the input plane. x [B, C, H, W]; y and argmax [B, C, OH, OW] or
 * tokens [B, OH·OW, C].
 */
export function maxPool2dForward(
  plan: Plan,
  y: Tensor,
  argmax: Tensor,
  x: Tensor,
  o: MaxPool2dOptions,
): void {
  const g = poolGeometry("maxPool2dForward", o);
  expectSize("maxPool2dForward", y, poolOutShape(g));
  expectSize("maxPool2dForward", argmax, poolOutShape(g));
  expectSize("maxPool2dForward", x, [g.b, g.c, g.h, g.w]);
  if (o.variant === "naive") {
    const n = y.size;
    plan.dispatch(
      "maxPool2dForwardNaive",
      maxPool2dForwardWgsl({ ...poolShape(g, o), layout: g.layout }),
      [{ uniform: [n] }, y, argmax, x],
      grid1d(n, CONV_WORKGROUP),
    );
    return;
  }
  // Vector loads of the input rows when W allows; the row block is then a multiple of vec / gcd(vec, s).
  const vec = g.w % 4 === 0 ? 4 : g.w % 2 === 0 ? 2 : 1;
  const step = vec / (o.stride % vec === 0 ? vec : o.stride % 2 === 0 ? 2 : 1);
  const r = step === 1 ? poolRowBlock(g.ow) : Math.ceil(Math.min(g.ow, 8) / step) * step;
  const n = g.b * g.c * g.oh * Math.ceil(g.ow / r);
  plan.dispatch(
    "maxPool2dForward",
    maxPool2dForwardBlockedWgsl({ ...poolShape(g, o), layout: g.layout, r, vec }),
    [{ uniform: [n] }, y, argmax, x],
    grid1d(n, CONV_WORKGROUP),
  );
}

/**
 * dx = the max-pool gradient, as a deterministic gather (each input element sums dy of the windows whose argmax it
 * is); with `reluOutput` also times [reluOutput > 0], which is ReLU's backward when the pool's input is a ReLU
 * output. dx [B, C, H, W]; dy and argmax in `outLayout`.
 */
export function maxPool2dBackward(
  plan: Plan,
  dx: Tensor,
  dy: Tensor,
  argmax: Tensor,
  o: MaxPool2dBackwardOptions,
): void {
  const g = poolGeometry("maxPool2dBackward", o);
  expectSize("maxPool2dBackward", dx, [g.b, g.c, g.h, g.w]);
  expectSize("maxPool2dBackward", dy, poolOutShape(g));
  expectSize("maxPool2dBackward", argmax, poolOutShape(g));
  if (o.reluOutput) expectSize("maxPool2dBackward", o.reluOutput, [g.b, g.c, g.h, g.w]);
  const shape = { ...poolShape(g, o), layout: g.layout, relu: o.reluOutput !== undefined };
  const bindings = o.reluOutput ? [dx, dy, argmax, o.reluOutput] : [dx, dy, argmax];
  if (o.variant === "naive") {
    const n = dx.size;
    plan.dispatch(
      "maxPool2dBackwardNaive",
      maxPool2dBackwardWgsl(shape),
      [{ uniform: [n] }, ...bindings],
      grid1d(n, CONV_WORKGROUP),
    );
    return;
  }
  // Stride cells: s × s input elements each, covering the padded input.
  const cellsY = Math.ceil((g.h + o.padding) / o.stride), cellsX = Math.ceil((g.w + o.padding) / o.stride);
  const r = poolRowBlock(cellsX);
  const n = g.b * g.c * cellsY * Math.ceil(cellsX / r);
  plan.dispatch(
    "maxPool2dBackward",
    maxPool2dBackwardBlockedWgsl({ ...shape, r }),
    [{ uniform: [n] }, ...bindings],
    grid1d(n, CONV_WORKGROUP),
  );
}

/** dx = dy·[y > 0] (or dx += … when `accumulate`), y the ReLU output; any shape, equal sizes. */
export function reluBackward(plan: Plan, dx: Tensor, dy: Tensor, y: Tensor, accumulate = false): void {
  for (const t of [dy, y]) {
    if (t.size !== dx.size) {
      throw new TypeError(
        `reluBackward: ${t.label} has ${t.size} elements [${t.shape}], expected ${dx.size}`,
      );
    }
  }
  plan.dispatch(
    "reluBackward",
    reluBackwardWgsl(accumulate),
    [{ uniform: [dx.size] }, dx, dy, y],
    grid1d(dx.size, CONV_WORKGROUP),
  );
}

function layoutChange(
  plan: Plan,
  name: string,
  out: Tensor,
  src: Tensor,
  o: FeatureMapOptions,
  tokens: boolean,
) {
  for (const key of ["batch", "channels", "height", "width"] as const) positiveInt(name, key, o[key]);
  const nchw = [o.batch, o.channels, o.height, o.width];
  const tok = [o.batch, o.height * o.width, o.channels];
  expectSize(name, out, tokens ? tok : nchw);
  expectSize(name, src, tokens ? nchw : tok);
  plan.dispatch(
    name,
    convLayoutWgsl({ c: o.channels, h: o.height, w: o.width, oh: 0, ow: 0 }, tokens),
    [{ uniform: [out.size] }, out, src],
    grid1d(out.size, CONV_WORKGROUP),
  );
}

/** Tokens [B, H·W, C] from a feature map [B, C, H, W] (token = h·W + w). */
export function nchwToTokens(plan: Plan, tokens: Tensor, x: Tensor, o: FeatureMapOptions): void {
  layoutChange(plan, "nchwToTokens", tokens, x, o, true);
}

/** A feature map [B, C, H, W] from tokens [B, H·W, C] (e.g. to send a token gradient back into NCHW). */
export function tokensToNchw(plan: Plan, x: Tensor, tokens: Tensor, o: FeatureMapOptions): void {
  layoutChange(plan, "tokensToNchw", x, tokens, o, false);
}
