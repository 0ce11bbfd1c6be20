/**
 * Matmul benchmarks: the products of a CCT-7/3x1 training step (tokens 256, d 256, MLP 512, 4 heads of 64) and of
 * CCT-2/3x2 on 1×28×28 (tokens 49, d 128, 2 heads of 64, MLP 128), forward, input-gradient and weight-gradient
 * shapes, plus a 1024³ square whose best variant is the adapter's ceiling. Every variant is timed; the report
 * gives GFLOP/s per variant, the naive kernel, and each case's fraction of the ceiling.
 *
 * Run: `deno run --allow-read=. --allow-env bench/matmul_bench.ts [--batch=16] [--variants=a,b] [--cpu] [name filter]`
 *
 * `--cpu` times by the process's CPU time (all llvmpipe threads) divided by the thread count instead of GPU
 * timestamps: on a machine shared with other jobs, wall time swings 2–3× with their load while CPU time moves by a
 * few percent, so variant comparisons stay meaningful (it hides idle cores, so check few-workgroup shapes by wall).
 */
import process from "node:process";
import { getGpu, type Gpu } from "../lib/gpu/device.ts";
import { Plan } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor } from "../lib/gpu/tensor.ts";
import {
  chooseMatmulVariant,
  matmul,
  matmulCandidates,
  type MatmulOptions,
  type MatmulVariant,
} from "../lib/kernels/matmul.ts";
import { type BenchCase, rate, timePlan } from "./harness.ts";

/** Naive kernels above this much work take seconds per run on llvmpipe; they are left out. */
const NAIVE_MAX_FLOPS = 2.2e9;

function filled(gpu: Gpu, size: number, label: string): Tensor {
  const t = createTensor(gpu, [size], label);
  const data = new Float32Array(size);
  let s = 1;
  for (let i = 0; i < size; i++) {
    s = (s * 1664525 + 1013904223) >>> 0;
    data[i] = (s / 4294967296 - 0.5) * 0.1;
  }
  gpu.device.queue.writeBuffer(t.buffer, 0, data);
  return t;
}

/** Element counts of A, B, C of a (possibly batched) product described by matmul options. */
function extents(o: MatmulOptions): [number, number, number] {
  const dims = o.batch?.dims ?? [1];
  const span = (off: number, rows: number, ld: number, strides: readonly number[]) =>
    off + rows * ld + dims.reduce((s, d, i) => s + (d - 1) * strides[i], 0);
  const lda = o.lda ?? (o.transA ? o.m : o.k), ldb = o.ldb ?? (o.transB ? o.k : o.n), ldc = o.ldc ?? o.n;
  return [
    span(o.offA ?? 0, o.transA ? o.k : o.m, lda, o.batch?.strideA ?? [0]),
    span(o.offB ?? 0, o.transB ? o.n : o.k, ldb, o.batch?.strideB ?? [0]),
    span(o.offC ?? 0, o.m, ldc, o.batch?.strideC ?? [0]),
  ];
}

/**
 * Milliseconds of one run of `plan` as process CPU time over `threads` (the best of `samples` runs after a warm-up):
 * load-independent where GPU timestamps on a shared CPU are not.
 */
async function cpuTimePlan(plan: Plan, threads: number, samples = 3): Promise<number> {
  await plan.run();
  let best = Infinity;
  for (let s = 0; s < samples; s++) {
    const start = process.cpuUsage();
    await plan.run();
    const used = process.cpuUsage(start);
    best = Math.min(best, (used.user + used.system) / 1000 / threads);
  }
  return best;
}

/** Variants the runner asked for (`--variants=`); default: the tuner's candidates for the device. */
let requestedVariants: MatmulVariant[] | undefined;

/** A case timing every variant of one product. `sameAB` binds one tensor as A and B (attention on qkv). */
function matmulCase(name: string, o: MatmulOptions, sameAB = false, variants?: MatmulVariant[]): BenchCase {
  const batches = (o.batch?.dims ?? [1]).reduce((a, b) => a * b, 1);
  const flops = 2 * o.m * o.n * o.k * batches;
  return {
    name,
    flops,
    bytes: 0,
    build(gpu: Gpu) {
      const [sa, sb, sc] = extents(o);
      const a = filled(gpu, sameAB ? Math.max(sa, sb) : sa, "A");
      const b = sameAB ? a : filled(gpu, sb, "B");
      const c = createTensor(gpu, [sc], "C");
      const planOf = (variant: MatmulVariant) => {
        const plan = new Plan(gpu, `${name} ${variant}`);
        matmul(plan, c, a, b, { ...o, variant });
        return plan;
      };
      const all: Record<string, Plan> = {};
      for (const v of variants ?? requestedVariants ?? matmulCandidates(gpu)) all[v] = planOf(v);
      return Promise.resolve({
        plan: planOf(chooseMatmulVariant(gpu, o)),
        naive: flops <= NAIVE_MAX_FLOPS ? planOf("naive") : undefined,
        variants: all,
      });
    },
  };
}

/** A linear layer y = x·Wᵀ (forward), dx = dy·W, dW = dyᵀ·x for `rows` tokens. */
function linearCases(tag: string, rows: number, inF: number, outF: number): BenchCase[] {
  return [
    matmulCase(`${tag} forward ${rows}×${outF}×${inF}`, { m: rows, n: outF, k: inF, transB: true }),
    matmulCase(`${tag} dx ${rows}×${inF}×${outF}`, { m: rows, n: inF, k: outF }),
    matmulCase(`${tag} dW ${outF}×${inF}×${rows}`, { m: outF, n: inF, k: rows, transA: true }),
  ];
}

/** Scores q·kᵀ and context P·v of multi-head attention reading q, k, v as column blocks of qkv [B, T, 3d]. */
function attentionCases(tag: string, batch: number, tokens: number, d: number, heads: number): BenchCase[] {
  const hd = d / heads, T = tokens;
  const qkvBatch = [T * 3 * d, hd];
  return [
    matmulCase(`${tag} scores ${batch * heads}×(${T}×${T}×${hd})`, {
      m: T,
      n: T,
      k: hd,
      transB: true,
      alpha: 1 / Math.sqrt(hd),
      lda: 3 * d,
      ldb: 3 * d,
      offB: d,
      batch: { dims: [batch, heads], strideA: qkvBatch, strideB: qkvBatch, strideC: [heads * T * T, T * T] },
    }, true),
    matmulCase(`${tag} context ${batch * heads}×(${T}×${hd}×${T})`, {
      m: T,
      n: hd,
      k: T,
      ldb: 3 * d,
      ldc: d,
      offB: 2 * d,
      batch: {
        dims: [batch, heads],
        strideA: [heads * T * T, T * T],
        strideB: qkvBatch,
        strideC: [T * d, hd],
      },
    }),
  ];
}

/** The CCT-7/3x1 (32×32) step at `batch` and the CCT-2/3x2 (28×28) step at batch 128. */
export function casesFor(batch: number): BenchCase[] {
  const rows7 = batch * 256, rows2 = 128 * 49;
  return [
    matmulCase("square 1024×1024×1024", { m: 1024, n: 1024, k: 1024 }),
    ...linearCases(`cct_7 b${batch} qkv`, rows7, 256, 768),
    ...linearCases(`cct_7 b${batch} proj`, rows7, 256, 256),
    ...linearCases(`cct_7 b${batch} fc1`, rows7, 256, 512),
    ...linearCases(`cct_7 b${batch} fc2`, rows7, 512, 256),
    ...attentionCases(`cct_7 b${batch}`, batch, 256, 256, 4),
    ...linearCases("cct_2 b128 qkv", rows2, 128, 384),
    ...linearCases("cct_2 b128 proj/fc", rows2, 128, 128),
    ...attentionCases("cct_2 b128", 128, 49, 128, 2),
  ];
}

/** The benchmark cases at the brief's batch (128). */
export const cases: BenchCase[] = casesFor(128);

if (import.meta.main) {
  const args = Deno.args;
  const batch = Number(args.find((a) => a.startsWith("--batch="))?.slice(8) ?? 128);
  requestedVariants = args.find((a) => a.startsWith("--variants="))?.slice(11).split(",") as
    | MatmulVariant[]
    | undefined;
  const filter = args.find((a) => !a.startsWith("--"));
  const cpu = args.includes("--cpu");
  const threads = Number(Deno.env.get("LP_NUM_THREADS") ?? navigator.hardwareConcurrency);
  const gpu = await getGpu();
  console.log(
    `${gpu.description} (${gpu.backend}), subgroups ${
      gpu.hasSubgroups ? gpu.subgroupSize : "no"
    }, timing by ${cpu ? `CPU time / ${threads} threads` : "GPU timestamps"}`,
  );
  // The square runs first and again last: on a shared machine the load drifts, so the ceiling is the best of both.
  const all = casesFor(batch);
  const selected = [
    ...all.filter((c) => !filter || c.name.includes(filter) || c.name.startsWith("square")),
    all[0],
  ];
  const results: { name: string; best: number; bestName: string; chosen: string }[] = [];
  let ceiling = 0;
  for (const c of selected) {
    const big = c.flops > 4e9;
    const timing = big ? { reps: 1, samples: 3 } : { reps: 2, samples: 3 };
    const built = await c.build(gpu);
    const line: string[] = [];
    let best = Infinity, bestName = "";
    for (const [name, plan] of Object.entries(built.variants ?? {})) {
      const ms = cpu ? await cpuTimePlan(plan, threads) : await timePlan(gpu, plan, timing);
      line.push(`${name} ${rate(c, ms)}`);
      if (ms < best) [best, bestName] = [ms, name];
      plan.destroy();
    }
    if (built.naive) {
      line.push(`naive ${rate(c, await timePlan(gpu, built.naive, { reps: 1, samples: 1 }))}`);
      built.naive.destroy();
    }
    const chosen = built.plan.label.slice(c.name.length + 1);
    built.plan.destroy();
    const gflops = c.flops / best / 1e6;
    if (c.name.startsWith("square")) ceiling = Math.max(ceiling, gflops);
    results.push({ name: c.name, best: gflops, bestName, chosen });
    console.log(`${c.name}: ${line.join(" | ")}`);
  }
  console.log(`\nceiling (best square): ${ceiling.toFixed(1)} GFLOP/s`);
  for (const r of results) {
    console.log(
      `${r.name}: best ${r.bestName} ${r.best.toFixed(1)} GFLOP/s = ${
        (100 * r.best / ceiling).toFixed(0)
      }% ` +
        `of ceiling (default ${r.chosen})`,
    );
  }
}
