/**
 * Counter-based random numbers for dropout, drop-path and augmentation: a value is a pure function of
 * (seed, counter), so backward regenerates a forward mask instead of storing it, and a run is deterministic for a
 * seed. The host derives one seed per (step, layer, purpose) with the same hash (`lib/gpu/random.ts`).
 */

/** WGSL: `pcg_hash(u32) -> u32`, `random_u32(seed, counter)`, `random_uniform(seed, counter)` in [0, 1). */
export const RANDOM_WGSL = /* wgsl */ `
fn pcg_hash(input: u32) -> u32 {
  let state = input * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
fn random_u32(seed: u32, counter: u32) -> u32 {
  return pcg_hash(pcg_hash(seed) ^ counter);
}
fn random_uniform(seed: u32, counter: u32) -> f32 {
  return f32(random_u32(seed, counter) >> 8u) * (1.0 / 16777216.0);
}
`;
