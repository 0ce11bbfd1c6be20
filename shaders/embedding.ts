/**
 * Token-level data movement of the encoder's input and the ViT head: positional-embedding add, class-token
 * concatenation, selecting one token, and their backwards. Elementwise in shape: one invocation per vec4 (when
 * `dim` is a multiple of 4) over a 2-D grid; `dim` is baked into each specialisation. Sums over the batch (the
 * gradients of the shared embedding and class token) give each invocation one vec4 of the table and loop over the
 * batch, so adjacent invocations read adjacent memory.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";

/** Invocations per workgroup. */
export const EMBEDDING_WORKGROUP = 256;

/** Floats per load for rows of `dim` floats: 4 when `dim` is a multiple of 4, else 1. */
export function embeddingWidth(dim: number): 1 | 4 {
  return dim % 4 === 0 ? 4 : 1;
}

function header(dim: number): string {
  const width = embeddingWidth(dim);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(EMBEDDING_WORKGROUP)}
alias T = ${width === 4 ? "vec4<f32>" : "f32"};
const W: u32 = ${dim / width}u;
`;
}

const MAIN = /* wgsl */ `@compute @workgroup_size(${EMBEDDING_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);`;

/**
 * y[b, n, :] = x[b, n, :] + pe[n, :] on a 2-D grid [⌈period / 256⌉, batch] (no per-element modulo). Bindings:
 * sizes {period = tokens·W}, y, x, pe; with `inPlace` y is also x and the bindings are sizes, y, pe.
 */
export function positionalEmbeddingAddWgsl(dim: number, inPlace: boolean): string {
  return /* wgsl */ `
${header(dim)}
struct Sizes { period: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
${
    inPlace
      ? "@group(0) @binding(2) var<storage, read> pe: array<T>;"
      : `@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> pe: array<T>;`
  }
@compute @workgroup_size(${EMBEDDING_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= sizes.period) { return; }
  let i = gid.y * sizes.period + gid.x;
  y[i] = ${inPlace ? "y[i]" : "x[i]"} + pe[gid.x];
}
`;
}

/** Table entries (of T) each invocation of the positional-embedding backward sums: shares the batch loop. */
export const POSITIONAL_BACKWARD_BLOCK = 4;

/**
 * dpe[n, :] += Σ_b dy[b, n, :]. Invocation j < Q = ⌈period / 4⌉ owns entries j, j + Q, j + 2Q, j + 3Q of the
 * table (adjacent invocations read adjacent memory). Bindings: sizes {batch, period = tokens·W, q = Q}, dpe, dy.
 */
export function positionalEmbeddingBackwardWgsl(dim: number): string {
  const g = [...Array(POSITIONAL_BACKWARD_BLOCK).keys()];
  return /* wgsl */ `
${header(dim)}
struct Sizes { batch: u32, period: u32, q: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dpe: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
${MAIN}
  if (i >= sizes.q) { return; }
  // Entries past the table end read a valid duplicate (index clamped) and are not stored.
  ${g.map((j) => `let e${j} = min(i + ${j}u * sizes.q, sizes.period - 1u);`).join("\n  ")}
  ${g.map((j) => `var s${j} = T(0.0);`).join("\n  ")}
  for (var b = 0u; b < sizes.batch; b++) {
    let base = b * sizes.period;
    ${g.map((j) => `s${j} += dy[base + e${j}];`).join("\n    ")}
  }
  ${g.map((j) => `if (i + ${j}u * sizes.q < sizes.period) { dpe[e${j}] = dpe[e${j}] + s${j}; }`).join("\n  ")}
}
`;
}

/** y[b, 0, :] = cls, y[b, 1 + n, :] = x[b, n, :]. Bindings: sizes {batch, tokens}, y, x, cls. */
export function classTokenConcatWgsl(dim: number): string {
  return /* wgsl */ `
${header(dim)}
struct Sizes { batch: u32, tokens: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
@group(0) @binding(3) var<storage, read> cls: array<T>;
${MAIN}
  let per = (sizes.tokens + 1u) * W;
  if (i >= sizes.batch * per) { return; }
  let b = i / per;
  let t = (i % per) / W;
  let c = i % W;
  if (t == 0u) {
    y[i] = cls[c];
  } else {
    y[i] = x[(b * sizes.tokens + t - 1u) * W + c];
  }
}
`;
}

/**
 * dx[b, n, :] (+)= dy[b, 1 + n, :] for the first batch·tokens·W invocations; the next W add Σ_b dy[b, 0, :] into
 * dcls, so one dispatch does both. Bindings: sizes {batch, tokens}, dx, dcls, dy.
 */
export function classTokenBackwardWgsl(dim: number, accumulateDx: boolean): string {
  return /* wgsl */ `
${header(dim)}
struct Sizes { batch: u32, tokens: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dx: array<T>;
@group(0) @binding(2) var<storage, read_write> dcls: array<T>;
@group(0) @binding(3) var<storage, read> dy: array<T>;
${MAIN}
  let per = (sizes.tokens + 1u) * W;
  let nx = sizes.batch * sizes.tokens * W;
  if (i < nx) {
    let b = i / (sizes.tokens * W);
    let g = dy[b * per + W + i % (sizes.tokens * W)];
    ${accumulateDx ? "dx[i] = dx[i] + g;" : "dx[i] = g;"}
    return;
  }
  let c = i - nx;
  if (c >= W) { return; }
  var s = T(0.0);
  for (var b = 0u; b < sizes.batch; b++) { s += dy[b * per + c]; }
  dcls[c] = dcls[c] + s;
}
`;
}

/** y[b, :] = x[b, index, :]. Bindings: sizes {batch, tokens, index}, y, x. */
export function selectTokenWgsl(dim: number): string {
  return /* wgsl */ `
${header(dim)}
struct Sizes { batch: u32, tokens: u32, index: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> y: array<T>;
@group(0) @binding(2) var<storage, read> x: array<T>;
${MAIN}
  if (i >= sizes.batch * W) { return; }
  y[i] = x[((i / W) * sizes.tokens + sizes.index) * W + i % W];
}
`;
}

/**
 * Backward of selectToken. `accumulate`: dx[b, index, :] += dy[b, :] (one invocation per element of dy, the rest
 * of dx untouched); otherwise dx is written whole, zero except at `index`. Bindings: sizes {batch, tokens, index},
 * dx, dy.
 */
export function selectTokenBackwardWgsl(dim: number, accumulate: boolean): string {
  const body = accumulate
    ? /* wgsl */ `
  if (i >= sizes.batch * W) { return; }
  let j = ((i / W) * sizes.tokens + sizes.index) * W + i % W;
  dx[j] = dx[j] + dy[i];`
    : /* wgsl */ `
  if (i >= sizes.batch * sizes.tokens * W) { return; }
  let b = i / (sizes.tokens * W);
  let t = (i / W) % sizes.tokens;
  dx[i] = select(T(0.0), dy[b * W + i % W], t == sizes.index);`;
  return /* wgsl */ `
${header(dim)}
struct Sizes { batch: u32, tokens: u32, index: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> dx: array<T>;
@group(0) @binding(2) var<storage, read> dy: array<T>;
${MAIN}${body}
}
`;
}
