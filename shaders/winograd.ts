/**
 * Winograd convolution F(m×m, 3×3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016)
 * for stride-1 3×3 convolutions: the output is cut into m×m tiles; each tile's (m+2)×(m+2) input patch d and
 * each 3×3 filter g are transformed (V = Bᵀ d B, U = G g Gᵀ), the α² = (m+2)² transformed positions become α²
 * independent matrix products over the channels (M[ξ] = V[ξ]·U[ξ], run by the batched matmul), and each tile's
 * outputs come back as Y = Aᵀ M A. F(2×2) does 16 products per 4 outputs where the direct conv does 36 (2.25×
 * fewer multiply-adds), F(4×4) 36 per 16 (4×); the transforms cost memory traffic instead.
 *
 * The backward-data of a stride-1 conv is the same correlation of dy with the flipped, transposed filter (padding
 * k−1−p), so one set of kernels serves both: `flip` selects the filter transform, the geometry the rest.
 *
 * The transforms are generated from the matrices as straight-line code with the zero terms dropped; each
 * invocation owns one (tile, channel) pair, so its loads and stores are whole rows of the layouts below:
 * - U: [α², C, K] (reduction channel C, output channel K): the matmul's B operand per position;
 * - V: [α², P, C] with P = B·TH·TW tiles: its A operand;
 * - M: [α², P, K]: its C operand, read back by the output transform.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";
import type { ConvLayout } from "./conv.ts";

/** Invocations per workgroup of the transform kernels. */
export const WINOGRAD_WORKGROUP = 64;

/** Output tile side m of F(m×m, 3×3). */
export type WinogradTile = 2 | 4;

/** The transform matrices of F(m×m, 3×3): Bᵀ (α×α), G (α×3) and Aᵀ (m×α), α = m + 2. */
export interface WinogradMatrices {
  bt: number[][];
  g: number[][];
  at: number[][];
}

/** Lavin & Gray's matrices: interpolation points 0, ±1 (F(2×2)) and 0, ±1, ±2 (F(4×4)), and ∞. */
export function winogradMatrices(m: WinogradTile): WinogradMatrices {
  if (m === 2) {
    return {
      bt: [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
      g: [[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]],
      at: [[1, 1, 1, 0], [0, 1, -1, -1]],
    };
  }
  return {
    bt: [
      [4, 0, -5, 0, 1, 0],
      [0, -4, -4, 1, 1, 0],
      [0, 4, -4, -1, 1, 0],
      [0, -2, -1, 2, 1, 0],
      [0, 2, -1, -2, 1, 0],
      [0, 4, 0, -5, 0, 1],
    ],
    g: [
      [1 / 4, 0, 0],
      [-1 / 6, -1 / 6, -1 / 6],
      [-1 / 6, 1 / 6, -1 / 6],
      [1 / 24, 1 / 12, 1 / 6],
      [1 / 24, -1 / 12, 1 / 6],
      [0, 0, 1],
    ],
    at: [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
  };
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

function literal(v: number): string {
  const s = String(v);
  return /[.e]/.test(s) ? s : `${s}.0`;
}

/** Σ coefs[i]·terms[i] as WGSL, zero terms dropped and ±1 written as additions. */
function combination(coefs: number[], terms: string[]): string {
  let s = "";
  coefs.forEach((c, i) => {
    if (c === 0) return;
    const mag = Math.abs(c) === 1 ? terms[i] : `${literal(Math.abs(c))} * ${terms[i]}`;
    s += s === "" ? (c < 0 ? `-${mag}` : mag) : (c < 0 ? ` - ${mag}` : ` + ${mag}`);
  });
  return s === "" ? "0.0" : s;
}

/**
 * Straight-line WGSL for Z = L·X·Rᵀ where X is a grid of named values: declares `${tmp}_i_j` = (L·X)[i][j] and
 * returns Z's entries as expressions (row-major).
 */
function sandwich(l: number[][], x: string[][], r: number[][], tmp: string): { code: string; z: string[] } {
  const cols = x[0].length;
  const code = l.flatMap((row, i) =>
    range(cols).map((j) => `  let ${tmp}_${i}_${j} = ${combination(row, x.map((xr) => xr[j]))};`)
  );
  const z = l.flatMap((_, i) => r.map((rr) => combination(rr, range(cols).map((j) => `${tmp}_${i}_${j}`))));
  return { code: code.join("\n"), z };
}

/**
 * U = G·g·Gᵀ for every (reduction channel c, output channel k) of w [C_out, C_in, 3, 3]: for the forward c is
 * C_in and k is C_out; with `flip` (backward-data) c is C_out, k is C_in and g is the filter rotated by 180°.
 */
export function winogradFilterTransformWgsl(
  o: { m: WinogradTile; c: number; k: number; flip: boolean },
): string {
  const { g } = winogradMatrices(o.m);
  const taps = range(3).map((u) =>
    range(3).map((v) => `w[base + ${o.flip ? (2 - u) * 3 + (2 - v) : u * 3 + v}u]`)
  );
  const { code, z } = sandwich(g, taps, g, "t");
  const ck = o.c * o.k;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(WINOGRAD_WORKGROUP)}
@group(0) @binding(0) var<storage, read_write> u: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@compute @workgroup_size(${WINOGRAD_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= ${ck}u) { return; }
  let c = i / ${o.k}u;
  let k = i % ${o.k}u;
  let base = ${o.flip ? `(c * ${o.k}u + k) * 9u` : `(k * ${o.c}u + c) * 9u`};
${code}
${z.map((e, xi) => `  u[${xi * ck}u + i] = ${e};`).join("\n")}
}
`;
}

/** Channels per invocation of the input and output transforms: 4 (vec4 loads and stores) when C (or K) = 4·n. */
export type WinogradLanes = 1 | 4;

/** Geometry of the input transform: C channels of H×W maps read at tile origins (m·ty − pad, m·tx − pad). */
export interface WinogradInputShape {
  m: WinogradTile;
  c: number;
  h: number;
  w: number;
  pad: number;
  /** Tiles per column and row. */
  th: number;
  tw: number;
  /** Layout of the input: NCHW planes or tokens [B, H·W, C]. */
  layout: ConvLayout;
  lanes: WinogradLanes;
}

function laneType(lanes: WinogradLanes): string {
  return lanes === 4 ? "vec4<f32>" : "f32";
}

function checkLanes(kernel: string, channels: number, lanes: WinogradLanes): number {
  if (channels % lanes !== 0) {
    throw new RangeError(`${kernel}: ${channels} channels are not a multiple of ${lanes}`);
  }
  return channels / lanes;
}

/**
 * V = Bᵀ·d·B for every (tile, channel group), d the α×α patch of the input at the tile's origin (zero outside).
 * Invocation i = p·C/L + c/L for L = `lanes` channels; the uniform holds P = B·TH·TW.
 */
export function winogradInputTransformWgsl(o: WinogradInputShape): string {
  const { bt } = winogradMatrices(o.m);
  const a = o.m + 2;
  const cl = checkLanes("winogradInputTransform", o.c, o.lanes);
  const type = laneType(o.lanes);
  const vecTokens = o.layout === "tokens" && o.lanes === 4;
  const pixel = (r: number, s: number) => `row${r} * ${o.w}u + col${s}`;
  const load = (r: number, s: number) => {
    if (o.layout === "tokens") return `x[(img + ${pixel(r, s)}) * ${vecTokens ? cl : o.c}u + cq]`;
    if (o.lanes === 1) return `x[plane + ${pixel(r, s)}]`;
    return `vec4<f32>(${range(4).map((j) => `x[plane + ${j * o.h * o.w}u + ${pixel(r, s)}]`).join(", ")})`;
  };
  const patch = range(a).map((r) => range(a).map((s) => `d_${r}_${s}`));
  const { code, z } = sandwich(bt, patch, bt, "t");
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(WINOGRAD_WORKGROUP)}
struct Sizes { tiles: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> v: array<${type}>;
@group(0) @binding(2) var<storage, read> x: array<${vecTokens ? "vec4<f32>" : "f32"}>;
@compute @workgroup_size(${WINOGRAD_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.tiles * ${cl}u) { return; }
  let cq = i % ${cl}u;
  let p = i / ${cl}u;
  let t = p % ${o.th * o.tw}u;
  let b = p / ${o.th * o.tw}u;
  let y0 = i32((t / ${o.tw}u) * ${o.m}u) - ${o.pad};
  let x0 = i32((t % ${o.tw}u) * ${o.m}u) - ${o.pad};
  let plane = (b * ${o.c}u + cq * ${o.lanes}u) * ${o.h * o.w}u;
  let img = b * ${o.h * o.w}u;
${
    range(a).map((r) =>
      `  let row${r} = u32(clamp(y0 + ${r}, 0, ${o.h - 1}));\n` +
      `  let rowIn${r} = y0 + ${r} >= 0 && y0 + ${r} < ${o.h};`
    ).join("\n")
  }
${
    range(a).map((s) =>
      `  let col${s} = u32(clamp(x0 + ${s}, 0, ${o.w - 1}));\n` +
      `  let colIn${s} = x0 + ${s} >= 0 && x0 + ${s} < ${o.w};`
    ).join("\n")
  }
${
    range(a).flatMap((r) =>
      range(a).map((s) => `  let d_${r}_${s} = select(${type}(0.0), ${load(r, s)}, rowIn${r} && colIn${s});`)
    ).join("\n")
  }
${code}
  let stride = sizes.tiles * ${cl}u;
${z.map((e, xi) => `  v[${xi}u * stride + i] = ${e};`).join("\n")}
}
`;
}

/** Geometry of the output transform: K channels of OH×OW maps in m×m tiles. */
export interface WinogradOutputShape {
  m: WinogradTile;
  k: number;
  oh: number;
  ow: number;
  th: number;
  tw: number;
  layout: ConvLayout;
  bias: boolean;
  relu: boolean;
  /** Add into the output instead of overwriting it. */
  accumulate: boolean;
  lanes: WinogradLanes;
}

/**
 * Y = Aᵀ·M·A (+ bias, ReLU) for every (tile, output channel group), written where the tile lies inside the
 * output. Invocation i = p·K/L + k/L; the uniform holds P.
 */
export function winogradOutputTransformWgsl(o: WinogradOutputShape): string {
  const { at } = winogradMatrices(o.m);
  const a = o.m + 2;
  const kl = checkLanes("winogradOutputTransform", o.k, o.lanes);
  const type = laneType(o.lanes);
  const vecTokens = o.layout === "tokens" && o.lanes === 4;
  const products = range(a).map((r) => range(a).map((s) => `m_${r}_${s}`));
  const { code, z } = sandwich(at, products, at, "t");
  const pixel = (i: number, j: number) => `(oy0 + ${i}u) * ${o.ow}u + ox0 + ${j}u`;
  const add = (at: string, e: string) => o.accumulate ? `y[${at}] = y[${at}] + ${e};` : `y[${at}] = ${e};`;
  const store = (i: number, j: number) => {
    const out = `y_${i}_${j}`;
    const writes = o.layout === "tokens"
      ? [add(`(b * ${o.oh * o.ow}u + ${pixel(i, j)}) * ${vecTokens ? kl : o.k}u + kq`, out)]
      : range(o.lanes).map((l) =>
        add(
          `(b * ${o.k}u + k + ${l}u) * ${o.oh * o.ow}u + ${pixel(i, j)}`,
          o.lanes === 4 ? `${out}[${l}]` : out,
        )
      );
    const inside = [
      ...(o.oh % o.m !== 0 && i > 0 ? [`oy0 + ${i}u < ${o.oh}u`] : []),
      ...(o.ow % o.m !== 0 && j > 0 ? [`ox0 + ${j}u < ${o.ow}u`] : []),
    ];
    const biased = o.bias ? `${z[i * o.m + j]} + bias[kq]` : z[i * o.m + j];
    const value = `  let ${out} = ${o.relu ? `max(${biased}, ${type}(0.0))` : biased};`;
    return inside.length === 0
      ? [value, ...writes.map((w) => `  ${w}`)].join("\n")
      : `${value}\n  if (${inside.join(" && ")}) {\n${writes.map((w) => `    ${w}`).join("\n")}\n  }`;
  };
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(WINOGRAD_WORKGROUP)}
struct Sizes { tiles: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<${vecTokens ? "vec4<f32>" : "f32"}>;
@group(0) @binding(2) var<storage, read> prod: array<${type}>;
${o.bias ? `@group(0) @binding(3) var<storage, read> bias: array<${type}>;` : ""}
@compute @workgroup_size(${WINOGRAD_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.tiles * ${kl}u) { return; }
  let kq = i % ${kl}u;
  let k = kq * ${o.lanes}u;
  let p = i / ${kl}u;
  let t = p % ${o.th * o.tw}u;
  let b = p / ${o.th * o.tw}u;
  let oy0 = (t / ${o.tw}u) * ${o.m}u;
  let ox0 = (t % ${o.tw}u) * ${o.m}u;
  let stride = sizes.tiles * ${kl}u;
${range(a * a).map((xi) => `  let m_${Math.floor(xi / a)}_${xi % a} = prod[${xi}u * stride + i];`).join("\n")}
${code}
${range(o.m).flatMap((i) => range(o.m).map((j) => store(i, j))).join("\n")}
}
`;
}
