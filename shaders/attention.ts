/**
 * Multi-head self-attention kernels (SPEC §1), register-blocked for llvmpipe: every invocation computes a block of
 * outputs from vec4 loads, with no workgroup memory and no barriers. Three kernel shapes cover forward and
 * backward of one (batch, head) slice, all batched over (batch, head) in one dispatch:
 *
 * - scores (`attentionScoresWgsl`): rows × all keys of S = L·Rᵀ over the head dimension. Forward: L = q, R = k,
 *   online softmax while writing raw scores, then a second pass over its own rows normalises them into P.
 *   Backward: L = dout, R = v gives dP′; dS = P ⊙ (dP − δ)·scale is written over P (in place).
 * - rows (`attentionRowsWgsl`): out[i, c] = Σ_j A[i, j]·X[j, c]; forward out = P′·v, backward dq = dS·k.
 * - columns (`attentionColumnsWgsl`): out[j, c] = Σ_i A[i, j]·X[i, c]; backward dv = P′ᵀ·dout, dk = dSᵀ·q.
 *
 * Each shape has a subgroup variant (`attentionScoresSubgroupWgsl`, `attentionSubgroupWgsl`) for adapters with a
 * fixed subgroup width (lavapipe: 8): lanes load one operand row each and share it by `subgroupBroadcast`, which
 * replaces most of the per-lane gathers and measured ≈ 1.3× (scores) to ≈ 1.8× (products) faster there.
 * The default subgroup kernels use tall tiles (`attentionTallWgsl`, `attentionScoresTallWgsl`): a subgroup owns up
 * to 32 rows (⌈n / ⌈n/32⌉⌉: 25 for n = 49, so two tiles cover 49 rows), each lane loads ⌈rows/8⌉ fragments and the
 * multiply-adds run accumulator by accumulator, like the 32×8 `subgroup` matmul (gathers per multiply-add set the
 * speed on lavapipe). When one row of scores fits in registers (n ≤ 8·keys) the forward softmax is done there
 * (one store per probability, no second pass; n = 256 with 16 rows × 32 keys per lane) and backward sums
 * δ = rowsum(dout ⊙ out) in the dot loop of its first key block. At
 * cct_2's shapes (n 49, hd 64, B·H 256) this halved the six kernels' time (≈ 72 → ≈ 40 ms per step, side by side);
 * the 8-row kernels stay selectable (`SUBGROUP_NARROW` in the wrappers) for comparison.
 *
 * Attention dropout: the forward draws the mask once, from the counter-based RNG with counter
 * ((b·H + h)·N + i)·N + j (b counted over the whole batch), keeping an element when
 * `random_uniform(seed, counter) >= p`, and stores it in the SIGN of the saved probabilities: probs = +P where kept,
 * −P where dropped (P > 0, and where P underflows to 0 the mask does not matter). The later kernels read
 * P = |probs| and P′ = max(probs, 0)/keep, so no kernel but the first hashes, and backward needs no seed.
 *
 * Every storage binding is declared `read_write`, even when only read: wgpu rejects a dispatch that binds one buffer
 * both read-only and writable, whatever the ranges, and the model keeps many tensors in one arena buffer.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";
import { RANDOM_WGSL } from "./random.ts";

/** Invocations per workgroup of every attention kernel (1-D). */
export const ATTENTION_WORKGROUP = 64;

/** Register blocking of the attention kernels: outputs per invocation. */
export interface AttentionBlocking {
  /** Query rows (scores, rows kernels) or key columns (columns kernel) per invocation. */
  rows: number;
  /** Keys per inner block of the scores kernel. */
  keys: number;
  /** vec4 columns of the head dimension per invocation (rows, columns kernels); must divide hd/4. */
  colVecs: number;
  /** Use the subgroup variant of the rows and columns kernels where the adapter allows it (default true). */
  subgroup?: boolean;
  /**
   * Subgroup kernels: at most this many output rows per subgroup in the rows and columns kernels
   * ({@link attentionTallWgsl}); 0 selects the one-row-per-lane kernels ({@link attentionSubgroupWgsl}).
   */
  productRows?: number;
  /**
   * Subgroup kernels: at most this many query rows per subgroup in the scores kernels
   * ({@link attentionScoresTallWgsl}); 0 selects {@link attentionScoresSubgroupWgsl}.
   */
  scoreRows?: number;
  /**
   * Tall forward scores kernel: hold a whole score row in registers (one pass, no raw-score round trip) up to this
   * many keys per lane, with rows cut so that rows·keys ≤ 512 (n = 256: 16 rows × 32 keys); above `keys` only.
   * 0 or absent: only up to `keys` per lane.
   */
  softmaxKeys?: number;
  /**
   * Subgroup kernels with tall tiles: compile the token count and head dimension in as constants (one pipeline per
   * shape; lets LLVM fold the bounds masks of keys that are always valid). Default false: it measured no faster.
   */
  bakeShapes?: boolean;
  /** Tall rows and columns kernels: reduction steps per loop iteration (default 4). */
  steps?: number;
}

/** `code` with the token count and head dimension of its Sizes uniform replaced by constants. */
export function bakeAttentionShape(code: string, tokens: number, hd4: number): string {
  return code.replaceAll("sz.tokens", `${tokens}u`).replaceAll("sz.hd4", `${hd4}u`);
}

/**
 * The default blocking: 8 rows × 8 keys (scores) and 8 rows × 8 columns (rows, columns) without subgroups; with
 * them, tall tiles of up to 32 rows and forward score rows in registers up to 32 keys per lane.
 */
export const BLOCKED: AttentionBlocking = {
  rows: 8,
  keys: 8,
  colVecs: 2,
  productRows: 32,
  scoreRows: 32,
  softmaxKeys: 32,
};
/** The subgroup kernels with one row (or key) per lane: the previous default, kept for comparison. */
export const SUBGROUP_NARROW: AttentionBlocking = { ...BLOCKED, productRows: 0, scoreRows: 0 };
/** One output (or one vec4 of outputs) per invocation: the naive baseline for benchmarks. */
export const NAIVE: AttentionBlocking = { rows: 1, keys: 1, colVecs: 1, subgroup: false };

/**
 * Sizes of one dispatch. Offsets are in elements of their binding (f32 for probs, vec4 for the others) because
 * bindings are windows starting at 256-byte-aligned offsets; strides and columns are in vec4s.
 * `p` is probs; `l`/`r`/`o` are the left, right and output (or δ source) operands of the kernel. `seed` is the
 * seed itself or the word index of the seed in a bound block (see {@link AttentionSeedLayout}).
 */
export const ATTENTION_SIZES_WGSL = /* wgsl */ `
struct Sizes {
  batch: u32, tokens: u32, heads: u32, hd4: u32,
  batch0: u32, off_p: u32, off_l: u32, off_r: u32,
  off_o: u32, l_stride: u32, l_col: u32, r_stride: u32,
  r_col: u32, o_stride: u32, o_col: u32, scale: f32,
  drop_p: f32, inv_keep: f32, seed: u32,
}
`;

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const each = (n: number, line: (i: number) => string) => range(n).map(line).join("\n");
const each2 = (n: number, m: number, line: (i: number, j: number) => string) =>
  range(n).flatMap((i) => range(m).map((j) => line(i, j))).join("\n");

/**
 * Where the dropout seed comes from (the pattern of `shaders/dropout.ts`): a bound uniform u32 (`binding`), word
 * `Sizes.seed` of a bound block of `vectors` vec4s (`block`), or `Sizes.seed` itself (`value`).
 */
export type AttentionSeedLayout =
  | { kind: "binding" }
  | { kind: "block"; vectors: number }
  | { kind: "value" };

/** WGSL `kernel_seed()` and `kept(seed_hash, counter)`: whether the element survives dropout. */
function dropoutWgsl(seed: AttentionSeedLayout, binding: number): string {
  const source = seed.kind === "binding"
    ? `@group(0) @binding(${binding}) var<uniform> dropout_seed: u32;
fn kernel_seed() -> u32 { return dropout_seed; }`
    : seed.kind === "block"
    ? `@group(0) @binding(${binding}) var<uniform> seed_block: array<vec4<u32>, ${seed.vectors}>;
fn kernel_seed() -> u32 { return seed_block[sz.seed >> 2u][sz.seed & 3u]; }`
    : `fn kernel_seed() -> u32 { return sz.seed; }`;
  return /* wgsl */ `
${RANDOM_WGSL}
${source}
fn kept(seed_hash: u32, counter: u32) -> bool {
  return f32(pcg_hash(seed_hash ^ counter) >> 8u) * (1.0 / 16777216.0) >= sz.drop_p;
}
`;
}

function header(seed: AttentionSeedLayout | null, binding: number): string {
  return `${LINEAR_INDEX_WGSL(ATTENTION_WORKGROUP)}
${ATTENTION_SIZES_WGSL}
@group(0) @binding(0) var<uniform> sz: Sizes;
${seed ? dropoutWgsl(seed, binding) : ""}`;
}

/** Decodes (batch, head) and the block index; `blocks` is the WGSL expression of blocks per (b, h). */
function decode(blocks: string, colBlocks: string | null): string {
  return /* wgsl */ `
  let t = linear_index(gid, nwg);
  let n = sz.tokens;
  let row_blocks = ${blocks};
  let col_blocks = ${colBlocks ?? "1u"};
  if (t >= sz.batch * sz.heads * row_blocks * col_blocks) { return; }
  let cb = t % col_blocks;
  let rb = (t / col_blocks) % row_blocks;
  let bh = t / (col_blocks * row_blocks);
  let b = bh / sz.heads;
  let h = bh % sz.heads;
  let pbase = sz.off_p + bh * n * n;
  let cbase = ((sz.batch0 + b) * sz.heads + h) * n * n;`;
}

/**
 * Scores kernel. Bindings: sizes, probs (read_write), lhs, rhs, then `fwdOut` (backward with `deltaFromOut`), then
 * the seed binding (forward with a `seed` layout that binds one).
 * Forward: probs = softmax(q·kᵀ·scale) with lhs = rhs = qkv, its sign marking dropped elements when `seed` is
 * given. Backward: probs ← P ⊙ (dP − δ)·scale with dP = (dout·vᵀ)·mask/keep (mask from the sign when `masked`);
 * δ = rowsum(dP ⊙ P), computed from the forward output as rowsum(dout ⊙ out) when `deltaFromOut` (one pass) or
 * by a first pass over the keys otherwise.
 */
export function attentionScoresWgsl(
  o: {
    rows: number;
    keys: number;
    backward: boolean;
    seed: AttentionSeedLayout | null;
    masked: boolean;
    deltaFromOut: boolean;
  },
): string {
  const R = o.rows, K = o.keys;
  const seed = o.backward ? null : o.seed;
  const masked = o.backward && o.masked;
  const deltaFromOut = o.backward && o.deltaFromOut;
  const extra = deltaFromOut
    ? `@group(0) @binding(4) var<storage, read_write> fwd_out: array<vec4<f32>>;`
    : "";

  // One block of K keys starting at j0: a_r_k = lhs row (i0 + r) · rhs row (j0 + k), over the head dimension.
  const blockDots = `
    ${each(K, (k) => `let r${k} = rrow + min(j0 + ${k}u, n - 1u) * sz.r_stride;`)}
    ${each2(R, K, (r, k) => `var a${r}_${k} = 0.0;`)}
    for (var c = 0u; c < sz.hd4; c++) {
      ${each(R, (r) => `let x${r} = lhs[l${r} + c];`)}
      ${each(K, (k) => `let y${k} = rhs[r${k} + c];`)}
      ${each2(R, K, (r, k) => `a${r}_${k} += dot(x${r}, y${k});`)}
    }
    ${each(K, (k) => `let valid${k} = j0 + ${k}u < n;`)}`;
  // From the stored value sv: the probability P and the gradient dP of element (r, k) of the block.
  const probAndGrad = (r: number, k: number) =>
    masked
      ? `let pr = abs(sv); let g = a${r}_${k} * select(0.0, sz.inv_keep, sv > 0.0);`
      : `let pr = sv; let g = a${r}_${k};`;

  let body: string;
  if (!o.backward) {
    body = `
  ${each(R, (r) => `var m${r} = -3.0e38;\n  var s${r} = 0.0;`)}
  for (var j0 = 0u; j0 < n; j0 += ${K}u) {
    ${blockDots}
    ${each2(R, K, (r, k) => `let v${r}_${k} = select(-3.0e38, a${r}_${k} * sz.scale, valid${k});`)}
    ${
      each(R, (r) => {
        const mx = range(K).reduce((acc, k) => `max(${acc}, v${r}_${k})`, `m${r}`);
        const sum = range(K).map((k) => `exp(v${r}_${k} - mn${r})`).join(" + ");
        return `let mn${r} = ${mx};\n    s${r} = s${r} * exp(m${r} - mn${r}) + ${sum};\n    m${r} = mn${r};`;
      })
    }
    ${
      each(R, (r) =>
        `if (i0 + ${r}u < n) {\n${
          each(K, (k) =>
            `      if (valid${k}) { probs[p${r} + j0 + ${k}u] = v${r}_${k}; }`)
        }\n    }`)
    }
  }
  // Normalise the raw scores this invocation wrote (its own rows only), marking dropped elements by their sign.
  ${seed ? "let sh = pcg_hash(kernel_seed());" : ""}
  ${
      each(R, (r) =>
        `if (i0 + ${r}u < n) {
    let inv = 1.0 / s${r};
    for (var j = 0u; j < n; j++) {
      let pr = exp(probs[p${r} + j] - m${r}) * inv;
      probs[p${r} + j] = ${seed ? `select(-pr, pr, kept(sh, cbase + (i0 + ${r}u) * n + j))` : "pr"};
    }
  }`)
    }`;
  } else {
    const deltaPass = deltaFromOut
      ? `
  let orow = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4;
  ${each(R, (r) => `let o${r} = orow + min(i0 + ${r}u, n - 1u) * sz.o_stride;`)}
  for (var c = 0u; c < sz.hd4; c++) {
    ${each(R, (r) => `d${r} += dot(lhs[l${r} + c], fwd_out[o${r} + c]);`)}
  }`
      : `
  for (var j0 = 0u; j0 < n; j0 += ${K}u) {
    ${blockDots}
    ${
        each2(R, K, (r, k) =>
          `{ let sv = probs[p${r} + min(j0 + ${k}u, n - 1u)]; ${probAndGrad(r, k)} ` +
          `d${r} += select(0.0, g * pr, valid${k}); }`)
      }
  }`;
    body = `
  ${each(R, (r) => `var d${r} = 0.0;`)}
  ${deltaPass}
  for (var j0 = 0u; j0 < n; j0 += ${K}u) {
    ${blockDots}
    ${
      each(R, (r) =>
        `if (i0 + ${r}u < n) {\n${
          each(K, (k) =>
            `      if (valid${k}) { let e = p${r} + j0 + ${k}u; let sv = probs[e]; ${probAndGrad(r, k)} ` +
            `probs[e] = pr * (g - d${r}) * sz.scale; }`)
        }\n    }`)
    }
  }`;
  }

  return /* wgsl */ `
${header(seed, 4)}
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> lhs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rhs: array<vec4<f32>>;
${extra}
@compute @workgroup_size(${ATTENTION_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${decode(`(n + ${R - 1}u) / ${R}u`, null)}
  let i0 = rb * ${R}u;
  let lrow = sz.off_l + b * n * sz.l_stride + sz.l_col + h * sz.hd4;
  let rrow = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4;
  ${each(R, (r) => `let l${r} = lrow + min(i0 + ${r}u, n - 1u) * sz.l_stride;`)}
  ${each(R, (r) => `let p${r} = pbase + min(i0 + ${r}u, n - 1u) * n;`)}
  ${body}
}
`;
}

/**
 * Rows kernel: dst[i, c] = Σ_j A[i, j]·X[j, c] per (b, h), A = probs (P′ = max(probs, 0)/keep when `masked`).
 * Bindings: sizes, dst (vec4), probs, x (vec4).
 * X is the `r` operand (stride/column in the sizes), dst the `o` operand.
 */
export function attentionRowsWgsl(o: { rows: number; colVecs: number; masked: boolean }): string {
  const R = o.rows, V = o.colVecs;
  const weight = (r: number) => o.masked ? `max(probs[p${r} + j], 0.0) * sz.inv_keep` : `probs[p${r} + j]`;
  return /* wgsl */ `
${header(null, 4)}
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;
@compute @workgroup_size(${ATTENTION_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${decode(`(n + ${R - 1}u) / ${R}u`, `sz.hd4 / ${V}u`)}
  let i0 = rb * ${R}u;
  ${each(R, (r) => `let p${r} = pbase + min(i0 + ${r}u, n - 1u) * n;`)}
  let xcol = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4 + cb * ${V}u;
  ${each2(R, V, (r, v) => `var a${r}_${v} = vec4<f32>(0.0);`)}
  for (var j = 0u; j < n; j++) {
    ${each(R, (r) => `let w${r} = ${weight(r)};`)}
    let xj = xcol + j * sz.r_stride;
    ${each(V, (v) => `let x${v} = x[xj + ${v}u];`)}
    ${each2(R, V, (r, v) => `a${r}_${v} += x${v} * w${r};`)}
  }
  let ocol = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4 + cb * ${V}u;
  ${
    each(R, (r) =>
      `if (i0 + ${r}u < n) {
    let e = ocol + (i0 + ${r}u) * sz.o_stride;
${each(V, (v) => `    dst[e + ${v}u] = a${r}_${v};`)}
  }`)
  }
}
`;
}

/**
 * Columns kernel: dst[j, c] = Σ_i A[i, j]·X[i, c] per (b, h), A = probs (P′ = max(probs, 0)/keep when `masked`).
 * Bindings: sizes, dst (vec4), probs, x (vec4).
 */
export function attentionColumnsWgsl(o: { rows: number; colVecs: number; masked: boolean }): string {
  const K = o.rows, V = o.colVecs;
  const weight = (k: number) =>
    o.masked ? `max(probs[q${k} + prow], 0.0) * sz.inv_keep` : `probs[q${k} + prow]`;
  return /* wgsl */ `
${header(null, 4)}
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;
@compute @workgroup_size(${ATTENTION_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  ${decode(`(n + ${K - 1}u) / ${K}u`, `sz.hd4 / ${V}u`)}
  let j0 = rb * ${K}u;
  ${each(K, (k) => `let q${k} = pbase + min(j0 + ${k}u, n - 1u);`)}
  let xcol = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4 + cb * ${V}u;
  ${each2(K, V, (k, v) => `var a${k}_${v} = vec4<f32>(0.0);`)}
  for (var i = 0u; i < n; i++) {
    let prow = i * n;
    ${each(K, (k) => `let w${k} = ${weight(k)};`)}
    let xi = xcol + i * sz.r_stride;
    ${each(V, (v) => `let x${v} = x[xi + ${v}u];`)}
    ${each2(K, V, (k, v) => `a${k}_${v} += x${v} * w${k};`)}
  }
  let ocol = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4 + cb * ${V}u;
  ${
    each(K, (k) =>
      `if (j0 + ${k}u < n) {
    let e = ocol + (j0 + ${k}u) * sz.o_stride;
${each(V, (v) => `    dst[e + ${v}u] = a${k}_${v};`)}
  }`)
  }
}
`;
}

/**
 * Subgroup variant of the rows (`transposed` false: dst[i, c] = Σ_j A[i, j]·X[j, c]) and columns (`transposed`
 * true: dst[j, c] = Σ_i A[i, j]·X[i, c]) kernels, for adapters with a fixed subgroup width `width` (8 on lavapipe):
 * one subgroup per workgroup owns `width` rows (or keys); each lane loads ONE value of A per step and
 * `subgroupBroadcast` shares it, instead of every lane gathering all `width` values; each lane owns `colVecs` vec4
 * columns of the head dimension. Bindings as the blocked kernels.
 */
export function attentionSubgroupWgsl(
  o: { width: number; colVecs: number; masked: boolean; transposed: boolean },
): string {
  const W = o.width, V = o.colVecs;
  const value = (index: string) => (o.masked ? `max(probs[${index}], 0.0) * sz.inv_keep` : `probs[${index}]`);
  // Lane `lane` loads A[i0 + lane, j] (rows) or A[i, j0 + lane] (columns); the loop variable is j or i.
  const load = o.transposed ? value("pcol + s * n") : value("prow + s");
  return /* wgsl */ `
${header(null, 4)}
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // Every lane runs the whole loop (broadcasts need all of them); loads are clamped and only stores masked.
  let t = wid.x + wid.y * nwg.x;
  let n = sz.tokens;
  let row_blocks = (n + ${W - 1}u) / ${W}u;
  let col_blocks = (sz.hd4 + ${W * V - 1}u) / ${W * V}u;
  if (t >= sz.batch * sz.heads * row_blocks * col_blocks) { return; }
  let cb = t % col_blocks;
  let rb = (t / col_blocks) % row_blocks;
  let bh = t / (col_blocks * row_blocks);
  let b = bh / sz.heads;
  let h = bh % sz.heads;
  let pbase = sz.off_p + bh * n * n;
  let i0 = rb * ${W}u;
  let mine = min(i0 + lane, n - 1u);
  let prow = pbase + mine * n;
  let pcol = pbase + mine;
  let c0 = (cb * ${W}u + lane) * ${V}u;
  ${each(V, (v) => `let col${v} = min(c0 + ${v}u, sz.hd4 - 1u);`)}
  let xcol = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4;
  ${each2(W, V, (r, v) => `var a${r}_${v} = vec4<f32>(0.0);`)}
  for (var s = 0u; s < n; s++) {
    let own = ${load};
    ${each(W, (r) => `let w${r} = subgroupBroadcast(own, ${r}u);`)}
    let xs = xcol + s * sz.r_stride;
    ${each(V, (v) => `let x${v} = x[xs + col${v}];`)}
    ${each2(W, V, (r, v) => `a${r}_${v} += x${v} * w${r};`)}
  }
  let ocol = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4;
  ${
    each(W, (r) =>
      `if (i0 + ${r}u < n) {
    let e = ocol + (i0 + ${r}u) * sz.o_stride;
${each(V, (v) => `    if (c0 + ${v}u < sz.hd4) { dst[e + c0 + ${v}u] = a${r}_${v}; }`)}
  }`)
  }
}
`;
}

/**
 * Subgroup variant of the scores kernel (same bindings and results as {@link attentionScoresWgsl}): one subgroup of
 * `width` lanes owns `width` query rows; per step each lane loads one row's vec4 of the left operand and
 * `subgroupBroadcast` shares it, while each lane owns `keys` keys of every block of width·keys keys (key
 * j0 + lane + width·k, so stores of neighbouring lanes are neighbours). Softmax statistics are kept per lane and
 * combined with `subgroupMax`/`subgroupAdd`; each lane normalises the keys it wrote.
 */
export function attentionScoresSubgroupWgsl(
  o: {
    width: number;
    keys: number;
    backward: boolean;
    seed: AttentionSeedLayout | null;
    masked: boolean;
    deltaFromOut: boolean;
  },
): string {
  const W = o.width, K = o.keys;
  const seed = o.backward ? null : o.seed;
  const masked = o.backward && o.masked;
  const deltaFromOut = o.backward && o.deltaFromOut;
  const extra = deltaFromOut
    ? `@group(0) @binding(4) var<storage, read_write> fwd_out: array<vec4<f32>>;`
    : "";
  const block = W * K;
  const blockDots = `
    ${
    each(K, (k) =>
      `let key${k} = j0 + lane + ${W * k}u;\n    let r${k} = rrow + min(key${k}, n - 1u) * sz.r_stride;`)
  }
    ${each2(W, K, (r, k) => `var a${r}_${k} = 0.0;`)}
    for (var c = 0u; c < sz.hd4; c++) {
      let own = lhs[lown + c];
      ${each(W, (r) => `let x${r} = subgroupBroadcast(own, ${r}u);`)}
      ${each(K, (k) => `let y${k} = rhs[r${k} + c];`)}
      ${each2(W, K, (r, k) => `a${r}_${k} += dot(x${r}, y${k});`)}
    }
    ${each(K, (k) => `let valid${k} = key${k} < n;`)}`;
  const probAndGrad = (r: number, k: number) =>
    masked
      ? `let pr = abs(sv); let g = a${r}_${k} * select(0.0, sz.inv_keep, sv > 0.0);`
      : `let pr = sv; let g = a${r}_${k};`;
  let body: string;
  if (!o.backward) {
    body = `
  ${each(W, (r) => `var m${r} = -3.0e38;\n  var s${r} = 0.0;`)}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots}
    ${each2(W, K, (r, k) => `let v${r}_${k} = select(-3.0e38, a${r}_${k} * sz.scale, valid${k});`)}
    ${
      each(W, (r) => {
        const mx = range(K).reduce((acc, k) => `max(${acc}, v${r}_${k})`, `m${r}`);
        const sum = range(K).map((k) => `exp(v${r}_${k} - mn${r})`).join(" + ");
        return `let mn${r} = ${mx};\n    s${r} = s${r} * exp(m${r} - mn${r}) + ${sum};\n    m${r} = mn${r};`;
      })
    }
    ${
      each(W, (r) =>
        `if (i0 + ${r}u < n) {\n${
          each(K, (k) =>
            `      if (valid${k}) { probs[p${r} + key${k}] = v${r}_${k}; }`)
        }\n    }`)
    }
  }
  // Combine the lanes' statistics, then each lane normalises the keys it wrote (j ≡ lane mod width).
  ${seed ? "let sh = pcg_hash(kernel_seed());" : ""}
  ${
      each(W, (r) =>
        `let mx${r} = subgroupMax(m${r});
  let inv${r} = 1.0 / subgroupAdd(s${r} * exp(m${r} - mx${r}));`)
    }
  ${
      each(W, (r) =>
        `if (i0 + ${r}u < n) {
    for (var j = lane; j < n; j += ${W}u) {
      let pr = exp(probs[p${r} + j] - mx${r}) * inv${r};
      probs[p${r} + j] = ${seed ? `select(-pr, pr, kept(sh, cbase + (i0 + ${r}u) * n + j))` : "pr"};
    }
  }`)
    }`;
  } else {
    const deltaPass = deltaFromOut
      ? `
  let orow = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4;
  let oown = orow + min(i0 + lane, n - 1u) * sz.o_stride;
  var dd = 0.0;
  for (var c = 0u; c < sz.hd4; c++) { dd += dot(lhs[lown + c], fwd_out[oown + c]); }
  ${each(W, (r) => `let d${r} = subgroupBroadcast(dd, ${r}u);`)}`
      : `
  ${each(W, (r) => `var e${r} = 0.0;`)}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots}
    ${
        each2(W, K, (r, k) =>
          `{ let sv = probs[p${r} + min(key${k}, n - 1u)]; ${probAndGrad(r, k)} ` +
          `e${r} += select(0.0, g * pr, valid${k}); }`)
      }
  }
  ${each(W, (r) => `let d${r} = subgroupAdd(e${r});`)}`;
    body = `
  ${deltaPass}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots}
    ${
      each(W, (r) =>
        `if (i0 + ${r}u < n) {\n${
          each(K, (k) =>
            `      if (valid${k}) { let e = p${r} + key${k}; let sv = probs[e]; ${probAndGrad(r, k)} ` +
            `probs[e] = pr * (g - d${r}) * sz.scale; }`)
        }\n    }`)
    }
  }`;
  }
  return /* wgsl */ `
${header(seed, 4)}
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> lhs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rhs: array<vec4<f32>>;
${extra}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // Every lane runs every loop (broadcasts and reductions need all of them); loads are clamped, stores masked.
  let t = wid.x + wid.y * nwg.x;
  let n = sz.tokens;
  let row_blocks = (n + ${W - 1}u) / ${W}u;
  if (t >= sz.batch * sz.heads * row_blocks) { return; }
  let rb = t % row_blocks;
  let bh = t / row_blocks;
  let b = bh / sz.heads;
  let h = bh % sz.heads;
  let pbase = sz.off_p + bh * n * n;
  let cbase = ((sz.batch0 + b) * sz.heads + h) * n * n;
  let i0 = rb * ${W}u;
  let lown = sz.off_l + (b * n + min(i0 + lane, n - 1u)) * sz.l_stride + sz.l_col + h * sz.hd4;
  let rrow = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4;
  ${each(W, (r) => `let p${r} = pbase + min(i0 + ${r}u, n - 1u) * n;`)}
  ${body}
}
`;
}

/**
 * Tall subgroup variant of the rows and columns kernels (same bindings and results as
 * {@link attentionSubgroupWgsl}), written like the `subgroup` matmul: one subgroup owns `rows` rows (or keys) of the
 * output, any count (the wrapper picks ⌈n / tiles⌉, e.g. 25 for n = 49, so two tiles waste 1 row instead of 7);
 * lane l loads the weights of tile rows l, l + width, … for 4 steps of the reduction and `subgroupBroadcast` shares
 * them, each lane owns `colVecs` vec4 columns. Per 4 steps a lane gathers 4·⌈rows/width⌉ weights and 4·colVecs
 * vec4s for 4·rows·colVecs vec4 multiply-adds (8× fewer gathers per multiply-add than the 8-row kernel at 32 rows),
 * issued accumulator by accumulator so llvmpipe keeps each accumulator in a register across its 4 updates.
 * Steps past n get weight 0 (clamped loads), so there is no tail loop.
 */
export function attentionTallWgsl(
  o: { width: number; rows: number; colVecs: number; masked: boolean; transposed: boolean; steps?: number },
): string {
  const W = o.width, R = o.rows, V = o.colVecs, F = Math.ceil(R / W), S = o.steps ?? 4;
  const weight = (
    index: string,
  ) => (o.masked ? `max(probs[${index}], 0.0) * sz.inv_keep` : `probs[${index}]`);
  // Fragment f of lane `lane` is tile row i0 + lane + width·f: A[row, k] (rows) or A[k, row] (columns).
  const base = (f: number) =>
    o.transposed
      ? `let pf${f} = pbase + min(i0 + lane + ${W * f}u, n - 1u);`
      : `let pf${f} = pbase + min(i0 + lane + ${W * f}u, n - 1u) * n;`;
  const load = (f: number, kk: number) => weight(o.transposed ? `pf${f} + kc${kk} * n` : `pf${f} + kc${kk}`);
  // Row by row: broadcast its 4 weights, then its accumulators' 4 updates each.
  const fmas = range(R).map((r) =>
    `    {
${each(S, (kk) => `      let w${kk} = subgroupBroadcast(u${Math.floor(r / W)}_${kk}, ${r % W}u);`)}
${each2(V, S, (v, kk) => `      a${r}_${v} = fma(vec4<f32>(w${kk}), x${kk}_${v}, a${r}_${v});`)}
    }`
  ).join("\n");
  return /* wgsl */ `
${header(null, 4)}
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> probs: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<vec4<f32>>;
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // Every lane runs the whole loop (broadcasts need all of them); loads are clamped and only stores masked.
  let t = wid.x + wid.y * nwg.x;
  let n = sz.tokens;
  let row_blocks = (n + ${R - 1}u) / ${R}u;
  let col_blocks = (sz.hd4 + ${W * V - 1}u) / ${W * V}u;
  if (t >= sz.batch * sz.heads * row_blocks * col_blocks) { return; }
  let cb = t % col_blocks;
  let rb = (t / col_blocks) % row_blocks;
  let bh = t / (col_blocks * row_blocks);
  let b = bh / sz.heads;
  let h = bh % sz.heads;
  let pbase = sz.off_p + bh * n * n;
  let i0 = rb * ${R}u;
  ${each(F, base)}
  let c0 = (cb * ${W}u + lane) * ${V}u;
  ${each(V, (v) => `let col${v} = min(c0 + ${v}u, sz.hd4 - 1u);`)}
  let xcol = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4;
  ${each2(R, V, (r, v) => `var a${r}_${v} = vec4<f32>(0.0);`)}
  for (var k = 0u; k < n; k += ${S}u) {
    ${each(S, (kk) => `let kc${kk} = min(k + ${kk}u, n - 1u);`)}
    ${each2(F, S, (f, kk) => `let u${f}_${kk} = select(0.0, ${load(f, kk)}, k + ${kk}u < n);`)}
    ${each(S, (kk) => `let xr${kk} = xcol + kc${kk} * sz.r_stride;`)}
    ${each2(S, V, (kk, v) => `let x${kk}_${v} = x[xr${kk} + col${v}];`)}
${fmas}
  }
  let ocol = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4;
  ${
    each(R, (r) =>
      `if (i0 + ${r}u < n) {
    let e = ocol + (i0 + ${r}u) * sz.o_stride;
${each(V, (v) => `    if (c0 + ${v}u < sz.hd4) { dst[e + c0 + ${v}u] = a${r}_${v}; }`)}
  }`)
  }
}
`;
}

/**
 * Tall subgroup variant of the scores kernel (same bindings and results as {@link attentionScoresWgsl}): one
 * subgroup owns `rows` query rows (any count; lane l loads the left-operand rows l, l + width, … and
 * `subgroupBroadcast` shares them), each lane owns `keys` keys of every block of width·keys keys. When
 * `single` (n ≤ width·keys, e.g. n = 49 with 7 keys) the whole score row stays in registers: the softmax takes
 * subgroupMax/subgroupAdd of it and each probability is written once (the general path writes raw scores and
 * normalises them in a second pass, as {@link attentionScoresSubgroupWgsl}).
 */
export function attentionScoresTallWgsl(
  o: {
    width: number;
    rows: number;
    keys: number;
    single: boolean;
    backward: boolean;
    seed: AttentionSeedLayout | null;
    masked: boolean;
    deltaFromOut: boolean;
  },
): string {
  const W = o.width, R = o.rows, K = o.keys, F = Math.ceil(R / W);
  const seed = o.backward ? null : o.seed;
  const masked = o.backward && o.masked;
  const deltaFromOut = o.backward && o.deltaFromOut;
  const extra = deltaFromOut
    ? `@group(0) @binding(4) var<storage, read_write> fwd_out: array<vec4<f32>>;`
    : "";
  const block = W * K;
  // Dots of rows i0..i0+R-1 with the lane's keys of the block at j0, row by row (accumulator-major per row).
  // With δ from the forward output, δ of the lane's rows is summed in the loop of the first block (the dout rows
  // are loaded there anyway): one pass over dout instead of two.
  const fusedDelta = deltaFromOut;
  const deltaSum = each(F, (f) => `dd${f} += dot(own${f}, fwd_out[of${f} + c]);`);
  const fusedDeltaSum = o.single ? deltaSum : `if (j0 == 0u) {\n        ${deltaSum}\n      }`;
  const blockDots = (j0: string) => `
    ${
    each(K, (k) =>
      `let key${k} = ${j0} + lane + ${W * k}u;\n    let r${k} = rrow + min(key${k}, n - 1u) * sz.r_stride;`)
  }
    ${each2(R, K, (r, k) => `var a${r}_${k} = 0.0;`)}
    for (var c = 0u; c < sz.hd4; c++) {
      ${each(F, (f) => `let own${f} = lhs[lf${f} + c];`)}
      ${fusedDelta ? fusedDeltaSum : ""}
      ${each(K, (k) => `let y${k} = rhs[r${k} + c];`)}
      ${
    each(R, (r) =>
      `{ let x = subgroupBroadcast(own${Math.floor(r / W)}, ${r % W}u); ${
        range(K).map((k) =>
          `a${r}_${k} += dot(x, y${k});`
        ).join(" ")
      } }`)
  }
    }
    ${each(K, (k) => `let valid${k} = key${k} < n;`)}`;
  const probAndGrad = (r: number, k: number) =>
    masked
      ? `let pr = abs(sv); let g = a${r}_${k} * select(0.0, sz.inv_keep, sv > 0.0);`
      : `let pr = sv; let g = a${r}_${k};`;
  const signed = (r: number, k: number, value: string) =>
    seed ? `select(-${value}, ${value}, kept(sh, cbase + (i0 + ${r}u) * n + key${k}))` : value;
  let body: string;
  if (!o.backward && o.single) {
    body = `
  ${seed ? "let sh = pcg_hash(kernel_seed());" : ""}
  ${blockDots("0u")}
  ${
      each(R, (r) => {
        const v = (k: number) => `v${r}_${k}`;
        const mx = range(K).map(v).reduce((acc, x) => `max(${acc}, ${x})`);
        return `{
    ${each(K, (k) => `let ${v(k)} = select(-3.0e38, a${r}_${k} * sz.scale, valid${k});`)}
    let mx = subgroupMax(${mx});
    ${each(K, (k) => `let e${k} = exp(${v(k)} - mx);`)}
    let inv = 1.0 / subgroupAdd(${range(K).map((k) => `e${k}`).join(" + ")});
    if (i0 + ${r}u < n) {
${each(K, (k) => `      if (valid${k}) { probs[p${r} + key${k}] = ${signed(r, k, `(e${k} * inv)`)}; }`)}
    }
  }`;
      })
    }`;
  } else if (!o.backward) {
    body = `
  ${each(R, (r) => `var m${r} = -3.0e38;\n  var s${r} = 0.0;`)}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots("j0")}
    ${each2(R, K, (r, k) => `let v${r}_${k} = select(-3.0e38, a${r}_${k} * sz.scale, valid${k});`)}
    ${
      each(R, (r) => {
        const mx = range(K).reduce((acc, k) => `max(${acc}, v${r}_${k})`, `m${r}`);
        const sum = range(K).map((k) => `exp(v${r}_${k} - mn${r})`).join(" + ");
        return `let mn${r} = ${mx};\n    s${r} = s${r} * exp(m${r} - mn${r}) + ${sum};\n    m${r} = mn${r};`;
      })
    }
    ${
      each(R, (r) =>
        `if (i0 + ${r}u < n) {\n${
          each(K, (k) =>
            `      if (valid${k}) { probs[p${r} + key${k}] = v${r}_${k}; }`)
        }\n    }`)
    }
  }
  // Combine the lanes' statistics, then each lane normalises the keys it wrote (j ≡ lane mod width).
  ${seed ? "let sh = pcg_hash(kernel_seed());" : ""}
  ${
      each(R, (r) =>
        `{
    let mx = subgroupMax(m${r});
    let inv = 1.0 / subgroupAdd(s${r} * exp(m${r} - mx));
    if (i0 + ${r}u < n) {
      for (var j = lane; j < n; j += ${W}u) {
        let pr = exp(probs[p${r} + j] - mx) * inv;
        probs[p${r} + j] = ${seed ? `select(-pr, pr, kept(sh, cbase + (i0 + ${r}u) * n + j))` : "pr"};
      }
    }
  }`)
    }`;
  } else if (fusedDelta) {
    body = `
  let orow = sz.off_o + b * n * sz.o_stride + sz.o_col + h * sz.hd4;
  ${
      each(F, (f) =>
        `let of${f} = orow + min(i0 + lane + ${W * f}u, n - 1u) * sz.o_stride;\n  var dd${f} = 0.0;`)
    }
  ${o.single ? "{" : `for (var j0 = 0u; j0 < n; j0 += ${block}u) {`}
  ${blockDots(o.single ? "0u" : "j0")}
  ${
      each(R, (r) =>
        `{
    let d = subgroupBroadcast(dd${Math.floor(r / W)}, ${r % W}u);
${
          each(K, (k) =>
            `    { let e = p${r} + min(key${k}, n - 1u); let sv = probs[e]; ${probAndGrad(r, k)}
      if (valid${k} && i0 + ${r}u < n) { probs[e] = pr * (g - d) * sz.scale; } }`)
        }
  }`)
    }
  }`;
  } else {
    // δ = rowsum(dP ⊙ P) by a first pass over the key blocks.
    body = `
  ${each(R, (r) => `var e${r} = 0.0;`)}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots("j0")}
    ${
      each2(R, K, (r, k) =>
        `{ let sv = probs[p${r} + min(key${k}, n - 1u)]; ${probAndGrad(r, k)} ` +
        `e${r} += select(0.0, g * pr, valid${k}); }`)
    }
  }
  ${each(R, (r) => `let d${r} = subgroupAdd(e${r});`)}
  for (var j0 = 0u; j0 < n; j0 += ${block}u) {
    ${blockDots("j0")}
    ${
      each2(R, K, (r, k) =>
        `{ let e = p${r} + min(key${k}, n - 1u); let sv = probs[e]; ${probAndGrad(r, k)}
      if (valid${k} && i0 + ${r}u < n) { probs[e] = pr * (g - d${r}) * sz.scale; } }`)
    }
  }`;
  }
  return /* wgsl */ `
${header(seed, 4)}
@group(0) @binding(1) var<storage, read_write> probs: array<f32>;
@group(0) @binding(2) var<storage, read_write> lhs: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> rhs: array<vec4<f32>>;
${extra}
@compute @workgroup_size(${W})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
  // Every lane runs every loop (broadcasts and reductions need all of them); loads are clamped, stores masked.
  let t = wid.x + wid.y * nwg.x;
  let n = sz.tokens;
  let row_blocks = (n + ${R - 1}u) / ${R}u;
  if (t >= sz.batch * sz.heads * row_blocks) { return; }
  let rb = t % row_blocks;
  let bh = t / row_blocks;
  let b = bh / sz.heads;
  let h = bh % sz.heads;
  let pbase = sz.off_p + bh * n * n;
  let cbase = ((sz.batch0 + b) * sz.heads + h) * n * n;
  let i0 = rb * ${R}u;
  let lrow = sz.off_l + b * n * sz.l_stride + sz.l_col + h * sz.hd4;
  ${each(F, (f) => `let lf${f} = lrow + min(i0 + lane + ${W * f}u, n - 1u) * sz.l_stride;`)}
  let rrow = sz.off_r + b * n * sz.r_stride + sz.r_col + h * sz.hd4;
  ${each(R, (r) => `let p${r} = pbase + min(i0 + ${r}u, n - 1u) * n;`)}
  ${body}
}
`;
}
