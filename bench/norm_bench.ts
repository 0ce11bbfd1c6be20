/**
 * LayerNorm, drop-path and positional-embedding benchmarks at the shapes of a training step at batch 128:
 * CCT-7/3x1 on 32×32 (256 tokens, d 256) and CCT-2/3x2 on 1×28×28 (49 tokens, d 128). LayerNorm is timed
 * against its naive variant (scalar loads; parameter gradients by one invocation per column over every row).
 *
 * Run: `deno run --allow-read=. --allow-env bench/norm_bench.ts [name filter]`
 */
import type { Gpu } from "../lib/gpu/device.ts";
import { Plan } from "../lib/gpu/plan.ts";
import { createTensor, type Tensor, writeTensor } from "../lib/gpu/tensor.ts";
import { layerNormBackward, layerNormForward, type LayerNormVariant } from "../lib/kernels/norm.ts";
import { residualDropPath, residualDropPathBackward } from "../lib/kernels/dropout.ts";
import { positionalEmbeddingAdd, positionalEmbeddingBackward } from "../lib/kernels/embedding.ts";
import { type BenchCase, rate, timePlan } from "./harness.ts";

const shapes = [
  { model: "cct_7_3x1", batch: 128, tokens: 256, dim: 256 },
  { model: "cct_2_3x2 28px", batch: 128, tokens: 49, dim: 128 },
];

function filled(gpu: Gpu, shape: number[], label: string, phase: number): Tensor {
  const t = createTensor(gpu, shape, label);
  const data = new Float32Array(t.size);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(i * 0.37 + phase) * (1 + (i % 7));
  writeTensor(gpu, t, data);
  return t;
}

function layerNormTensors(gpu: Gpu, rows: number, dim: number) {
  return {
    x: filled(gpu, [rows, dim], "x", 0),
    y: createTensor(gpu, [rows, dim], "y"),
    dy: filled(gpu, [rows, dim], "dy", 1),
    dx: createTensor(gpu, [rows, dim], "dx"),
    mean: createTensor(gpu, [rows], "mean"),
    rstd: createTensor(gpu, [rows], "rstd"),
    gamma: filled(gpu, [dim], "gamma", 2),
    beta: filled(gpu, [dim], "beta", 3),
    dgamma: createTensor(gpu, [dim], "dgamma"),
    dbeta: createTensor(gpu, [dim], "dbeta"),
  };
}

export const cases: BenchCase[] = shapes.flatMap(({ model, batch, tokens, dim }): BenchCase[] => {
  const rows = batch * tokens;
  const n = rows * dim;
  return [
    {
      name: `layerNormForward ${rows}×${dim} (${model})`,
      flops: 0,
      bytes: 2 * n * 4, // read x, write y
      build(gpu) {
        const t = layerNormTensors(gpu, rows, dim);
        const make = (variant: LayerNormVariant) => {
          const plan = new Plan(gpu, `layerNormForward ${variant}`);
          layerNormForward(plan, t.y, t.mean, t.rstd, t.x, t.gamma, t.beta, { rows, dim, variant });
          return plan;
        };
        return Promise.resolve({ plan: make("fast"), naive: make("naive") });
      },
    },
    {
      name: `layerNormBackward ${rows}×${dim} (${model})`,
      flops: 0,
      bytes: 3 * n * 4, // read dy and x, write dx: the floor; the kernels read dy and x twice
      build(gpu) {
        const t = layerNormTensors(gpu, rows, dim);
        const make = (variant: LayerNormVariant) => {
          const plan = new Plan(gpu, `layerNormBackward ${variant}`);
          layerNormForward(plan, t.y, t.mean, t.rstd, t.x, t.gamma, t.beta, { rows, dim });
          return plan;
        };
        // The forward fills mean/rstd once; the timed plans hold only the backward.
        const init = make("fast");
        const timed = (variant: LayerNormVariant) => {
          const plan = new Plan(gpu, `layerNormBackward ${variant}`);
          layerNormBackward(plan, t.dx, t.dgamma, t.dbeta, t.dy, t.x, t.mean, t.rstd, t.gamma, {
            rows,
            dim,
            variant,
          });
          return plan;
        };
        return init.run().then(() => ({ plan: timed("fast"), naive: timed("naive") }));
      },
    },
    {
      name: `residualDropPath forward+backward p=0.1 ${rows}×${dim} (${model})`,
      flops: 0,
      bytes: 5 * n * 4, // forward: read 2, write 1; backward (dresidual aliased): read 1, write 1
      build(gpu) {
        const res = filled(gpu, [n], "residual", 0), br = filled(gpu, [n], "branch", 1);
        const dout = filled(gpu, [n], "dout", 2), dbranch = createTensor(gpu, [n], "dbranch");
        const plan = new Plan(gpu, "residualDropPath");
        const o = { batch, perSample: tokens * dim, p: 0.1, seed: 5 };
        residualDropPath(plan, res, res, br, o);
        residualDropPathBackward(plan, dout, dbranch, dout, o);
        return Promise.resolve({ plan });
      },
    },
    {
      name: `positionalEmbedding add (in place) + backward ${rows}×${dim} (${model})`,
      flops: 0,
      bytes: 3 * n * 4, // forward: read 1, write 1; backward: read 1
      build(gpu) {
        const x = filled(gpu, [n], "x", 0), pe = filled(gpu, [tokens * dim], "pe", 1);
        const dpe = createTensor(gpu, [tokens * dim], "dpe");
        const plan = new Plan(gpu, "positionalEmbedding");
        positionalEmbeddingAdd(plan, x, x, pe, { batch, tokens, dim });
        positionalEmbeddingBackward(plan, dpe, x, { batch, tokens, dim });
        return Promise.resolve({ plan });
      },
    },
  ];
});

if (import.meta.main) {
  const { getGpu } = await import("../lib/gpu/device.ts");
  const gpu = await getGpu();
  // The machine is shared: alternate the variants for a few rounds and keep each one's best median.
  const rounds = 3;
  console.log(`${gpu.description} (${gpu.backend}), best of ${rounds} medians`);
  const only = Deno.args[0]; // optional substring filter on case names
  for (const c of cases.filter((c) => !only || c.name.includes(only))) {
    const { plan, naive } = await c.build(gpu);
    let ms = Infinity, naiveMs = Infinity;
    for (let r = 0; r < rounds; r++) {
      ms = Math.min(ms, await timePlan(gpu, plan));
      if (naive) naiveMs = Math.min(naiveMs, await timePlan(gpu, naive));
    }
    let line = `${c.name}: ${ms.toFixed(3)} ms, ${rate(c, ms)}`;
    if (naive) {
      line += `; naive ${naiveMs.toFixed(3)} ms, ${rate(c, naiveMs)} (${(naiveMs / ms).toFixed(1)}× slower)`;
    }
    console.log(line);
    plan.destroy();
    naive?.destroy();
  }
}
