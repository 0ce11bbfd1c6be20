/**
 * Convolutional tokenizer kernels: conv2d (cross-correlation, PyTorch layouts: input NCHW, weight
 * [C_out, C_in, k, k]) forward with fused bias and ReLU, its three backwards, max-pool with saved argmax, ReLU
 * backward and the NCHW ↔ tokens ([B, H·W, C]) layout change.
 *
 * The fast conv kernels are implicit GEMMs, register-blocked: each invocation owns a small block of outputs
 * (several channels × several pixels) in vec4 accumulators and loops over the reduction without workgroup memory or
 * barriers (on llvmpipe barriers cost more than the reuse they buy; see PERF.md). What decides their speed on
 * llvmpipe is the number of load instructions per FMA (every divergent load is a per-lane gather), hence:
 * - the weight is first transposed (a tiny dispatch) so the forward and backward-data load it as vec4s, ≈ 2×;
 * - on Vulkan a subgroup variant loads one weight vec4 per lane and shares the 8 with `subgroupBroadcast`, ≈ 2×
 *   again;
 * - faster still (≈ 1.6× on CCT conv2, forward and backward-data) is the implicit-GEMM subgroup variant, shaped
 *   like the best matmul: x (or dy) is first copied channels-last so one vec4 load brings 4 reduction channels of
 *   a pixel, a subgroup owns 48 pixels × 32 channels, and each accumulator's 4 FMAs of a step run as one chain.
 *   Measured on lavapipe: a storage-buffer load is a per-lane loop with a bounds test per component (Mesa's
 *   emit_load_mem), so loads, not FMAs, set the pace (dropping the weight loads from the kernel more than halved
 *   its time); chaining the FMAs per accumulator (each accumulator is 4 spilled 8-lane registers) gained ≈ 1.3×;
 *   larger tiles (more accumulators) and a stride-1 row-tiled kernel that loads each input once for all k taps
 *   were not faster (more spills); reading the operands from textures was ≈ 25% faster but a dispatch with
 *   textures broke later dispatches of the device on lavapipe (they stopped running), so it is not used;
 * - the weight gradient reads dy as vec4s in tokens layout (an NCHW dy of a deep layer is relaid first); its
 *   subgroup variant shares 8 lanes' dy vec4s by `subgroupBroadcast` (≈ 2× the blocked one), and its
 *   implicit-GEMM variant (dy and x channels-last, a subgroup owning 64 output channels × 16 (tap, 4 input
 *   channels) columns) ≈ 1.5× that on CCT conv2: 4 vec4 loads per 128 FMAs. There the FMAs and accumulator spills
 *   cost about as much as the loads (stubbing the loads out left ≈ 65% of the time), so larger tiles, longer FMA
 *   chains and a sliding-window row kernel (each input loaded once for all k taps of a row) all measured the same;
 * - the pools work in row blocks: the forward loads each input once per block (as vec2/vec4 when W allows), the
 *   backward owns s × s stride cells and loads each candidate window's dy and argmax once (≈ 2–3× per element);
 * - all geometry is baked into each specialisation as constants (division by a constant vectorises, by a uniform
 *   it is scalarised); only batch-dependent counts come from the uniform, so one pipeline serves every batch size.
 * The naive variants (one output per invocation) exist for the benchmark comparison.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

/** Invocations per workgroup of every conv-family kernel (1-D, so grid1d covers large dispatches). */
export const CONV_WORKGROUP = 64;

/** Where a conv or pool output (and hence its gradient) lives: NCHW planes or tokens [B, H·W, C]. */
export type ConvLayout = "nchw" | "tokens";

/** Geometry baked into a conv specialisation. */
export interface ConvShape {
  kernel: number;
  stride: number;
  padding: number;
}

/**
 * The batch-dependent sizes of a conv dispatch. `m`: pixels iterated (output pixels B·OH·OW for forward and
 * weights, input pixels B·H·W for backward-data); `splits`/`chunk`: the weight-gradient split of the pixel
 * reduction.
 */
const CONV_SIZES = /* wgsl */ `
struct Sizes { m: u32, splits: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
`;

/**
 * Geometry of one conv layer, baked into its kernels as constants: integer division by a uniform is scalarised
 * on llvmpipe (8 divisions per SIMD op), by a constant it becomes a vector multiply-shift. `blocks`: channel
 * blocks of the blocked forward / backward-data, or (ci, tap-row) blocks of the weight gradient, whose
 * `coBlocks` counts its output-channel blocks.
 */
export interface ConvDims {
  cin: number;
  h: number;
  w: number;
  cout: number;
  oh: number;
  ow: number;
  blocks: number;
  coBlocks: number;
}

function convConsts(d: ConvDims, kernel: number): string {
  return [
    `const CIN = ${d.cin}u;`,
    `const H = ${d.h}u;`,
    `const W = ${d.w}u;`,
    `const COUT = ${d.cout}u;`,
    `const OH = ${d.oh}u;`,
    `const OW = ${d.ow}u;`,
    `const BLOCKS = ${d.blocks}u;`,
    `const CO_BLOCKS = ${d.coBlocks}u;`,
    `const N = ${d.cout * d.cin * kernel * kernel}u;`,
  ].join("\n");
}

/** Channels per subgroup-variant block: 8 lanes × one vec4 each. */
export const SUBGROUP_CHANNELS = 32;

/** The vec4 side of a transposed weight is padded (with zeros) to whole 32-channel blocks for every variant. */
export function paddedChannels(channels: number): number {
  return Math.ceil(channels / SUBGROUP_CHANNELS) * SUBGROUP_CHANNELS;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const lines = (n: number, f: (i: number) => string) => range(n).map(f).join("\n");

/** Channel blocks are whole vec4s. */
function assertBlock(co: number, px: number): void {
  if (co % 4 !== 0 || co < 4 || px < 1) throw new RangeError(`conv block ${co}×${px}: channels must be 4·n`);
}

/** The bounds test of one tap, or `true` when the geometry makes padding impossible (patch embedding). */
function inBounds(padding: number, y: string, x: string): string {
  return padding === 0 ? "true" : `${y} >= 0 && ${y} < hi && ${x} >= 0 && ${x} < wi`;
}

/**
 * Register-blocked conv2d forward: each invocation computes `co` output channels × `px` consecutive output pixels
 * (flattened over batch and plane, so blocks never waste work at row ends), looping taps outside and input
 * channels inside so each tap's bounds test is paid once per `cin` iterations.
 * Bindings: sizes, y, x, w[, bias].
 */
export function conv2dForwardWgsl(
  o: ConvShape & {
    dims: ConvDims;
    relu: boolean;
    bias: boolean;
    layout: ConvLayout;
    co: number;
    px: number;
  },
): string {
  assertBlock(o.co, o.px);
  const q4 = o.co / 4;
  const store = (i: number) => {
    const body = lines(o.co, (j) => {
      const value = `a${i}_${j >> 2}[${j & 3}]${o.bias ? ` + bias[co0 + ${j}u]` : ""}`;
      const index = o.layout === "tokens"
        ? `m${i} * COUT + co0 + ${j}u`
        : `(b${i} * COUT + co0 + ${j}u) * plane + p${i}`;
      return `    if (co0 + ${j}u < COUT) { y[${index}] = ${o.relu ? `max(${value}, 0.0)` : value}; }`;
    });
    return `  if (mb + ${i}u < sizes.m) {\n${body}\n  }`;
  };
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
${o.bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}
const K = ${o.kernel}u;
const KK = ${o.kernel * o.kernel}u;
const STRIDE = ${o.stride}u;
const PAD = ${o.padding};
const COUT4 = ${paddedChannels(o.dims.cout) / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  let co0 = (t % BLOCKS) * ${o.co}u;
  let mb = (t / BLOCKS) * ${o.px}u;
  if (mb >= sizes.m) { return; }
  let plane = OH * OW;
  let hw = H * W;
  let hi = i32(H);
  let wi = i32(W);
${
    lines(o.px, (i) =>
      `  let m${i} = min(mb + ${i}u, sizes.m - 1u);
  let b${i} = m${i} / plane;
  let p${i} = m${i} - b${i} * plane;
  let xb${i} = b${i} * CIN * hw;
  let ih${i} = i32((p${i} / OW) * STRIDE) - PAD;
  let iw${i} = i32((p${i} % OW) * STRIDE) - PAD;`)
  }
  // The channel block starts on a vec4 of the transposed weight (padded with zeros past C_out).
  let cq = co0 / 4u;
${lines(o.px, (i) => lines(q4, (q) => `  var a${i}_${q} = vec4<f32>(0.0);`))}
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
${
    lines(o.px, (i) =>
      `      let y${i} = ih${i} + i32(kh);
      let x${i} = iw${i} + i32(kw);
      let ok${i} = ${inBounds(o.padding, `y${i}`, `x${i}`)};
      let o${i} = select(0u, xb${i} + u32(y${i}) * W + u32(x${i}), ok${i});`)
  }
      let tap = (kh * K + kw) * CIN;
      for (var ci = 0u; ci < CIN; ci++) {
        let xo = ci * hw;
        let wo = (tap + ci) * COUT4 + cq;
${lines(q4, (q) => `        let w${q} = w[wo + ${q}u];`)}
${
    lines(o.px, (i) =>
      `        let v${i} = vec4<f32>(select(0.0, x[o${i} + xo], ok${i}));
${lines(q4, (q) => `        a${i}_${q} = fma(v${i}, w${q}, a${i}_${q});`)}`)
  }
      }
    }
  }
${range(o.px).map(store).join("\n")}
}
`;
}

/**
 * Weight [C_out, C_in, k, k] → the layout the blocked kernels read as vec4s: for the forward [k·k, C_in, C_out']
 * (vec4s along output channels), for backward-data [k·k, C_out, C_in'] (vec4s along input channels); C' is
 * {@link paddedChannels}(C), the padding zero. Cheap (one weight's worth of copies) and it halves the conv's load work.
 * Bindings: sizes, out, w.
 */
export function convWeightTransposeWgsl(o: { dims: ConvDims; kernel: number; forData: boolean }): string {
  const kk = o.kernel * o.kernel;
  const inner = paddedChannels(o.forData ? o.dims.cin : o.dims.cout);
  const outer = o.forData ? o.dims.cout : o.dims.cin;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= ${kk * outer * inner}u || sizes.m == 0u) { return; }
  let c = i % ${inner}u;
  let r = (i / ${inner}u) % ${outer}u;
  let tap = i / ${inner * outer}u;
  let co = ${o.forData ? "r" : "c"};
  let ci = ${o.forData ? "c" : "r"};
  out[i] = select(0.0, w[min((co * CIN + ci) * ${kk}u + tap, N - 1u)], ${
    o.forData ? "ci < CIN" : "co < COUT"
  });
}
`;
}

/**
 * The inner loop shared by the subgroup variants: each of the subgroup's 8 lanes loads one vec4 of the transposed
 * weight (4 of the block's 32 channels) and `subgroupBroadcast` hands all 8 to every lane, so a lane does 32·px
 * FMAs per 1 vec4 load + px gathers (the blocked kernel needs 4 vec4 loads + 8 gathers for 128).
 */
function subgroupInner(px: number, loop: string, wIndex: string, value: (i: number) => string): string {
  return `      ${loop} {
        let mine = w[${wIndex}];
${lines(px, (i) => `        let v${i} = vec4<f32>(${value(i)});`)}
${
    lines(8, (k) =>
      `        let w${k} = subgroupBroadcast(mine, ${k}u);
${lines(px, (i) => `        a${i}_${k} = fma(v${i}, w${k}, a${i}_${k});`)}`)
  }
      }`;
}

/** Entry and pixel set-up of the subgroup variants: lane l owns pixels mb + 8·i (consecutive across lanes). */
function subgroupStart(px: number, blocks: number): string {
  return `fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // No early return: subgroupBroadcast needs every lane of the subgroup; out-of-range pixels are clamped.
  let sg = linear_index(gid, nwg) / 8u;
  let cq = (sg % ${blocks}u) * 8u;
  let mb = (sg / ${blocks}u) * ${8 * px}u + lane;`;
}

/**
 * Subgroup variant of {@link conv2dForwardWgsl} (Vulkan, subgroup width 8): a subgroup owns 32 output channels ×
 * 8·`px` pixels. Bindings: sizes, y, x, w (transposed, channels padded to 32)[, bias].
 */
export function conv2dForwardSubgroupWgsl(
  o: ConvShape & { dims: ConvDims; relu: boolean; bias: boolean; layout: ConvLayout; px: number },
): string {
  const blocks = Math.ceil(o.dims.cout / SUBGROUP_CHANNELS);
  const store = (i: number) =>
    `  if (mb + ${8 * i}u < sizes.m) {\n${
      lines(SUBGROUP_CHANNELS, (j) => {
        const co = `cq * 4u + ${j}u`;
        const value = `a${i}_${j >> 2}[${j & 3}]${o.bias ? ` + bias[${co}]` : ""}`;
        const index = o.layout === "tokens"
          ? `m${i} * COUT + ${co}`
          : `(b${i} * COUT + ${co}) * plane + p${i}`;
        return `    if (${co} < COUT) { y[${index}] = ${o.relu ? `max(${value}, 0.0)` : value}; }`;
      })
    }\n  }`;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
${o.bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}
const K = ${o.kernel}u;
const STRIDE = ${o.stride}u;
const PAD = ${o.padding};
const COUT4 = ${paddedChannels(o.dims.cout) / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
${subgroupStart(o.px, blocks)}
  let plane = OH * OW;
  let hw = H * W;
  let hi = i32(H);
  let wi = i32(W);
${
    lines(o.px, (i) =>
      `  let m${i} = min(mb + ${8 * i}u, sizes.m - 1u);
  let b${i} = m${i} / plane;
  let p${i} = m${i} - b${i} * plane;
  let xb${i} = b${i} * CIN * hw;
  let ih${i} = i32((p${i} / OW) * STRIDE) - PAD;
  let iw${i} = i32((p${i} % OW) * STRIDE) - PAD;`)
  }
${lines(o.px, (i) => lines(8, (k) => `  var a${i}_${k} = vec4<f32>(0.0);`))}
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
${
    lines(o.px, (i) =>
      `      let y${i} = ih${i} + i32(kh);
      let x${i} = iw${i} + i32(kw);
      let ok${i} = ${inBounds(o.padding, `y${i}`, `x${i}`)};
      let o${i} = select(0u, xb${i} + u32(y${i}) * W + u32(x${i}), ok${i});`)
  }
      let tap = (kh * K + kw) * CIN;
${
    subgroupInner(
      o.px,
      "for (var ci = 0u; ci < CIN; ci++)",
      "(tap + ci) * COUT4 + cq + lane",
      (i) => `select(0.0, x[o${i} + ci * hw], ok${i})`,
    )
  }
    }
  }
${range(o.px).map(store).join("\n")}
}
`;
}

/**
 * Subgroup variant of {@link conv2dBackwardDataWgsl}: a subgroup owns 32 input channels × 8·`px` input pixels.
 * Bindings: sizes, dx, dy, w (transposed for data, channels padded to 32).
 */
export function conv2dBackwardDataSubgroupWgsl(
  o: ConvShape & { dims: ConvDims; layout: ConvLayout; accumulate: boolean; px: number },
): string {
  const blocks = Math.ceil(o.dims.cin / SUBGROUP_CHANNELS);
  const st = dyStrides(o.layout);
  const source = (i: number) =>
    o.stride === 1
      ? `      let y${i} = ih${i} - i32(kh);
      let x${i} = iw${i} - i32(kw);
      let ok${i} = y${i} >= 0 && y${i} < ohi && x${i} >= 0 && x${i} < owi;`
      : `      let ty${i} = ih${i} - i32(kh);
      let tx${i} = iw${i} - i32(kw);
      let y${i} = ty${i} / STRIDE;
      let x${i} = tx${i} / STRIDE;
      let ok${i} = ty${i} >= 0 && tx${i} >= 0 && ty${i} % STRIDE == 0 && tx${i} % STRIDE == 0 && y${i} < ohi && x${i} < owi;`;
  const store = (i: number) =>
    `  if (mb + ${8 * i}u < sizes.m) {\n${
      lines(SUBGROUP_CHANNELS, (j) => {
        const ci = `cq * 4u + ${j}u`;
        const index = `(b${i} * CIN + ${ci}) * hw + p${i}`;
        const value = `a${i}_${j >> 2}[${j & 3}]`;
        return `    if (${ci} < CIN) { dx[${index}] = ${o.accumulate ? `dx[${index}] + ${value}` : value}; }`;
      })
    }\n  }`;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
const K = ${o.kernel}u;
const STRIDE = ${o.stride};
const PAD = ${o.padding};
const CIN4 = ${paddedChannels(o.dims.cin) / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
${subgroupStart(o.px, blocks)}
  let plane = OH * OW;
  let hw = H * W;
  let ohi = i32(OH);
  let owi = i32(OW);
${
    lines(o.px, (i) =>
      `  let m${i} = min(mb + ${8 * i}u, sizes.m - 1u);
  let b${i} = m${i} / hw;
  let p${i} = m${i} - b${i} * hw;
  let db${i} = b${i} * ${st.image};
  let ih${i} = i32(p${i} / W) + PAD;
  let iw${i} = i32(p${i} % W) + PAD;`)
  }
${lines(o.px, (i) => lines(8, (k) => `  var a${i}_${k} = vec4<f32>(0.0);`))}
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
${
    lines(o.px, (i) =>
      `${source(i)}
      let o${i} = select(0u, db${i} + (u32(y${i}) * OW + u32(x${i})) * ${st.pixel}, ok${i});`)
  }
      let tap = (kh * K + kw) * COUT;
${
    subgroupInner(
      o.px,
      "for (var co = 0u; co < COUT; co++)",
      "(tap + co) * CIN4 + cq + lane",
      (i) => `select(0.0, dy[o${i} + co * ${st.channel}], ok${i})`,
    )
  }
    }
  }
${range(o.px).map(store).join("\n")}
}
`;
}

/** One output per invocation, plain loops: the baseline the benchmark compares against. Bindings as above. */
export function conv2dForwardNaiveWgsl(
  o: ConvShape & { dims: ConvDims; relu: boolean; bias: boolean; layout: ConvLayout },
): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
${o.bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}
const K = ${o.kernel}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.m * COUT) { return; }
  let co = t % COUT;
  let m = t / COUT;
  let plane = OH * OW;
  let b = m / plane;
  let p = m % plane;
  let ih0 = i32((p / OW) * ${o.stride}u) - ${o.padding};
  let iw0 = i32((p % OW) * ${o.stride}u) - ${o.padding};
  var acc = 0.0;
  for (var ci = 0u; ci < CIN; ci++) {
    for (var kh = 0u; kh < K; kh++) {
      for (var kw = 0u; kw < K; kw++) {
        let yy = ih0 + i32(kh);
        let xx = iw0 + i32(kw);
        if (yy >= 0 && yy < i32(H) && xx >= 0 && xx < i32(W)) {
          acc += x[((b * CIN + ci) * H + u32(yy)) * W + u32(xx)] *
            w[((co * CIN + ci) * K + kh) * K + kw];
        }
      }
    }
  }
  ${o.bias ? "acc += bias[co];" : ""}
  ${o.relu ? "acc = max(acc, 0.0);" : ""}
  y[${o.layout === "tokens" ? "m * COUT + co" : "(b * COUT + co) * plane + p"}] = acc;
}
`;
}

/** Index of dy for output pixel q (= oh·OW + ow) of image b, channel `co`, in either layout. */
function dyStrides(layout: ConvLayout): { pixel: string; channel: string; image: string } {
  return layout === "tokens"
    ? { pixel: "COUT", channel: "1u", image: "plane * COUT" }
    : { pixel: "1u", channel: "plane", image: "COUT * plane" };
}

/**
 * Register-blocked conv2d backward-data (the transposed conv as a gather): each invocation owns `ci` input
 * channels × `px` input pixels; for each tap, the output pixel it came from (when the stride divides) is found
 * once, then the loop runs over C_out. Bindings: sizes, dx, dy, w.
 */
export function conv2dBackwardDataWgsl(
  o: ConvShape & { dims: ConvDims; layout: ConvLayout; accumulate: boolean; ci: number; px: number },
): string {
  assertBlock(o.ci, o.px);
  const q4 = o.ci / 4;
  const st = dyStrides(o.layout);
  const source = (i: number) =>
    o.stride === 1
      ? `      let y${i} = ih${i} - i32(kh);
      let x${i} = iw${i} - i32(kw);
      let ok${i} = y${i} >= 0 && y${i} < ohi && x${i} >= 0 && x${i} < owi;`
      : `      let ty${i} = ih${i} - i32(kh);
      let tx${i} = iw${i} - i32(kw);
      let y${i} = ty${i} / STRIDE;
      let x${i} = tx${i} / STRIDE;
      let ok${i} = ty${i} >= 0 && tx${i} >= 0 && ty${i} % STRIDE == 0 && tx${i} % STRIDE == 0 && y${i} < ohi && x${i} < owi;`;
  const store = (i: number) =>
    `  if (mb + ${i}u < sizes.m) {\n${
      lines(o.ci, (j) => {
        const index = `(b${i} * CIN + ci0 + ${j}u) * hw + p${i}`;
        const value = `a${i}_${j >> 2}[${j & 3}]`;
        return `    if (ci0 + ${j}u < CIN) { dx[${index}] = ${
          o.accumulate ? `dx[${index}] + ${value}` : value
        }; }`;
      })
    }\n  }`;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<vec4<f32>>;
const K = ${o.kernel}u;
const KK = ${o.kernel * o.kernel}u;
const STRIDE = ${o.stride};
const PAD = ${o.padding};
const CIN4 = ${paddedChannels(o.dims.cin) / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  let ci0 = (t % BLOCKS) * ${o.ci}u;
  let mb = (t / BLOCKS) * ${o.px}u;
  if (mb >= sizes.m) { return; }
  let plane = OH * OW;
  let hw = H * W;
  let ohi = i32(OH);
  let owi = i32(OW);
${
    lines(o.px, (i) =>
      `  let m${i} = min(mb + ${i}u, sizes.m - 1u);
  let b${i} = m${i} / hw;
  let p${i} = m${i} - b${i} * hw;
  let db${i} = b${i} * ${st.image};
  let ih${i} = i32(p${i} / W) + PAD;
  let iw${i} = i32(p${i} % W) + PAD;`)
  }
  let cq = ci0 / 4u;
${lines(o.px, (i) => lines(q4, (q) => `  var a${i}_${q} = vec4<f32>(0.0);`))}
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
${
    lines(o.px, (i) =>
      `${source(i)}
      let o${i} = select(0u, db${i} + (u32(y${i}) * OW + u32(x${i})) * ${st.pixel}, ok${i});`)
  }
      let tap = (kh * K + kw) * COUT;
      for (var co = 0u; co < COUT; co++) {
        let dyo = co * ${st.channel};
        let wo = (tap + co) * CIN4 + cq;
${lines(q4, (q) => `        let w${q} = w[wo + ${q}u];`)}
${
    lines(o.px, (i) =>
      `        let v${i} = vec4<f32>(select(0.0, dy[o${i} + dyo], ok${i}));
${lines(q4, (q) => `        a${i}_${q} = fma(v${i}, w${q}, a${i}_${q});`)}`)
  }
      }
    }
  }
${range(o.px).map(store).join("\n")}
}
`;
}

/** Backward-data with one input element per invocation. Bindings: sizes, dx, dy, w. */
export function conv2dBackwardDataNaiveWgsl(
  o: ConvShape & { dims: ConvDims; layout: ConvLayout; accumulate: boolean },
): string {
  const st = dyStrides(o.layout);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> w: array<f32>;
const K = ${o.kernel}u;
const STRIDE = ${o.stride};
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  let hw = H * W;
  if (t >= sizes.m * CIN) { return; }
  let plane = OH * OW;
  let p = t % hw;
  let ci = (t / hw) % CIN;
  let b = t / (hw * CIN);
  var acc = 0.0;
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
      let ty = i32(p / W) + ${o.padding} - i32(kh);
      let tx = i32(p % W) + ${o.padding} - i32(kw);
      if (ty >= 0 && tx >= 0 && ty % STRIDE == 0 && tx % STRIDE == 0 &&
          ty / STRIDE < i32(OH) && tx / STRIDE < i32(OW)) {
        let q = u32(ty / STRIDE) * OW + u32(tx / STRIDE);
        for (var co = 0u; co < COUT; co++) {
          acc += dy[b * ${st.image} + q * ${st.pixel} + co * ${st.channel}] * w[((co * CIN + ci) * K + kh) * K + kw];
        }
      }
    }
  }
  dx[t] = ${o.accumulate ? "dx[t] + acc" : "acc"};
}
`;
}

/**
 * Rows of taps per weight-gradient block: all k rows when k·k ≤ 16 (3×3 → 9 taps, 4×4 patches → 16), else the
 * largest divisor of k whose rows hold ≤ 16 taps (7 → one row of 7).
 */
export function tapRowsPerBlock(kernel: number): number {
  if (kernel * kernel <= 16) return kernel;
  for (let d = Math.min(kernel, Math.floor(16 / kernel)); d > 1; d--) if (kernel % d === 0) return d;
  return 1;
}

/**
 * Register-blocked weight gradient dW[co, ci, kh, kw] = Σ_pixels dy[co, pixel]·x[ci, pixel + tap]: each invocation
 * owns `co` output channels × (one input channel, `rows` tap rows × k taps) and walks its share of the B·OH·OW
 * pixels (split `splits` ways when the output alone has too little parallelism; partial sums then go to
 * `scratch[split]` and {@link convSplitReduceWgsl} adds them up). Bindings: sizes, out (dw or scratch), dy, x.
 */
export function conv2dBackwardWeightsWgsl(
  o: ConvShape & { dims: ConvDims; layout: ConvLayout; accumulate: boolean; split: boolean; co: number },
): string {
  assertBlock(o.co, 1);
  // Tokens-layout dy with whole vec4s of channels loads as vec4s: half the load work of the NCHW gather.
  const vecDy = o.layout === "tokens" && o.dims.cout % 4 === 0;
  const q4 = o.co / 4;
  const k = o.kernel;
  const rows = tapRowsPerBlock(k);
  const st = dyStrides(o.layout);
  const taps: [number, number][] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) taps.push([r, c]);
  const acc = (r: number, c: number, q: number) => `a${r}_${c}_${q}`;
  const store = () => {
    const out: string[] = [];
    for (let j = 0; j < o.co; j++) {
      for (const [r, c] of taps) {
        const index = `${
          o.split ? "split * N + " : ""
        }((co0 + ${j}u) * CIN + ci) * KK + (kh0 + ${r}u) * K + ${c}u`;
        const value = `${acc(r, c, j >> 2)}[${j & 3}]`;
        const cond = `co0 + ${j}u < COUT${rows < k ? ` && kh0 + ${r}u < K` : ""}`;
        out.push(
          `  if (${cond}) { out[${index}] = ${
            !o.split && o.accumulate ? `out[${index}] + ${value}` : value
          }; }`,
        );
      }
    }
    return out.join("\n");
  };
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<${vecDy ? "vec4<f32>" : "f32"}>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
const K = ${k}u;
const KK = ${k * k}u;
const ROW_BLOCKS = ${Math.ceil(k / rows)}u;
const STRIDE = ${o.stride}u;
const PAD = ${o.padding};
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  let r = t % BLOCKS;
  let rest = t / BLOCKS;
  let co0 = (rest % CO_BLOCKS) * ${o.co}u;
  let split = rest / CO_BLOCKS;
  if (split >= sizes.splits) { return; }
  let ci = r / ROW_BLOCKS;
  let kh0 = (r % ROW_BLOCKS) * ${rows}u;
  let plane = OH * OW;
  let hw = H * W;
  let hi = i32(H);
  let wi = i32(W);
${vecDy ? "" : lines(o.co, (j) => `  let dc${j} = min(co0 + ${j}u, COUT - 1u) * ${st.channel};`)}
${taps.map(([r, c]) => lines(q4, (q) => `  var ${acc(r, c, q)} = vec4<f32>(0.0);`)).join("\n")}
  let m_start = split * sizes.chunk;
  let m_end = min(sizes.m, m_start + sizes.chunk);
  // Pixel coordinates advance incrementally: no division inside the loop.
  var b = m_start / plane;
  var p = m_start - b * plane;
  var oh = p / OW;
  var ow = p - oh * OW;
  for (var m = m_start; m < m_end; m++) {
${
    vecDy
      ? `    // vec4s past C_out (a partial last block) read the next pixel's values; they are never stored.
    let dyb = m * ${o.dims.cout / 4}u + co0 / 4u;
${lines(q4, (q) => `    let d${q} = dy[dyb + ${q}u];`)}`
      : `    let dyb = b * ${st.image} + p * ${st.pixel};
${
        lines(
          q4,
          (q) => `    let d${q} = vec4<f32>(${range(4).map((j) => `dy[dyb + dc${4 * q + j}]`).join(", ")});`,
        )
      }`
  }
    let xb = (b * CIN + ci) * hw;
    let iy = i32(oh * STRIDE + kh0) - PAD;
    let ix = i32(ow * STRIDE) - PAD;
${lines(k, (c) => `    let cok${c} = ${o.padding === 0 ? "true" : `ix + ${c} >= 0 && ix + ${c} < wi`};`)}
${
    lines(rows, (r) =>
      `    let rok${r} = ${o.padding === 0 ? "true" : `iy + ${r} >= 0 && iy + ${r} < hi`};
    let ro${r} = xb + u32(iy + ${r}) * W;
${
        lines(k, (c) =>
          `    let v${r}_${c} = vec4<f32>(select(0.0, x[select(0u, ro${r} + u32(ix + ${c}), rok${r} && cok${c})], rok${r} && cok${c}));
${
            lines(q4, (q) => `    ${acc(r, c, q)} = fma(v${r}_${c}, d${q}, ${acc(r, c, q)});`)
          }`)
      }`)
  }
    ow++;
    p++;
    if (ow == OW) {
      ow = 0u;
      oh++;
      if (oh == OH) {
        oh = 0u;
        p = 0u;
        b++;
      }
    }
  }
${store()}
}
`;
}

/**
 * Subgroup variant of {@link conv2dBackwardWeightsWgsl} (Vulkan, subgroup width 8): the GEMM
 * dW[co, (ci, tap)] = Σ_pixels dy[pixel, co]·x[ci, pixel + tap] with a subgroup owning 32 output channels × 8
 * (ci, tap-row) blocks. Per pixel each lane loads one vec4 of dy (4 of the 32 channels, tokens layout) and
 * `subgroupBroadcast` hands all 8 to every lane; the lane then gathers its `rows`·k input values, so it does
 * 32·rows·k FMAs per vec4 load + rows·k gathers (the blocked kernel: 16·9 per 4 vec4 loads + 9 gathers).
 * `dims.blocks` counts (ci, tap-row) blocks, `dims.coBlocks` 32-channel blocks. Bindings: sizes, out (dw or
 * scratch), dy (tokens, C_out = 4·n), x.
 */
export function conv2dBackwardWeightsSubgroupWgsl(
  o: ConvShape & { dims: ConvDims; accumulate: boolean; split: boolean; rows: number },
): string {
  if (o.dims.cout % 4 !== 0) {
    throw new RangeError(`subgroup weight gradient: C_out ${o.dims.cout} is not 4·n`);
  }
  const k = o.kernel;
  const rows = o.rows;
  const laneGroups = Math.ceil(o.dims.blocks / 8);
  const taps: [number, number][] = [];
  for (let r = 0; r < rows; r++) for (let c = 0; c < k; c++) taps.push([r, c]);
  const acc = (r: number, c: number, q: number) => `a${r}_${c}_${q}`;
  const store = () => {
    const out: string[] = [];
    for (let j = 0; j < SUBGROUP_CHANNELS; j++) {
      for (const [r, c] of taps) {
        const index = `${
          o.split ? "split * N + " : ""
        }((cq * 4u + ${j}u) * CIN + ci) * KK + (kh0 + ${r}u) * K + ${c}u`;
        const value = `${acc(r, c, j >> 2)}[${j & 3}]`;
        const cond = `cq * 4u + ${j}u < COUT${rows < k ? ` && kh0 + ${r}u < K` : ""}`;
        out.push(
          `    if (${cond}) { out[${index}] = ${
            !o.split && o.accumulate ? `out[${index}] + ${value}` : value
          }; }`,
        );
      }
    }
    return out.join("\n");
  };
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
const K = ${k}u;
const KK = ${k * k}u;
const ROW_BLOCKS = ${Math.ceil(k / rows)}u;
const STRIDE = ${o.stride}u;
const PAD = ${o.padding};
const COUT4 = ${o.dims.cout / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  let sg = linear_index(gid, nwg) / 8u;
  let rest = sg / ${laneGroups}u;
  let cq = (rest % CO_BLOCKS) * 8u;
  let split = rest / CO_BLOCKS;
  // Uniform across the subgroup, so whole subgroups leave together (subgroupBroadcast needs every lane).
  if (split >= sizes.splits) { return; }
  // Lanes past the last (ci, tap-row) block compute on a clamped one and store nothing.
  let rb = (sg % ${laneGroups}u) * 8u + lane;
  let r = min(rb, BLOCKS - 1u);
  let ci = r / ROW_BLOCKS;
  let kh0 = (r % ROW_BLOCKS) * ${rows}u;
  // dy vec4s past C_out read as zero (their sums are never stored).
  let dq = min(cq + lane, COUT4 - 1u);
  let dok = cq + lane < COUT4;
  let plane = OH * OW;
  let hw = H * W;
  let hi = i32(H);
  let wi = i32(W);
${taps.map(([r, c]) => lines(8, (q) => `  var ${acc(r, c, q)} = vec4<f32>(0.0);`)).join("\n")}
  let m_start = split * sizes.chunk;
  let m_end = min(sizes.m, m_start + sizes.chunk);
  // Pixel coordinates advance incrementally: no division inside the loop.
  var b = m_start / plane;
  var p = m_start - b * plane;
  var oh = p / OW;
  var ow = p - oh * OW;
  for (var m = m_start; m < m_end; m++) {
    let mine = select(vec4<f32>(0.0), dy[m * COUT4 + dq], dok);
    let xb = (b * CIN + ci) * hw;
    let iy = i32(oh * STRIDE + kh0) - PAD;
    let ix = i32(ow * STRIDE) - PAD;
${lines(k, (c) => `    let cok${c} = ${o.padding === 0 ? "true" : `ix + ${c} >= 0 && ix + ${c} < wi`};`)}
${
    lines(rows, (r) =>
      `    let rok${r} = ${o.padding === 0 ? "true" : `iy + ${r} >= 0 && iy + ${r} < hi`};
    let ro${r} = xb + u32(iy + ${r}) * W;
${
        lines(k, (c) =>
          `    let v${r}_${c} = vec4<f32>(select(0.0, x[select(0u, ro${r} + u32(ix + ${c}), rok${r} && cok${c})], rok${r} && cok${c}));`)
      }`)
  }
${
    lines(8, (q) =>
      `    let d${q} = subgroupBroadcast(mine, ${q}u);
${taps.map(([r, c]) => `    ${acc(r, c, q)} = fma(v${r}_${c}, d${q}, ${acc(r, c, q)});`).join("\n")}`)
  }
    ow++;
    p++;
    if (ow == OW) {
      ow = 0u;
      oh++;
      if (oh == OH) {
        oh = 0u;
        p = 0u;
        b++;
      }
    }
  }
  if (rb < BLOCKS) {
${store()}
  }
}
`;
}

/**
 * Implicit-GEMM subgroup weight gradient (Vulkan, subgroup width 8): dW[co, (tap, ci)] = Σ_pixels dy[pixel, co]·
 * x[pixel ⊕ tap, ci] as a GEMM over the pixels, with dy in channels-last vec4s ([pixels, ⌈C_out/4⌉], the tokens
 * layout when C_out = 4·n) and x channels-last ({@link convChannelsLastWgsl}). A subgroup owns 32·`dq` output
 * channels × 8·`nc` columns, a column being one (tap, 4 input channels) pair, for one split of the pixels. Per
 * pixel each lane loads `dq` dy vec4s (shared by `subgroupBroadcast`) and `nc` x vec4s (its own columns, one
 * bounds test each) and does 32·dq·nc vec4 FMAs: 2 loads per 32 FMAs at dq = nc = 1 (the older subgroup kernel:
 * 1 vec4 + 9 scalar gathers per 72). Accumulators are vec4s along input channels; `unroll` pixels per loop
 * iteration give each accumulator a chain of that many FMAs in a row (llvmpipe spills accumulators; see
 * {@link conv2dGemmSubgroupWgsl}). Deterministic: splits write `scratch[split]`, {@link convSplitReduceWgsl}
 * folds them. Bindings: sizes (m = output pixels, splits, chunk), out (dw or scratch), dy, x (both channels-last
 * vec4s).
 */
export function conv2dBackwardWeightsGemmSubgroupWgsl(
  o: ConvShape & {
    dims: ConvDims;
    accumulate: boolean;
    split: boolean;
    dq: number;
    nc: number;
    unroll: number;
  },
): string {
  for (const [name, v] of [["dq", o.dq], ["nc", o.nc], ["unroll", o.unroll]] as const) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`conv weight gemm: ${name} ${v} must be ≥ 1`);
  }
  const d = o.dims, k = o.kernel, kk = k * k;
  const cout4 = Math.ceil(d.cout / 4), ci4 = Math.ceil(d.cin / 4);
  const ncol = kk * ci4;
  const coBlocks = Math.ceil(cout4 / (8 * o.dq)), colBlocks = Math.ceil(ncol / (8 * o.nc));
  const u = o.unroll;
  const pixel = (p: number) => {
    const cols = lines(o.nc, (c) =>
      `      let y${p}_${c} = iy${p} + kh${c};
      let x${p}_${c} = ix${p} + kw${c};
      let ok${p}_${c} = ${
        o.padding === 0
          ? "true"
          : `y${p}_${c} >= 0 && y${p}_${c} < i32(H) && x${p}_${c} >= 0 && x${p}_${c} < i32(W)`
      };
      let xv${p}_${c} = select(vec4<f32>(0.0), X[select(0u, xb${p} + (u32(y${p}_${c}) * W + u32(x${p}_${c})) * CI4 + ci4_${c}, ok${p}_${c})], ok${p}_${c});`);
    return `      let m${p} = m_start + i + ${p}u;
      let mc${p} = min(m${p}, sizes.m - 1u);
      let b${p} = mc${p} / PLANE;
      let q${p} = mc${p} - b${p} * PLANE;
      let oh${p} = q${p} / OW;
      let iy${p} = i32(oh${p} * STRIDE) - PAD;
      let ix${p} = i32((q${p} - oh${p} * OW) * STRIDE) - PAD;
      let xb${p} = b${p} * ${d.h * d.w * ci4}u;
      // Pixels past this split's end count zero (dy zero); the loop bound stays uniform.
${
      lines(o.dq, (q) =>
        `      let dv${p}_${q} = select(vec4<f32>(0.0), DY[mc${p} * COUT4 + dqi${q}], m${p} < m_end);`)
    }
${cols}`;
  };
  // Accumulator (q, k, e, c): output channel (cob·8dq + 8q + k)·4 + e, column c of the lane. All `unroll`
  // updates of one accumulator in a row; the dy broadcasts of one (q, k) are made just before their use.
  const acc = (q: number, kk8: number, e: number, c: number) => `a${q}_${kk8}_${e}_${c}`;
  const inner: string[] = [];
  for (let q = 0; q < o.dq; q++) {
    for (let b = 0; b < 8; b++) {
      for (let p = 0; p < u; p++) inner.push(`let s${p}_${q}_${b} = subgroupBroadcast(dv${p}_${q}, ${b}u);`);
      for (let e = 0; e < 4; e++) {
        for (let c = 0; c < o.nc; c++) {
          let chain = acc(q, b, e, c);
          for (let p = 0; p < u; p++) chain = `fma(vec4<f32>(s${p}_${q}_${b}[${e}]), xv${p}_${c}, ${chain})`;
          inner.push(`${acc(q, b, e, c)} = ${chain};`);
        }
      }
    }
  }
  const decl: string[] = [];
  for (let q = 0; q < o.dq; q++) {
    for (let b = 0; b < 8; b++) {
      for (let e = 0; e < 4; e++) {
        for (let c = 0; c < o.nc; c++) decl.push(`  var ${acc(q, b, e, c)} = vec4<f32>(0.0);`);
      }
    }
  }
  const store: string[] = [];
  for (let q = 0; q < o.dq; q++) {
    for (let b = 0; b < 8; b++) {
      for (let e = 0; e < 4; e++) {
        const co = `co0 + ${(q * 8 + b) * 4 + e}u`;
        const body: string[] = [];
        for (let c = 0; c < o.nc; c++) {
          for (let f = 0; f < 4; f++) {
            const index = `${o.split ? "split * N + " : ""}(${co}) * ${d.cin * kk}u + base${c} + ${f * kk}u`;
            const value = `${acc(q, b, e, c)}[${f}]`;
            body.push(
              `      if (cok${c} && ci4_${c} * 4u + ${f}u < CIN) { out[${index}] = ${
                !o.split && o.accumulate ? `out[${index}] + ${value}` : value
              }; }`,
            );
          }
        }
        store.push(`    if (${co} < COUT) {\n${body.join("\n")}\n    }`);
      }
    }
  }
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(8)}
${CONV_SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
const K = ${k}u;
const STRIDE = ${o.stride}u;
const PAD = ${o.padding};
const H = ${d.h}u;
const W = ${d.w}u;
const OW = ${d.ow}u;
const PLANE = ${d.oh * d.ow}u;
const CIN = ${d.cin}u;
const CI4 = ${ci4}u;
const COUT = ${d.cout}u;
const COUT4 = ${cout4}u;
const NCOL = ${ncol}u;
const N = ${d.cout * d.cin * kk}u;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // No early return (WGSL uniformity: subgroupBroadcast follows): subgroups past the last split (grid padding)
  // compute on a clamped one and store nothing.
  let sg = linear_index(gid, nwg) / 8u;
  let split = sg / ${coBlocks * colBlocks}u;
  let live = split < sizes.splits;
  let sp = min(split, sizes.splits - 1u);
  let rest = sg % ${coBlocks * colBlocks}u;
  // Neighbouring subgroups share the output-channel block (and hence their dy loads).
  let cob = rest / ${colBlocks}u;
  let lb = rest % ${colBlocks}u;
  let co0 = cob * ${32 * o.dq}u;
  // dy vec4s past C_out are clamped: their channels are never stored.
${lines(o.dq, (q) => `  let dqi${q} = min(cob * ${8 * o.dq}u + ${8 * q}u + lane, COUT4 - 1u);`)}
  // Column c of this lane: (tap, input-channel vec4), clamped past the last one (then not stored).
${
    lines(o.nc, (c) =>
      `  let j${c} = lb * ${8 * o.nc}u + ${8 * c}u + lane;
  let cok${c} = j${c} < NCOL && live;
  let jc${c} = min(j${c}, NCOL - 1u);
  let tap${c} = jc${c} / CI4;
  let ci4_${c} = jc${c} - tap${c} * CI4;
  let kh${c} = i32(tap${c} / K);
  let kw${c} = i32(tap${c} % K);
  let base${c} = ci4_${c} * ${4 * kk}u + tap${c};`)
  }
  let m_start = sp * sizes.chunk;
  let m_end = min(sizes.m, m_start + sizes.chunk);
${decl.join("\n")}
  for (var i = 0u; i < sizes.chunk; i += ${u}u) {
    {
${range(u).map(pixel).join("\n")}
      ${inner.join("\n      ")}
    }
  }
  {
${store.join("\n")}
  }
}
`;
}

/**
 * Stride-1 form of {@link conv2dBackwardWeightsGemmSubgroupWgsl} that loads each input once for all k taps of a
 * row: a lane owns one (tap row kh, 4 input channels) pair and all k taps kw of it, and walks whole output rows
 * keeping a sliding window of k input vec4s, so per pixel it loads one x vec4 (and `dq` dy vec4s, shared by
 * `subgroupBroadcast`) for 32·dq·k vec4 FMAs. The reduction is split by output rows (B·OH of them):
 * `sizes.m` counts rows and `sizes.chunk` rows per split. Bindings as the general kernel.
 */
export function conv2dBackwardWeightsRowGemmSubgroupWgsl(
  o: ConvShape & { dims: ConvDims; accumulate: boolean; split: boolean; dq: number },
): string {
  if (o.stride !== 1) throw new RangeError(`conv weight row gemm: stride ${o.stride} is not 1`);
  if (!Number.isInteger(o.dq) || o.dq < 1) {
    throw new RangeError(`conv weight row gemm: dq ${o.dq} must be ≥ 1`);
  }
  const d = o.dims, k = o.kernel, kk = k * k;
  const cout4 = Math.ceil(d.cout / 4), ci4 = Math.ceil(d.cin / 4);
  const ncol = k * ci4;
  const coBlocks = Math.ceil(cout4 / (8 * o.dq)), colBlocks = Math.ceil(ncol / 8);
  const acc = (q: number, b: number, e: number, t: number) => `a${q}_${b}_${e}_${t}`;
  const decl: string[] = [], inner: string[] = [], store: string[] = [];
  for (let q = 0; q < o.dq; q++) {
    for (let b = 0; b < 8; b++) {
      inner.push(`let s${q}_${b} = subgroupBroadcast(dv${q}, ${b}u);`);
      for (let e = 0; e < 4; e++) {
        for (let t = 0; t < k; t++) {
          decl.push(`  var ${acc(q, b, e, t)} = vec4<f32>(0.0);`);
          inner.push(`${acc(q, b, e, t)} = fma(vec4<f32>(s${q}_${b}[${e}]), v${t}, ${acc(q, b, e, t)});`);
        }
        const co = `co0 + ${(q * 8 + b) * 4 + e}u`;
        const body: string[] = [];
        for (let t = 0; t < k; t++) {
          for (let f = 0; f < 4; f++) {
            const index = `${o.split ? "split * N + " : ""}(${co}) * ${d.cin * kk}u + base + ${f * kk + t}u`;
            const value = `${acc(q, b, e, t)}[${f}]`;
            body.push(
              `      if (ci4 * 4u + ${f}u < CIN) { out[${index}] = ${
                !o.split && o.accumulate ? `out[${index}] + ${value}` : value
              }; }`,
            );
          }
        }
        store.push(`    if (${co} < COUT) {\n${body.join("\n")}\n    }`);
      }
    }
  }
  // Input column ix of the row, zero outside the image (or past this split's rows).
  const load = (ix: string) =>
    `select(vec4<f32>(0.0), X[select(0u, xrow + u32(${ix}) * CI4, ok && ${ix} >= 0 && ${ix} < i32(W))], ok && ${ix} >= 0 && ${ix} < i32(W))`;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(8)}
${CONV_SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> DY: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> X: array<vec4<f32>>;
const K = ${k}u;
const PAD = ${o.padding};
const H = ${d.h}u;
const W = ${d.w}u;
const OH = ${d.oh}u;
const OW = ${d.ow}u;
const CIN = ${d.cin}u;
const CI4 = ${ci4}u;
const COUT = ${d.cout}u;
const COUT4 = ${cout4}u;
const NCOL = ${ncol}u;
const N = ${d.cout * d.cin * kk}u;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // No early return (WGSL uniformity: subgroupBroadcast follows): subgroups past the last split (grid padding)
  // compute on a clamped one and store nothing.
  let sg = linear_index(gid, nwg) / 8u;
  let split = sg / ${coBlocks * colBlocks}u;
  let live = split < sizes.splits;
  let sp = min(split, sizes.splits - 1u);
  let rest = sg % ${coBlocks * colBlocks}u;
  let cob = rest / ${colBlocks}u;
  let lb = rest % ${colBlocks}u;
  let co0 = cob * ${32 * o.dq}u;
  // dy vec4s past C_out are clamped: their channels are never stored.
${lines(o.dq, (q) => `  let dqi${q} = min(cob * ${8 * o.dq}u + ${8 * q}u + lane, COUT4 - 1u);`)}
  // This lane's (tap row, input-channel vec4), clamped past the last one (then not stored).
  let j = lb * 8u + lane;
  let cok = j < NCOL && live;
  let jc = min(j, NCOL - 1u);
  let kh = jc / CI4;
  let ci4 = jc - kh * CI4;
  let base = ci4 * ${4 * kk}u + kh * K;
  let r_start = sp * sizes.chunk;
  let r_end = min(sizes.m, r_start + sizes.chunk);
${decl.join("\n")}
  for (var i = 0u; i < sizes.chunk; i++) {
    // Output row r = (image, oh); rows past this split's end read zeros (the loop bound stays uniform).
    let r = min(r_start + i, sizes.m - 1u);
    let img = r / OH;
    let iy = i32(r - img * OH) + i32(kh) - PAD;
    let ok = r_start + i < r_end && iy >= 0 && iy < i32(H);
    let xrow = (img * H + u32(select(0, iy, ok))) * W * CI4 + ci4;
    let dyrow = r * OW * COUT4;
    // Sliding window: w1 … w(k−1) hold input columns ow − PAD + 1 … of the previous pixel.
${
    lines(k - 1, (t) => {
      // Columns left of the image (padding) are known zeros; the others exist when W ≥ k − 1.
      const col = t - o.padding;
      const v = col < 0 || col >= d.w
        ? "vec4<f32>(0.0)"
        : `select(vec4<f32>(0.0), X[xrow + ${col}u * CI4], ok)`;
      return `    var w${t + 1} = ${v};`;
    })
  }
    for (var ow = 0u; ow < OW; ow++) {
${lines(k - 1, (t) => `      let v${t} = w${t + 1};`)}
      let ix = i32(ow) + ${k - 1} - PAD;
      let v${k - 1} = ${load("ix")};
${lines(k - 1, (t) => `      w${t + 1} = v${t + 1};`)}
${
    lines(o.dq, (q) =>
      `      let dv${q} = select(vec4<f32>(0.0), DY[dyrow + ow * COUT4 + dqi${q}], r_start + i < r_end);`)
  }
      ${inner.join("\n      ")}
    }
  }
  if (cok) {
${store.join("\n")}
  }
}
`;
}

/** out[i] (+)= Σ_s scratch[s·n + i]: folds the weight-gradient partial sums. Bindings: sizes, out, scratch. */
export function convSplitReduceWgsl(o: { dims: ConvDims; kernel: number; accumulate: boolean }): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> scratch: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= N) { return; }
  var acc = 0.0;
  for (var s = 0u; s < sizes.splits; s++) { acc += scratch[s * N + i]; }
  out[i] = ${o.accumulate ? "out[i] + acc" : "acc"};
}
`;
}

/** Weight gradient with one weight per invocation looping over every pixel. Bindings: sizes, dw, dy, x. */
export function conv2dBackwardWeightsNaiveWgsl(
  o: ConvShape & { dims: ConvDims; layout: ConvLayout; accumulate: boolean },
): string {
  const st = dyStrides(o.layout);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, o.kernel)}
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
const K = ${o.kernel}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= N) { return; }
  let kw = t % K;
  let kh = (t / K) % K;
  let ci = (t / (K * K)) % CIN;
  let co = t / (K * K * CIN);
  let plane = OH * OW;
  var acc = 0.0;
  for (var m = 0u; m < sizes.m; m++) {
    let b = m / plane;
    let p = m % plane;
    let yy = i32((p / OW) * ${o.stride}u + kh) - ${o.padding};
    let xx = i32((p % OW) * ${o.stride}u + kw) - ${o.padding};
    if (yy >= 0 && yy < i32(H) && xx >= 0 && xx < i32(W)) {
      acc += dy[b * ${st.image} + p * ${st.pixel} + co * ${st.channel}] *
        x[((b * CIN + ci) * H + u32(yy)) * W + u32(xx)];
    }
  }
  dw[t] = ${o.accumulate ? "dw[t] + acc" : "acc"};
}
`;
}

/** db[co] (+)= Σ over batch and pixels of dy: one channel per invocation. Bindings: sizes, db, dy. */
export function conv2dBackwardBiasWgsl(
  o: { dims: ConvDims; layout: ConvLayout; accumulate: boolean },
): string {
  const st = dyStrides(o.layout);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
${convConsts(o.dims, 1)}
@group(0) @binding(1) var<storage, read_write> db: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let co = linear_index(gid, nwg);
  if (co >= COUT) { return; }
  let plane = OH * OW;
  let batch = sizes.m / plane;
  var acc = 0.0;
  for (var b = 0u; b < batch; b++) {
    let base = b * ${st.image} + co * ${st.channel};
    for (var p = 0u; p < plane; p++) { acc += dy[base + p * ${st.pixel}]; }
  }
  db[co] = ${o.accumulate ? "db[co] + acc" : "acc"};
}
`;
}

const POOL_SIZES = /* wgsl */ `
struct PoolSizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: PoolSizes;
`;

/** Feature-map geometry baked into the pool and layout kernels (see {@link ConvDims} for why). */
export interface PoolDims {
  c: number;
  h: number;
  w: number;
  oh: number;
  ow: number;
}

function poolConsts(d: PoolDims): string {
  return `const C = ${d.c}u;\nconst H = ${d.h}u;\nconst W = ${d.w}u;\nconst OH = ${d.oh}u;\nconst OW = ${d.ow}u;`;
}

/**
 * Max-pool forward, one output per invocation; padding counts as -inf, ties keep the first maximum in scan order
 * (PyTorch's rule). Saves the argmax as the position ih·W + iw in the input plane. Bindings: sizes, y, argmax, x.
 */
export function maxPool2dForwardWgsl(o: ConvShape & { dims: PoolDims; layout: ConvLayout }): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
${poolConsts(o.dims)}
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<i32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.n) { return; }
  let plane = OH * OW;
${
    o.layout === "tokens"
      ? `  let c = t % C;
  let p = (t / C) % plane;
  let b = t / (C * plane);`
      : `  let p = t % plane;
  let c = (t / plane) % C;
  let b = t / (plane * C);`
  }
  let base = (b * C + c) * H * W;
  let y0 = i32((p / OW) * ${o.stride}u) - ${o.padding};
  let x0 = i32((p % OW) * ${o.stride}u) - ${o.padding};
  var best = -3.402823466e38;
  var at = -1;
  // Taps unrolled with selects: no divergent loops or branches (costly on llvmpipe's SIMD lanes).
${
    range(o.kernel * o.kernel).map((tap) => {
      const kh = Math.floor(tap / o.kernel), kw = tap % o.kernel;
      return `  {
    let yy = y0 + ${kh};
    let xx = x0 + ${kw};
    let ok = yy >= 0 && yy < i32(H) && xx >= 0 && xx < i32(W);
    let pos = yy * i32(W) + xx;
    let v = x[base + u32(select(0, pos, ok))];
    let take = ok && (v > best || at < 0);
    best = select(best, v, take);
    at = select(at, pos, take);
  }`;
    }).join("\n")
  }
  y[t] = best;
  argmax[t] = at;
}
`;
}

/**
 * Max-pool backward as a gather: each input element sums dy of the (≤ ⌈k/s⌉²) windows whose argmax it is, so the
 * result is deterministic without atomics; with `relu`, multiplies by [reluOutput > 0] (the pool's input is the
 * ReLU output), fusing ReLU's backward. Bindings: sizes, dx, dy, argmax[, relu output].
 */
export function maxPool2dBackwardWgsl(
  o: ConvShape & { dims: PoolDims; layout: ConvLayout; relu: boolean },
): string {
  const dyIndex = o.layout === "tokens" ? "(b * plane + q) * C + c" : "(b * C + c) * plane + q";
  const cand = Math.ceil(o.kernel / o.stride);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
${poolConsts(o.dims)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> argmax: array<i32>;
${o.relu ? "@group(0) @binding(4) var<storage, read> relu_out: array<f32>;" : ""}
const K = ${o.kernel};
const STRIDE = ${o.stride};
const PAD = ${o.padding};
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.n) { return; }
  let hw = H * W;
  let plane = OH * OW;
  let pos = i32(t % hw);
  let c = (t / hw) % C;
  let b = t / (hw * C);
  let iy = pos / i32(W) + PAD;
  let ix = pos % i32(W) + PAD;
  // The ⌈k/s⌉² windows that can hold this element, unrolled; oy·s ≤ iy < oy·s + k (iy includes the padding).
  let oy = iy / STRIDE;
  let ox = ix / STRIDE;
  var acc = 0.0;
${
    range(cand * cand).map((c) => {
      const cy = Math.floor(c / cand), cx = c % cand;
      return `  {
    let wy = oy - ${cy};
    let wx = ox - ${cx};
    let ok = wy >= 0 && wy < i32(OH) && iy - wy * STRIDE < K && wx >= 0 && wx < i32(OW) && ix - wx * STRIDE < K;
    let q = u32(select(0, wy, ok)) * OW + u32(select(0, wx, ok));
    let i = ${dyIndex};
    acc += select(0.0, dy[i], ok && argmax[i] == pos);
  }`;
    }).join("\n")
  }
  ${o.relu ? "acc = select(0.0, acc, relu_out[t] > 0.0);" : ""}
  dx[t] = acc;
}
`;
}

/**
 * Outputs (forward) or stride cells (backward) per invocation along a row of the blocked pool kernels: the largest
 * divisor of `n` up to 8 (no idle lanes), or 4 when `n` has none from 3 up.
 */
export function poolRowBlock(n: number): number {
  for (let d = Math.min(8, n); d >= 3; d--) if (n % d === 0) return d;
  return Math.min(4, n);
}

/** Index of a pool output (q = oy·OW + ox) of image b, channel c, in either layout. */
function poolOutIndex(layout: ConvLayout, q: string): string {
  return layout === "tokens" ? `(b * OH * OW + ${q}) * C + c` : `(b * C + c) * OH * OW + ${q}`;
}

/**
 * Blocked max-pool forward: each invocation computes `r` consecutive outputs of one row, loading the
 * k × ((r − 1)·s + k) input patch once (adjacent windows share columns) with one bounds test per row and column;
 * same results as {@link maxPool2dForwardWgsl} (first maximum in scan order wins). With `vec` 2 or 4 (W a multiple
 * of it, r·s too) the patch loads as aligned vectors (llvmpipe gathers per component, so a vec4 load per lane
 * costs about what one scalar gather does) and each column's vector and component are known statically.
 * Bindings: sizes (n = invocations), y, argmax, x.
 */
export function maxPool2dForwardBlockedWgsl(
  o: ConvShape & { dims: PoolDims; layout: ConvLayout; r: number; vec: 1 | 2 | 4 },
): string {
  const k = o.kernel, s = o.stride, r = o.r, vec = o.vec, pad = o.padding;
  if (o.dims.w % vec !== 0 || (r * s) % vec !== 0) {
    throw new RangeError(`pool forward: vec${vec} needs W, r·s = ${vec}·n`);
  }
  const cols = (r - 1) * s + k;
  const xBlocks = Math.ceil(o.dims.ow / r);
  // Column c of the patch is input column ox0·s − pad + c: vector ⌊(c − pad)/vec⌋ after ox0·s/vec, component rest.
  const vecOf = (c: number) => Math.floor((c - pad) / vec);
  const vecs = range(vecOf(cols - 1) - vecOf(0) + 1).map((i) => i + vecOf(0));
  const vname = (j: number) => (j < 0 ? `m${-j}` : `${j}`);
  const patch = vec === 1
    ? `${lines(cols, (j) => `  let cok${j} = x0 + ${j} >= 0 && x0 + ${j} < i32(W);`)}
${
      lines(k, (kh) =>
        lines(
          cols,
          (j) =>
            `  let v${kh}_${j} = x[base + u32(select(0, (y0 + ${kh}) * i32(W) + x0 + ${j}, rok${kh} && cok${j}))];`,
        ))
    }`
    : `  let vx0 = i32(ox0 * ${s}u / ${vec}u);
${
      lines(vecs.length, (i) =>
        `  let vok${vname(vecs[i])} = vx0 + ${vecs[i]} >= 0 && vx0 + ${vecs[i]} < ${o.dims.w / vec};`)
    }
${
      lines(k, (kh) =>
        vecs.map((j) =>
          `  let u${kh}_${
            vname(j)
          } = x[(base + u32(select(0, (y0 + ${kh}) * i32(W), rok${kh}))) / ${vec}u + u32(select(0, vx0 + ${j}, vok${
            vname(j)
          }))];`
        ).join("\n"))
    }
${lines(cols, (c) => `  let cok${c} = vok${vname(vecOf(c))};`)}
${
      lines(k, (kh) =>
        lines(cols, (c) =>
          `  let v${kh}_${c} = u${kh}_${vname(vecOf(c))}[${c - pad - vec * vecOf(c)}];`))
    }`;
  const body = range(r).map((i) => {
    const scan = range(k * k).map((tap) => {
      const kh = Math.floor(tap / k), kw = tap % k;
      const v = `v${kh}_${i * s + kw}`, ok = `rok${kh} && cok${i * s + kw}`;
      return `    {
      let take = ${ok} && (${v} > best || at < 0);
      best = select(best, ${v}, take);
      at = select(at, ${`(y0 + ${kh}) * i32(W) + x0 + ${i * s + kw}`}, take);
    }`;
    }).join("\n");
    return `  if (ox0 + ${i}u < OW) {
    var best = -3.402823466e38;
    var at = -1;
${scan}
    let q = oy * OW + ox0 + ${i}u;
    y[${poolOutIndex(o.layout, "q")}] = best;
    argmax[${poolOutIndex(o.layout, "q")}] = at;
  }`;
  }).join("\n");
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
${poolConsts(o.dims)}
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<i32>;
@group(0) @binding(3) var<storage, read> x: array<${vec === 1 ? "f32" : `vec${vec}<f32>`}>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.n) { return; }
  // All divisions by constants (vectorised); consecutive invocations walk a row, then rows, then planes.
  let ox0 = (t % ${xBlocks}u) * ${r}u;
  let rest = t / ${xBlocks}u;
  let oy = rest % OH;
  let bc = rest / OH;
  let c = bc % C;
  let b = bc / C;
  let base = bc * H * W;
  let y0 = i32(oy * ${s}u) - ${o.padding};
  let x0 = i32(ox0 * ${s}u) - ${o.padding};
${lines(k, (kh) => `  let rok${kh} = y0 + ${kh} >= 0 && y0 + ${kh} < i32(H);`)}
${patch}
${body}
}
`;
}

/**
 * Blocked max-pool backward: each invocation owns `r` consecutive stride cells (s × s input elements each) of one
 * row; the cells' ⌈k/s⌉ × (r + ⌈k/s⌉ − 1) candidate windows' dy and argmax are loaded once, and each element
 * compares only against the windows that can contain it (known from its offset in the cell). Deterministic, no
 * atomics; `relu` as in {@link maxPool2dBackwardWgsl}. Bindings: sizes (n = invocations), dx, dy, argmax[, relu
 * output].
 */
export function maxPool2dBackwardBlockedWgsl(
  o: ConvShape & { dims: PoolDims; layout: ConvLayout; relu: boolean; r: number },
): string {
  const k = o.kernel, s = o.stride, r = o.r, pad = o.padding;
  const cand = Math.ceil(k / s);
  const wcols = r + cand - 1;
  const cellsY = Math.ceil((o.dims.h + pad) / s), cellsX = Math.ceil((o.dims.w + pad) / s);
  const xBlocks = Math.ceil(cellsX / r);
  const loads = range(cand).map((jy) =>
    lines(wcols, (i) =>
      `  {
    let wy = cy - ${jy};
    let wx = i32(cx0) + ${i - (cand - 1)};
    let ok = wy >= 0 && wy < i32(OH) && wx >= 0 && wx < i32(OW);
    let q = u32(select(0, wy * i32(OW) + wx, ok));
    let i = ${poolOutIndex(o.layout, "q")};
    d${jy}_${i} = dy[i];
    am${jy}_${i} = select(-1, argmax[i], ok);
  }`)
  ).join("\n");
  const decl = range(cand).map((jy) =>
    lines(wcols, (i) => `  var d${jy}_${i} = 0.0;\n  var am${jy}_${i} = -1;`)
  ).join("\n");
  const outputs: string[] = [];
  for (let cell = 0; cell < r; cell++) {
    for (let u = 0; u < s; u++) {
      for (let v = 0; v < s; v++) {
        const terms: string[] = [];
        for (let jy = 0; jy < cand; jy++) {
          for (let jx = 0; jx < cand; jx++) {
            // Window (cy − jy, cx − jx) contains offset (u, v) of the cell only when u + jy·s < k (and for x).
            if (u + jy * s >= k || v + jx * s >= k) continue;
            const i = cell - jx + cand - 1;
            terms.push(`select(0.0, d${jy}_${i}, am${jy}_${i} == pos)`);
          }
        }
        outputs.push(`  {
    let iy = cy * ${s} + ${u - pad};
    let ix = i32(cx0) * ${s} + ${cell * s + v - pad};
    if (iy >= 0 && iy < i32(H) && ix >= 0 && ix < i32(W)) {
      let pos = iy * i32(W) + ix;
      let e = img + u32(pos);
      ${terms.length ? `var acc = ${terms.join(" + ")};` : "var acc = 0.0;"}
      ${o.relu ? "acc = select(0.0, acc, relu_out[e] > 0.0);" : ""}
      dx[e] = acc;
    }
  }`);
      }
    }
  }
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
${poolConsts(o.dims)}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> argmax: array<i32>;
${o.relu ? "@group(0) @binding(4) var<storage, read> relu_out: array<f32>;" : ""}
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.n) { return; }
  // Cell (cy, cx) holds padded input rows cy·s … cy·s + s − 1; windows cy − ⌈k/s⌉ + 1 … cy can cover it.
  let cx0 = (t % ${xBlocks}u) * ${r}u;
  let rest = t / ${xBlocks}u;
  let cy = i32(rest % ${cellsY}u);
  let bc = rest / ${cellsY}u;
  let c = bc % C;
  let b = bc / C;
  let img = bc * H * W;
${decl}
${loads}
${outputs.join("\n")}
}
`;
}

/** dx (+)= dy·[y > 0] (y is the ReLU output). Bindings: sizes, dx, dy, y. */
export function reluBackwardWgsl(accumulate: boolean): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> y: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let g = select(0.0, dy[i], y[i] > 0.0);
  dx[i] = ${accumulate ? "dx[i] + g" : "g"};
}
`;
}

/**
 * Layout change between NCHW [B, C, H·W] and tokens [B, H·W, C]; `toTokens` picks the direction. One output
 * element per invocation, consecutive invocations writing consecutive elements. Bindings: sizes, out, in.
 */
export function convLayoutWgsl(dims: PoolDims, toTokens: boolean): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${POOL_SIZES}
${poolConsts({ ...dims, oh: 0, ow: 0 })}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> src: array<f32>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let plane = H * W;
${
    toTokens
      ? `  let c = i % C;
  let p = (i / C) % plane;
  let b = i / (C * plane);
  out[i] = src[(b * C + c) * plane + p];`
      : `  let p = i % plane;
  let c = (i / plane) % C;
  let b = i / (plane * C);
  out[i] = src[(b * plane + p) * C + c];`
  }
}
`;
}

/**
 * Feature map → channels-last vec4s: out [B, H·W, C4] of vec4 (C4 = ⌈C/4⌉, channels past C zero) from an NCHW
 * or tokens ([B, H·W, C]) source, so the implicit-GEMM kernels load 4 channels of a pixel as one vec4 (with
 * C = 4·n this is the tokens layout). From NCHW with H·W = 4·n an invocation moves 4 pixels × 4 channels (4 vec4
 * loads along pixels, 4 vec4 stores; ≈ 2× one vec4 from 4 scalar loads), otherwise one output vec4.
 * Bindings: sizes (m = invocations), out, src.
 */
export function convChannelsLastWgsl(o: { c: number; hw: number; fromTokens: boolean }): string {
  const c4 = Math.ceil(o.c / 4);
  // Channels past C read a clamped (valid) one and are replaced by zero.
  const ch = (j: number) => `min(c + ${j}u, ${o.c - 1}u)`;
  const index = (j: number) =>
    o.fromTokens ? `(b * ${o.hw}u + p) * ${o.c}u + ${ch(j)}` : `(b * ${o.c}u + ${ch(j)}) * ${o.hw}u + p`;
  const quad = !o.fromTokens && o.hw % 4 === 0;
  const body = quad
    ? `  // Invocation (b, pixel quad, channel vec4): consecutive invocations walk channels, then pixels.
  let cq = i % ${c4}u;
  let c = cq * 4u;
  let pq = (i / ${c4}u) % ${o.hw / 4}u;
  let b = i / ${c4 * (o.hw / 4)}u;
${
      lines(4, (j) =>
        `  let v${j} = select(vec4<f32>(0.0), src[((b * ${o.c}u + ${
          ch(j)
        }) * ${o.hw}u) / 4u + pq], c + ${j}u < ${o.c}u);`)
    }
  let o0 = (b * ${o.hw}u + pq * 4u) * ${c4}u + cq;
${lines(4, (k) => `  out[o0 + ${k * c4}u] = vec4<f32>(v0[${k}], v1[${k}], v2[${k}], v3[${k}]);`)}`
    : `  let c = (i % ${c4}u) * 4u;
  let p = (i / ${c4}u) % ${o.hw}u;
  let b = i / ${c4 * o.hw}u;
  out[i] = vec4<f32>(${
      range(4).map((j) => `select(0.0, src[${index(j)}], c + ${j}u < ${o.c}u)`).join(", ")
    });`;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
${CONV_SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> src: array<${quad ? "vec4<f32>" : "f32"}>;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.m) { return; }
${body}
}
`;
}

/** Invocations of {@link convChannelsLastWgsl} for `batch` maps of `channels` × `pixels`. */
export function convChannelsLastInvocations(
  batch: number,
  channels: number,
  pixels: number,
  fromTokens: boolean,
): number {
  const vec4s = batch * pixels * Math.ceil(channels / 4);
  return !fromTokens && pixels % 4 === 0 ? vec4s / 4 : vec4s;
}

/**
 * Implicit-GEMM subgroup variant of the forward (`pass: "forward"`) and backward-data (`pass: "data"`) convs,
 * shaped like the fastest matmul on lavapipe (one subgroup of 8 per workgroup, A shared by `subgroupBroadcast`,
 * B loaded per lane as vec4s): out[pixel, cb] = Σ_{tap, ca} A[pixel ⊕ tap, ca]·Wt[tap, ca, cb], where A is the
 * input (forward) or dy (data) in channels-last vec4s ({@link convChannelsLastWgsl}), so one vec4 load brings 4
 * reduction channels of a pixel, and Wt the transposed weight ({@link convWeightTransposeWgsl}). A subgroup owns
 * `tm` pixels × 8·`tn` channels: per 4 reduction channels each lane loads tm/8 A vec4s and tn weight vec4s,
 * broadcasts tm vec4s and does tm·tn·4 FMAs (48 × 4: 10 loads per 768 FMAs; the older subgroup kernel loads
 * 1 vec4 + 4 scalars per 128). Geometry is baked in as constants. Bindings: sizes (m = output pixels), out (y or
 * dx, NCHW or for the forward tokens), A, Wt[, bias].
 */
export function conv2dGemmSubgroupWgsl(
  o: ConvShape & {
    dims: ConvDims;
    pass: "forward" | "data";
    layout: ConvLayout;
    relu: boolean;
    bias: boolean;
    accumulate: boolean;
    tm: number;
    tn: number;
    /** Reduction vec4s per inner-loop iteration (used when it divides ⌈C_a/4⌉, else 1). */
    unroll: number;
  },
): string {
  if (o.tm % 8 !== 0 || o.tn % 4 !== 0) {
    throw new RangeError(`conv gemm: tm ${o.tm} must be 8·n, tn ${o.tn} 4·n`);
  }
  const d = o.dims, fwd = o.pass === "forward";
  const ca = fwd ? d.cin : d.cout, cb = fwd ? d.cout : d.cin;
  const [ah, aw] = fwd ? [d.h, d.w] : [d.oh, d.ow];
  const [plane, pw] = fwd ? [d.oh * d.ow, d.ow] : [d.h * d.w, d.w];
  const ca4 = Math.ceil(ca / 4), cb4p = paddedChannels(cb) / 4;
  const nb = Math.ceil(cb / (8 * o.tn));
  const rows = o.tm / 8, q4 = o.tn / 4;
  const setup = (r: number) =>
    `  let mr${r} = min(m0 + lane + ${8 * r}u, sizes.m - 1u);
  let b${r} = mr${r} / PLANE;
  let p${r} = mr${r} - b${r} * PLANE;
  let abase${r} = b${r} * ${ah * aw}u;
  let ay${r} = ${fwd ? `i32((p${r} / PW) * ${o.stride}u) - PAD` : `i32(p${r} / PW) + PAD`};
  let ax${r} = ${fwd ? `i32((p${r} % PW) * ${o.stride}u) - PAD` : `i32(p${r} % PW) + PAD`};`;
  const source = (r: number) => {
    if (fwd) {
      return `      let y${r} = ay${r} + i32(kh);
      let x${r} = ax${r} + i32(kw);
      let ok${r} = ${o.padding === 0 ? "true" : `y${r} >= 0 && y${r} < AH && x${r} >= 0 && x${r} < AW`};`;
    }
    return o.stride === 1
      ? `      let y${r} = ay${r} - i32(kh);
      let x${r} = ax${r} - i32(kw);
      let ok${r} = y${r} >= 0 && y${r} < AH && x${r} >= 0 && x${r} < AW;`
      : `      let ty${r} = ay${r} - i32(kh);
      let tx${r} = ax${r} - i32(kw);
      let y${r} = ty${r} / ${o.stride};
      let x${r} = tx${r} / ${o.stride};
      let ok${r} = ty${r} >= 0 && tx${r} >= 0 && ty${r} % ${o.stride} == 0 && tx${r} % ${o.stride} == 0 && y${r} < AH && x${r} < AW;`;
  };
  // Reduction vec4s per loop iteration: a longer FMA chain per accumulator (see below) when C_a/4 allows.
  const ku = ca4 % o.unroll === 0 ? o.unroll : 1;
  // Weight rows past C_a (when C_a is not 4·n) are clamped; they meet A's zero padding.
  const wRow = (u: number, kk: number) =>
    ca % 4 === 0
      ? `wrow + ${(4 * u + kk) * cb4p}u`
      : `(tap + min((c4 + ${u}u) * 4u + ${kk}u, ${ca - 1}u)) * CB4P`;
  const inner: string[] = [];
  for (let u = 0; u < ku; u++) {
    for (let r = 0; r < rows; r++) {
      inner.push(`let a${r}_${u} = select(vec4<f32>(0.0), A[o${r} + c4 + ${u}u], ok${r});`);
    }
    for (let f = 0; f < o.tm; f++) {
      inner.push(`let s${f}_${u} = subgroupBroadcast(a${f >> 3}_${u}, ${f & 7}u);`);
    }
    for (let kk = 0; kk < 4; kk++) {
      for (let q = 0; q < q4; q++) inner.push(`let w${u}_${kk}_${q} = Wt[${wRow(u, kk)} + wq${q}];`);
    }
  }
  // All reduction steps of one accumulator in a row: llvmpipe keeps few of them in registers (each is 8 lanes
  // wide), so this loads and stores a spilled accumulator once per 4·ku FMAs instead of once per FMA.
  for (let f = 0; f < o.tm; f++) {
    for (let q = 0; q < q4; q++) {
      let chain = `acc${f}_${q}`;
      for (let u = 0; u < ku; u++) {
        for (let kk = 0; kk < 4; kk++) {
          chain = `fma(vec4<f32>(s${f}_${u}[${kk}]), w${u}_${kk}_${q}, ${chain})`;
        }
      }
      inner.push(`acc${f}_${q} = ${chain};`);
    }
  }
  const store = (f: number) => {
    const body: string[] = [];
    for (let j = 0; j < o.tn; j++) {
      const ch = `cb0 + ${j}u`;
      let value = `acc${f}_${j >> 2}[${j & 3}]`;
      if (o.bias) value += ` + bias[${ch}]`;
      if (o.relu) value = `max(${value}, 0.0)`;
      const index = fwd && o.layout === "tokens" ? `m * CB + ${ch}` : `(b * CB + ${ch}) * PLANE + p`;
      if (!fwd && o.accumulate) value = `out[${index}] + ${value}`;
      body.push(`      if (${ch} < CB) { out[${index}] = ${value}; }`);
    }
    return `  {
    let m = m0 + ${f}u;
    if (m < sizes.m) {
      let b = m / PLANE;
      let p = m - b * PLANE;
${body.join("\n")}
    }
  }`;
  };
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(8)}
${CONV_SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> A: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> Wt: array<vec4<f32>>;
${o.bias ? "@group(0) @binding(4) var<storage, read> bias: array<f32>;" : ""}
const K = ${o.kernel}u;
const PAD = ${o.padding};
const AH = ${ah};
const AW = ${aw};
const CA4 = ${ca4}u;
const CB = ${cb}u;
const CB4P = ${cb4p}u;
const PLANE = ${plane}u;
const PW = ${pw}u;
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // No early return, even for whole subgroups past the end (grid padding): WGSL's uniformity analysis rejects
  // a subgroupBroadcast after a return that depends on the invocation id (Tint does). Pixels are clamped for
  // loads and masked for stores.
  let sg = linear_index(gid, nwg) / 8u;
  let m0 = (sg / ${nb}u) * ${o.tm}u;
  let cb0 = (sg % ${nb}u) * ${8 * o.tn}u + lane * ${o.tn}u;
  // Weight vec4s past the padded row are clamped; their channels are never stored.
${lines(q4, (q) => `  let wq${q} = min(cb0 / 4u + ${q}u, CB4P - 1u);`)}
${lines(rows, setup)}
${lines(o.tm, (f) => lines(q4, (q) => `  var acc${f}_${q} = vec4<f32>(0.0);`))}
  for (var kh = 0u; kh < K; kh++) {
    for (var kw = 0u; kw < K; kw++) {
${
    lines(rows, (r) =>
      `${source(r)}
      let o${r} = select(0u, (abase${r} + u32(y${r}) * u32(AW) + u32(x${r})) * CA4, ok${r});`)
  }
      let tap = (kh * K + kw) * ${ca}u;
      for (var c4 = 0u; c4 < CA4; c4 += ${ku}u) {
        let wrow = (tap + c4 * 4u) * CB4P;
        ${inner.join("\n        ")}
      }
    }
  }
${range(o.tm).map(store).join("\n")}
}
`;
}
