/**
 * Dropout and drop-path (stochastic depth) with the counter-based RNG of `shaders/random.ts`: masks are never
 * stored; the backward regenerates them from the same seed.
 *
 * HOW A KERNEL GETS ITS SEED (the pattern for every random kernel: dropout, attention dropout, augmentation).
 * Plans are built once, so the per-step seed cannot be an inline plan uniform. Instead:
 * - The host owns a `UniformBlock` (lib/gpu/plan.ts) of seed words and, before each submission, writes
 *   `block.u32[word] = deriveSeed(runSeed, step, site)` (lib/gpu/random.ts; `site` a fixed number per use: layer
 *   and purpose) and calls `block.flush()`.
 * - The kernel's per-dispatch `Sizes` uniform ends with a `seed: u32` field holding the WORD INDEX, and the block
 *   is bound whole as `var<uniform> seed_block: array<vec4<u32>, N>` (N = block bytes / 16, baked in);
 *   `kernel_seed()` = `seed_block[seed >> 2][seed & 3]`. One block serves every random site of a model.
 * - For tests and one-off runs the seed may be a constant: then `Sizes.seed` holds the seed VALUE itself and
 *   `kernel_seed()` returns it; there is no seed binding.
 * `seedWgsl` emits the declaration and `kernel_seed()`; `seedBinding` in lib/kernels/dropout.ts gives the matching
 * uniform field and extra binding. Counters: dropout uses the flat element index, drop-path the sample index; a
 * host reference reproduces a mask exactly with `randomUniform(seed, counter) >= Math.fround(p)`.
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";
import { RANDOM_WGSL } from "./random.ts";

/** Invocations per workgroup. */
export const DROPOUT_WORKGROUP = 256;

/** Where a kernel reads its seed: word `Sizes.seed` of a bound block of `vectors` vec4s, or `Sizes.seed` itself. */
export type SeedLayout = { block: true; vectors: number } | { block: false };

/** WGSL declaring `kernel_seed() -> u32` (needs a `sizes` uniform with a `seed` field); `binding` for the block. */
export function seedWgsl(layout: SeedLayout, binding: number): string {
  return layout.block
    ? /* wgsl */ `
@group(0) @binding(${binding}) var<uniform> seed_block: array<vec4<u32>, ${layout.vectors}>;
fn kernel_seed() -> u32 { return seed_block[sizes.seed >> 2u][sizes.seed & 3u]; }`
    : /* wgsl */ `
fn kernel_seed() -> u32 { return sizes.seed; }`;
}

/** Floats per invocation: 4 when `n` (or the per-sample count) is a multiple of 4, else 1. */
export function dropoutWidth(n: number): 1 | 4 {
  return n % 4 === 0 ? 4 : 1;
}

function header(width: 1 | 4): string {
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(DROPOUT_WORKGROUP)}
${RANDOM_WGSL}
alias T = ${width === 4 ? "vec4<f32>" : "f32"};
struct Sizes { n: u32, per: u32, p: f32, scale: f32, seed: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
`;
}

/** The dropout factor of the `T` at index i: mask·scale per element, the counter being the element index. */
function elementMask(width: 1 | 4): string {
  return width === 4
    ? /* wgsl */ `
fn mask_of(i: u32) -> T {
  let s = kernel_seed();
  let c = i * 4u;
  let u = vec4<f32>(random_uniform(s, c), random_uniform(s, c + 1u), random_uniform(s, c + 2u),
      random_uniform(s, c + 3u));
  return select(vec4<f32>(0.0), vec4<f32>(sizes.scale), u >= vec4<f32>(sizes.p));
}`
    : /* wgsl */ `
fn mask_of(i: u32) -> T {
  return select(0.0, sizes.scale, random_uniform(kernel_seed(), i) >= sizes.p);
}`;
}

/**
 * Entry of the per-sample kernels: a 2-D grid [⌈per / workgroup⌉, batch], so the sample b = gid.y needs no
 * division (integer division by a runtime value is scalarised on llvmpipe) and is the same for a whole workgroup.
 */
const SAMPLE_MAIN = /* wgsl */ `@compute @workgroup_size(${DROPOUT_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= sizes.per) { return; }
  let b = gid.y;
  let i = b * sizes.per + gid.x;`;

const MAIN = /* wgsl */ `@compute @workgroup_size(${DROPOUT_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n) { return; }`;

/**
 * Dropout forward y = x·mask/(1 − p), and (same code) its backward dx (+)= dy·mask/(1 − p): out ⊙= the mask of
 * `inp`. Bindings: sizes {n (in T), per (unused), p, scale, seed}, out, inp (absent when `inPlace`), seed block.
 */
export function dropoutWgsl(
  width: 1 | 4,
  { inPlace, accumulate, seed }: { inPlace: boolean; accumulate: boolean; seed: SeedLayout },
): string {
  const source = inPlace ? "out[i]" : "inp[i]";
  return /* wgsl */ `
${header(width)}
@group(0) @binding(1) var<storage, read_write> out: array<T>;
${inPlace ? "" : "@group(0) @binding(2) var<storage, read> inp: array<T>;"}
${seedWgsl(seed, inPlace ? 2 : 3)}
${elementMask(width)}
${MAIN}
  let v = ${source} * mask_of(i);
  ${accumulate ? "out[i] = out[i] + v;" : "out[i] = v;"}
}
`;
}

/**
 * Drop-path fused with the residual add: out = residual + branch·mask[b]/keep with mask[b] = (u(seed, b) ≥ p),
 * b the sample, per = elements per sample (in T); grid [⌈per / 256⌉, batch]. Bindings: sizes, out, residual (absent when `inPlace`: out is the
 * residual), branch, seed block. `seed` null: p = 0, a plain add with no random numbers.
 */
export function residualDropPathWgsl(
  width: 1 | 4,
  { inPlace, seed }: { inPlace: boolean; seed: SeedLayout | null },
): string {
  const branchBinding = inPlace ? 2 : 3;
  return /* wgsl */ `
${header(width)}
@group(0) @binding(1) var<storage, read_write> out: array<T>;
${inPlace ? "" : "@group(0) @binding(2) var<storage, read> residual: array<T>;"}
@group(0) @binding(${branchBinding}) var<storage, read> branch: array<T>;
${seed ? seedWgsl(seed, branchBinding + 1) : ""}
${SAMPLE_MAIN}
  ${seed ? "let m = select(0.0, sizes.scale, random_uniform(kernel_seed(), b) >= sizes.p);" : "let m = 1.0;"}
  out[i] = ${inPlace ? "out[i]" : "residual[i]"} + branch[i] * m;
}
`;
}

/**
 * Drop-path backward: dbranch (+)= dout·mask[b]/keep; dresidual (+)= dout unless `aliased` (dresidual is dout:
 * nothing to do). Bindings: sizes, dbranch, dresidual (absent when aliased), dout, seed block.
 */
export function residualDropPathBackwardWgsl(
  width: 1 | 4,
  { aliased, accumulate, seed }: { aliased: boolean; accumulate: boolean; seed: SeedLayout | null },
): string {
  const doutBinding = aliased ? 2 : 3;
  const op = accumulate ? "+=" : "=";
  return /* wgsl */ `
${header(width)}
@group(0) @binding(1) var<storage, read_write> dbranch: array<T>;
${aliased ? "" : "@group(0) @binding(2) var<storage, read_write> dresidual: array<T>;"}
@group(0) @binding(${doutBinding}) var<storage, read> dout: array<T>;
${seed ? seedWgsl(seed, doutBinding + 1) : ""}
${SAMPLE_MAIN}
  ${seed ? "let m = select(0.0, sizes.scale, random_uniform(kernel_seed(), b) >= sizes.p);" : "let m = 1.0;"}
  let g = dout[i];
  dbranch[i] ${op} g * m;
  ${aliased ? "" : `dresidual[i] ${op} g;`}
}
`;
}
