/**
 * CPU float64 reference of the convolutional tokenizer kernels: conv2d (cross-correlation, PyTorch layouts) forward
 * and backward, ReLU, max-pool with argmax, NCHW ↔ tokens. Plain loops over flat arrays; everything NCHW unless a
 * function says tokens.
 */

/** Sizes of one conv2d layer (as the kernel options). */
export interface ConvSizes {
  batch: number;
  inChannels: number;
  height: number;
  width: number;
  outChannels: number;
  kernel: number;
  stride: number;
  padding: number;
}

/** Sizes of one max-pool layer. */
export interface PoolSizes {
  batch: number;
  channels: number;
  height: number;
  width: number;
  kernel: number;
  stride: number;
  padding: number;
}

/** ⌊(n + 2p − k)/s⌋ + 1. */
export function outputSize(n: number, kernel: number, stride: number, padding: number): number {
  return Math.floor((n + 2 * padding - kernel) / stride) + 1;
}

function convDims(o: ConvSizes) {
  return {
    B: o.batch,
    Ci: o.inChannels,
    H: o.height,
    W: o.width,
    Co: o.outChannels,
    K: o.kernel,
    S: o.stride,
    P: o.padding,
    OH: outputSize(o.height, o.kernel, o.stride, o.padding),
    OW: outputSize(o.width, o.kernel, o.stride, o.padding),
  };
}

/** y [B, Co, OH, OW] = Σ_{ci,kh,kw} x[B, Ci, H, W]·w[Co, Ci, K, K] (+ bias[Co]). */
export function conv2dForward(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | undefined,
  o: ConvSizes,
): Float64Array {
  const { B, Ci, H, W, Co, K, S, P, OH, OW } = convDims(o);
  const y = new Float64Array(B * Co * OH * OW);
  for (let b = 0; b < B; b++) {
    for (let co = 0; co < Co; co++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          let s = bias ? bias[co] : 0;
          for (let ci = 0; ci < Ci; ci++) {
            for (let kh = 0; kh < K; kh++) {
              const ih = oh * S - P + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < K; kw++) {
                const iw = ow * S - P + kw;
                if (iw < 0 || iw >= W) continue;
                s += x[((b * Ci + ci) * H + ih) * W + iw] * w[((co * Ci + ci) * K + kh) * K + kw];
              }
            }
          }
          y[((b * Co + co) * OH + oh) * OW + ow] = s;
        }
      }
    }
  }
  return y;
}

/** dx [B, Ci, H, W] = the gradient of Σ conv2dForward·dy w.r.t. x, dy [B, Co, OH, OW]. */
export function conv2dBackwardData(dy: Float64Array, w: Float64Array, o: ConvSizes): Float64Array {
  const { B, Ci, H, W, Co, K, S, P, OH, OW } = convDims(o);
  const dx = new Float64Array(B * Ci * H * W);
  for (let b = 0; b < B; b++) {
    for (let co = 0; co < Co; co++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          const g = dy[((b * Co + co) * OH + oh) * OW + ow];
          for (let ci = 0; ci < Ci; ci++) {
            for (let kh = 0; kh < K; kh++) {
              const ih = oh * S - P + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < K; kw++) {
                const iw = ow * S - P + kw;
                if (iw < 0 || iw >= W) continue;
                dx[((b * Ci + ci) * H + ih) * W + iw] += g * w[((co * Ci + ci) * K + kh) * K + kw];
              }
            }
          }
        }
      }
    }
  }
  return dx;
}

/** dw [Co, Ci, K, K] = Σ_{b,oh,ow} dy[B, Co, OH, OW]·x[B, Ci, H, W] at the tap. */
export function conv2dBackwardWeights(dy: Float64Array, x: Float64Array, o: ConvSizes): Float64Array {
  const { B, Ci, H, W, Co, K, S, P, OH, OW } = convDims(o);
  const dw = new Float64Array(Co * Ci * K * K);
  for (let b = 0; b < B; b++) {
    for (let co = 0; co < Co; co++) {
      for (let oh = 0; oh < OH; oh++) {
        for (let ow = 0; ow < OW; ow++) {
          const g = dy[((b * Co + co) * OH + oh) * OW + ow];
          for (let ci = 0; ci < Ci; ci++) {
            for (let kh = 0; kh < K; kh++) {
              const ih = oh * S - P + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < K; kw++) {
                const iw = ow * S - P + kw;
                if (iw < 0 || iw >= W) continue;
                dw[((co * Ci + ci) * K + kh) * K + kw] += g * x[((b * Ci + ci) * H + ih) * W + iw];
              }
            }
          }
        }
      }
    }
  }
  return dw;
}

/** db [Co] = Σ_{b,oh,ow} dy[B, Co, OH, OW]. */
export function conv2dBackwardBias(dy: Float64Array, o: ConvSizes): Float64Array {
  const { B, Co, OH, OW } = convDims(o);
  const db = new Float64Array(Co);
  for (let b = 0; b < B; b++) {
    for (let co = 0; co < Co; co++) {
      for (let p = 0; p < OH * OW; p++) db[co] += dy[(b * Co + co) * OH * OW + p];
    }
  }
  return db;
}

/** max(x, 0), any shape. */
export function relu(x: Float64Array): Float64Array {
  return x.map((v) => Math.max(v, 0));
}

/** dx = dy·[y > 0], y the ReLU output. */
export function reluBackward(dy: Float64Array, y: Float64Array): Float64Array {
  return dy.map((g, i) => (y[i] > 0 ? g : 0));
}

/**
 * y [B, C, OH, OW] = window maxima of x [B, C, H, W] (padding never wins; the first maximum in scan order wins
 * ties); argmax [B, C, OH, OW] = its position ih·W + iw in the input plane.
 */
export function maxPool2dForward(x: Float64Array, o: PoolSizes): { y: Float64Array; argmax: Int32Array } {
  const { batch: B, channels: C, height: H, width: W, kernel: K, stride: S, padding: P } = o;
  const OH = outputSize(H, K, S, P), OW = outputSize(W, K, S, P);
  const y = new Float64Array(B * C * OH * OW);
  const argmax = new Int32Array(y.length);
  for (let bc = 0; bc < B * C; bc++) {
    for (let oh = 0; oh < OH; oh++) {
      for (let ow = 0; ow < OW; ow++) {
        let best = -Infinity, at = -1;
        for (let kh = 0; kh < K; kh++) {
          const ih = oh * S - P + kh;
          if (ih < 0 || ih >= H) continue;
          for (let kw = 0; kw < K; kw++) {
            const iw = ow * S - P + kw;
            if (iw < 0 || iw >= W) continue;
            const v = x[bc * H * W + ih * W + iw];
            if (v > best || at < 0) [best, at] = [v, ih * W + iw];
          }
        }
        y[(bc * OH + oh) * OW + ow] = best;
        argmax[(bc * OH + oh) * OW + ow] = at;
      }
    }
  }
  return { y, argmax };
}

/** dx [B, C, H, W]: each window's dy [B, C, OH, OW] goes to its argmax. */
export function maxPool2dBackward(dy: Float64Array, argmax: Int32Array, o: PoolSizes): Float64Array {
  const { batch: B, channels: C, height: H, width: W } = o;
  const plane = dy.length / (B * C);
  const dx = new Float64Array(B * C * H * W);
  for (let bc = 0; bc < B * C; bc++) {
    for (let q = 0; q < plane; q++) dx[bc * H * W + argmax[bc * plane + q]] += dy[bc * plane + q];
  }
  return dx;
}

/** tokens [B, H·W, C] from x [B, C, H·W]; works for any typed array. */
export function nchwToTokens<T extends Float64Array | Int32Array>(x: T, batch: number, channels: number): T {
  const plane = x.length / (batch * channels);
  const out = x.slice() as T;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      for (let p = 0; p < plane; p++) out[(b * plane + p) * channels + c] = x[(b * channels + c) * plane + p];
    }
  }
  return out;
}

/** x [B, C, H·W] from tokens [B, H·W, C]. */
export function tokensToNchw<T extends Float64Array | Int32Array>(t: T, batch: number, channels: number): T {
  const plane = t.length / (batch * channels);
  const out = t.slice() as T;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      for (let p = 0; p < plane; p++) out[(b * channels + c) * plane + p] = t[(b * plane + p) * channels + c];
    }
  }
  return out;
}
