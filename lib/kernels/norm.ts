/** Typed wrappers of the LayerNorm kernels (`shaders/norm.ts`). Arguments: outputs, inputs, weights, sizes. */
import type { Gpu } from "../gpu/device.ts";
import { grid1d, type Plan } from "../gpu/plan.ts";
import { createTensor, type Tensor } from "../gpu/tensor.ts";
import {
  columnBlock,
  layerNormBackwardInputWgsl,
  layerNormForwardWgsl,
  layerNormParamNaiveWgsl,
  layerNormParamPartialsWgsl,
  layerNormParamReduceWgsl,
  NORM_WORKGROUP,
  normWidth,
} from "../../shaders/norm.ts";
import { expectElements } from "./_check.ts";

/** Sizes of a LayerNorm over the last dimension of a [rows, dim] tensor. */
export interface LayerNormSizes {
  /** Rows normalised independently (batch·tokens). */
  rows: number;
  /** Features per row, the normalised dimension. */
  dim: number;
}

/** "fast" (vec4 rows, two-stage column sums) or "naive" (scalar rows, one invocation per column). */
export type LayerNormVariant = "fast" | "naive";

function checkSizes(kernel: string, { rows, dim }: LayerNormSizes): void {
  if (!Number.isInteger(rows) || rows < 0) {
    throw new RangeError(`${kernel}: rows must be an integer ≥ 0, got ${rows}`);
  }
  if (!Number.isInteger(dim) || dim < 1) {
    throw new RangeError(`${kernel}: dim must be an integer ≥ 1, got ${dim}`);
  }
}

/**
 * y = LayerNorm(x)·γ + β over the last dimension, saving `mean` and `rstd` = 1/√(var + eps) per row for the
 * backward. Shapes: y, x [rows, dim]; mean, rstd [rows]; gamma, beta [dim].
 */
export function layerNormForward(
  plan: Plan,
  y: Tensor,
  mean: Tensor,
  rstd: Tensor,
  x: Tensor,
  gamma: Tensor,
  beta: Tensor,
  { rows, dim, eps = 1e-5, variant = "fast" }: LayerNormSizes & { eps?: number; variant?: LayerNormVariant },
): void {
  const k = "layerNormForward";
  checkSizes(k, { rows, dim });
  expectElements(k, y, rows * dim, "rows·dim");
  expectElements(k, x, rows * dim, "rows·dim");
  expectElements(k, mean, rows, "rows");
  expectElements(k, rstd, rows, "rows");
  expectElements(k, gamma, dim, "dim");
  expectElements(k, beta, dim, "dim");
  const width = variant === "naive" ? 1 : normWidth(dim);
  plan.dispatch(
    k,
    layerNormForwardWgsl(dim, width),
    [{ uniform: [rows, { f32: eps }] }, y, mean, rstd, x, gamma, beta],
    grid1d(rows, NORM_WORKGROUP),
  );
}

/**
 * Row chunk of the first column-sum pass: about 2,048 invocations in all — plenty for llvmpipe's threads, and
 * long row loops measured faster than more, shorter ones.
 */
export function layerNormChunkRows(rows: number, dim: number): number {
  const invocationsPerChunk = dim / normWidth(dim) / columnBlock(dim);
  const chunks = Math.max(1, Math.min(rows, Math.ceil(2048 / invocationsPerChunk)));
  return Math.max(1, Math.ceil(rows / chunks));
}

/** Floats of scratch the backward needs for its column-sum partials. */
export function layerNormScratchSize(
  rows: number,
  dim: number,
  chunkRows = layerNormChunkRows(rows, dim),
): number {
  return 2 * Math.max(1, Math.ceil(rows / chunkRows)) * dim;
}

const sharedScratch = new WeakMap<GPUDevice, Tensor>();

/** A per-device scratch tensor of at least `n` floats. Dispatches in a plan run in order, so they may share it. */
function scratchTensor(gpu: Gpu, n: number): Tensor {
  let t = sharedScratch.get(gpu.device);
  // A smaller old scratch stays alive for the plans that bound it; only new plans get the larger one.
  if (!t || t.size < n) sharedScratch.set(gpu.device, t = createTensor(gpu, [n], "layerNorm:scratch"));
  return t;
}

/**
 * LayerNorm backward. dx = ∂L/∂x (overwritten, or added when `accumulateDx`, e.g. into the residual stream's
 * gradient); dgamma and dbeta are ACCUMULATED (+=) column sums over all rows. Shapes: dx, dy, x [rows, dim];
 * mean, rstd [rows] from the forward; gamma, dgamma, dbeta [dim]. Three dispatches: dx, then column-sum partials
 * into `scratch` (default: a shared per-device buffer), then their reduction.
 */
export function layerNormBackward(
  plan: Plan,
  dx: Tensor,
  dgamma: Tensor,
  dbeta: Tensor,
  dy: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  gamma: Tensor,
  { rows, dim, accumulateDx = false, variant = "fast", chunkRows, scratch }: LayerNormSizes & {
    accumulateDx?: boolean;
    variant?: LayerNormVariant;
    /** Rows per invocation in the first column-sum pass (tuning; default {@link layerNormChunkRows}). */
    chunkRows?: number;
    /** At least {@link layerNormScratchSize} floats. */
    scratch?: Tensor;
  },
): void {
  const k = "layerNormBackward";
  checkSizes(k, { rows, dim });
  for (const t of [dx, dy, x]) expectElements(k, t, rows * dim, "rows·dim");
  for (const t of [mean, rstd]) expectElements(k, t, rows, "rows");
  for (const t of [gamma, dgamma, dbeta]) expectElements(k, t, dim, "dim");
  const width = variant === "naive" ? 1 : normWidth(dim);
  plan.dispatch(
    `${k}Input`,
    layerNormBackwardInputWgsl(dim, accumulateDx, width, variant === "fast" && dim <= 1024),
    [{ uniform: [rows] }, dx, dy, x, mean, rstd, gamma],
    grid1d(rows, NORM_WORKGROUP),
  );
  if (variant === "naive") {
    plan.dispatch(
      `${k}ParamsNaive`,
      layerNormParamNaiveWgsl(dim),
      [{ uniform: [rows] }, dgamma, dbeta, dy, x, mean, rstd],
      grid1d(dim, NORM_WORKGROUP),
    );
    return;
  }
  const chunk = chunkRows ?? layerNormChunkRows(rows, dim);
  if (!Number.isInteger(chunk) || chunk < 1) {
    throw new RangeError(`${k}: chunkRows must be ≥ 1, got ${chunk}`);
  }
  const chunks = Math.ceil(rows / chunk);
  if (chunks === 0) return; // no rows: the parameter gradients gain nothing
  const need = layerNormScratchSize(rows, dim, chunk);
  const partials = scratch ?? scratchTensor(plan.gpu, need);
  if (partials.size < need) {
    throw new TypeError(`${k}: scratch ${partials.label} has ${partials.size} floats, needs ${need}`);
  }
  const columnGroups = dim / width;
  const block = columnBlock(dim, width);
  plan.dispatch(
    `${k}ParamPartials`,
    layerNormParamPartialsWgsl(dim, width, block),
    [{ uniform: [rows, chunk, chunks] }, partials, dy, x, mean, rstd],
    grid1d(chunks * (columnGroups / block), NORM_WORKGROUP),
  );
  plan.dispatch(
    `${k}ParamReduce`,
    layerNormParamReduceWgsl(dim, width),
    [{ uniform: [chunks] }, dgamma, dbeta, partials],
    grid1d(columnGroups, NORM_WORKGROUP),
  );
}
