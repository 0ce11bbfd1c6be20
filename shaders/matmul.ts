/**
 * Matrix multiplication kernels: C (+)= act(alpha·op(A)·op(B) + bias), with general strided batching (two batch
 * dimensions, element offsets, leading dimensions) so attention can multiply column blocks of one qkv tensor.
 *
 * Three styles (PERF.md: on llvmpipe, barriers are expensive and workgroup-memory tiling loses):
 * - `naive`: one output per invocation (the benchmark baseline);
 * - `blocked`: tm×tn outputs per invocation held in registers, vec4 loads, no workgroup memory, no barriers;
 * - `subgroup`: one subgroup per workgroup; lanes share the A fragment of a k-step by `subgroupBroadcast`, each lane
 *   owns tn columns, so a lane does tm×tn multiply-adds per k while loading only tm/width A values. On lavapipe every
 *   storage load is a per-lane loop, so loads dominate: the tall 32×8 tile (loads per multiply-add ∝ 1/(8·tn) + 1/tm)
 *   wins once the multiply-adds run accumulator by accumulator (see `fmaCode`).
 *
 * The WGSL is fully unrolled per specialisation; sizes, strides, offsets and alpha live in a uniform so one
 * pipeline serves every shape with the same transposes, alignment and epilogue.
 */
import { ERF_WGSL } from "./elementwise.ts";

/** Activation applied in the epilogue. */
export type MatmulActivation = "none" | "relu" | "gelu";

/** Everything that selects one compiled matmul pipeline. */
export interface MatmulKernelSpec {
  style: "naive" | "blocked" | "subgroup";
  /** Rows of C per invocation (blocked: 4, 8 or 16; subgroup: 8, 16 or 32, a multiple of the width; naive: 1). */
  tm: number;
  /** Columns of C per invocation (a multiple of 4; naive: 1). */
  tn: number;
  transA: boolean;
  transB: boolean;
  /** A may be read as vec4 along its contiguous dimension (offsets, leading dimension, strides multiples of 4). */
  vecA: boolean;
  vecB: boolean;
  bias: boolean;
  activation: MatmulActivation;
  /** Also store the value before the activation. */
  preActivation: boolean;
  /** Multiply the result by GELU'(g) of a tensor laid out like C (backward through a GELU). */
  geluGrad: boolean;
  accumulate: boolean;
  /** Add a tensor laid out like C after the activation (a residual connection in the epilogue). */
  residual?: boolean;
  /** Subgroup width the `subgroup` style is written for. */
  subgroupSize: number;
  /**
   * C (and the pre-activation, GELU' source and bias) bound as vec4 and stored 4 columns at a time: needs n, ldc,
   * C's offset and batch strides multiples of 4 (not for `naive`). On lavapipe every store is a per-lane scatter:
   * scalar stores cost 20–30% of a K = 128 product.
   */
  vecC?: boolean;
}

/** Workgroup shape of the naive and blocked styles: 8×8 invocations. */
export const MATMUL_WORKGROUP = [8, 8] as const;

/**
 * Uniform of every matmul dispatch, in this order (all u32 except alpha):
 * m, n, k, batch2, lda, ldb, ldc, alpha, offA, offB, offC, pad, strideA1, strideA2, strideB1, strideB2,
 * strideC1, strideC2. The z workgroup index is split into (z / batch2, z % batch2).
 */
const PARAMS_WGSL = /* wgsl */ `
struct Params {
  m: u32, n: u32, k: u32, batch2: u32,
  lda: u32, ldb: u32, ldc: u32, alpha: f32,
  offA: u32, offB: u32, offC: u32, pad: u32,
  strideA1: u32, strideA2: u32, strideB1: u32, strideB2: u32,
  strideC1: u32, strideC2: u32,
}
`;

/**
 * Bindings: 0 params, 1 C, 2 A, 3 B, then (when enabled, in this order) bias, preActivation, geluGradOf,
 * residual.
 */
function bindingsWgsl(s: MatmulKernelSpec): string {
  const t = s.vecC ? "vec4<f32>" : "f32";
  const lines = [
    "@group(0) @binding(0) var<uniform> p: Params;",
    `@group(0) @binding(1) var<storage, read_write> C: array<${t}>;`,
    `@group(0) @binding(2) var<storage, read> A: array<${s.vecA ? "vec4<f32>" : "f32"}>;`,
    `@group(0) @binding(3) var<storage, read> B: array<${s.vecB ? "vec4<f32>" : "f32"}>;`,
  ];
  let next = 4;
  if (s.bias) lines.push(`@group(0) @binding(${next++}) var<storage, read> bias: array<${t}>;`);
  if (s.preActivation) lines.push(`@group(0) @binding(${next++}) var<storage, read_write> P: array<${t}>;`);
  if (s.geluGrad) lines.push(`@group(0) @binding(${next++}) var<storage, read> G: array<${t}>;`);
  if (s.residual) lines.push(`@group(0) @binding(${next++}) var<storage, read> R: array<${t}>;`);
  return lines.join("\n");
}

/**
 * The epilogue of one output element (`store_c`), or with `vecC` of 4 adjacent ones (`store_c4`, col a multiple
 * of 4): scale, bias, GELU' factor, pre-activation, activation, residual, (accumulating) store.
 */
function epilogueWgsl(s: MatmulKernelSpec): string {
  if (s.vecC) return epilogueVec4Wgsl(s);
  const act = s.activation === "relu"
    ? "v = max(v, 0.0);"
    : s.activation === "gelu"
    ? "v = 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752));"
    : "";
  const geluGrad = s.geluGrad
    ? `let g = G[idx];
  v = v * (0.5 * (1.0 + erf_f32(g * 0.70710678118654752)) + g * 0.39894228040143268 * exp(-0.5 * g * g));`
    : "";
  return /* wgsl */ `
${s.activation === "gelu" || s.geluGrad ? ERF_WGSL : ""}
fn store_c(row: u32, col: u32, c_off: u32, acc: f32) {
  if (row >= p.m || col >= p.n) { return; }
  let idx = c_off + row * p.ldc + col;
  var v = p.alpha * acc;
  ${s.bias ? "v = v + bias[col];" : ""}
  ${geluGrad}
  ${s.preActivation ? "P[idx] = v;" : ""}
  ${act}
  ${s.residual ? "v = v + R[idx];" : ""}
  ${s.accumulate ? "C[idx] = C[idx] + v;" : "C[idx] = v;"}
}
`;
}

/** {@link epilogueWgsl} on vec4s: n is a multiple of 4, so 4 columns are all inside C or all outside. */
function epilogueVec4Wgsl(s: MatmulKernelSpec): string {
  const erf4 = (x: string) => `vec4<f32>(erf_f32(${x}.x), erf_f32(${x}.y), erf_f32(${x}.z), erf_f32(${x}.w))`;
  const act = s.activation === "relu"
    ? "v = max(v, vec4<f32>(0.0));"
    : s.activation === "gelu"
    ? `let ea = v * 0.70710678118654752;
  v = 0.5 * v * (1.0 + ${erf4("ea")});`
    : "";
  const geluGrad = s.geluGrad
    ? `let g = G[idx];
  let eg = g * 0.70710678118654752;
  v = v * (0.5 * (1.0 + ${erf4("eg")}) + g * 0.39894228040143268 * exp(-0.5 * g * g));`
    : "";
  return /* wgsl */ `
${s.activation === "gelu" || s.geluGrad ? ERF_WGSL : ""}
fn store_c4(row: u32, col: u32, c_off: u32, acc: vec4<f32>) {
  if (row >= p.m || col >= p.n) { return; }
  let idx = (c_off + row * p.ldc + col) >> 2u;
  var v = p.alpha * acc;
  ${s.bias ? "v = v + bias[col >> 2u];" : ""}
  ${geluGrad}
  ${s.preActivation ? "P[idx] = v;" : ""}
  ${act}
  ${s.residual ? "v = v + R[idx];" : ""}
  ${s.accumulate ? "C[idx] = C[idx] + v;" : "C[idx] = v;"}
}
`;
}

/** Element read of an operand whose binding may be vec4-typed. */
function element(name: string, vec: boolean, index: string): string {
  return vec ? `${name}[(${index}) >> 2u][(${index}) & 3u]` : `${name}[${index}]`;
}

const COMPONENT = ["x", "y", "z", "w"];

const batchOffsets = /* wgsl */ `
  let z1 = wid.z / p.batch2;
  let z2 = wid.z - z1 * p.batch2;
  let a_off = p.offA + z1 * p.strideA1 + z2 * p.strideA2;
  let b_off = p.offB + z1 * p.strideB1 + z2 * p.strideB2;
  let c_off = p.offC + z1 * p.strideC1 + z2 * p.strideC2;
`;

/** One operand of the blocked/subgroup styles: how its values x(t, kk) of a k-step are loaded. */
interface Operand {
  name: "A" | "B";
  /** Outer tile: tm for A, tn for B. */
  tile: number;
  /** Stored contiguous along k (A not transposed, B transposed). */
  kContig: boolean;
  vec: boolean;
  /** Outer size (p.m or p.n), leading dimension, batch offset and first outer index. */
  outer: string;
  ld: string;
  off: string;
  o0: string;
}

function operands(s: MatmulKernelSpec): [Operand, Operand] {
  return [
    {
      name: "A",
      tile: s.tm,
      kContig: !s.transA,
      vec: s.vecA,
      outer: "p.m",
      ld: "p.lda",
      off: "a_off",
      o0: "m0",
    },
    {
      name: "B",
      tile: s.tn,
      kContig: s.transB,
      vec: s.vecB,
      outer: "p.n",
      ld: "p.ldb",
      off: "b_off",
      o0: "n0",
    },
  ];
}

/** Per-invocation constants of an operand loaded entirely by one invocation. */
function ownPrologue(x: Operand): string {
  const lines: string[] = [];
  for (let t = 0; t < x.tile; t++) {
    // Rows past the end are clamped: their (discarded) outputs then read valid memory.
    if (x.kContig) {
      lines.push(`let ${x.name}_row${t} = ${x.off} + min(${x.o0} + ${t}u, ${x.outer} - 1u) * ${x.ld};`);
      if (x.vec) lines.push(`let ${x.name}_row4_${t} = ${x.name}_row${t} >> 2u;`);
    } else {
      lines.push(`let ${x.name}_col${t} = ${x.off} + min(${x.o0} + ${t}u, ${x.outer} - 1u);`);
    }
  }
  if (!x.kContig && x.vec) {
    lines.push(`let ${x.name}_colv = (${x.off} + ${x.o0}) >> 2u;`);
    lines.push(`let ${x.name}_ldv = ${x.ld} >> 2u;`);
  }
  return lines.join("\n  ");
}

/**
 * Loads of one k-step of width `kw` (4 in the main loop, 1 in the tail) by the invocation itself. Returns the load
 * statements and, for every (t, kk), the WGSL expression of x(o0 + t, k + kk).
 */
function ownLoads(x: Operand, kw: number): { code: string[]; value: string[][] } {
  const code: string[] = [];
  const value = Array.from({ length: x.tile }, () => new Array<string>(kw));
  const n = x.name;
  if (kw === 4 && x.vec && x.kContig) {
    for (let t = 0; t < x.tile; t++) {
      code.push(`let ${n}v${t} = ${n}[${n}_row4_${t} + (k >> 2u)];`);
      for (let kk = 0; kk < 4; kk++) value[t][kk] = `${n}v${t}.${COMPONENT[kk]}`;
    }
  } else if (kw === 4 && x.vec && !x.kContig) {
    for (let kk = 0; kk < 4; kk++) {
      for (let q = 0; q < x.tile / 4; q++) {
        code.push(`let ${n}v${kk}_${q} = ${n}[${n}_colv + (k + ${kk}u) * ${n}_ldv + ${q}u];`);
        for (let c = 0; c < 4; c++) value[4 * q + c][kk] = `${n}v${kk}_${q}.${COMPONENT[c]}`;
      }
    }
  } else {
    for (let t = 0; t < x.tile; t++) {
      for (let kk = 0; kk < kw; kk++) {
        const index = x.kContig ? `${n}_row${t} + k + ${kk}u` : `${n}_col${t} + (k + ${kk}u) * ${x.ld}`;
        code.push(`let ${n}s${t}_${kk} = ${element(n, x.vec, index)};`);
        value[t][kk] = `${n}s${t}_${kk}`;
      }
    }
  }
  return { code, value };
}

/** The multiply-adds of one k-step: acc[i][jv] += a(i, kk)·b(4jv.., kk), B as vec4 over columns. */
function fmaCode(
  s: MatmulKernelSpec,
  a: string[][],
  b: string[][],
  kw: number,
  bVecNames?: string[][],
): string[] {
  const code: string[] = [];
  const bv: string[][] = [];
  for (let kk = 0; kk < kw; kk++) {
    bv.push([]);
    for (let jv = 0; jv < s.tn / 4; jv++) {
      if (bVecNames) bv[kk].push(bVecNames[kk][jv]);
      else {
        const name = `bq${kk}_${jv}`;
        code.push(`let ${name} = vec4<f32>(${[0, 1, 2, 3].map((c) => b[4 * jv + c][kk]).join(", ")});`);
        bv[kk].push(name);
      }
    }
  }
  // Accumulator-major order: each accumulator takes all its k-step updates in a row, so llvmpipe keeps it in a
  // register across them instead of reloading and spilling it once per k (5–10% faster at 16×8, and what makes
  // the taller 32×8 tile pay off).
  for (let i = 0; i < s.tm; i++) {
    for (let jv = 0; jv < s.tn / 4; jv++) {
      for (let kk = 0; kk < kw; kk++) {
        code.push(`acc${i}_${jv} = fma(vec4<f32>(${a[i][kk]}), ${bv[kk][jv]}, acc${i}_${jv});`);
      }
    }
  }
  return code;
}

/** B's loaded vec4 names when they already run along columns (B not transposed, vec4 loads, main step). */
function bColumnVectors(s: MatmulKernelSpec, b: Operand, kw: number): string[][] | undefined {
  if (kw !== 4 || !b.vec || b.kContig) return undefined;
  return [0, 1, 2, 3].map((kk) => Array.from({ length: s.tn / 4 }, (_, q) => `Bv${kk}_${q}`));
}

function accumulatorsAndStores(s: MatmulKernelSpec): { decl: string; stores: string } {
  const decl: string[] = [];
  const stores: string[] = [];
  for (let i = 0; i < s.tm; i++) {
    for (let jv = 0; jv < s.tn / 4; jv++) {
      decl.push(`var acc${i}_${jv} = vec4<f32>(0.0);`);
      if (s.vecC) stores.push(`store_c4(m0 + ${i}u, n0 + ${4 * jv}u, c_off, acc${i}_${jv});`);
      else {
        for (let c = 0; c < 4; c++) {
          stores.push(`store_c(m0 + ${i}u, n0 + ${4 * jv + c}u, c_off, acc${i}_${jv}.${COMPONENT[c]});`);
        }
      }
    }
  }
  return { decl: decl.join("\n  "), stores: stores.join("\n  ") };
}

/** WGSL of one matmul specialisation. Dispatch with {@link matmulGroups}. */
export function matmulWgsl(s: MatmulKernelSpec): string {
  if (s.style === "naive") return naiveWgsl(s);
  if (s.tn % 4 !== 0) throw new RangeError(`matmul: tn ${s.tn} must be a multiple of 4`);
  if (s.vecA && s.transA && s.tm % 4 !== 0) {
    throw new RangeError(`matmul: tm ${s.tm} must be a multiple of 4 for vec4 loads of a transposed A`);
  }
  return s.style === "blocked" ? blockedWgsl(s) : subgroupWgsl(s);
}

function naiveWgsl(s: MatmulKernelSpec): string {
  if (s.vecC) throw new RangeError("matmul: the naive style stores scalars (vecC unsupported)");
  const a = s.transA ? "a_off + kk * p.lda + row" : "a_off + row * p.lda + kk";
  const b = s.transB ? "b_off + col * p.ldb + kk" : "b_off + kk * p.ldb + col";
  return /* wgsl */ `
${PARAMS_WGSL}
${bindingsWgsl(s)}
${epilogueWgsl(s)}
@compute @workgroup_size(${MATMUL_WORKGROUP[0]}, ${MATMUL_WORKGROUP[1]})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  ${batchOffsets}
  let col = gid.x;
  let row = gid.y;
  if (row >= p.m || col >= p.n) { return; }
  var acc = 0.0;
  for (var kk = 0u; kk < p.k; kk++) {
    acc = fma(${element("A", s.vecA, a)}, ${element("B", s.vecB, b)}, acc);
  }
  store_c(row, col, c_off, acc);
}
`;
}

function blockedWgsl(s: MatmulKernelSpec): string {
  const [a, b] = operands(s);
  const main = [ownLoads(a, 4), ownLoads(b, 4)];
  const tail = [ownLoads(a, 1), ownLoads(b, 1)];
  const { decl, stores } = accumulatorsAndStores(s);
  return /* wgsl */ `
${PARAMS_WGSL}
${bindingsWgsl(s)}
${epilogueWgsl(s)}
@compute @workgroup_size(${MATMUL_WORKGROUP[0]}, ${MATMUL_WORKGROUP[1]})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
  ${batchOffsets}
  let n0 = gid.x * ${s.tn}u;
  let m0 = gid.y * ${s.tm}u;
  if (m0 >= p.m || n0 >= p.n) { return; }
  ${ownPrologue(a)}
  ${ownPrologue(b)}
  ${decl}
  let k_main = p.k & ~3u;
  var k = 0u;
  for (; k < k_main; k += 4u) {
    ${main[0].code.join("\n    ")}
    ${main[1].code.join("\n    ")}
    ${fmaCode(s, main[0].value, main[1].value, 4, bColumnVectors(s, b, 4)).join("\n    ")}
  }
  for (; k < p.k; k++) {
    ${tail[0].code.join("\n    ")}
    ${tail[1].code.join("\n    ")}
    ${fmaCode(s, tail[0].value, tail[1].value, 1).join("\n    ")}
  }
  ${stores}
}
`;
}

/**
 * Subgroup style: the A values of a k-step are split into fragments; lane l loads fragments l, l+w, … and every
 * lane gets fragment f by `subgroupBroadcast(…, f % w)`. B is loaded per lane (its own tn columns).
 */
function subgroupWgsl(s: MatmulKernelSpec): string {
  const w = s.subgroupSize;
  if (s.tm % w !== 0) throw new RangeError(`matmul: subgroup tm ${s.tm} must be a multiple of ${w}`);
  const [, b] = operands(s);
  const qt = s.tm / 4;
  // Main-step fragments: vec4 along k (A not transposed), vec4 along m (transposed), or scalars.
  const vecFrag = s.vecA;
  const fragsMain = vecFrag ? s.tm : 4 * s.tm;
  const prologue: string[] = [];
  const kStride = s.transA ? " * p.lda" : "";
  for (let r = 0; r < fragsMain / w; r++) {
    const f = `(lane + ${r * w}u)`;
    if (vecFrag && !s.transA) {
      prologue.push(`let A_f${r} = (a_off + min(m0 + ${f}, p.m - 1u) * p.lda) >> 2u;`);
    } else if (vecFrag) {
      prologue.push(`let A_f${r} = ((a_off + m0) >> 2u) + (${f} / ${qt}u) * A_ld4 + (${f} % ${qt}u);`);
    } else {
      const row = `min(m0 + ${f} / 4u, p.m - 1u)`;
      prologue.push(
        s.transA
          ? `let A_f${r} = a_off + ${row} + (${f} % 4u) * p.lda;`
          : `let A_f${r} = a_off + ${row} * p.lda + (${f} % 4u);`,
      );
    }
  }
  for (let r = 0; r < s.tm / w; r++) {
    const row = `min(m0 + lane + ${r * w}u, p.m - 1u)`;
    prologue.push(`let A_t${r} = a_off + ${s.transA ? row : `${row} * p.lda`};`);
  }
  const mainLoads: string[] = [];
  for (let r = 0; r < fragsMain / w; r++) {
    if (vecFrag && !s.transA) mainLoads.push(`let A_m${r} = A[A_f${r} + (k >> 2u)];`);
    else if (vecFrag) mainLoads.push(`let A_m${r} = A[A_f${r} + k * A_ld4];`);
    else mainLoads.push(`let A_m${r} = A[A_f${r} + k${kStride}];`);
  }
  const aMain = Array.from({ length: s.tm }, () => new Array<string>(4));
  for (let f = 0; f < fragsMain; f++) {
    mainLoads.push(`let A_b${f} = subgroupBroadcast(A_m${Math.floor(f / w)}, ${f % w}u);`);
    if (vecFrag && !s.transA) { for (let kk = 0; kk < 4; kk++) aMain[f][kk] = `A_b${f}.${COMPONENT[kk]}`; }
    else if (vecFrag) {
      const kk = Math.floor(f / qt), q = f % qt;
      for (let c = 0; c < 4; c++) aMain[4 * q + c][kk] = `A_b${f}.${COMPONENT[c]}`;
    } else aMain[Math.floor(f / 4)][f % 4] = `A_b${f}`;
  }
  const tailLoads: string[] = [];
  const aTail = Array.from({ length: s.tm }, () => new Array<string>(1));
  for (let r = 0; r < s.tm / w; r++) {
    tailLoads.push(`let A_u${r} = ${element("A", s.vecA, `A_t${r} + k${kStride}`)};`);
  }
  for (let f = 0; f < s.tm; f++) {
    tailLoads.push(`let A_c${f} = subgroupBroadcast(A_u${Math.floor(f / w)}, ${f % w}u);`);
    aTail[f][0] = `A_c${f}`;
  }
  const bMain = ownLoads(b, 4), bTail = ownLoads(b, 1);
  const { decl, stores } = accumulatorsAndStores(s);
  return /* wgsl */ `
${PARAMS_WGSL}
${bindingsWgsl(s)}
${epilogueWgsl(s)}
@compute @workgroup_size(${w})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(subgroup_invocation_id) lane: u32) {
  ${batchOffsets}
  // Every lane runs the whole loop (broadcasts need all of them); only stores are masked.
  let n0 = (wid.x * ${w}u + lane) * ${s.tn}u;
  let m0 = wid.y * ${s.tm}u;
  let A_ld4 = p.lda >> 2u;
  ${prologue.join("\n  ")}
  ${ownPrologue(b)}
  ${decl}
  let k_main = p.k & ~3u;
  var k = 0u;
  for (; k < k_main; k += 4u) {
    ${mainLoads.join("\n    ")}
    ${bMain.code.join("\n    ")}
    ${fmaCode(s, aMain, bMain.value, 4, bColumnVectors(s, b, 4)).join("\n    ")}
  }
  for (; k < p.k; k++) {
    ${tailLoads.join("\n    ")}
    ${bTail.code.join("\n    ")}
    ${fmaCode(s, aTail, bTail.value, 1).join("\n    ")}
  }
  ${stores}
}
`;
}

/** Workgroup counts [x, y] of a specialisation for an m×n output (z is the batch count). */
export function matmulGroups(s: MatmulKernelSpec, m: number, n: number): [number, number] {
  if (s.style === "naive") return [Math.ceil(n / MATMUL_WORKGROUP[0]), Math.ceil(m / MATMUL_WORKGROUP[1])];
  if (s.style === "blocked") {
    return [
      Math.ceil(Math.ceil(n / s.tn) / MATMUL_WORKGROUP[0]),
      Math.ceil(Math.ceil(m / s.tm) / MATMUL_WORKGROUP[1]),
    ];
  }
  return [Math.ceil(n / (s.tn * s.subgroupSize)), Math.ceil(m / s.tm)];
}

/** Rows of one chunk of the column-sum's first stage. */
export const COLUMN_SUM_WORKGROUP = 64;

/**
 * Column sums, stage 1: out[chunk, c] (+)= Σ_{rows of chunk} x[r, c]; one invocation sums 4 adjacent columns
 * (vec4 loads when `vec`) over `rowsPerChunk` rows. Bindings: params {rows, cols, rowsPerChunk}, out, x.
 * With one chunk the output is the final result (and `accumulate` adds into it); otherwise stage 2 reduces.
 */
export function columnSumWgsl(vec: boolean, accumulate: boolean): string {
  const wg = COLUMN_SUM_WORKGROUP;
  const load = vec ? "let v = x[(r * p.cols + c0) >> 2u];" : `let base = r * p.cols;
    let v = vec4<f32>(x[base + c0], x[base + min(c0 + 1u, last)], x[base + min(c0 + 2u, last)], x[base + min(c0 + 3u, last)]);`;
  return /* wgsl */ `
struct Params { rows: u32, cols: u32, rows_per_chunk: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<${vec ? "vec4<f32>" : "f32"}>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c0 = gid.x * 4u;
  if (c0 >= p.cols) { return; }
  let last = p.cols - 1u;
  let chunk = gid.y;
  let r0 = chunk * p.rows_per_chunk;
  let r1 = min(r0 + p.rows_per_chunk, p.rows);
  var s = vec4<f32>(0.0);
  for (var r = r0; r < r1; r++) {
    ${load}
    s = s + v;
  }
  let o = chunk * p.cols + c0;
  for (var c = 0u; c < 4u; c++) {
    if (c0 + c < p.cols) { ${accumulate ? "out[o + c] = out[o + c] + s[c];" : "out[o + c] = s[c];"} }
  }
}
`;
}

/** Column sums, stage 2: out[c] (+)= Σ_chunk partial[chunk, c]. Bindings: params {chunks, cols}, out, partial. */
export function columnSumReduceWgsl(accumulate: boolean): string {
  const wg = COLUMN_SUM_WORKGROUP;
  return /* wgsl */ `
struct Params { chunks: u32, cols: u32 }
@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let c = gid.x;
  if (c >= p.cols) { return; }
  var s = 0.0;
  for (var i = 0u; i < p.chunks; i++) { s = s + partial[i * p.cols + c]; }
  ${accumulate ? "out[c] = out[c] + s;" : "out[c] = s;"}
}
`;
}
