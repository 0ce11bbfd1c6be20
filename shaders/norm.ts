/**
 * LayerNorm over the last dimension of a [rows, dim] tensor (biased variance, as PyTorch).
 *
 * Layout choices for llvmpipe (PERF.md): one row per invocation, no workgroup memory and no barriers; rows are
 * read as vec4 when `dim` is a multiple of 4. `dim` is baked into each specialisation so the loops have constant
 * trip counts. The parameter gradients are column sums over up to 32,768 rows: a first pass gives each
 * invocation one vec4 of columns and a chunk of rows (adjacent invocations read adjacent columns), writing a small
 * partials buffer; a second pass sums the chunks and accumulates into dgamma/dbeta.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

/** Invocations per workgroup of the row kernels. */
export const NORM_WORKGROUP = 64;

/** Floats per load for rows of `dim` floats: 4 when `dim` is a multiple of 4, else 1. */
export function normWidth(dim: number): 1 | 4 {
  return dim % 4 === 0 ? 4 : 1;
}

/** Shared WGSL: the row type `T`, the number `W` of `T` per row, `hsum` and the linear index. */
function rowHeader(dim: number, width: 1 | 4, wg: number): string {
  const t = width === 4 ? "vec4<f32>" : "f32";
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
alias T = ${t};
const DIM: u32 = ${dim}u;
const W: u32 = ${dim / width}u;
fn hsum(v: T) -> f32 { return ${width === 4 ? "dot(v, vec4<f32>(1.0))" : "v"}; }
`;
}

/**
 * y = (x − mean)·rstd·γ + β per row, saving mean and rstd. Bindings: sizes {rows, eps}, y, mean, rstd, x, gamma,
 * beta. `width` 1 gives the scalar-load (naive) variant.
 */
export function layerNormForwardWgsl(dim: number, width: 1 | 4 = normWidth(dim)): string {
  // Re-reading x beats caching the row in private memory here (measured): the row is in L1 by the second pass.
  return /* wgsl */ `
${rowHeader(dim, width, NORM_WORKGROUP)}
struct Sizes { rows: u32, eps: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<T>;
@group(0) @binding(5) var<storage, read> gamma: array<T>;
@group(0) @binding(6) var<storage, read> beta: array<T>;
@compute @workgroup_size(${NORM_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = linear_index(gid, nwg);
  if (r >= sizes.rows) { return; }
  let base = r * W;
  var s = T(0.0);
  for (var j = 0u; j < W; j++) { s += x[base + j]; }
  let m = hsum(s) / f32(DIM);
  // Two passes (mean, then squared deviations): stable when |mean| ≫ std.
  var q = T(0.0);
  for (var j = 0u; j < W; j++) {
    let d = x[base + j] - m;
    q += d * d;
  }
  let rs = 1.0 / sqrt(hsum(q) / f32(DIM) + sizes.eps);
  for (var j = 0u; j < W; j++) {
    y[base + j] = (x[base + j] - m) * rs * gamma[j] + beta[j];
  }
  mean[r] = m;
  rstd[r] = rs;
}
`;
}

/**
 * dx (+)= rstd·(g − mean(g) − x̂·mean(g·x̂)) with g = dy·γ, x̂ = (x − mean)·rstd, one row per invocation.
 * Bindings: sizes {rows}, dx, dy, x, mean, rstd, gamma.
 */
export function layerNormBackwardInputWgsl(
  dim: number,
  accumulate: boolean,
  width: 1 | 4 = normWidth(dim),
  cacheRow = false,
): string {
  // With `cacheRow`, g and x̂ stay in private memory between the two passes instead of being gathered again
  // (1.1–1.5× faster on llvmpipe at the zoo's sizes).
  return /* wgsl */ `
${rowHeader(dim, width, NORM_WORKGROUP)}
struct Sizes { rows: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dx: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read> x: array<T>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@group(0) @binding(6) var<storage, read> gamma: array<T>;
@compute @workgroup_size(${NORM_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let r = linear_index(gid, nwg);
  if (r >= sizes.rows) { return; }
  let base = r * W;
  let m = mean[r];
  let rs = rstd[r];
  ${cacheRow ? "var gs: array<T, W>;\n  var xhs: array<T, W>;" : ""}
  var sg = T(0.0);
  var sgx = T(0.0);
  for (var j = 0u; j < W; j++) {
    let g = dy[base + j] * gamma[j];
    let xh = (x[base + j] - m) * rs;
    ${cacheRow ? "gs[j] = g;\n    xhs[j] = xh;" : ""}
    sg += g;
    sgx += g * xh;
  }
  let a = hsum(sg) / f32(DIM);
  let b = hsum(sgx) / f32(DIM);
  for (var j = 0u; j < W; j++) {
    ${
    cacheRow
      ? "let g = gs[j];\n    let xh = xhs[j];"
      : "let g = dy[base + j] * gamma[j];\n    let xh = (x[base + j] - m) * rs;"
  }
    let v = rs * (g - a - xh * b);
    ${accumulate ? "dx[base + j] = dx[base + j] + v;" : "dx[base + j] = v;"}
  }
}
`;
}

/** Column groups per invocation in the first column-sum pass: 4, 2 or 1, whichever divides the row's `W`. */
export function columnBlock(dim: number, width: 1 | 4 = normWidth(dim)): number {
  const w = dim / width;
  return w % 4 === 0 ? 4 : w % 2 === 0 ? 2 : 1;
}

/**
 * First pass of dγ = Σ_r dy·x̂ and dβ = Σ_r dy: invocation i owns row chunk `i / H` and the `block` column groups
 * `i % H + g·H` (H = W / block; adjacent invocations read adjacent memory; register blocking shares the mean/rstd
 * loads and the loop), writing partials[k, :] (dγ) and partials[chunks + k, :] (dβ). Bindings: sizes
 * {rows, chunk_rows, chunks}, partials, dy, x, mean, rstd.
 */
export function layerNormParamPartialsWgsl(
  dim: number,
  width: 1 | 4 = normWidth(dim),
  block = columnBlock(dim, width),
): string {
  const g = [...Array(block).keys()];
  const each = (f: (j: number) => string, sep = "\n    ") => g.map(f).join(sep);
  return /* wgsl */ `
${rowHeader(dim, width, NORM_WORKGROUP)}
const H: u32 = ${dim / width / block}u;
struct Sizes { rows: u32, chunk_rows: u32, chunks: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> partials: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
@group(0) @binding(3) var<storage, read> x: array<T>;
@group(0) @binding(4) var<storage, read> mean: array<f32>;
@group(0) @binding(5) var<storage, read> rstd: array<f32>;
@compute @workgroup_size(${NORM_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.chunks * H) { return; }
  let c = i % H;
  let k = i / H;
  let r0 = k * sizes.chunk_rows;
  let r1 = min(sizes.rows, r0 + sizes.chunk_rows);
  ${each((j) => `var dg${j} = T(0.0);\n  var db${j} = T(0.0);`, "\n  ")}
  for (var r = r0; r < r1; r++) {
    let m = mean[r];
    let rs = rstd[r];
    ${each((j) => `let g${j} = dy[r * W + c + ${j}u * H];`)}
    ${each((j) => `dg${j} += g${j} * ((x[r * W + c + ${j}u * H] - m) * rs);`)}
    ${each((j) => `db${j} += g${j};`)}
  }
  ${each((j) => `partials[k * W + c + ${j}u * H] = dg${j};`, "\n  ")}
  ${each((j) => `partials[(sizes.chunks + k) * W + c + ${j}u * H] = db${j};`, "\n  ")}
}
`;
}

/** Second pass: dγ += Σ_k partials[k], dβ += Σ_k partials[chunks + k]. Bindings: sizes {chunks}, dgamma, dbeta,
 * partials. */
export function layerNormParamReduceWgsl(dim: number, width: 1 | 4 = normWidth(dim)): string {
  return /* wgsl */ `
${rowHeader(dim, width, NORM_WORKGROUP)}
struct Sizes { chunks: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dgamma: array<T>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<T>;
@group(0) @binding(3) var<storage, read> partials: array<T>;
@compute @workgroup_size(${NORM_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = linear_index(gid, nwg);
  if (c >= W) { return; }
  var dg = T(0.0);
  var db = T(0.0);
  for (var k = 0u; k < sizes.chunks; k++) {
    dg += partials[k * W + c];
    db += partials[(sizes.chunks + k) * W + c];
  }
  dgamma[c] = dgamma[c] + dg;
  dbeta[c] = dbeta[c] + db;
}
`;
}

/**
 * Naive dγ/dβ for the benchmark comparison: one invocation per column summing every row (scalar loads, no
 * partials). Bindings: sizes {rows}, dgamma, dbeta, dy, x, mean, rstd.
 */
export function layerNormParamNaiveWgsl(dim: number): string {
  return /* wgsl */ `
${rowHeader(dim, 1, NORM_WORKGROUP)}
struct Sizes { rows: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dgamma: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbeta: array<f32>;
@group(0) @binding(3) var<storage, read> dy: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> mean: array<f32>;
@group(0) @binding(6) var<storage, read> rstd: array<f32>;
@compute @workgroup_size(${NORM_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let c = linear_index(gid, nwg);
  if (c >= W) { return; }
  var dg = 0.0;
  var db = 0.0;
  for (var r = 0u; r < sizes.rows; r++) {
    let g = dy[r * W + c];
    dg += g * (x[r * W + c] - mean[r]) * rstd[r];
    db += g;
  }
  dgamma[c] = dgamma[c] + dg;
  dbeta[c] = dbeta[c] + db;
}
`;
}
