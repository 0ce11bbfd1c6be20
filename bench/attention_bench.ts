/**
 * Attention and sequence-pooling benchmarks at the shapes of a training step: CCT-7/3x1 on 32×32 (N 256, d 256,
 * 4 heads) at batch 128 and 16, CCT-2/3x2 on 1×28×28 (N 49, d 128, 2 heads) at batch 128. FLOPs count the matrix
 * products only: forward 4·B·H·N²·hd (q·kᵀ and P·v), backward 8·B·H·N²·hd (dP, dv, dq, dk; δ from the forward
 * output). The main plan uses the tall-tile subgroup kernels where the adapter has subgroups (Vulkan), the
 * register-blocked ones elsewhere. Run: `deno run --allow-read=. --allow-env bench/attention_bench.ts [name filter]`,
 * or `… --kernels [cct2|cct7] [rounds]` for per-kernel medians of the tall and 8-row subgroup kernels side by side
 * (more blockings as JSON in the environment variable ATTENTION_VARIANTS, e.g.
 * `{"p16":{"blocking":{"rows":8,"keys":8,"colVecs":2,"productRows":16,"scoreRows":32}}}`).
 */
import process from "node:process";
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan, UniformBlock } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import {
  attentionBackward,
  attentionForward,
  type AttentionOptions,
  BLOCKED,
  NAIVE,
  SUBGROUP_NARROW,
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
          "8-row subgroup kernels (previous default)": attentionPlan(gpu, s, backward, {
            blocking: SUBGROUP_NARROW,
          }),
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

/**
 * Per-kernel comparison of blockings in one process: each round profiles every variant's forward+backward plan
 * once (GPU timestamps per dispatch), alternating variants so machine load hits them alike; prints the median ms of
 * each kernel per variant. `--kernels [shape] [rounds]`, shape `cct2` (default) or `cct7`.
 */
async function compareKernels(gpu: Gpu, shape: Shape, rounds: number): Promise<void> {
  const variants: Record<string, Partial<AttentionOptions>> = {
    "narrow (8-row subgroup)": { blocking: SUBGROUP_NARROW },
    "tall (default)": { blocking: BLOCKED },
    ...JSON.parse(Deno.env.get("ATTENTION_VARIANTS") ?? "{}"),
  };
  const plans = Object.entries(variants).map(([label, extra]) => {
    const plan = attentionPlan(gpu, shape, true, { dropout: 0.1, ...extra });
    return { label, plan, samples: new Map<string, number[]>() };
  });
  for (const p of plans) await p.plan.run(); // compile
  for (let round = 0; round < rounds; round++) {
    for (const p of plans) {
      for (const { name, ms } of await p.plan.profile()) {
        p.samples.set(name, [...(p.samples.get(name) ?? []), ms]);
      }
    }
  }
  const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
  console.log(`${shape.label}, dropout 0.1, δ from out; median ms of ${rounds} rounds`);
  const names = [...plans[0].samples.keys()];
  console.log(["kernel".padEnd(28), ...plans.map((p) => p.label.padStart(26))].join(""));
  const totals = plans.map(() => 0);
  for (const name of names) {
    const row = plans.map((p, i) => {
      const ms = median(p.samples.get(name)!);
      totals[i] += ms;
      return ms.toFixed(2).padStart(26);
    });
    console.log([name.padEnd(28), ...row].join(""));
  }
  console.log(["total".padEnd(28), ...totals.map((t) => t.toFixed(2).padStart(26))].join(""));
  // Process CPU time over the llvmpipe threads (best of the rounds): independent of other jobs' load.
  const threads = Number(Deno.env.get("LP_NUM_THREADS") ?? navigator.hardwareConcurrency);
  const best = plans.map(() => Infinity);
  for (let round = 0; round < rounds; round++) {
    for (const [i, p] of plans.entries()) {
      const start = process.cpuUsage();
      await p.plan.run();
      const used = process.cpuUsage(start);
      best[i] = Math.min(best[i], (used.user + used.system) / 1000 / threads);
    }
  }
  console.log(
    ["CPU ms / thread (whole plan)".padEnd(28), ...best.map((t) => t.toFixed(2).padStart(26))].join(""),
  );
  for (const p of plans) p.plan.destroy();
}

if (import.meta.main && Deno.args[0] === "--kernels") {
  const gpu = await getGpu();
  console.log(`${gpu.description} (${gpu.backend})`);
  await compareKernels(gpu, Deno.args[1] === "cct7" ? CCT7_16 : CCT2_128, Number(Deno.args[2] ?? 7));
} else if (import.meta.main) {
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
