import { RANDOM_WGSL } from "../../shaders/random.ts";
import { deriveSeed, randomU32, randomUniform } from "../../lib/gpu/random.ts";
import { grid1d, LINEAR_INDEX_WGSL } from "../../lib/gpu/plan.ts";
import { createTensor, readTensor, readTensorInt, uploadTensor } from "../../lib/gpu/tensor.ts";
import { rng, runPlan, testGpu } from "../support/check.ts";

const WG = 256;
/** Evaluates the WGSL RNG for every (seed, counter) pair: bits[s·n + j] = random_u32, unit[…] = random_uniform. */
const PROBE_WGSL = /* wgsl */ `
${LINEAR_INDEX_WGSL(WG)}
${RANDOM_WGSL}
struct Sizes { n: u32, seeds: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> bits: array<u32>;
@group(0) @binding(2) var<storage, read_write> unit: array<f32>;
@group(0) @binding(3) var<storage, read> seeds: array<u32>;
@group(0) @binding(4) var<storage, read> counters: array<u32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = linear_index(gid, nwg);
  if (i >= sizes.n * sizes.seeds) { return; }
  let seed = seeds[i / sizes.n];
  let counter = counters[i % sizes.n];
  bits[i] = random_u32(seed, counter);
  unit[i] = random_uniform(seed, counter);
}
`;

async function gpuRandom(seeds: number[], counters: number[]) {
  const gpu = await testGpu();
  const m = seeds.length * counters.length;
  const bits = createTensor(gpu, [m], "bits"), unit = createTensor(gpu, [m], "unit");
  const seedT = uploadTensor(gpu, Uint32Array.from(seeds), [seeds.length], "seeds");
  const counterT = uploadTensor(gpu, Uint32Array.from(counters), [counters.length], "counters");
  await runPlan(
    gpu,
    (plan) =>
      plan.dispatch("randomProbe", PROBE_WGSL, [
        { uniform: [counters.length, seeds.length] },
        bits,
        unit,
        seedT,
        counterT,
      ], grid1d(m, WG)),
  );
  const u32 = new Uint32Array((await readTensorInt(gpu, bits)).buffer);
  return { u32, unit: await readTensor(gpu, unit) };
}

Deno.test("WGSL random_u32 and random_uniform are bit-identical to lib/gpu/random.ts over many seeds and counters", async () => {
  const pick = rng(11);
  const word = () => Math.floor(pick() * 4294967296) >>> 0;
  const seeds = [0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff, deriveSeed(1, 0, 0), deriveSeed(1, 1, 0)];
  for (let i = 0; i < 8; i++) seeds.push(word());
  const counters = Array.from({ length: 4096 }, (_, i) => i);
  counters.push(0xffffffff, 0xfffffffe, 0x80000000, 0x7fffffff);
  for (let i = 0; i < 1020; i++) counters.push(word());
  const got = await gpuRandom(seeds, counters);
  let bad = 0, first = "";
  seeds.forEach((s, si) =>
    counters.forEach((c, ci) => {
      const i = si * counters.length + ci;
      const u = randomU32(s, c), f = randomUniform(s, c);
      if (got.u32[i] !== u || got.unit[i] !== f) {
        if (bad++ === 0) first = `seed ${s} counter ${c}: GPU ${got.u32[i]}/${got.unit[i]}, host ${u}/${f}`;
      }
    })
  );
  if (bad > 0) throw new Error(`${bad} of ${got.u32.length} values differ; first: ${first}`);
});

Deno.test("random_uniform is uniform on [0, 1): mean, range, every bit and a 64-bucket χ² test", async () => {
  const n = 1 << 20;
  const counters = Array.from({ length: n }, (_, i) => i);
  const { u32, unit } = await gpuRandom([deriveSeed(2026, 3, 9)], counters);
  let sum = 0, min = 1, max = 0;
  const buckets = new Float64Array(64);
  for (const v of unit) {
    sum += v;
    min = Math.min(min, v);
    max = Math.max(max, v);
    buckets[Math.floor(v * 64)]++;
  }
  const mean = sum / n;
  // σ of the mean = √(1/12/n) ≈ 2.8e-4: ±1.5e-3 is more than five of them.
  if (Math.abs(mean - 0.5) > 1.5e-3) throw new Error(`mean ${mean}, expected 0.5 ± 1.5e-3`);
  if (min < 0 || max >= 1) throw new Error(`values outside [0, 1): min ${min}, max ${max}`);
  const expected = n / 64;
  const chi2 = buckets.reduce((s, o) => s + (o - expected) ** 2 / expected, 0);
  // 63 degrees of freedom: P(χ² > 103.4) = 0.001.
  if (chi2 > 103.4) throw new Error(`χ² ${chi2.toFixed(1)} over 64 buckets exceeds 103.4 (p = 0.001)`);
  for (let bit = 0; bit < 32; bit++) {
    let ones = 0;
    for (const v of u32) ones += (v >>> bit) & 1;
    // σ = √(n/4) = 512: ±3,000 is about six of them.
    if (Math.abs(ones - n / 2) > 3000) throw new Error(`bit ${bit} set ${ones} times of ${n}`);
  }
});
