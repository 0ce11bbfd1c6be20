/**
 * Typed wrapper of the Winograd conv kernels (`shaders/winograd.ts`): a stride-1 3×3 conv2d forward or
 * backward-data as filter transform → input transform → one batched matmul over the α² positions → output
 * transform. `conv2dForward` and `conv2dBackwardData` use it as their "winograd" variant.
 */
import type { Gpu } from "../gpu/device.ts";
import { grid1d, type Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  WINOGRAD_WORKGROUP,
  winogradFilterTransformWgsl,
  winogradInputTransformWgsl,
  type WinogradLanes,
  winogradOutputTransformWgsl,
  type WinogradTile,
} from "../../shaders/winograd.ts";
import type { ConvLayout } from "../../shaders/conv.ts";
import { matmul, type MatmulVariant } from "./matmul.ts";

export type { WinogradTile } from "../../shaders/winograd.ts";

/** Scratch of one Winograd conv: the transformed input [α², P, C] and the products [α², P, K]. */
export interface WinogradScratch {
  input: Tensor;
  product: Tensor;
}

/** A stride-1 3×3 conv in the wrapper's terms (sizes as in `Conv2dOptions`). */
export interface Conv2dWinogradOptions {
  /** "forward": out = conv(x, w); "data": out = the conv's input gradient from dy. */
  pass: "forward" | "data";
  batch: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  padding: number;
  /** Layout of y (forward) or dy (data); default "nchw". */
  outLayout?: ConvLayout;
  /** Forward only: [C_out], added before the ReLU. */
  bias?: Tensor;
  /** Forward only: y = max(y, 0). */
  relu?: boolean;
  /** Add into the output instead of overwriting it. */
  accumulate?: boolean;
  /** Output tile side m of F(m×m, 3×3); default {@link WINOGRAD_TILE}. */
  tile?: WinogradTile;
  /** Buffers of ≥ {@link winogradScratchSizes} elements; created (once, while recording) when omitted. */
  scratch?: WinogradScratch;
  /** Matmul variant of the α² products (benchmarks); default the matmul's own choice for the shape. */
  matmulVariant?: MatmulVariant;
  /** Channels per invocation of the transforms (benchmarks); default 4 where the channel count allows. */
  lanes?: WinogradLanes;
}

/** Default output tile: F(2×2, 3×3). */
export const WINOGRAD_TILE: WinogradTile = 2;

interface WinogradGeometry {
  m: WinogradTile;
  /** Reduction channels (C_in forward, C_out data) and output channels. */
  c: number;
  k: number;
  /** The transformed map (x or dy) and its padding, and the output map. */
  srcH: number;
  srcW: number;
  pad: number;
  outH: number;
  outW: number;
  th: number;
  tw: number;
  tiles: number;
  positions: number;
}

function winogradGeometry(o: Conv2dWinogradOptions): WinogradGeometry {
  const m = o.tile ?? WINOGRAD_TILE;
  if (m !== 2 && m !== 4) throw new RangeError(`conv2dWinograd: tile must be 2 or 4, got ${m}`);
  for (const name of ["batch", "inChannels", "height", "width", "outChannels"] as const) {
    if (!Number.isInteger(o[name]) || o[name] < 1) {
      throw new RangeError(`conv2dWinograd: ${name} must be a positive integer, got ${o[name]}`);
    }
  }
  if (!Number.isInteger(o.padding) || o.padding < 0 || o.padding > 2) {
    throw new RangeError(`conv2dWinograd: a 3×3 conv's padding must be 0, 1 or 2, got ${o.padding}`);
  }
  const oh = o.height + 2 * o.padding - 2, ow = o.width + 2 * o.padding - 2;
  if (oh < 1 || ow < 1) {
    throw new RangeError(`conv2dWinograd: a 3×3 kernel does not fit the ${o.height}×${o.width} input`);
  }
  const forward = o.pass === "forward";
  const [outH, outW] = forward ? [oh, ow] : [o.height, o.width];
  const th = Math.ceil(outH / m), tw = Math.ceil(outW / m);
  return {
    m,
    c: forward ? o.inChannels : o.outChannels,
    k: forward ? o.outChannels : o.inChannels,
    srcH: forward ? o.height : oh,
    srcW: forward ? o.width : ow,
    pad: forward ? o.padding : 2 - o.padding,
    outH,
    outW,
    th,
    tw,
    tiles: o.batch * th * tw,
    positions: (m + 2) * (m + 2),
  };
}

/** Elements of the two scratch buffers a Winograd conv needs. */
export function winogradScratchSizes(o: Conv2dWinogradOptions): { input: number; product: number } {
  const g = winogradGeometry(o);
  return { input: g.positions * g.tiles * g.c, product: g.positions * g.tiles * g.k };
}

/** Whether the device can bind the larger scratch buffer of this conv (else the caller picks another variant). */
export function winogradFits(gpu: Gpu, o: Conv2dWinogradOptions): boolean {
  const s = winogradScratchSizes(o);
  const bytes = 4 * Math.max(s.input, s.product);
  const limits = gpu.device.limits;
  return bytes <= limits.maxStorageBufferBindingSize && bytes <= limits.maxBufferSize;
}

function lanes(channels: number, wanted: WinogradLanes | undefined): WinogradLanes {
  return channels % 4 === 0 ? (wanted ?? 4) : 1;
}

function scratchTensor(plan: Plan, given: Tensor | undefined, need: number, label: string): Tensor {
  const t = given ?? createTensor(plan.gpu, [need], label);
  if (t.size < need) throw new TypeError(`conv2dWinograd: ${t.label} has ${t.size} elements, needs ${need}`);
  return t;
}

/**
 * out (+)= a stride-1 3×3 conv2d (`pass: "forward"`: out = y from x, with optional bias and ReLU) or its input
 * gradient (`pass: "data"`: out = dx from dy), by Winograd F(m×m, 3×3). w is [C_out, C_in, 3, 3].
 */
export function conv2dWinograd(
  plan: Plan,
  out: Tensor,
  input: Tensor,
  w: Tensor,
  o: Conv2dWinogradOptions,
): void {
  const g = winogradGeometry(o);
  const forward = o.pass === "forward";
  const layout = o.outLayout ?? "nchw";
  const b = o.batch;
  const outShape = forward
    ? (layout === "tokens" ? [b, g.outH * g.outW, g.k] : [b, g.k, g.outH, g.outW])
    : [b, g.k, g.outH, g.outW];
  const inShape = forward
    ? [b, g.c, g.srcH, g.srcW]
    : (layout === "tokens" ? [b, g.srcH * g.srcW, g.c] : [b, g.c, g.srcH, g.srcW]);
  for (
    const [what, t, shape] of [
      ["output", out, outShape],
      ["input", input, inShape],
      ["weight", w, [o.outChannels, o.inChannels, 3, 3]],
    ] as const
  ) {
    const n = shape.reduce((x, y) => x * y, 1);
    if (t.size !== n) {
      throw new TypeError(
        `conv2dWinograd: ${what} ${t.label} has ${t.size} elements, expected [${shape}] (${n})`,
      );
    }
  }
  if (!forward && (o.bias || o.relu)) throw new TypeError("conv2dWinograd: bias and ReLU are forward-only");
  if (o.bias && o.bias.size !== g.k) {
    throw new TypeError(`conv2dWinograd: bias ${o.bias.label} has ${o.bias.size} elements, expected ${g.k}`);
  }
  const sizes = winogradScratchSizes(o);
  const v = scratchTensor(plan, o.scratch?.input, sizes.input, "winograd:input");
  const prod = scratchTensor(plan, o.scratch?.product, sizes.product, "winograd:product");
  const ck = g.c * g.k;
  const u = createTensor(plan.gpu, [g.positions * ck], "winograd:filter");
  const name = forward ? "conv2dForwardWinograd" : "conv2dBackwardDataWinograd";

  plan.dispatch(
    `${name}:filter`,
    winogradFilterTransformWgsl({ m: g.m, c: g.c, k: g.k, flip: !forward }),
    [u, w],
    grid1d(ck, WINOGRAD_WORKGROUP),
  );
  plan.dispatch(
    `${name}:input`,
    winogradInputTransformWgsl({
      m: g.m,
      c: g.c,
      h: g.srcH,
      w: g.srcW,
      pad: g.pad,
      th: g.th,
      tw: g.tw,
      layout: forward ? "nchw" : layout,
      lanes: lanes(g.c, o.lanes),
    }),
    [{ uniform: [g.tiles] }, v, input],
    grid1d(g.tiles * g.c, WINOGRAD_WORKGROUP),
  );
  matmul(plan, prod, v, u, {
    m: g.tiles,
    n: g.k,
    k: g.c,
    batch: {
      dims: [g.positions],
      strideA: [g.tiles * g.c],
      strideB: [ck],
      strideC: [g.tiles * g.k],
    },
    ...(o.matmulVariant ? { variant: o.matmulVariant } : {}),
  });
  plan.dispatch(
    `${name}:output`,
    winogradOutputTransformWgsl({
      m: g.m,
      k: g.k,
      oh: g.outH,
      ow: g.outW,
      th: g.th,
      tw: g.tw,
      layout: forward ? layout : "nchw",
      bias: o.bias !== undefined,
      relu: o.relu ?? false,
      accumulate: o.accumulate ?? false,
      lanes: lanes(g.k, o.lanes),
    }),
    [{ uniform: [g.tiles] }, out, prod, ...(o.bias ? [o.bias] : [])],
    grid1d(g.tiles * g.k, WINOGRAD_WORKGROUP),
  );
}
