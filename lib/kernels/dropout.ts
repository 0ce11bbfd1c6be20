/**
 * Typed wrappers of dropout and drop-path (`shaders/dropout.ts`, which documents how seeds are passed). Masks are
 * regenerated from the seed in the backward, never stored.
 */
import { type Binding, grid1d, type Plan, UniformBlock } from "../gpu/plan.ts";
import type { Tensor } from "../gpu/tensor.ts";
import {
  DROPOUT_WORKGROUP,
  dropoutWgsl,
  dropoutWidth,
  residualDropPathBackwardWgsl,
  residualDropPathWgsl,
  type SeedLayout,
} from "../../shaders/dropout.ts";
import { sameView } from "./embedding.ts";
import { sameSize } from "./_check.ts";

/**
 * A kernel's seed: a constant (tests, one-off runs), or word `word` of a {@link UniformBlock} that the host
 * rewrites before each submission (`block.u32[word] = deriveSeed(runSeed, step, site); block.flush()`).
 */
export type Seed = number | { block: UniformBlock; word: number };

/**
 * The `Sizes.seed` field, the extra binding (appended last) and the WGSL layout for a {@link Seed}: what any random
 * kernel needs to follow the pattern of `shaders/dropout.ts`.
 */
export function seedBinding(
  kernel: string,
  seed: Seed,
): { field: number; bindings: Binding[]; layout: SeedLayout } {
  if (typeof seed === "number") {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) {
      throw new RangeError(`${kernel}: seed must be a u32, got ${seed}`);
    }
    return { field: seed, bindings: [], layout: { block: false } };
  }
  const { block, word } = seed;
  if (!(block instanceof UniformBlock)) throw new TypeError(`${kernel}: seed.block must be a UniformBlock`);
  if (!Number.isInteger(word) || word < 0 || word >= block.u32.length) {
    throw new RangeError(`${kernel}: seed word must be in 0..${block.u32.length - 1}, got ${word}`);
  }
  return {
    field: word,
    bindings: [block.binding()],
    layout: { block: true, vectors: block.buffer.size / 16 },
  };
}

function checkP(kernel: string, p: number): number {
  if (!(p >= 0 && p <= 1)) throw new RangeError(`${kernel}: p must be in [0, 1], got ${p}`);
  return p < 1 ? Math.fround(1 / (1 - p)) : 0;
}

function dropout(
  kernel: string,
  plan: Plan,
  out: Tensor,
  inp: Tensor,
  p: number,
  seed: Seed,
  accumulate: boolean,
): void {
  const n = sameSize(kernel, out, inp);
  const scale = checkP(kernel, p);
  const s = seedBinding(kernel, seed);
  const inPlace = sameView(out, inp);
  if (inPlace && accumulate) {
    throw new TypeError(`${kernel}: cannot accumulate into its own input ${out.label}`);
  }
  if (inPlace && p === 0) return; // the identity
  const width = dropoutWidth(n);
  const groups = n / width;
  plan.dispatch(
    kernel,
    dropoutWgsl(width, { inPlace, accumulate, seed: s.layout }),
    [
      { uniform: [groups, 0, { f32: p }, { f32: scale }, s.field] },
      out,
      ...(inPlace ? [] : [inp]),
      ...s.bindings,
    ],
    grid1d(groups, DROPOUT_WORKGROUP),
  );
}

/**
 * y = x·mask/(1 − p), mask[i] = (u(seed, i) ≥ p) with i the flat element index. y may be x (in place). Shapes:
 * any, equal sizes.
 */
export function dropoutForward(
  plan: Plan,
  y: Tensor,
  x: Tensor,
  { p, seed }: { p: number; seed: Seed },
): void {
  dropout("dropoutForward", plan, y, x, p, seed, false);
}

/**
 * dx = dy·mask/(1 − p) with the forward's mask regenerated from the same `seed` (added into dx when `accumulate`).
 * dx may be dy (in place, not accumulating).
 */
export function dropoutBackward(
  plan: Plan,
  dx: Tensor,
  dy: Tensor,
  { p, seed, accumulate = false }: { p: number; seed: Seed; accumulate?: boolean },
): void {
  dropout("dropoutBackward", plan, dx, dy, p, seed, accumulate);
}

/** Sizes and randomness of a drop-path: `perSample` elements per sample, drop rate `p`. */
export interface DropPathOptions {
  /** Samples, each kept or dropped whole. */
  batch: number;
  /** Elements per sample (tokens·dim). */
  perSample: number;
  /** Drop probability in [0, 1]. */
  p: number;
  /** Unused (may be omitted) when p = 0. */
  seed?: Seed;
}

function dropPathSetup(kernel: string, o: DropPathOptions, ...ts: Tensor[]) {
  const n = sameSize(kernel, ...ts);
  for (const [name, v] of [["batch", o.batch], ["perSample", o.perSample]] as const) {
    if (!Number.isInteger(v) || v < 0) {
      throw new RangeError(`${kernel}: ${name} must be an integer ≥ 0, got ${v}`);
    }
  }
  if (o.batch * o.perSample !== n) {
    throw new TypeError(
      `${kernel}: ${ts[0].label} has ${n} elements, expected batch·perSample = ${o.batch * o.perSample}`,
    );
  }
  const scale = checkP(kernel, o.p);
  if (o.p > 0 && o.seed === undefined) throw new TypeError(`${kernel}: a seed is needed when p > 0`);
  const s = o.p > 0 ? seedBinding(kernel, o.seed!) : null;
  const width = dropoutWidth(o.perSample);
  const per = o.perSample / width;
  return {
    seed: s?.layout ?? null,
    seedBindings: s?.bindings ?? [],
    width,
    groups: [Math.ceil(per / DROPOUT_WORKGROUP), o.batch] as [number, number],
    uniform: { uniform: [n / width, per, { f32: o.p }, { f32: scale }, s?.field ?? 0] },
  };
}

/**
 * Drop-path (stochastic depth, SPEC §1) fused with the residual add: out = residual + branch·mask[b]/(1 − p),
 * mask[b] = (u(seed, b) ≥ p) per sample b; p = 0 is a plain add. out may be residual (in place). Shapes: any with
 * batch·perSample elements, sample-major.
 */
export function residualDropPath(
  plan: Plan,
  out: Tensor,
  residual: Tensor,
  branch: Tensor,
  options: DropPathOptions,
): void {
  const k = "residualDropPath";
  const s = dropPathSetup(k, options, out, residual, branch);
  const inPlace = sameView(out, residual);
  plan.dispatch(
    k,
    residualDropPathWgsl(s.width, { inPlace, seed: s.seed }),
    [s.uniform, out, ...(inPlace ? [] : [residual]), branch, ...s.seedBindings],
    s.groups,
  );
}

/**
 * Backward of {@link residualDropPath}: dbranch = dout·mask[b]/(1 − p) and dresidual = dout (both added when
 * `accumulate`). Pass dresidual = dout to leave the residual gradient where it is (the usual case): then only
 * dbranch is written.
 */
export function residualDropPathBackward(
  plan: Plan,
  dresidual: Tensor,
  dbranch: Tensor,
  dout: Tensor,
  options: DropPathOptions & { accumulate?: boolean },
): void {
  const k = "residualDropPathBackward";
  const s = dropPathSetup(k, options, dout, dresidual, dbranch);
  const aliased = sameView(dresidual, dout);
  if (sameView(dbranch, dout)) throw new TypeError(`${k}: dbranch must not be dout`);
  plan.dispatch(
    k,
    residualDropPathBackwardWgsl(s.width, { aliased, accumulate: options.accumulate ?? false, seed: s.seed }),
    [s.uniform, dbranch, ...(aliased ? [] : [dresidual]), dout, ...s.seedBindings],
    s.groups,
  );
}
