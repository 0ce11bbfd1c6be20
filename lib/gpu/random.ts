/** Host side of the counter-based RNG in `shaders/random.ts`: bit-identical, for seeds and for test references. */

/** PCG output hash of a u32 (the same as WGSL `pcg_hash`). */
export function pcgHash(input: number): number {
  const state = (Math.imul(input >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The same as WGSL `random_u32(seed, counter)`. */
export function randomU32(seed: number, counter: number): number {
  return pcgHash((pcgHash(seed) ^ counter) >>> 0);
}

/** The same as WGSL `random_uniform(seed, counter)`: a float in [0, 1) with 24 random bits. */
export function randomUniform(seed: number, counter: number): number {
  return (randomU32(seed, counter) >>> 8) / 16777216;
}

/** A seed for one use of randomness: mixes the run seed, the step and a site number (layer, purpose). */
export function deriveSeed(runSeed: number, step: number, site: number): number {
  return pcgHash((pcgHash((pcgHash(runSeed >>> 0) ^ step) >>> 0) ^ site) >>> 0);
}
