/**
 * Attention and sequence-pooling benchmarks at the shapes of a training step: CCT-7/3x1 on 32×32 (N 256, d 256,
 * 4 heads) at batch 128 and 16, CCT-2/3x2 on 1×28×28 (N 49, d 128, 2 heads) at batch 128. FLOPs count the matrix
 * products only: forward 4·B·H·N²·hd (q·kᵀ and P·v), backward 8·B·H·N²·hd (dP, dv, dq, dk; δ from the forward
 * output). The main plan uses the subgroup kernels where the adapter has subgroups (Vulkan), the register-blocked
 * ones elsewhere. Run: `deno run --allow-read=. --allow-env bench/attention_bench.ts [name filter]`.
 */
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan, UniformBlock } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionOptions,
  BLOCKED,
  NAIVE,
} from "../lib/kernels/attention.ts";
import { seqPoolBackward, seqPoolForward } from "../lib/kernels/seqpool.ts";
import { type BenchCase, rate, timePlan } from "./harness.ts";

interface Shape {
  label: string;
  batch: number;
  tokens: number;
  dim: number;
  heads: number;
}

const CCT7_128: Shape = { label: "cct_7_3x1_32 b128", batch: 128, tokens: 256, dim: 256, heads: 4 };
const CCT7_16: Shape = { label: "cct_7_3x1_32 b16", batch: 16, tokens: 256, dim: 256, heads: 4 };
const CCT2_128: Shape = { label: "cct_2_3x2 28px b128", batch: 128, tokens: 49, dim: 128, heads: 2 };

/** A tensor of small pseudo-random values (a cheap LCG: the values only need to be finite and varied). */
function filled(gpu: Gpu, shape: number[], label: string, seed: number): Tensor {
  const t = createTensor(gpu, shape, label);
  const data = new Float32Array(t.size);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = (s / 4294967296 - 0.5) * 2;
  }
  writeTensor(gpu, t, data);
  return t;
}

interface AttentionBuffers {
  qkv: Tensor;
  out: Tensor;
  probs: Tensor;
  dqkv: Tensor;
  dout: Tensor;
  seed: UniformBlock;
}

const buffersCache = new Map<string, AttentionBuffers>();

/** Buffers of one shape, shared by the plans of its cases (CCT-7 at batch 128 needs ≈ 0.4 GiB). */
function buffers(gpu: Gpu, s: Shape): AttentionBuffers {
  let b = buffersCache.get(s.label);
  if (!b) {
    const { batch: B, tokens: N, dim: d, heads: H } = s;
    const seed = new UniformBlock(gpu, 4, "attention bench seed");
    seed.u32[0] = 12345;
    seed.flush();
    b = {
      qkv: filled(gpu, [B, N, 3 * d], "qkv", 1),
      out: createTensor(gpu, [B, N, d], "out"),
      probs: createTensor(gpu, [B, H, N, N], "probs"),
      dqkv: createTensor(gpu, [B, N, 3 * d], "dqkv"),
      dout: filled(gpu, [B, N, d], "dout", 2),
      seed,
    };
    buffersCache.set(s.label, b);
  }
  return b;
}

function attentionPlan(gpu: Gpu, s: Shape, backward: boolean, extra: Partial<AttentionOptions>): Plan {
  const b = buffers(gpu, s);
  const options: AttentionOptions = { ...s, seed: b.seed.binding(), ...extra };
  const plan = new Plan(gpu, `attention ${s.label}`);
  attentionForward(plan, b.out, b.probs, b.qkv, options);
  if (backward) attentionBackward(plan, b.dqkv, b.dout, b.qkv, b.probs, { ...options, out: b.out });
  return plan;
}

function attentionCase(s: Shape, backward: boolean, naive: boolean): BenchCase {
  const hd = s.dim / s.heads;
  const fwd = 4 * s.batch * s.heads * s.tokens * s.tokens * hd;
  return {
    name: `attention ${backward ? "forward+backward" : "forward"} ${s.label} (N ${s.tokens}, d ${s.dim}, ` +
      `${s.heads} heads)`,
    flops: backward ? 3 * fwd : fwd,
    bytes: 0,
    build: (gpu) =>
      Promise.resolve({
        plan: attentionPlan(gpu, s, backward, { blocking: BLOCKED }),
        naive: naive ? attentionPlan(gpu, s, backward, { blocking: NAIVE }) : undefined,
        variants: {
          "register-blocked, no subgroups": attentionPlan(gpu, s, backward, {
            blocking: { ...BLOCKED, subgroup: false },
          }),
          "dropout 0.1": attentionPlan(gpu, s, backward, { dropout: 0.1 }),
        },
      }),
  };
}

function seqPoolCase(s: Shape): BenchCase {
  const { batch: B, tokens: N, dim: d } = s;
  return {
    name: `seqPool forward+backward ${s.label} (N ${N}, d ${d})`,
    flops: 0,
    // x is read four times (logits, pool, weight grads, parameter grads), dx written once.
    bytes: 5 * B * N * d * 4,
    build: (gpu) => {
      const x = filled(gpu, [B, N, d], "x", 3),
        w = filled(gpu, [1, d], "w", 4),
        bias = filled(gpu, [1], "bias", 5);
      const pooled = createTensor(gpu, [B, d], "pooled"), weights = createTensor(gpu, [B, N], "weights");
      const dx = createTensor(gpu, [B, N, d], "dx"), dw = createTensor(gpu, [1, d], "dw");
      const dbias = createTensor(gpu, [1], "dbias"), dpooled = filled(gpu, [B, d], "dpooled", 6);
      const plan = new Plan(gpu, "seqpool");
      seqPoolForward(plan, pooled, weights, x, w, bias, s);
      seqPoolBackward(plan, dx, dw, dbias, dpooled, x, weights, w, s);
      return Promise.resolve({ plan });
    },
  };
}

/** The benchmark cases of this family. */
export const cases: BenchCase[] = [
  attentionCase(CCT2_128, false, true),
  attentionCase(CCT2_128, true, true),
  attentionCase(CCT7_16, false, true),
  attentionCase(CCT7_16, true, true),
  attentionCase(CCT7_128, false, false),
  attentionCase(CCT7_128, true, false),
  seqPoolCase(CCT2_128),
  seqPoolCase(CCT7_128),
];

if (import.meta.main) {
  const gpu = await getGpu();
  const filter = Deno.args[0] ?? "";
  console.log(`${gpu.description} (${gpu.backend})`);
  for (const c of cases.filter((c) => c.name.includes(filter))) {
    const { plan, naive, variants } = await c.build(gpu);
    const all: [string, Plan][] = [["default", plan], ...(naive ? [["naive", naive] as [string, Plan]] : [])];
    all.push(...Object.entries(variants ?? {}));
    for (const [label, p] of all) {
      // Few repetitions: the large cases take seconds per run on llvmpipe.
      const ms = await timePlan(gpu, p, { reps: 1, samples: 3 });
      console.log(`${c.name} [${label}]: ${ms.toFixed(2)} ms, ${rate(c, ms)}`);
      p.destroy();
    }
  }
}
