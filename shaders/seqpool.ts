/**
 * Sequence pooling (the CCT/CVT head, SPEC §1): logits[b, n] = x[b, n, :]·w + bias; a = softmax over n;
 * pooled[b, :] = Σ_n a[b, n]·x[b, n, :]. Small next to the encoder, so the kernels are simple: one output per
 * invocation, each a plain loop (no workgroup memory). Every storage binding is `read_write` so that tensors of
 * one arena buffer can be bound together (wgpu rejects one buffer bound read-only and writable in a dispatch).
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

/** Invocations per workgroup of the per-element kernels. */
export const SEQPOOL_WORKGROUP = 64;

const header = /* wgsl */ `
${LINEAR_INDEX_WGSL(SEQPOOL_WORKGROUP)}
struct Sizes { batch: u32, tokens: u32, dim: u32 }
@group(0) @binding(0) var<uniform> sz: Sizes;
`;

const entry = /* wgsl */ `@compute @workgroup_size(${SEQPOOL_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);`;

/** logits[t] = x[t, :]·w + bias, t over B·N rows. Bindings: sizes, logits, x, w, bias. */
export function seqPoolLogitsWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> x: array<f32>;
@group(0) @binding(3) var<storage, read_write> w: array<f32>;
@group(0) @binding(4) var<storage, read_write> bias: array<f32>;
${entry}
  if (t >= sz.batch * sz.tokens) { return; }
  let row = t * sz.dim;
  var acc = 0.0;
  for (var c = 0u; c < sz.dim; c++) { acc += x[row + c] * w[c]; }
  logits[t] = acc + bias[0];
}
`;
}

/** In place, one batch row per invocation: weights[b, :] = softmax(weights[b, :]). Bindings: sizes, weights. */
export function seqPoolSoftmaxWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> weights: array<f32>;
${entry}
  if (t >= sz.batch) { return; }
  let row = t * sz.tokens;
  var m = -3.0e38;
  for (var n = 0u; n < sz.tokens; n++) { m = max(m, weights[row + n]); }
  var s = 0.0;
  for (var n = 0u; n < sz.tokens; n++) {
    let e = exp(weights[row + n] - m);
    weights[row + n] = e;
    s += e;
  }
  let inv = 1.0 / s;
  for (var n = 0u; n < sz.tokens; n++) { weights[row + n] = weights[row + n] * inv; }
}
`;
}

/** pooled[b, c] = Σ_n weights[b, n]·x[b, n, c]. Bindings: sizes, pooled, weights, x. */
export function seqPoolPoolWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
${entry}
  if (t >= sz.batch * sz.dim) { return; }
  let b = t / sz.dim;
  let c = t - b * sz.dim;
  var acc = 0.0;
  for (var n = 0u; n < sz.tokens; n++) {
    acc += weights[b * sz.tokens + n] * x[(b * sz.tokens + n) * sz.dim + c];
  }
  pooled[t] = acc;
}
`;
}

/** g[b, n] = dpooled[b, :]·x[b, n, :] (the gradient of the weight a[b, n]). Bindings: sizes, g, dpooled, x. */
export function seqPoolWeightGradsWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> dpooled: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
${entry}
  if (t >= sz.batch * sz.tokens) { return; }
  let b = t / sz.tokens;
  let row = t * sz.dim;
  var acc = 0.0;
  for (var c = 0u; c < sz.dim; c++) { acc += dpooled[b * sz.dim + c] * x[row + c]; }
  g[t] = acc;
}
`;
}

/**
 * In place, one batch row per invocation: g[b, n] ← a[b, n]·(g[b, n] − Σ_m a[b, m]·g[b, m]), the softmax backward
 * giving the logit gradients. Bindings: sizes, g, weights.
 */
export function seqPoolLogitGradsWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> g: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
${entry}
  if (t >= sz.batch) { return; }
  let row = t * sz.tokens;
  var s = 0.0;
  for (var n = 0u; n < sz.tokens; n++) { s += weights[row + n] * g[row + n]; }
  for (var n = 0u; n < sz.tokens; n++) { g[row + n] = weights[row + n] * (g[row + n] - s); }
}
`;
}

/**
 * dx[b, n, c] (+)= a[b, n]·dpooled[b, c] + dlogits[b, n]·w[c]. Bindings: sizes, dx, weights, dpooled, dlogits, w.
 * One invocation per (b, c) walks the tokens: neighbouring lanes touch neighbouring floats, and there is one
 * integer division per invocation instead of three per element (slow on llvmpipe).
 * `accumulate` adds into dx (the residual stream's gradient) instead of overwriting it.
 */
export function seqPoolInputGradsWgsl(accumulate: boolean): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read_write> weights: array<f32>;
@group(0) @binding(3) var<storage, read_write> dpooled: array<f32>;
@group(0) @binding(4) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(5) var<storage, read_write> w: array<f32>;
${entry}
  if (t >= sz.batch * sz.dim) { return; }
  let b = t / sz.dim;
  let c = t - b * sz.dim;
  let dp = dpooled[t];
  let wc = w[c];
  for (var n = 0u; n < sz.tokens; n++) {
    let r = b * sz.tokens + n;
    let e = r * sz.dim + c;
    let g = weights[r] * dp + dlogits[r] * wc;
    ${accumulate ? "dx[e] = dx[e] + g;" : "dx[e] = g;"}
  }
}
`;
}

/**
 * dw[c] += Σ_r dlogits[r]·x[r, c] over all B·N rows (invocations 0..d−1), dbias += Σ_r dlogits[r] (invocation d).
 * Bindings: sizes, dw, dbias, dlogits, x.
 */
export function seqPoolParamGradsWgsl(): string {
  return /* wgsl */ `${header}
@group(0) @binding(1) var<storage, read_write> dw: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> x: array<f32>;
${entry}
  let rows = sz.batch * sz.tokens;
  if (t < sz.dim) {
    var acc = 0.0;
    for (var r = 0u; r < rows; r++) { acc += dlogits[r] * x[r * sz.dim + t]; }
    dw[t] = dw[t] + acc;
  } else if (t == sz.dim) {
    var acc = 0.0;
    for (var r = 0u; r < rows; r++) { acc += dlogits[r]; }
    dbias[0] = dbias[0] + acc;
  }
}
`;
}
