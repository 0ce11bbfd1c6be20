/** Seeded initialisation of a parameter table (SPEC §1, "Initialisation"), and the sine positional table. */
import { randomUniform } from "../gpu/random.ts";
import type { ModelConfig, ParameterSpec } from "./config.ts";
import { parameterSpecs } from "./config.ts";

/**
 * The official sinusoidal table [n, d]: angle(p, i) = p / 10000^(2·⌊i/2⌋/d) in float64, rounded to float32 (as
 * `torch.FloatTensor` does), then sin at even i and cos at odd i.
 */
export function sinePositionalTable(n: number, d: number): Float32Array {
  const out = new Float32Array(n * d);
  for (let p = 0; p < n; p++) {
    for (let i = 0; i < d; i++) {
      const angle = Math.fround(p / Math.pow(10000, (2 * Math.floor(i / 2)) / d));
      out[p * d + i] = i % 2 === 0 ? Math.sin(angle) : Math.cos(angle);
    }
  }
  return out;
}

/** A stream of standard normals from the counter-based RNG (Box–Muller). */
function normalStream(seed: number): () => number {
  let counter = 0;
  return () => {
    const u1 = randomUniform(seed, counter++), u2 = randomUniform(seed, counter++);
    return Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
  };
}

/** Fills one parameter as SPEC §1 prescribes. */
export function initParameter(spec: ParameterSpec, config: ModelConfig, seed: number): Float32Array {
  const size = spec.shape.reduce((a, b) => a * b, 1);
  const out = new Float32Array(size);
  const normal = normalStream(seed);
  // timm's trunc_normal_(std, a=-2, b=2): bounds are absolute, so with std 0.02 they never bite; resample outside.
  const truncated = (std: number) => {
    for (let i = 0; i < size; i++) {
      let v: number;
      do v = normal() * std; while (v < -2 || v > 2);
      out[i] = v;
    }
  };
  switch (spec.init) {
    case "zeros":
      break;
    case "ones":
      out.fill(1);
      break;
    case "trunc_normal_0.02":
      truncated(0.02);
      break;
    case "trunc_normal_0.2":
      truncated(0.2);
      break;
    case "kaiming_conv": {
      // kaiming_normal_ (fan_in, gain √2): std = √(2 / (C_in·k·k))
      const fanIn = spec.shape[1] * spec.shape[2] * spec.shape[3];
      const std = Math.sqrt(2 / fanIn);
      for (let i = 0; i < size; i++) out[i] = normal() * std;
      break;
    }
    case "sine":
      out.set(sinePositionalTable(spec.shape[1], config.dim));
      break;
  }
  return out;
}

/** Every parameter of `config`, freshly initialised from `seed` (each tensor from its own derived stream). */
export function initParameters(config: ModelConfig, seed = 0): Map<string, Float32Array> {
  const table = new Map<string, Float32Array>();
  parameterSpecs(config).forEach((spec, i) => {
    table.set(spec.name, initParameter(spec, config, ((seed >>> 0) * 1000003 + i * 7919) >>> 0));
  });
  return table;
}
