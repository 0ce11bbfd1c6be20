/**
 * Typed wrappers of the matmul family (`shaders/matmul.ts`): a general strided, batched matmul with a fused
 * epilogue, the linear-layer forward/backward in PyTorch layout (W [out, in], y = x·Wᵀ + b), a fast column sum
 * for bias gradients, and the per-adapter variant tuner. Arguments: outputs, inputs, weights, options.
 */
import type { Gpu } from "../gpu/device.ts";
import { lookupChoice, sizeClass, tuneChoice } from "../gpu/autotune.ts";
import { MAX_GROUPS_PER_DIM, Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  COLUMN_SUM_WORKGROUP,
  columnSumReduceWgsl,
  columnSumWgsl,
  type MatmulActivation,
  matmulGroups,
  type MatmulKernelSpec,
  matmulWgsl,
} from "../../shaders/matmul.ts";
import { expectElements } from "./_check.ts";

export type { MatmulActivation } from "../../shaders/matmul.ts";

/**
 * A kernel variant: `naive` (one output per invocation), `blocked<tm>x<tn>` (register-blocked, tm ∈ {4, 8, 16},
 * tn ∈ {4, 8, 16}) or `subgroup<tm>x<tn>` (subgroup-shared A fragments, tm ∈ {8, 16, 32}, tn ∈ {4, 8, 16};
 * needs `gpu.hasSubgroups` and a fixed `gpu.subgroupSize` dividing tm).
 */
export type MatmulVariant = "naive" | `blocked${number}x${number}` | `subgroup${number}x${number}`;

/** Strided batching over up to two batch dimensions; strides are in elements, one per batch dimension. */
export interface MatmulBatch {
  /** Batch sizes: [b1] or [b1, b2]; the dispatch covers b1·b2 products. */
  dims: readonly number[];
  /** Element stride of A between consecutive products, per batch dimension. */
  strideA: readonly number[];
  /** Element stride of B, per batch dimension. */
  strideB: readonly number[];
  /** Element stride of C, per batch dimension. */
  strideC: readonly number[];
}

/** Options of {@link matmul}: C[M,N] (+)= act(alpha·op(A)[M,K]·op(B)[K,N] + bias). */
export interface MatmulOptions {
  /** Rows of C. */
  m: number;
  /** Columns of C. */
  n: number;
  /** The reduced dimension. */
  k: number;
  /** A is stored [K, M] (row stride lda) and used transposed. */
  transA?: boolean;
  /** B is stored [N, K] and used transposed. */
  transB?: boolean;
  /** [N], added to every row. */
  bias?: Tensor;
  /** Activation applied in the epilogue (after bias). Default "none". */
  activation?: MatmulActivation;
  /** Receives the value before the activation; laid out like C (same offC, ldc, batch strides). */
  preActivation?: Tensor;
  /** Multiplies the result by GELU'(g) with g laid out like C (dx through a GELU in one pass). */
  geluGradOf?: Tensor;
  /**
   * Added after the activation, laid out like C: a residual connection (`out = x + branch`) in the epilogue
   * instead of a pass of its own. Must be in another buffer than C.
   */
  residual?: Tensor;
  /** C += result instead of C = result. */
  accumulate?: boolean;
  /** Scale of the product (before bias). Default 1. */
  alpha?: number;
  /** Strided batching (attention heads); one product when absent. */
  batch?: MatmulBatch;
  /** Element offset of A's first element (need not be aligned). */
  offA?: number;
  /** Element offset of B's first element. */
  offB?: number;
  /** Element offset of C's first element. */
  offC?: number;
  /** Row stride of A in elements; default its stored row length (k, or m when transposed). */
  lda?: number;
  /** Row stride of B; default n (or k when transposed). */
  ldb?: number;
  /** Row stride of C; default n. */
  ldc?: number;
  /** Force a variant (tests, benchmarks); otherwise the tuned or default choice for the shape. */
  variant?: MatmulVariant;
  /**
   * Split a long K into sequential dispatches of at most this many k that accumulate into C (only without bias,
   * activation, preActivation and geluGradOf). Each slice of A and B then stays in the CPU caches while every
   * workgroup walks it: weight gradients over 32,768 rows ran 3–4× slower unsplit. The slices are of equal length
   * (multiples of 4; the last may be shorter), so no short tail slice costs a dispatch of its own. Default {@link MATMUL_K_SPLIT} when
   * k ≥ twice that; 0 disables.
   */
  kSplit?: number;
}

/** Default longest K slice of {@link MatmulOptions.kSplit}. */
export const MATMUL_K_SPLIT = 2048;

/**
 * The k lengths of a split product: equal slices of at most `kSplit`, each a multiple of 4 (vec4 offsets stay
 * aligned) except possibly the last, e.g. 6272 → 4 × 1568 rather than 3 × 2048 + 128.
 */
export function matmulKSlices(k: number, kSplit: number): number[] {
  const slice = Math.ceil(k / Math.ceil(k / kSplit) / 4) * 4;
  const out: number[] = [];
  for (let k0 = 0; k0 < k; k0 += slice) out.push(Math.min(slice, k - k0));
  return out;
}

/** Variants worth timing on this device, best guesses first. */
export function matmulCandidates(gpu: Gpu): MatmulVariant[] {
  const list: MatmulVariant[] = ["blocked8x8", "blocked4x8", "blocked8x4", "blocked4x4"];
  if (gpu.hasSubgroups && gpu.subgroupSize > 0 && 16 % gpu.subgroupSize === 0) {
    list.unshift("subgroup32x8", "subgroup16x8", "subgroup16x4");
    if (8 % gpu.subgroupSize === 0) list.push("subgroup8x8");
  }
  return list;
}

/** The shape class used as the tuning key. */
export function matmulShapeClass(
  o: Pick<MatmulOptions, "m" | "n" | "k" | "transA" | "transB" | "batch">,
): string {
  const batched = o.batch ? o.batch.dims.reduce((a, b) => a * b, 1) > 1 : false;
  return `${o.transA ? "T" : "N"}${o.transB ? "T" : "N"} m${sizeClass(o.m)} n${sizeClass(o.n)} k${
    sizeClass(o.k)
  }${batched ? " batched" : ""}`;
}

/** The variant a wrapper uses: the tuned one for the shape class, else a static default for the adapter. */
export function chooseMatmulVariant(
  gpu: Gpu,
  o: Pick<MatmulOptions, "m" | "n" | "k" | "transA" | "transB" | "batch">,
): MatmulVariant {
  const tuned = lookupChoice(gpu, "matmul", matmulShapeClass(o));
  if (tuned) return tuned as MatmulVariant;
  if (gpu.hasSubgroups && gpu.subgroupSize === 8 && o.m >= 16 && o.n >= 32) {
    // Lavapipe, by CPU time of the cct_2 linear layers (M = 6272 or K = 6272, N = 128/384): 32×8 beats 16×8 by
    // 10–30% in every direction (forward, dx, transposed-A dW). Its pipelines compile about 2× longer (once; Mesa
    // caches them on disk). Batched attention products keep 16×8: not tuned here.
    const batched = (o.batch?.dims ?? [1]).reduce((a, b) => a * b, 1) > 1;
    return o.m >= 64 && !batched ? "subgroup32x8" : "subgroup16x8";
  }
  if (o.m >= 8 && o.n >= 8) return "blocked8x8";
  return "blocked4x4";
}

function parseVariant(gpu: Gpu, v: MatmulVariant): Pick<MatmulKernelSpec, "style" | "tm" | "tn"> {
  if (v === "naive") return { style: "naive", tm: 1, tn: 1 };
  const match = /^(blocked|subgroup)(\d+)x(\d+)$/.exec(v);
  if (!match) throw new RangeError(`matmul: unknown variant "${v}"`);
  const style = match[1] as "blocked" | "subgroup";
  const tm = Number(match[2]), tn = Number(match[3]);
  // The subgroup style also takes tm = 32: its A loads are shared, so taller tiles cut B loads per multiply-add.
  const tms = style === "subgroup" ? [8, 16, 32] : [4, 8, 16];
  if (!tms.includes(tm) || ![4, 8, 16].includes(tn)) {
    throw new RangeError(`matmul: variant "${v}" needs tm in {${tms.join(", ")}} and tn in {4, 8, 16}`);
  }
  if (style === "subgroup" && !(gpu.hasSubgroups && gpu.subgroupSize > 0 && tm % gpu.subgroupSize === 0)) {
    throw new RangeError(
      `matmul: variant "${v}" needs subgroups of a fixed width dividing ${tm} (device: ${
        gpu.hasSubgroups ? `width ${gpu.subgroupSize || "variable"}` : "no subgroups"
      })`,
    );
  }
  return { style, tm, tn };
}

/** Largest element index touched by a rows×cols block with row stride ld, plus batching. */
function lastIndex(
  off: number,
  rows: number,
  cols: number,
  ld: number,
  dims: number[],
  strides: number[],
): number {
  let last = off + (rows - 1) * ld + cols - 1;
  dims.forEach((d, i) => last += (d - 1) * strides[i]);
  return last;
}

function checkOperand(
  what: string,
  t: Tensor,
  off: number,
  rows: number,
  cols: number,
  ld: number,
  dims: number[],
  strides: number[],
): void {
  for (
    const [name, v] of [["offset", off], ["leading dimension", ld], ...strides.map((s) => ["stride", s])]
  ) {
    if (!Number.isInteger(v) || (v as number) < 0) {
      throw new RangeError(`matmul: ${what} ${t.label}: ${name} ${v} is not a non-negative integer`);
    }
  }
  if (ld < cols) {
    throw new TypeError(`matmul: ${what} ${t.label}: leading dimension ${ld} < row length ${cols}`);
  }
  if (rows === 0 || cols === 0) return;
  const last = lastIndex(off, rows, cols, ld, dims, strides);
  if (last >= t.size) {
    throw new RangeError(
      `matmul: ${what} ${t.label} [${t.shape}] has ${t.size} elements; a ${rows}×${cols} block (ld ${ld}, offset ${off}) ` +
        `needs index ${last}`,
    );
  }
}

/**
 * A binding whose size is rounded up to 16 bytes so an `array<vec4<f32>>` sees every element, or undefined when
 * the view cannot be read as vec4 (misaligned, or no room to round up).
 */
function vec4Binding(t: Tensor): GPUBufferBinding | undefined {
  const size = Math.max(16, Math.ceil(t.byteLength / 16) * 16);
  if (t.offset % 16 !== 0 || t.offset + size > t.buffer.size) return undefined;
  return { buffer: t.buffer, offset: t.offset, size };
}

/**
 * C[M,N] (+)= act(alpha·op(A)·op(B) + bias) with optional pre-activation output, GELU' factor, strided batching
 * and arbitrary element offsets and leading dimensions. Chooses the tuned (or default) variant for the shape.
 *
 * @example Every head's attention scores q·kᵀ/√hd, read from one qkv tensor [B, T, 3d] as strided batches
 * ```ts
 * import { createTensor, getGpu, matmul, Plan, readTensor, uploadTensor } from "@compact-transformers/cct";
 *
 * const [B, T, H, d] = [2, 5, 2, 8], hd = d / H;
 * const gpu = await getGpu();
 * const values = Float32Array.from({ length: B * T * 3 * d }, Math.random);
 * const qkv = uploadTensor(gpu, values, [B, T, 3 * d], "qkv");
 * const scores = createTensor(gpu, [B, H, T, T], "scores");
 * const plan = new Plan(gpu, "scores");
 * matmul(plan, scores, qkv, qkv, {
 *   m: T, n: T, k: hd, transB: true, alpha: 1 / Math.sqrt(hd), lda: 3 * d, ldb: 3 * d, ldc: T,
 *   offA: 0, offB: d, batch: { dims: [B, H], strideA: [T * 3 * d, hd], strideB: [T * 3 * d, hd],
 *   strideC: [H * T * T, T * T] },
 * });
 * await plan.run();
 * console.log((await readTensor(gpu, scores)).length); // 100
 * ```
 */
export function matmul(plan: Plan, c: Tensor, a: Tensor, b: Tensor, o: MatmulOptions): void {
  const gpu = plan.gpu;
  const { m, n, k } = o;
  for (const [name, v] of [["m", m], ["n", n], ["k", k]] as const) {
    if (!Number.isInteger(v) || v < 0) throw new RangeError(`matmul: ${name} = ${v} is not a size`);
  }
  const transA = o.transA ?? false, transB = o.transB ?? false;
  const dims = [...(o.batch?.dims ?? [1])];
  if (dims.length < 1 || dims.length > 2) {
    throw new RangeError(`matmul: batch has ${dims.length} dimensions (1 or 2)`);
  }
  const pick = (s: readonly number[] | undefined, what: string) => {
    const v = [...(s ?? dims.map(() => 0))];
    if (v.length !== dims.length) throw new RangeError(`matmul: batch ${what} [${v}] for dims [${dims}]`);
    return v;
  };
  const strideA = pick(o.batch?.strideA, "strideA");
  const strideB = pick(o.batch?.strideB, "strideB");
  const strideC = pick(o.batch?.strideC, "strideC");
  while (dims.length < 2) {
    dims.push(1);
    strideA.push(0);
    strideB.push(0);
    strideC.push(0);
  }
  const batches = dims[0] * dims[1];
  const offA = o.offA ?? 0, offB = o.offB ?? 0, offC = o.offC ?? 0;
  const lda = o.lda ?? (transA ? m : k);
  const ldb = o.ldb ?? (transB ? k : n);
  const ldc = o.ldc ?? n;
  checkOperand("A", a, offA, transA ? k : m, transA ? m : k, lda, dims, strideA);
  checkOperand("B", b, offB, transB ? n : k, transB ? k : n, ldb, dims, strideB);
  checkOperand("C", c, offC, m, n, ldc, dims, strideC);
  if (o.preActivation) checkOperand("preActivation", o.preActivation, offC, m, n, ldc, dims, strideC);
  if (o.geluGradOf) checkOperand("geluGradOf", o.geluGradOf, offC, m, n, ldc, dims, strideC);
  if (o.residual) {
    checkOperand("residual", o.residual, offC, m, n, ldc, dims, strideC);
    // Bound read-only beside the writable C: WebGPU refuses one buffer in both roles in a dispatch.
    if (o.residual.buffer === c.buffer) {
      throw new TypeError(`matmul: residual ${o.residual.label} shares C's buffer (use accumulate instead)`);
    }
  }
  if (o.bias && o.bias.size < n) {
    throw new TypeError(`matmul: bias ${o.bias.label} has ${o.bias.size} elements, expected ${n}`);
  }
  if (batches > MAX_GROUPS_PER_DIM) {
    throw new RangeError(`matmul: ${batches} batches exceed one grid dimension`);
  }
  if (m === 0 || n === 0 || batches === 0) return;
  const plain = !o.bias && !o.preActivation && !o.geluGradOf && !o.residual &&
    (o.activation ?? "none") === "none";
  const kSplit = o.kSplit ?? (k >= 2 * MATMUL_K_SPLIT ? MATMUL_K_SPLIT : 0);
  if (plain && kSplit > 0 && k > kSplit) {
    if (!Number.isInteger(kSplit) || kSplit % 4 !== 0) {
      throw new RangeError(`matmul: kSplit ${kSplit} must be a positive multiple of 4`);
    }
    let k0 = 0;
    for (const slice of matmulKSlices(k, kSplit)) {
      matmul(plan, c, a, b, {
        ...o,
        k: slice,
        offA: offA + (transA ? k0 * lda : k0),
        offB: offB + (transB ? k0 : k0 * ldb),
        lda,
        ldb,
        ldc,
        accumulate: k0 > 0 || (o.accumulate ?? false),
        kSplit: 0,
        // The whole product's variant, not the one of a k slice.
        variant: o.variant ?? chooseMatmulVariant(gpu, { m, n, k, transA, transB, batch: o.batch }),
      });
      k0 += slice;
    }
    return;
  }

  const variant = o.variant ?? chooseMatmulVariant(gpu, { m, n, k, transA, transB, batch: o.batch });
  const shape = parseVariant(gpu, variant);
  // vec4 loads need every start of a row (or column block) of the operand to be a multiple of 4 elements.
  const aligned = (off: number, ld: number, strides: number[]) =>
    off % 4 === 0 && ld % 4 === 0 && strides.every((s) => s % 4 === 0);
  const bindA = shape.style !== "naive" && aligned(offA, lda, strideA) ? vec4Binding(a) : undefined;
  const bindB = shape.style !== "naive" && aligned(offB, ldb, strideB) ? vec4Binding(b) : undefined;
  // vec4 stores: every row of C (and of the tensors laid out like it) starts at a multiple of 4, and n = 4·j so
  // a vec4 of columns is all inside C or all outside.
  const vecBinding = (t: Tensor | undefined) => t === undefined ? null : vec4Binding(t);
  const outputs = [c, o.preActivation, o.geluGradOf, o.bias, o.residual].map(vecBinding);
  const vecC = shape.style !== "naive" && n % 4 === 0 && aligned(offC, ldc, strideC) &&
    outputs.every((x) => x !== undefined);
  const spec: MatmulKernelSpec = {
    ...shape,
    transA,
    transB,
    vecA: bindA !== undefined && !(transA && shape.tm % 4 !== 0),
    vecB: bindB !== undefined,
    bias: o.bias !== undefined,
    activation: o.activation ?? "none",
    preActivation: o.preActivation !== undefined,
    geluGrad: o.geluGradOf !== undefined,
    residual: o.residual !== undefined,
    accumulate: o.accumulate ?? false,
    subgroupSize: shape.style === "subgroup" ? gpu.subgroupSize : 0,
    vecC,
  };
  const [gx, gy] = matmulGroups(spec, m, n);
  if (gx > MAX_GROUPS_PER_DIM || gy > MAX_GROUPS_PER_DIM) {
    throw new RangeError(`matmul: ${m}×${n} needs [${gx}, ${gy}] workgroups with ${variant}; split the call`);
  }
  const bindings = [
    {
      uniform: [
        m,
        n,
        k,
        dims[1],
        lda,
        ldb,
        ldc,
        { f32: o.alpha ?? 1 },
        offA,
        offB,
        offC,
        0,
        strideA[0],
        strideA[1],
        strideB[0],
        strideB[1],
        strideC[0],
        strideC[1],
      ],
    },
    vecC ? outputs[0]! : c,
    spec.vecA ? bindA! : a,
    spec.vecB ? bindB! : b,
    ...(o.bias ? [vecC ? outputs[3]! : o.bias] : []),
    ...(o.preActivation ? [vecC ? outputs[1]! : o.preActivation] : []),
    ...(o.geluGradOf ? [vecC ? outputs[2]! : o.geluGradOf] : []),
    ...(o.residual ? [vecC ? outputs[4]! : o.residual] : []),
  ];
  plan.dispatch(`matmul:${variant}`, matmulWgsl(spec), bindings, [gx, gy, batches]);
}

/** Per-device scratch for the column sum's partial results; grown (never shrunk) as plans need more. */
const scratch = new WeakMap<GPUDevice, Tensor>();

function columnSumScratch(gpu: Gpu, elements: number): Tensor {
  const have = scratch.get(gpu.device);
  if (have && have.size >= elements) return have;
  const t = createTensor(gpu, [Math.max(elements, 2 * (have?.size ?? 0))], "columnSum:partial");
  scratch.set(gpu.device, t);
  return t;
}

/**
 * out[c] (+)= Σ_r x[r, c] for x [rows, cols]. Each invocation sums 4 columns over a chunk of rows; with more than
 * one chunk a second dispatch reduces the chunks (no atomics, deterministic).
 */
export function columnSum(
  plan: Plan,
  out: Tensor,
  x: Tensor,
  { rows, cols, accumulate = false }: { rows: number; cols: number; accumulate?: boolean },
): void {
  if (out.size !== cols) {
    throw new TypeError(`columnSum: out ${out.label} has ${out.size} elements, expected ${cols}`);
  }
  if (x.size !== rows * cols) {
    throw new TypeError(
      `columnSum: x ${x.label} has ${x.size} elements [${x.shape}], expected ${rows}×${cols}`,
    );
  }
  if (cols === 0) return;
  const vecX = cols % 4 === 0 ? vec4Binding(x) : undefined;
  // About 256 chunks keep both stages parallel; small inputs take one pass straight into `out`.
  const rowsPerChunk = Math.max(64, Math.ceil(rows / 256));
  const chunks = Math.max(1, Math.ceil(rows / rowsPerChunk));
  const gx = Math.ceil(Math.ceil(cols / 4) / COLUMN_SUM_WORKGROUP);
  if (chunks === 1) {
    plan.dispatch(
      "columnSum",
      columnSumWgsl(vecX !== undefined, accumulate),
      [{ uniform: [rows, cols, rowsPerChunk] }, out, vecX ?? x],
      [gx, 1, 1],
    );
    return;
  }
  const partial = columnSumScratch(plan.gpu, chunks * cols);
  plan.dispatch(
    "columnSum:chunks",
    columnSumWgsl(vecX !== undefined, false),
    [{ uniform: [rows, cols, rowsPerChunk] }, partial, vecX ?? x],
    [gx, chunks, 1],
  );
  plan.dispatch(
    "columnSum:reduce",
    columnSumReduceWgsl(accumulate),
    [{ uniform: [chunks, cols] }, out, partial],
    [Math.ceil(cols / COLUMN_SUM_WORKGROUP), 1, 1],
  );
}

function linearDims(kernel: string, x: Tensor, w: Tensor): { rows: number; inF: number; outF: number } {
  if (w.shape.length !== 2) throw new TypeError(`${kernel}: weight ${w.label} [${w.shape}] is not [out, in]`);
  const [outF, inF] = w.shape;
  if (inF === 0 || x.size % inF !== 0) {
    throw new TypeError(`${kernel}: input ${x.label} [${x.shape}] is not [rows, ${inF}]`);
  }
  return { rows: x.size / inF, inF, outF };
}

/**
 * y[rows, out] = act(x[rows, in]·Wᵀ + b) (+ residual), W [out, in]; `preActivation` receives x·Wᵀ + b.
 */
export function linearForward(
  plan: Plan,
  y: Tensor,
  x: Tensor,
  w: Tensor,
  bias?: Tensor,
  opts: {
    activation?: MatmulActivation;
    preActivation?: Tensor;
    residual?: Tensor;
    variant?: MatmulVariant;
  } = {},
): void {
  const { rows, inF, outF } = linearDims("linearForward", x, w);
  expectElements("linearForward", y, rows * outF, `[${rows}, ${outF}]`);
  if (bias) expectElements("linearForward", bias, outF, `[${outF}]`);
  if (opts.preActivation) {
    expectElements("linearForward", opts.preActivation, rows * outF, `[${rows}, ${outF}]`);
  }
  matmul(plan, y, x, w, {
    m: rows,
    n: outF,
    k: inF,
    transB: true,
    bias,
    activation: opts.activation,
    preActivation: opts.preActivation,
    residual: opts.residual,
    variant: opts.variant,
  });
}

/**
 * Backward of {@link linearForward} without activation: dx = dy·W (or += with `accumulateDx`; times GELU'(g)
 * with `geluGradOf` = the pre-activation of the layer that produced x), dW += dyᵀ·x, db += Σ_rows dy.
 * Skip dx or db by passing undefined.
 */
export function linearBackward(
  plan: Plan,
  dx: Tensor | undefined,
  dw: Tensor,
  db: Tensor | undefined,
  dy: Tensor,
  x: Tensor,
  w: Tensor,
  opts: { accumulateDx?: boolean; geluGradOf?: Tensor; variant?: MatmulVariant } = {},
): void {
  const { rows, inF, outF } = linearDims("linearBackward", x, w);
  expectElements("linearBackward", dy, rows * outF, `[${rows}, ${outF}]`);
  expectElements("linearBackward", dw, outF * inF, `[${outF}, ${inF}]`);
  if (db) expectElements("linearBackward", db, outF, `[${outF}]`);
  if (dx) {
    expectElements("linearBackward", dx, rows * inF, `[${rows}, ${inF}]`);
    if (opts.geluGradOf) expectElements("linearBackward", opts.geluGradOf, rows * inF, `[${rows}, ${inF}]`);
    matmul(plan, dx, dy, w, {
      m: rows,
      n: inF,
      k: outF,
      accumulate: opts.accumulateDx,
      geluGradOf: opts.geluGradOf,
      variant: opts.variant,
    });
  }
  matmul(plan, dw, dy, x, {
    m: outF,
    n: inF,
    k: rows,
    transA: true,
    accumulate: true,
    variant: opts.variant,
  });
  if (db) columnSum(plan, db, dy, { rows, cols: outF, accumulate: true });
}

/** One shape to tune: the matmul's sizes and transposes (batch dims as in {@link MatmulOptions}). */
export type MatmulShape = Pick<MatmulOptions, "m" | "n" | "k" | "transA" | "transB" | "batch">;

/**
 * Times every candidate variant on each shape (scratch inputs, timestamp queries) and records the fastest per
 * shape class, so later {@link matmul} calls on similar shapes use it. Returns the winners by shape class.
 */
export async function tuneMatmul(
  gpu: Gpu,
  shapes: MatmulShape[],
  { candidates = matmulCandidates(gpu), reps = 2, samples = 3 }: {
    candidates?: MatmulVariant[];
    reps?: number;
    samples?: number;
  } = {},
): Promise<Record<string, MatmulVariant>> {
  const winners: Record<string, MatmulVariant> = {};
  for (const s of shapes) {
    const cls = matmulShapeClass(s);
    if (cls in winners) continue;
    const batches = s.batch ? s.batch.dims.reduce((p, d) => p * d, 1) : 1;
    // Dense, unpadded scratch operands: the batch strides of the real call only change addresses.
    const a = createTensor(gpu, [batches * s.m * s.k], "tune:A");
    const b = createTensor(gpu, [batches * s.k * s.n], "tune:B");
    const c = createTensor(gpu, [batches * s.m * s.n], "tune:C");
    const batch = batches > 1
      ? { dims: [batches], strideA: [s.m * s.k], strideB: [s.k * s.n], strideC: [s.m * s.n] }
      : undefined;
    const build: Record<string, () => Plan> = {};
    for (const v of candidates) {
      build[v] = () => {
        const plan = new Plan(gpu, `tune ${v} ${cls}`);
        matmul(plan, c, a, b, { ...s, batch, variant: v });
        return plan;
      };
    }
    winners[cls] = await tuneChoice(gpu, "matmul", cls, build, { reps, samples }) as MatmulVariant;
    a.buffer.destroy();
    b.buffer.destroy();
    c.buffer.destroy();
  }
  return winners;
}
