/**
 * CPU float64 reference of multi-head self-attention (SPEC §1). Arrays are flat, row-major:
 * qkv [B, N, 3d] (q | k | v blocks, heads of hd = d/H consecutive columns), out [B, N, d], probs [B, H, N, N].
 */
import { randomUniform } from "../../lib/gpu/random.ts";

/** Sizes of one attention call. */
export interface AttentionSizes {
  batch: number;
  tokens: number;
  dim: number;
  heads: number;
  /** Attention-dropout probability (0: none). */
  dropout?: number;
  /** The u32 seed of the dropout mask. */
  seed?: number;
}

/**
 * The dropout scale of every probability [B, H, N, N]: 1/keep where kept, 0 where dropped, all 1 without dropout.
 * Element (b, h, i, j) uses counter ((b·H + h)·N + i)·N + j and is kept when randomUniform(seed, counter) ≥ p
 * (p rounded to float32, as the GPU sees it).
 */
export function dropoutScale(s: AttentionSizes): Float64Array {
  const { batch: B, tokens: N, heads: H } = s;
  const p = Math.fround(s.dropout ?? 0);
  const out = new Float64Array(B * H * N * N).fill(1);
  if (p === 0) return out;
  const keep = 1 / (1 - (s.dropout ?? 0));
  for (let e = 0; e < out.length; e++) out[e] = randomUniform(s.seed ?? 0, e) >= p ? keep : 0;
  return out;
}

/** The saved probabilities as the GPU stores them with dropout: P where kept, −P where dropped. */
export function signedProbs(probs: Float64Array, s: AttentionSizes): Float64Array {
  const mask = dropoutScale(s);
  return probs.map((p, e) => (mask[e] > 0 ? p : -p));
}

/** Forward: probs = softmax(q·kᵀ/√hd) (pre-dropout), out = (probs ⊙ dropoutScale)·v. */
export function attentionForward(
  qkv: Float64Array,
  s: AttentionSizes,
): { out: Float64Array; probs: Float64Array } {
  const { batch: B, tokens: N, dim: d, heads: H } = s;
  const hd = d / H, scale = 1 / Math.sqrt(hd);
  const mask = dropoutScale(s);
  const probs = new Float64Array(B * H * N * N);
  const out = new Float64Array(B * N * d);
  const at = (b: number, n: number, col: number) => qkv[(b * N + n) * 3 * d + col];
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < N; i++) {
        const row = ((b * H + h) * N + i) * N;
        let max = -Infinity;
        for (let j = 0; j < N; j++) {
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += at(b, i, h * hd + c) * at(b, j, d + h * hd + c); // q_i · k_j
          probs[row + j] = dot * scale;
          max = Math.max(max, probs[row + j]);
        }
        let sum = 0;
        for (let j = 0; j < N; j++) sum += probs[row + j] = Math.exp(probs[row + j] - max);
        for (let j = 0; j < N; j++) probs[row + j] /= sum;
        for (let c = 0; c < hd; c++) {
          let acc = 0;
          for (let j = 0; j < N; j++) acc += probs[row + j] * mask[row + j] * at(b, j, 2 * d + h * hd + c);
          out[(b * N + i) * d + h * hd + c] = acc;
        }
      }
    }
  }
  return { out, probs };
}

/**
 * Backward: dqkv [B, N, 3d] from dout [B, N, d], qkv and the saved probs (mask regenerated):
 * dv = P′ᵀ·dout; dP = (dout·vᵀ)·mask; dS = P ⊙ (dP − rowsum(dP ⊙ P)); dq = dS·k·scale; dk = dSᵀ·q·scale.
 */
export function attentionBackward(
  dout: Float64Array,
  qkv: Float64Array,
  probs: Float64Array,
  s: AttentionSizes,
): Float64Array {
  const { batch: B, tokens: N, dim: d, heads: H } = s;
  const hd = d / H, scale = 1 / Math.sqrt(hd);
  const mask = dropoutScale(s);
  const dqkv = new Float64Array(B * N * 3 * d);
  const q = (b: number, n: number, col: number) => (b * N + n) * 3 * d + col;
  const dS = new Float64Array(N * N); // one (b, h) at a time
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const base = (b * H + h) * N * N;
      for (let i = 0; i < N; i++) {
        let delta = 0;
        for (let j = 0; j < N; j++) {
          let dp = 0;
          for (let c = 0; c < hd; c++) {
            dp += dout[(b * N + i) * d + h * hd + c] * qkv[q(b, j, 2 * d + h * hd + c)];
          }
          dS[i * N + j] = dp * mask[base + i * N + j]; // dP for now
          delta += dS[i * N + j] * probs[base + i * N + j];
        }
        for (let j = 0; j < N; j++) dS[i * N + j] = probs[base + i * N + j] * (dS[i * N + j] - delta);
      }
      for (let n = 0; n < N; n++) {
        for (let c = 0; c < hd; c++) {
          let dq = 0, dk = 0, dv = 0;
          for (let m = 0; m < N; m++) {
            dq += dS[n * N + m] * qkv[q(b, m, d + h * hd + c)];
            dk += dS[m * N + n] * qkv[q(b, m, h * hd + c)];
            dv += probs[base + m * N + n] * mask[base + m * N + n] * dout[(b * N + m) * d + h * hd + c];
          }
          dqkv[q(b, n, h * hd + c)] = dq * scale;
          dqkv[q(b, n, d + h * hd + c)] = dk * scale;
          dqkv[q(b, n, 2 * d + h * hd + c)] = dv;
        }
      }
    }
  }
  return dqkv;
}
