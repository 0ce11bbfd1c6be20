/**
 * Typed wrappers of the multi-head self-attention kernels (`shaders/attention.ts`). Layout as the official code:
 * qkv [B, N, 3d] holds q | k | v column blocks of d, each split into heads of hd = d/heads consecutive columns;
 * the output [B, N, d] concatenates the heads. Probabilities [B, H, N, N] are saved by forward for backward.
 *
 * Storage bindings are capped (128 MiB on llvmpipe), so the wrappers split the batch into chunks whose windows of
 * every tensor fit one binding; each window starts at a 256-byte-aligned offset and the kernels receive the
 * remaining element offset in their sizes uniform.
 */
import { type Binding, grid1d, type Plan, UniformBlock } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  ATTENTION_WORKGROUP,
  type AttentionBlocking,
  attentionColumnsWgsl,
  attentionRowsWgsl,
  attentionScoresSubgroupWgsl,
  attentionScoresTallWgsl,
  attentionScoresWgsl,
  type AttentionSeedLayout,
  attentionSubgroupWgsl,
  attentionTallWgsl,
  bakeAttentionShape,
  BLOCKED,
} from "../../shaders/attention.ts";

export { type AttentionBlocking, BLOCKED, NAIVE, SUBGROUP_NARROW } from "../../shaders/attention.ts";

/**
 * The attention-dropout seed: a binding of a uniform u32 (e.g. `UniformBlock.binding()`, its first word), word
 * `word` of a {@link UniformBlock} the host rewrites before each submission (the pattern of `shaders/dropout.ts`:
 * one block serves every random site), or a constant (tests, one-off runs).
 */
export type AttentionSeed = GPUBufferBinding | number | { block: UniformBlock; word: number };

/** Sizes and options shared by {@link attentionForward} and {@link attentionBackward}. */
export interface AttentionOptions {
  batch: number;
  tokens: number;
  /** Model width d (qkv has 3d columns). */
  dim: number;
  heads: number;
  /** Attention-dropout probability on the softmax probabilities; 0 disables it (no seed needed). */
  dropout?: number;
  /** The dropout seed; required by forward when `dropout > 0`, read at every submission. Backward ignores it. */
  seed?: AttentionSeed;
  /** Largest bytes per storage binding; defaults to the device limit (lower it to test chunking). */
  maxBindingBytes?: number;
  /**
   * Register blocking of the kernels: {@link BLOCKED} by default ({@link NAIVE} for benchmark baselines). The
   * subgroup variants are used where the adapter has fixed-width subgroups unless `subgroup: false`.
   */
  blocking?: AttentionBlocking;
}

/** Options of {@link attentionBackward}. */
export interface AttentionBackwardOptions extends AttentionOptions {
  /**
   * The forward output [B, N, d]. When given, δ = rowsum(dP ⊙ P) is computed as rowsum(dout ⊙ out) per head,
   * which saves one of the five matrix products of backward.
   */
  out?: Tensor;
}

const STORAGE_ALIGN = 256;

interface Operand {
  tensor: Tensor;
  /** Bytes per batch element. */
  slab: number;
  /** Element size of the binding: 4 (array<f32>) or 16 (array<vec4<f32>>). */
  unit: 4 | 16;
}

interface Window {
  binding: GPUBufferBinding;
  /** Offset of the chunk's first element inside the binding, in units of the binding's element. */
  offset: number;
}

function windowOf(op: Operand, b0: number, count: number): Window {
  const start = op.tensor.offset + b0 * op.slab;
  const aligned = start - (start % STORAGE_ALIGN);
  const size = Math.min(
    op.tensor.buffer.size - aligned,
    Math.ceil((start - aligned + count * op.slab) / 16) * 16,
  );
  return {
    binding: { buffer: op.tensor.buffer, offset: aligned, size },
    offset: (start - aligned) / op.unit,
  };
}

/** Splits [0, batch) into chunks whose windows of every operand fit in `maxBytes`. */
function chunks(kernel: string, batch: number, ops: Operand[], maxBytes: number): [number, number][] {
  const limit = Math.floor(maxBytes / 16) * 16;
  const out: [number, number][] = [];
  for (let b0 = 0; b0 < batch;) {
    let count = batch - b0;
    for (const op of ops) {
      const residual = (op.tensor.offset + b0 * op.slab) % STORAGE_ALIGN;
      count = Math.min(count, Math.floor((limit - residual) / op.slab));
    }
    if (count < 1) {
      const big = ops.reduce((a, o) => (o.slab > a.slab ? o : a));
      throw new RangeError(
        `${kernel}: one batch element of ${big.tensor.label} (${big.slab} B) exceeds the binding limit of ${maxBytes} B`,
      );
    }
    out.push([b0, count]);
    b0 += count;
  }
  return out;
}

interface Checked {
  batch: number;
  tokens: number;
  dim: number;
  heads: number;
  hd4: number;
  dropout: number;
  blocking: AttentionBlocking;
  colVecs: number;
  /** Seed layout (null without dropout), the `Sizes.seed` field and the extra binding. */
  seed: { layout: AttentionSeedLayout; field: number; bindings: Binding[] } | null;
}

function seedOf(kernel: string, seed: AttentionSeed | undefined): NonNullable<Checked["seed"]> {
  if (typeof seed === "number") {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(`${kernel}: seed must be a u32, got ${seed}`);
    }
    return { layout: { kind: "value" }, field: seed, bindings: [] };
  }
  if (seed && "block" in seed) {
    const { block, word } = seed;
    if (!(block instanceof UniformBlock)) throw new TypeError(`${kernel}: seed.block must be a UniformBlock`);
    if (!Number.isInteger(word) || word < 0 || word >= block.u32.length) {
      throw new RangeError(`${kernel}: seed word must be in 0..${block.u32.length - 1}, got ${word}`);
    }
    return {
      layout: { kind: "block", vectors: block.buffer.size / 16 },
      field: word,
      bindings: [block.binding()],
    };
  }
  if (seed && "buffer" in seed) return { layout: { kind: "binding" }, field: 0, bindings: [seed] };
  throw new TypeError(`${kernel}: dropout needs a seed (a u32, a uniform binding or { block, word })`);
}

function checkOptions(kernel: string, o: AttentionOptions, needSeed: boolean): Checked {
  const { batch, tokens, dim, heads } = o;
  for (const [name, v] of Object.entries({ batch, tokens, dim, heads })) {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`${kernel}: ${name} must be a positive integer, got ${v}`);
    }
  }
  if (dim % heads !== 0) throw new RangeError(`${kernel}: dim ${dim} is not divisible by heads ${heads}`);
  const hd = dim / heads;
  if (hd % 4 !== 0) {
    throw new RangeError(`${kernel}: head dimension ${hd} must be a multiple of 4 (vec4 loads)`);
  }
  const dropout = o.dropout ?? 0;
  if (!(dropout >= 0 && dropout < 1)) {
    throw new RangeError(`${kernel}: dropout must be in [0, 1), got ${dropout}`);
  }
  const blocking = o.blocking ?? BLOCKED;
  const hd4 = hd / 4;
  // The largest column block not above the requested one that divides hd/4.
  let colVecs = Math.min(blocking.colVecs, hd4);
  while (hd4 % colVecs !== 0) colVecs--;
  const seed = dropout > 0 && needSeed ? seedOf(kernel, o.seed) : null;
  return { batch, tokens, dim, heads, hd4, dropout, blocking, colVecs, seed };
}

function checkShape(kernel: string, t: Tensor, name: string, shape: number[], vec4: boolean): void {
  const size = shape.reduce((a, b) => a * b, 1);
  if (t.size !== size) {
    throw new TypeError(`${kernel}: ${name} (${t.label}) has shape [${t.shape}], expected [${shape}]`);
  }
  if (vec4 && t.offset % 16 !== 0) {
    throw new RangeError(`${kernel}: ${name} (${t.label}) offset ${t.offset} is not 16-byte aligned`);
  }
}

function baked(c: Checked, code: string): string {
  return c.blocking.bakeShapes ? bakeAttentionShape(code, c.tokens, c.hd4) : code;
}

/** Rows per tile when n rows are split into ⌈n / maxRows⌉ tiles as evenly as possible (49 at 32: 25). */
function evenRows(n: number, maxRows: number): number {
  return Math.ceil(n / Math.ceil(n / maxRows));
}

/** The rows (dst = A·X) or columns (dst = Aᵀ·X) kernel for this device and blocking, and its grid. */
function productKernel(
  plan: Plan,
  c: Checked,
  transposed: boolean,
  masked: boolean,
): { code: string; groups: (batch: number) => [number, number, number] } {
  const gpu = plan.gpu;
  const width = gpu.subgroupSize;
  const tokens = c.tokens, heads = c.heads;
  if ((c.blocking.subgroup ?? true) && gpu.hasSubgroups && width >= 4 && width <= 16) {
    const colVecs = Math.max(1, Math.min(2, Math.floor(c.hd4 / width)));
    const maxRows = c.blocking.productRows ?? 0;
    if (maxRows > 0) {
      const rows = evenRows(tokens, maxRows);
      const colVecs = Math.max(1, Math.min(c.blocking.colVecs, Math.floor(c.hd4 / width)));
      const blocks = Math.ceil(tokens / rows) * Math.ceil(c.hd4 / (width * colVecs));
      return {
        code: baked(
          c,
          attentionTallWgsl({ width, rows, colVecs, masked, transposed, steps: c.blocking.steps }),
        ),
        groups: (batch) => grid1d(batch * heads * blocks, 1),
      };
    }
    const blocks = Math.ceil(tokens / width) * Math.ceil(c.hd4 / (width * colVecs));
    return {
      code: attentionSubgroupWgsl({ width, colVecs, masked, transposed }),
      groups: (batch) => grid1d(batch * heads * blocks, 1),
    };
  }
  const { rows } = c.blocking;
  const blocks = Math.ceil(tokens / rows) * (c.hd4 / c.colVecs);
  const spec = { rows, colVecs: c.colVecs, masked };
  return {
    code: transposed ? attentionColumnsWgsl(spec) : attentionRowsWgsl(spec),
    groups: (batch) => grid1d(batch * heads * blocks, ATTENTION_WORKGROUP),
  };
}

/** The scores kernel for this device and blocking, and its grid. */
function scoresKernel(
  plan: Plan,
  c: Checked,
  spec: { backward: boolean; seed: AttentionSeedLayout | null; masked: boolean; deltaFromOut: boolean },
): { code: string; groups: (batch: number) => [number, number, number] } {
  const gpu = plan.gpu;
  const width = gpu.subgroupSize;
  if ((c.blocking.subgroup ?? true) && gpu.hasSubgroups && width >= 4 && width <= 16) {
    const maxRows = c.blocking.scoreRows ?? 0;
    if (maxRows > 0) {
      // One block of keys when the row fits in registers at up to `keys` per lane (n = 49: 7 per lane), or for
      // the forward softmax up to `softmaxKeys` per lane with fewer rows (n = 256: 16 rows × 32 keys).
      const perLane = Math.ceil(c.tokens / width);
      const softmaxKeys = spec.backward ? 0 : (c.blocking.softmaxKeys ?? 0);
      const single = perLane <= Math.max(c.blocking.keys, softmaxKeys);
      const keys = single ? perLane : c.blocking.keys;
      const rows = evenRows(
        c.tokens,
        perLane > c.blocking.keys && single
          ? Math.max(1, Math.min(maxRows, Math.floor(512 / perLane)))
          : maxRows,
      );
      return {
        code: baked(c, attentionScoresTallWgsl({ width, rows, keys, single, ...spec })),
        groups: (batch) => grid1d(batch * c.heads * Math.ceil(c.tokens / rows), 1),
      };
    }
    const keys = Math.max(1, Math.min(c.blocking.keys, Math.ceil(c.tokens / width)));
    return {
      code: attentionScoresSubgroupWgsl({ width, keys, ...spec }),
      groups: (batch) => grid1d(batch * c.heads * Math.ceil(c.tokens / width), 1),
    };
  }
  const { rows, keys } = c.blocking;
  return {
    code: attentionScoresWgsl({ rows, keys, ...spec }),
    groups: (batch) => grid1d(batch * c.heads * Math.ceil(c.tokens / rows), ATTENTION_WORKGROUP),
  };
}

type SizeFields = {
  batch0: number;
  batch: number;
  p: number;
  l?: [number, number, number];
  r?: [number, number, number];
  o?: [number, number, number];
};

/** The sizes uniform (see ATTENTION_SIZES_WGSL): [offset, stride, column] per operand. */
function sizes(c: Checked, f: SizeFields): { uniform: (number | { f32: number })[] } {
  const [ol, sl, cl] = f.l ?? [0, 0, 0];
  const [or, sr, cr] = f.r ?? [0, 0, 0];
  const [oo, so, co] = f.o ?? [0, 0, 0];
  return {
    uniform: [
      f.batch,
      c.tokens,
      c.heads,
      c.hd4,
      f.batch0,
      f.p,
      ol,
      or,
      oo,
      sl,
      cl,
      sr,
      cr,
      so,
      co,
      { f32: 1 / Math.sqrt(c.hd4 * 4) },
      { f32: c.dropout },
      { f32: 1 / (1 - c.dropout) },
      c.seed?.field ?? 0,
    ],
  };
}

/**
 * Multi-head self-attention forward: P = softmax(q·kᵀ·hd^-0.5) per (batch, head), saved pre-dropout;
 * out[b, n, h·hd + j] = Σ_m dropout(P)[b, h, n, m]·v[b, m, h·hd + j].
 * With dropout, the saved probs carry the mask in their sign: probs = P where kept, −P where dropped
 * (|probs| is the softmax), so backward needs no seed.
 * Shapes: out [B, N, d], probs [B, H, N, N], qkv [B, N, 3d]. Two dispatches per batch chunk.
 */
export function attentionForward(
  plan: Plan,
  out: Tensor,
  probs: Tensor,
  qkv: Tensor,
  options: AttentionOptions,
): void {
  const kernel = "attentionForward";
  const c = checkOptions(kernel, options, true);
  const { batch: B, tokens: N, dim: d, heads: H } = c;
  checkShape(kernel, out, "out", [B, N, d], true);
  checkShape(kernel, probs, "probs", [B, H, N, N], false);
  checkShape(kernel, qkv, "qkv", [B, N, 3 * d], true);
  const qkvOp: Operand = { tensor: qkv, slab: N * 3 * d * 4, unit: 16 };
  const outOp: Operand = { tensor: out, slab: N * d * 4, unit: 16 };
  const probsOp: Operand = { tensor: probs, slab: H * N * N * 4, unit: 4 };
  const maxBytes = options.maxBindingBytes ?? plan.gpu.device.limits.maxStorageBufferBindingSize;
  const scores = scoresKernel(plan, c, {
    backward: false,
    seed: c.seed?.layout ?? null,
    masked: false,
    deltaFromOut: false,
  });
  const values = productKernel(plan, c, false, c.dropout > 0);
  const row4 = (3 * d) / 4, d4 = d / 4;
  for (const [b0, count] of chunks(kernel, B, [qkvOp, outOp, probsOp], maxBytes)) {
    const q = windowOf(qkvOp, b0, count), p = windowOf(probsOp, b0, count), o = windowOf(outOp, b0, count);
    plan.dispatch(
      "attentionScoresSoftmax",
      scores.code,
      [
        sizes(c, { batch0: b0, batch: count, p: p.offset, l: [q.offset, row4, 0], r: [q.offset, row4, d4] }),
        p.binding,
        q.binding,
        q.binding,
        ...(c.seed?.bindings ?? []),
      ],
      scores.groups(count),
    );
    plan.dispatch(
      "attentionProbsTimesValues",
      values.code,
      [
        sizes(c, {
          batch0: b0,
          batch: count,
          p: p.offset,
          r: [q.offset, row4, 2 * d4],
          o: [o.offset, d4, 0],
        }),
        o.binding,
        p.binding,
        q.binding,
      ],
      values.groups(count),
    );
  }
}

/**
 * Multi-head self-attention backward: dqkv [B, N, 3d] (overwritten) from dout [B, N, d], qkv and the saved probs,
 * reading the dropout mask from their sign (`dropout` must match the forward's; `seed` is not needed): dv = P′ᵀ·dout; dP = (dout·vᵀ)·mask/keep; dS = P ⊙ (dP − rowsum(dP ⊙ P));
 * dq = dS·k·scale; dk = dSᵀ·q·scale.
 *
 * **probs is consumed**: the score gradients dS are written over it (no second [B, H, N, N] buffer is needed).
 * Run forward again before another backward. Four dispatches per batch chunk.
 */
export function attentionBackward(
  plan: Plan,
  dqkv: Tensor,
  dout: Tensor,
  qkv: Tensor,
  probs: Tensor,
  options: AttentionBackwardOptions,
): void {
  const kernel = "attentionBackward";
  const c = checkOptions(kernel, options, false);
  const { batch: B, tokens: N, dim: d, heads: H } = c;
  checkShape(kernel, dqkv, "dqkv", [B, N, 3 * d], true);
  checkShape(kernel, dout, "dout", [B, N, d], true);
  checkShape(kernel, qkv, "qkv", [B, N, 3 * d], true);
  checkShape(kernel, probs, "probs", [B, H, N, N], false);
  if (options.out) checkShape(kernel, options.out, "out", [B, N, d], true);
  const ops: Operand[] = [
    { tensor: dqkv, slab: N * 3 * d * 4, unit: 16 },
    { tensor: dout, slab: N * d * 4, unit: 16 },
    { tensor: qkv, slab: N * 3 * d * 4, unit: 16 },
    { tensor: probs, slab: H * N * N * 4, unit: 4 },
  ];
  if (options.out) ops.push({ tensor: options.out, slab: N * d * 4, unit: 16 });
  const maxBytes = options.maxBindingBytes ?? plan.gpu.device.limits.maxStorageBufferBindingSize;
  const masked = c.dropout > 0;
  const row4 = (3 * d) / 4, d4 = d / 4;
  const valueGrads = productKernel(plan, c, true, masked);
  const keyGrads = productKernel(plan, c, true, false);
  const queryGrads = productKernel(plan, c, false, false);
  const scores = scoresKernel(plan, c, { backward: true, seed: null, masked, deltaFromOut: !!options.out });
  for (const [b0, count] of chunks(kernel, B, ops, maxBytes)) {
    const [dq, g, q, p, o] = ops.map((op) => windowOf(op, b0, count));
    const base = { batch0: b0, batch: count, p: p.offset };
    // dv = P′ᵀ·dout (reads P before it is overwritten).
    plan.dispatch("attentionValueGrads", valueGrads.code, [
      sizes(c, { ...base, r: [g.offset, d4, 0], o: [dq.offset, row4, 2 * d4] }),
      dq.binding,
      p.binding,
      g.binding,
    ], valueGrads.groups(count));
    // dS (already times scale) over P.
    plan.dispatch("attentionScoreGrads", scores.code, [
      sizes(c, {
        ...base,
        l: [g.offset, d4, 0],
        r: [q.offset, row4, 2 * d4],
        o: o ? [o.offset, d4, 0] : undefined,
      }),
      p.binding,
      g.binding,
      q.binding,
      ...(o ? [o.binding] : []),
    ], scores.groups(count));
    // dq = dS·k, dk = dSᵀ·q.
    plan.dispatch("attentionQueryGrads", queryGrads.code, [
      sizes(c, { ...base, r: [q.offset, row4, d4], o: [dq.offset, row4, 0] }),
      dq.binding,
      p.binding,
      q.binding,
    ], queryGrads.groups(count));
    plan.dispatch("attentionKeyGrads", keyGrads.code, [
      sizes(c, { ...base, r: [q.offset, row4, 0], o: [dq.offset, row4, d4] }),
      dq.binding,
      p.binding,
      q.binding,
    ], keyGrads.groups(count));
  }
}
