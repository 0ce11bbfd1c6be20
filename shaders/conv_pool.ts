/**
 * A fused first tokenizer stage: conv2d (no bias) ▸ ReLU ▸ max-pool, forward and weight gradient, for stages with
 * few input channels (CCT's first conv: C_in 1 or 3) whose input gradient is not needed. Neither kernel
 * materialises the conv-sized tensors (at batch 128, 1×28×28 → 64 channels that is 25.7 MB streamed ≈ 4 times
 * per step by the unfused path; the arithmetic, C_in·k² FMAs per conv output, is tiny).
 *
 * Bias-free: a CCT tokenizer conv followed by pooling has no bias (the official code builds it with
 * `bias=False`), so neither kernel has one.
 *
 * - Forward: each invocation owns `r` consecutive pooled outputs of one row and loops over vec4s of output
 *   channels. It loads the input patch under those windows once (shared by every channel), then streams the conv
 *   outputs of the windows row-major — each one an FMA chain in exactly the order of conv.ts's blocked and subgroup
 *   forwards (taps kh, kw outside, input channels inside, from 0), so results are bit-identical — through ReLU
 *   into the running max of every window that contains it. Row-major streaming visits each window's elements in
 *   its scan order, so the tie rule (first maximum wins; padding never) is maxPool2dForward's. Overlapping
 *   windows recompute shared conv outputs (1.7× at r = 4), cheap next to the memory traffic saved.
 * - Weight gradient: dW[co, ci, kh, kw] = Σ_{b, p} dy[b, co, p]·[pooled > 0]·x[b, ci, argmax(p)·s − pad + (kh, kw)]
 *   (the ReLU mask of the scatter: pooled = ReLU(conv at argmax)). The argmax differs per channel, but it lies in
 *   the pool window, so an invocation loads the input under the window's conv receptive field once per pooled
 *   position ((k_pool − 1)·s + k)² · C_in values) and picks each channel's k² taps by selects on the argmax
 *   offset (vector ALU work) instead of k² per-lane gathers (llvmpipe's expensive operation, see PERF.md).
 *   Register-blocked: `q` vec4s of output channels × C_in·k² taps per invocation, no workgroup memory; the pooled
 *   positions are split `splits` ways into a scratch folded by conv.ts's convSplitReduceWgsl (deterministic).
 */
import { LINEAR_INDEX_WGSL } from "../lib/gpu/plan.ts";
import { CONV_WORKGROUP, type ConvLayout, paddedChannels } from "./conv.ts";

/** Geometry of a conv ▸ ReLU ▸ pool stage baked into its kernels (divisions by constants vectorise). */
export interface ConvPoolDims {
  cin: number;
  /** Input height and width. */
  h: number;
  w: number;
  cout: number;
  /** Conv output (the pool's input) height and width. */
  ch: number;
  cw: number;
  /** Pooled height and width. */
  ph: number;
  pw: number;
}

/** Conv and pool windows of the stage. */
export interface ConvPoolShape {
  kernel: number;
  stride: number;
  padding: number;
  poolKernel: number;
  poolStride: number;
  poolPadding: number;
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const lines = (n: number, f: (i: number) => string) => range(n).map(f).join("\n");

function consts(d: ConvPoolDims, o: ConvPoolShape): string {
  return `const CIN = ${d.cin}u;
const H = ${d.h}u;
const W = ${d.w}u;
const COUT = ${d.cout}u;
const CH = ${d.ch}u;
const CW = ${d.cw}u;
const PH = ${d.ph}u;
const PW = ${d.pw}u;
const S = ${o.stride};
const PAD = ${o.padding};
const PS = ${o.poolStride};
const PPAD = ${o.poolPadding};`;
}

/**
 * Fused forward: pooled (and argmax: position ch·CW + cw in the conv plane, int32) in NCHW [B, C, PH, PW] or
 * tokens [B, PH·PW, C] — the layout and encoding of maxPool2dForward. Each invocation owns `r` pooled outputs of a
 * row × `q` vec4s of channels (looped). `w` is the forward-transposed weight of conv.ts ([k·k, C_in, C_out']
 * vec4s along padded output channels). Bindings: sizes (n = invocations), pooled, argmax, x, w.
 */
export function conv2dReluMaxPoolForwardWgsl(
  o: ConvPoolShape & { dims: ConvPoolDims; layout: ConvLayout; r: number; q: number },
): string {
  const d = o.dims, k = o.kernel, s = o.stride, pk = o.poolKernel, ps = o.poolStride, r = o.r;
  const cols = (r - 1) * ps + pk; // conv columns under the r windows
  const inRows = (pk - 1) * s + k, inCols = (cols - 1) * s + k;
  const cb = Math.ceil(Math.ceil(d.cout / 4) / o.q);
  const xBlocks = Math.ceil(d.pw / r);
  const taps: [number, number, number][] = [];
  for (let kh = 0; kh < k; kh++) {
    for (let kw = 0; kw < k; kw++) for (let ci = 0; ci < d.cin; ci++) taps.push([kh, kw, ci]);
  }
  const stream: string[] = [];
  for (let i = 0; i < pk; i++) {
    for (let j = 0; j < cols; j++) {
      const fmas = taps.map(([kh, kw, ci]) =>
        `      a = fma(vec4<f32>(x${ci}_${i * s + kh}_${j * s + kw}), w${kh * k + kw}_${ci}, a);`
      ).join("\n");
      const updates = range(r).filter((w) => j - w * ps >= 0 && j - w * ps < pk).map((w) =>
        `      {
        let take = vec4<bool>(ok) & ((v > best${w}) | (at${w} < vec4<i32>(0)));
        best${w} = select(best${w}, v, take);
        at${w} = select(at${w}, vec4<i32>(pos), take);
      }`
      ).join("\n");
      stream.push(`    {
      var a = vec4<f32>(0.0);
${fmas}
      let v = max(a, vec4<f32>(0.0));
      let ok = crok${i} && ccok${j};
      let pos = (cy0 + ${i}) * i32(CW) + cx0 + ${j};
${updates}
    }`);
    }
  }
  const outIndex = (w: number, c: number) =>
    o.layout === "tokens"
      ? `(b * PH * PW + py * PW + px0 + ${w}u) * COUT + cq * 4u + ${c}u`
      : `((b * COUT + cq * 4u + ${c}u) * PH + py) * PW + px0 + ${w}u`;
  const store = lines(r, (w) =>
    `    if (px0 + ${w}u < PW) {
${
      lines(4, (c) =>
        `      if (cq * 4u + ${c}u < COUT) {
        pooled[${outIndex(w, c)}] = best${w}[${c}];
        argmax[${outIndex(w, c)}] = at${w}[${c}];
      }`)
    }
    }`);
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> pooled: array<f32>;
@group(0) @binding(2) var<storage, read_write> argmax: array<i32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> w: array<vec4<f32>>;
${consts(d, o)}
const COUT4P = ${paddedChannels(d.cout) / 4}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  if (t >= sizes.n) { return; }
  // Consecutive invocations walk a pooled row, then rows, then channel blocks, then images.
  let px0 = (t % ${xBlocks}u) * ${r}u;
  let rest = t / ${xBlocks}u;
  let py = rest % PH;
  let rest2 = rest / PH;
  let cblock = rest2 % ${cb}u;
  let b = rest2 / ${cb}u;
  // Conv output (cy0 + i, cx0 + j) is patch element (i, j); input (iy0 + u, ix0 + v) is x patch element (u, v).
  let cy0 = i32(py) * PS - PPAD;
  let cx0 = i32(px0) * PS - PPAD;
  let iy0 = cy0 * S - PAD;
  let ix0 = cx0 * S - PAD;
${lines(pk, (i) => `  let crok${i} = cy0 + ${i} >= 0 && cy0 + ${i} < i32(CH);`)}
${lines(cols, (j) => `  let ccok${j} = cx0 + ${j} >= 0 && cx0 + ${j} < i32(CW);`)}
${lines(inRows, (u) => `  let irok${u} = iy0 + ${u} >= 0 && iy0 + ${u} < i32(H);`)}
${lines(inCols, (v) => `  let icok${v} = ix0 + ${v} >= 0 && ix0 + ${v} < i32(W);`)}
  let xb = b * CIN * H * W;
${
    range(d.cin).map((ci) =>
      range(inRows).map((u) =>
        lines(inCols, (v) =>
          `  let x${ci}_${u}_${v} = select(0.0, x[xb + ${
            ci * d.h * d.w
          }u + u32(select(0, (iy0 + ${u}) * i32(W) + ix0 + ${v}, irok${u} && icok${v}))], irok${u} && icok${v});`)
      ).join("\n")
    ).join("\n")
  }
  for (var qi = 0u; qi < ${o.q}u; qi++) {
    let cq = cblock * ${o.q}u + qi;
    if (cq * 4u >= COUT) { break; }
${
    lines(k * k, (tap) =>
      lines(d.cin, (ci) => `    let w${tap}_${ci} = w[(${tap}u * CIN + ${ci}u) * COUT4P + cq];`))
  }
${lines(r, (w) => `    var best${w} = vec4<f32>(-3.402823466e38);\n    var at${w} = vec4<i32>(-1);`)}
${stream.join("\n")}
${store}
  }
}
`;
}

/**
 * Fused weight gradient (see the module comment): invocation (channel block, split) owns `q` vec4s of output
 * channels × all C_in·k² taps and walks its chunk of the B·PH·PW pooled positions; with `split` it writes
 * scratch[split·N + i] (N = C_out·C_in·k²) for convSplitReduceWgsl, else dw (added to when `accumulate`). dy,
 * argmax and pooled are in `layout` (tokens with C_out = 4·n load as vec4s). Bindings: sizes {m, splits, chunk},
 * out, dy, argmax, pooled, x.
 */
export function conv2dReluMaxPoolBackwardWeightsWgsl(
  o: ConvPoolShape & {
    dims: ConvPoolDims;
    layout: ConvLayout;
    q: number;
    accumulate: boolean;
    split: boolean;
    /** Gather each channel's k² taps from x at its argmax instead (no patch, no selects; for the benchmark). */
    gather?: boolean;
  },
): string {
  const d = o.dims, k = o.kernel, s = o.stride, pk = o.poolKernel;
  const n = d.cout * d.cin * k * k;
  const cb = Math.ceil(Math.ceil(d.cout / 4) / o.q);
  const span = (pk - 1) * s + k; // input rows (and columns) under a window's conv receptive field
  const vec = o.layout === "tokens" && d.cout % 4 === 0;
  const acc = (ci: number, kh: number, kw: number, q: number) => `acc${ci}_${kh}_${kw}_${q}`;
  const load = (q: number) => {
    if (vec) {
      // Clamped: when ⌈C_out/4⌉ is not a multiple of q the last block's extra vec4s would read the next position
      // (past the end at the last one); their sums are never stored.
      return `    let i${q} = pbase + min(cblock * ${o.q}u + ${q}u, ${d.cout / 4 - 1}u);
    let pl${q} = pooled[i${q}];
    let g${q} = select(vec4<f32>(0.0), dy[i${q}], pl${q} > vec4<f32>(0.0));
    let am${q} = argmax[i${q}];`;
    }
    const idx = (c: number) => `pbase + ch${q}_${c}`;
    const v = (arr: string, c: number) => `${arr}[${idx(c)}]`;
    return `    let pl${q} = vec4<f32>(${range(4).map((c) => v("pooled", c)).join(", ")});
    let g${q} = select(vec4<f32>(0.0), vec4<f32>(${
      range(4).map((c) => v("dy", c)).join(", ")
    }), (pl${q} > vec4<f32>(0.0)) & valid${q});
    let am${q} = vec4<i32>(${range(4).map((c) => v("argmax", c)).join(", ")});`;
  };
  const perChannel = (q: number) => {
    const out: string[] = [load(q)];
    out.push(`    let ay${q} = am${q} / vec4<i32>(i32(CW));
    let oy${q} = ay${q} - vec4<i32>(cy0);
    let ox${q} = am${q} - ay${q} * vec4<i32>(i32(CW)) - vec4<i32>(cx0);`);
    if (o.gather) {
      out.push(`    let gy${q} = (oy${q} + vec4<i32>(cy0)) * S - PAD;
    let gx${q} = (ox${q} + vec4<i32>(cx0)) * S - PAD;`);
      for (let ci = 0; ci < d.cin; ci++) {
        for (let kh = 0; kh < k; kh++) {
          for (let kw = 0; kw < k; kw++) {
            const ok = `ok${q}_${ci}_${kh}_${kw}`, at = `at${q}_${ci}_${kh}_${kw}`;
            out.push(
              `    let ${ok} = (gy${q} + ${kh} >= vec4<i32>(0)) & (gy${q} + ${kh} < vec4<i32>(i32(H))) &
      (gx${q} + ${kw} >= vec4<i32>(0)) & (gx${q} + ${kw} < vec4<i32>(i32(W)));
    let ${at} = vec4<u32>(select(vec4<i32>(0), (gy${q} + ${kh}) * i32(W) + gx${q} + ${kw}, ${ok})) + vec4<u32>(xb + ${
                ci * d.h * d.w
              }u);
    ${
                acc(ci, kh, kw, q)
              } = fma(g${q}, select(vec4<f32>(0.0), vec4<f32>(${
                range(4).map((c) => `x[${at}[${c}]]`).join(", ")
              }), ${ok}), ${acc(ci, kh, kw, q)});`,
            );
          }
        }
      }
      return out.join("\n");
    }
    for (let ci = 0; ci < d.cin; ci++) {
      // Row pick: R[kh][v] = x patch row oy·s + kh; then column pick: X[kh][kw] = R[kh][ox·s + kw].
      for (let kh = 0; kh < k; kh++) {
        for (let v = 0; v < span; v++) {
          let e = `vec4<f32>(x${ci}_${(pk - 1) * s + kh}_${v})`;
          for (let oo = pk - 2; oo >= 0; oo--) {
            e = `select(${e}, vec4<f32>(x${ci}_${oo * s + kh}_${v}), oy${q} == vec4<i32>(${oo}))`;
          }
          out.push(`    let r${q}_${ci}_${kh}_${v} = ${e};`);
        }
        for (let kw = 0; kw < k; kw++) {
          let e = `r${q}_${ci}_${kh}_${(pk - 1) * s + kw}`;
          for (let oo = pk - 2; oo >= 0; oo--) {
            e = `select(${e}, r${q}_${ci}_${kh}_${oo * s + kw}, ox${q} == vec4<i32>(${oo}))`;
          }
          out.push(`    ${acc(ci, kh, kw, q)} = fma(g${q}, ${e}, ${acc(ci, kh, kw, q)});`);
        }
      }
    }
    return out.join("\n");
  };
  const stores: string[] = [];
  for (let q = 0; q < o.q; q++) {
    for (let c = 0; c < 4; c++) {
      const co = `(cblock * ${o.q}u + ${q}u) * 4u + ${c}u`;
      const body: string[] = [];
      for (let ci = 0; ci < d.cin; ci++) {
        for (let kh = 0; kh < k; kh++) {
          for (let kw = 0; kw < k; kw++) {
            const index = `${o.split ? "split * N + " : ""}co${q}_${c} * ${d.cin * k * k}u + ${
              ci * k * k + kh * k + kw
            }u`;
            const value = `${acc(ci, kh, kw, q)}[${c}]`;
            body.push(
              `    out[${index}] = ${!o.split && o.accumulate ? `out[${index}] + ${value}` : value};`,
            );
          }
        }
      }
      stores.push(
        `  {\n    let co${q}_${c} = ${co};\n    if (co${q}_${c} < COUT) {\n${body.join("\n")}\n    }\n  }`,
      );
    }
  }
  const xType = vec ? "vec4<f32>" : "f32";
  return /* wgsl */ `
${LINEAR_INDEX_WGSL(CONV_WORKGROUP)}
struct Sizes { m: u32, splits: u32, chunk: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> dy: array<${xType}>;
@group(0) @binding(3) var<storage, read> argmax: array<${vec ? "vec4<i32>" : "i32"}>;
@group(0) @binding(4) var<storage, read> pooled: array<${xType}>;
@group(0) @binding(5) var<storage, read> x: array<f32>;
${consts(d, o)}
const N = ${n}u;
@compute @workgroup_size(${CONV_WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let t = linear_index(gid, nwg);
  let cblock = t % ${cb}u;
  let split = t / ${cb}u;
  if (split >= sizes.splits) { return; }
  let plane = PH * PW;
${
    vec
      ? ""
      : lines(o.q, (q) =>
        `  let valid${q} = vec4<u32>(${
          range(4).map((c) => `(cblock * ${o.q}u + ${q}u) * 4u + ${c}u`).join(", ")
        }) < vec4<u32>(COUT);
${
          lines(4, (c) =>
            `  let ch${q}_${c} = min((cblock * ${o.q}u + ${q}u) * 4u + ${c}u, COUT - 1u)${
              o.layout === "tokens" ? "" : " * plane"
            };`)
        }`)
  }
${
    range(d.cin).map((ci) =>
      lines(k, (kh) => lines(k, (kw) => lines(o.q, (q) => `  var ${acc(ci, kh, kw, q)} = vec4<f32>(0.0);`)))
    ).join("\n")
  }
  let m_start = split * sizes.chunk;
  let m_end = min(sizes.m, m_start + sizes.chunk);
  // Pooled coordinates advance incrementally: no division inside the loop.
  var b = m_start / plane;
  var p = m_start - b * plane;
  var py = p / PW;
  var px = p - py * PW;
  for (var m = m_start; m < m_end; m++) {
    let cy0 = i32(py) * PS - PPAD;
    let cx0 = i32(px) * PS - PPAD;
    let iy0 = cy0 * S - PAD;
    let ix0 = cx0 * S - PAD;
    let xb = b * CIN * H * W;
${o.gather ? "" : lines(span, (u) => `    let irok${u} = iy0 + ${u} >= 0 && iy0 + ${u} < i32(H);`)}
${o.gather ? "" : lines(span, (v) => `    let icok${v} = ix0 + ${v} >= 0 && ix0 + ${v} < i32(W);`)}
${
    o.gather
      ? ""
      : range(d.cin).map((ci) =>
        range(span).map((u) =>
          lines(span, (v) =>
            `    let x${ci}_${u}_${v} = select(0.0, x[xb + ${
              ci * d.h * d.w
            }u + u32(select(0, (iy0 + ${u}) * i32(W) + ix0 + ${v}, irok${u} && icok${v}))], irok${u} && icok${v});`)
        ).join("\n")
      ).join("\n")
  }
    let pbase = ${
    vec
      ? `(b * plane + p) * ${d.cout / 4}u`
      : o.layout === "tokens"
      ? "(b * plane + p) * COUT"
      : "b * COUT * plane + p"
  };
${range(o.q).map(perChannel).join("\n")}
    px++;
    p++;
    if (px == PW) {
      px = 0u;
      py++;
      if (py == PH) {
        py = 0u;
        p = 0u;
        b++;
      }
    }
  }
${stores.join("\n")}
}
`;
}
