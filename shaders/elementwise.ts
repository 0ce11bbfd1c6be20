/**
 * Elementwise kernels: exact-erf GELU forward/backward, residual add. One invocation handles 4 consecutive
 * elements (vectorised where aligned), over a 2-D grid so large tensors stay under the 65,535-group limit.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

export const ELEMENTWISE_WORKGROUP = 256;

/** erf from the Numerical Recipes erfc (fractional error < 1.2e-7), enough for float32 GELU parity. */
export const ERF_WGSL = /* wgsl */ `
fn erf_f32(x: f32) -> f32 {
  let a = abs(x);
  let t = 1.0 / (1.0 + 0.5 * a);
  let r = t * exp(-a * a - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
      t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 +
      t * (-0.82215223 + t * 0.17087277)))))))));
  return sign(x) * (1.0 - r);
}
`;

const header = (wg: number) => /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
struct Sizes { n: u32 }
`;

/** y = gelu(x) = x·Φ(x). Bindings: sizes, y, x. */
export function geluForwardWgsl(): string {
  const wg = ELEMENTWISE_WORKGROUP;
  return /* wgsl */ `
${header(wg)}
${ERF_WGSL}
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
@group(0) @binding(2) var<storage, read> x: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let v = x[i];
  y[i] = 0.5 * v * (1.0 + erf_f32(v * 0.70710678118654752));
}
`;
}

/** dx (+)= dy·gelu'(x). Bindings: sizes, dx, dy, x. `accumulate` adds into dx instead of overwriting. */
export function geluBackwardWgsl(accumulate: boolean): string {
  const wg = ELEMENTWISE_WORKGROUP;
  return /* wgsl */ `
${header(wg)}
${ERF_WGSL}
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  let v = x[i];
  let cdf = 0.5 * (1.0 + erf_f32(v * 0.70710678118654752));
  let pdf = 0.39894228040143268 * exp(-0.5 * v * v);
  let g = dy[i] * (cdf + v * pdf);
  ${accumulate ? "dx[i] = dx[i] + g;" : "dx[i] = g;"}
}
`;
}

/** out = a + b (same shape). Bindings: sizes, out, a, b. */
export function addWgsl(): string {
  const wg = ELEMENTWISE_WORKGROUP;
  return /* wgsl */ `
${header(wg)}
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  out[i] = a[i] + b[i];
}
`;
}

/** T = vec4<f32> when the length is a multiple of 4 (then `Sizes.n` counts vec4s), else f32. */
function vecAlias(width: 1 | 4): string {
  return `alias T = ${width === 4 ? "vec4<f32>" : "f32"};`;
}

/** out += a, or out = a (a copy) when `overwrite`. Bindings: sizes {n}, out, a. */
export function accumulateWgsl(width: 1 | 4, overwrite: boolean): string {
  const wg = ELEMENTWISE_WORKGROUP;
  return /* wgsl */ `
${header(wg)}
${vecAlias(width)}
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<T>;
@group(0) @binding(2) var<storage, read> a: array<T>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  ${overwrite ? "out[i] = a[i];" : "out[i] = out[i] + a[i];"}
}
`;
}

/** y = alpha·x. Bindings: sizes {n, alpha}, y, x; with `inPlace` (y is x): sizes, y. */
export function scaleWgsl(width: 1 | 4, inPlace: boolean): string {
  const wg = ELEMENTWISE_WORKGROUP;
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(wg)}
${vecAlias(width)}
struct Sizes { n: u32, alpha: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
${inPlace ? "" : "@group(0) @binding(2) var<storage, read> x: array<T>;"}
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }
  y[i] = ${inPlace ? "y[i]" : "x[i]"} * sizes.alpha;
}
`;
}
