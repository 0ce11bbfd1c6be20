/**
 * The one verification helper every kernel test uses: seeded inputs, poisoned outputs, comparison against the
 * float64 CPU reference with `atol + rtol·|ref|`, and finite-difference checks of reference gradients.
 */
import assert from "node:assert";
import { getGpu, type Gpu } from "../../lib/gpu/device.ts";
import { Plan } from "../../lib/gpu/plan.ts";
import { createTensor, readTensor, type Tensor, uploadTensor } from "../../lib/gpu/tensor.ts";

/** The GPU under test; a missing adapter fails the test with the install hint, never skips it. */
export function testGpu(): Promise<Gpu> {
  return getGpu();
}

/** Deterministic uniform [0,1) generator (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `n` standard-normal values (Box–Muller) from `seed`, times `scale`, rounded to float32 so GPU and reference see
 * exactly the same numbers. */
export function randn(n: number, seed: number, scale = 1): Float64Array {
  const u = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
    out[i] = Math.fround(r * scale);
  }
  return out;
}

/** `n` uniform values in [lo, hi), rounded to float32. */
export function randu(n: number, seed: number, lo = -1, hi = 1): Float64Array {
  const u = rng(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.fround(lo + (hi - lo) * u());
  return out;
}

/** Uploads float64 host data as a float32 tensor. */
export function upload(
  gpu: Gpu,
  data: Float64Array | Float32Array,
  shape: number[],
  label = "input",
): Tensor {
  return uploadTensor(gpu, Float32Array.from(data), shape, label);
}

/** A tensor filled with NaN, so an element the kernel forgets to write fails the comparison. */
export function poisoned(gpu: Gpu, shape: number[], label = "output"): Tensor {
  const t = createTensor(gpu, shape, label);
  const nan = new Float32Array(t.size).fill(NaN);
  if (nan.length) gpu.device.queue.writeBuffer(t.buffer, t.offset, nan);
  return t;
}

/** Builds a plan with `record`, runs it once and waits. */
export async function runPlan(gpu: Gpu, record: (plan: Plan) => void, label = "test"): Promise<void> {
  const plan = new Plan(gpu, label);
  record(plan);
  await plan.run();
  plan.destroy();
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/** Default for float32 kernels against a float64 reference on O(1) data. */
export const F32_TOL: Tolerance = { atol: 1e-5, rtol: 1e-4 };

/**
 * Asserts `|actual − expected| ≤ atol + rtol·|expected|` elementwise (NaN always fails); the message lists the
 * first mismatches and the worst error.
 */
export function assertClose(
  name: string,
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  tol: Tolerance = F32_TOL,
): void {
  if (actual.length !== expected.length) {
    throw new Error(`${name}: length ${actual.length}, expected ${expected.length}`);
  }
  const bad: string[] = [];
  let worst = 0;
  let count = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i], e = expected[i];
    const err = Math.abs(a - e);
    const limit = tol.atol + tol.rtol * Math.abs(e);
    if (!(err <= limit)) {
      count++;
      if (bad.length < 8) bad.push(`  [${i}] got ${a}, expected ${e} (|Δ| ${err.toExponential(2)})`);
    }
    if (err / (tol.atol + tol.rtol * Math.abs(e)) > worst || Number.isNaN(err)) {
      worst = Number.isNaN(err) ? Infinity : err / (tol.atol + tol.rtol * Math.abs(e));
    }
  }
  if (count > 0) {
    throw new Error(
      `${name}: ${count} of ${expected.length} elements outside atol ${tol.atol} + rtol ${tol.rtol}·|ref| ` +
        `(worst ${worst.toFixed(1)}× the limit)\n${bad.join("\n")}`,
    );
  }
}

/** Reads a GPU tensor and compares it with the reference. */
export async function expectTensor(
  gpu: Gpu,
  name: string,
  t: Tensor,
  expected: ArrayLike<number>,
  tol: Tolerance = F32_TOL,
): Promise<void> {
  assertClose(name, await readTensor(gpu, t), expected, tol);
}

/**
 * Checks the reference backward by central finite differences. `loss(inputs)` must return
 * Σ forward(inputs)·probe for a fixed probe; `grads[i]` is the analytic gradient of that loss w.r.t. `inputs[i]`.
 * Checks up to `samples` elements per input (all when smaller).
 */
export function checkGradients(
  name: string,
  loss: (inputs: Float64Array[]) => number,
  inputs: Float64Array[],
  grads: Float64Array[],
  { eps = 1e-6, tol = { atol: 1e-6, rtol: 1e-5 }, samples = 24, seed = 7 } = {},
): void {
  const pick = rng(seed);
  inputs.forEach((x, k) => {
    const idx = x.length <= samples
      ? [...x.keys()]
      : Array.from({ length: samples }, () => Math.floor(pick() * x.length));
    const numeric: number[] = [];
    const analytic: number[] = [];
    for (const i of idx) {
      const keep = x[i];
      x[i] = keep + eps;
      const up = loss(inputs);
      x[i] = keep - eps;
      const down = loss(inputs);
      x[i] = keep;
      numeric.push((up - down) / (2 * eps));
      analytic.push(grads[k][i]);
    }
    assertClose(`${name}: d/d input ${k} (finite differences)`, analytic, numeric, tol);
  });
}

/** Σ a·b, for building probe losses. */
export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** Deep equality (node:assert's deepStrictEqual) with an optional label. */
export function assertEquals<T>(actual: T, expected: T, label?: string): void {
  assert.deepStrictEqual(actual, expected, label);
}

/** Asserts `fn` throws an instance of `errorClass` whose message contains `includes`. */
export function assertThrows(
  fn: () => unknown,
  errorClass: new (...args: never[]) => Error,
  includes = "",
): Error {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof errorClass)) throw new Error(`expected ${errorClass.name}, got ${e}`);
    if (!e.message.includes(includes)) {
      throw new Error(`expected a message containing "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`expected ${errorClass.name} containing "${includes}", nothing was thrown`);
}

/** Async twin of {@link assertThrows}. */
export async function assertRejects(
  fn: () => Promise<unknown>,
  errorClass: new (...args: never[]) => Error,
  includes = "",
): Promise<Error> {
  try {
    await fn();
  } catch (e) {
    if (!(e instanceof errorClass)) throw new Error(`expected ${errorClass.name}, got ${e}`);
    if (!e.message.includes(includes)) {
      throw new Error(`expected a message containing "${includes}", got "${e.message}"`);
    }
    return e;
  }
  throw new Error(`expected ${errorClass.name} containing "${includes}", nothing was thrown`);
}
