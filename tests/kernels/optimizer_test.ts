import * as ref from "../reference/optimizer.ts";
import {
  adamwUpdate,
  clipScale,
  createAdamwHyper,
  createDecayMask,
  decaysLikeTimm,
  emaUpdate,
  gradNormPartialCount,
  gradNormSquared,
  NORM_MAX_PARTIALS,
  setAdamwHyper,
  setEmaDecay,
  zero,
} from "../../lib/kernels/optimizer.ts";
import { Arena, readTensor, Tensor, writeTensor } from "../../lib/gpu/tensor.ts";
import { Plan, UniformBlock } from "../../lib/gpu/plan.ts";
import type { Gpu } from "../../lib/gpu/device.ts";
import {
  assertClose,
  expectTensor,
  poisoned,
  randn,
  randu,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

const FIXTURE_DIR = new URL("../../../shared/fixtures/", import.meta.url);

/** Reads the F32 tensors of a safetensors file (8-byte LE header length, JSON header, raw little-endian data). */
async function readSafetensors(url: URL): Promise<Map<string, Float32Array>> {
  const bytes = await Deno.readFile(url);
  const headerLength = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLength)));
  const out = new Map<string, Float32Array>();
  for (
    const [name, info] of Object.entries(header) as [string, { dtype: string; data_offsets: number[] }][]
  ) {
    if (name === "__metadata__" || info.dtype !== "F32") continue;
    const raw = bytes.slice(8 + headerLength + info.data_offsets[0], 8 + headerLength + info.data_offsets[1]);
    out.set(name, new Float32Array(raw.buffer));
  }
  return out;
}

const HYPER = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.05 };
// GPU AdamW against the f32 emulation of PyTorch's order (which fuses two multiply-adds): llvmpipe lowers WGSL fma
// to a multiply and an add, so allow one ulp of the terms — m = β1·m + (1−β1)·g cancels, hence its atol
// (terms ≈ 5e-3 here).
const ADAMW_F32_TOL = {
  params: { atol: 1e-9, rtol: 3e-7 },
  m: { atol: 2e-9, rtol: 3e-7 },
  v: { atol: 1e-13, rtol: 3e-7 },
};

Deno.test("reference AdamW follows the closed form over 3 steps of a constant gradient", () => {
  // With g constant: m_t = (1−β1^t)·g, v_t = (1−β2^t)·g², so each step is p ← p·(1−lr·wd) − lr·g/(|g|+eps).
  const g = Float64Array.from([0.5, -2, 1e-3, 0]);
  const start = Float64Array.from([1, -0.25, 3, 0.75]);
  const state = { params: start.slice(), m: new Float64Array(4), v: new Float64Array(4) };
  const expected = start.slice();
  for (let step = 1; step <= 3; step++) {
    ref.adamwStep(state, g, { ...HYPER, step });
    for (let i = 0; i < 4; i++) {
      expected[i] = expected[i] * (1 - HYPER.lr * HYPER.weightDecay) -
        HYPER.lr * g[i] / (Math.abs(g[i]) + HYPER.eps);
    }
    assertClose(`params after step ${step}`, state.params, expected, { atol: 1e-15, rtol: 1e-12 });
    assertClose(`m after step ${step}`, state.m, g.map((x) => (1 - HYPER.beta1 ** step) * x), {
      atol: 1e-17,
      rtol: 1e-12,
    });
    assertClose(`v after step ${step}`, state.v, g.map((x) => (1 - HYPER.beta2 ** step) * x * x), {
      atol: 1e-17,
      rtol: 1e-12,
    });
  }
});

Deno.test("reference fmaF32 rounds a·b + c once, unlike a rounded product plus c", () => {
  const a = 1 + 2 ** -12;
  const fused = ref.fmaF32(a, a, -1);
  const unfused = Math.fround(Math.fround(a * a) - 1);
  assertClose("fma", [fused, unfused], [2 ** -11 + 2 ** -24, 2 ** -11], { atol: 0, rtol: 0 });
  // a·a + 2^-60 rounds in float64 to 1 + 2^-11 + 2^-24, halfway between two float32s: the error term decides.
  assertClose("ties broken by the error term", [ref.fmaF32(a, a, 2 ** -60), ref.fmaF32(a, a, -(2 ** -60))], [
    1 + 2 ** -11 + 2 ** -23,
    1 + 2 ** -11,
  ], { atol: 0, rtol: 0 });
});

Deno.test("reference AdamW in f32 order stays within f32 rounding of the float64 formula over 3 steps", () => {
  const n = 257;
  const a = { params: randn(n, 1), m: new Float64Array(n), v: new Float64Array(n) };
  const b = { params: a.params.slice(), m: new Float64Array(n), v: new Float64Array(n) };
  for (let step = 1; step <= 3; step++) {
    const g = randn(n, 10 + step, 0.1);
    ref.adamwStep(a, g, { ...HYPER, step }, { gradScale: 0.75 });
    ref.adamwStepF32(b, g, { ...HYPER, step }, { gradScale: 0.75 });
  }
  assertClose("params", b.params, a.params, { atol: 1e-9, rtol: 1e-6 });
  assertClose("m", b.m, a.m, { atol: 1e-8, rtol: 1e-5 });
});

interface AdamwCase {
  size: number;
  offset: number;
  length: number;
  decay: boolean;
  scale?: number;
}

const adamwCases: AdamwCase[] = [
  { size: 1, offset: 0, length: 1, decay: true },
  { size: 20, offset: 3, length: 7, decay: true }, // unaligned start: scalar kernel
  { size: 1100, offset: 64, length: 1023, decay: false }, // vec4 body + ragged tail
  { size: 70_001, offset: 0, length: 70_001, decay: true, scale: 0.3 },
];

for (const c of adamwCases) {
  Deno.test(
    `adamwUpdate matches PyTorch's f32 order over 3 steps (size ${c.size}, range ${c.offset}+${c.length}, ` +
      `decay ${c.decay}${c.scale ? `, grad scale ${c.scale}` : ""}) and leaves the rest untouched`,
    async () => {
      const gpu = await testGpu();
      const n = c.size;
      const state = { params: randn(n, n + 1), m: new Float64Array(n), v: new Float64Array(n) };
      const before = state.params.slice();
      const params = upload(gpu, state.params, [n], "params");
      const m = upload(gpu, state.m, [n], "m"), v = upload(gpu, state.v, [n], "v");
      const grads = poisoned(gpu, [n], "grads");
      const scale = c.scale === undefined ? undefined : upload(gpu, Float64Array.of(c.scale), [1], "scale");
      const hyper = createAdamwHyper(gpu);
      for (let step = 1; step <= 3; step++) {
        const g = randn(n, n * 10 + step, 0.05);
        writeTensor(gpu, grads, Float32Array.from(g));
        setAdamwHyper(hyper, HYPER.lr, HYPER.beta1, HYPER.beta2, HYPER.eps, HYPER.weightDecay, step);
        await runPlan(gpu, (plan) =>
          adamwUpdate(plan, params, grads, m, v, hyper, {
            offset: c.offset,
            length: c.length,
            decay: c.decay,
            gradScale: scale,
          }));
        const range = {
          params: state.params.subarray(c.offset, c.offset + c.length),
          m: state.m.subarray(c.offset, c.offset + c.length),
          v: state.v.subarray(c.offset, c.offset + c.length),
        };
        ref.adamwStepF32(range, g.subarray(c.offset, c.offset + c.length), { ...HYPER, step }, {
          decay: c.decay,
          gradScale: c.scale ?? 1,
        });
      }
      const got = await readTensor(gpu, params);
      await expectTensor(gpu, "params", params, state.params, ADAMW_F32_TOL.params);
      await expectTensor(gpu, "m", m, state.m, ADAMW_F32_TOL.m);
      await expectTensor(gpu, "v", v, state.v, ADAMW_F32_TOL.v);
      const outside = [...before.keys()].filter((i) => i < c.offset || i >= c.offset + c.length);
      assertClose("params outside the range", outside.map((i) => got[i]), outside.map((i) => before[i]), {
        atol: 0,
        rtol: 0,
      });
      hyper.buffer.destroy();
    },
  );
}

Deno.test("adamwUpdate reproduces PyTorch's two AdamW steps on the cct_2_3x2_32 fixture within 1e-7", async () => {
  const gpu = await testGpu();
  const weights = await readSafetensors(new URL("cct_2_3x2_32.train.weights.safetensors", FIXTURE_DIR));
  const train = await readSafetensors(new URL("cct_2_3x2_32.train.safetensors", FIXTURE_DIR));
  const names = [...train.keys()].filter((k) => k.startsWith("adamw1.")).map((k) =>
    k.slice("adamw1.".length)
  );
  const arenas = ["params", "grads", "m", "v"].map((label) => new Arena(label));
  for (const name of names) for (const a of arenas) a.reserve(name, [weights.get(name)!.length]);
  const [params, grads, m, v] = arenas.map((a) => a.allocate(gpu));
  const hyper = createAdamwHyper(gpu);
  await runPlan(gpu, (plan) => {
    zero(plan, params.whole());
    zero(plan, grads.whole());
    zero(plan, m.whole());
    zero(plan, v.whole());
  });
  for (const name of names) writeTensor(gpu, params.get(name), weights.get(name)!);
  for (const [step, prefix] of [[1, "grad."], [2, "grad2."]] as const) {
    for (const name of names) writeTensor(gpu, grads.get(name), train.get(prefix + name)!);
    setAdamwHyper(hyper, HYPER.lr, HYPER.beta1, HYPER.beta2, HYPER.eps, HYPER.weightDecay, step);
    const whole = params.whole();
    await runPlan(gpu, (plan) =>
      adamwUpdate(plan, whole, grads.whole(), m.whole(), v.whole(), hyper, {
        offset: 0,
        length: whole.size,
        decay: true,
      }));
    for (const name of names) {
      await expectTensor(gpu, `adamw${step}.${name}`, params.get(name), train.get(`adamw${step}.${name}`)!, {
        atol: 1e-7, // asked for 1e-5; bit-identical on llvmpipe, 1e-7 leaves room for drivers without a true fma
        rtol: 0,
      });
    }
  }
  for (const a of arenas) a.destroy();
  hyper.buffer.destroy();
});

for (const vec4 of [true, false]) {
  Deno.test(
    `adamwUpdate with a decay mask updates a whole arena in one call, decaying only timm's tensors (${
      vec4 ? "vec4" : "scalar"
    } kernel)`,
    async () => {
      const gpu = await testGpu();
      const shapes: [string, number[]][] = [
        ["blocks.0.qkv.weight", [3, 5]],
        ["blocks.0.proj.bias", [7]],
        ["positional_emb", [1, 70, 3]],
        ["norm.weight", [130]],
        ["fc.weight", [10, 3]],
      ];
      const arenas = ["params", "grads", "m", "v"].map((label) => new Arena(label));
      for (const [name, shape] of shapes) for (const a of arenas) a.reserve(name, shape);
      const [params, grads, m, v] = arenas.map((a) => a.allocate(gpu));
      const total = params.whole().size;
      await runPlan(gpu, (plan) => arenas.forEach((a) => zero(plan, a.whole())));
      const states = shapes.map(([name, shape], k) => {
        const n = shape.reduce((x, y) => x * y, 1);
        const state = { params: randn(n, 40 + k), m: new Float64Array(n), v: new Float64Array(n) };
        writeTensor(gpu, params.get(name), Float32Array.from(state.params));
        return state;
      });
      const mask = createDecayMask(gpu, params, decaysLikeTimm);
      const hyper = createAdamwHyper(gpu);
      for (let step = 1; step <= 2; step++) {
        shapes.forEach(([name], k) => {
          const g = randn(states[k].params.length, 100 * step + k, 0.05);
          writeTensor(gpu, grads.get(name), Float32Array.from(g));
          ref.adamwStepF32(states[k], g, { ...HYPER, step }, { decay: decaysLikeTimm(name, shapes[k][1]) });
        });
        setAdamwHyper(hyper, HYPER.lr, HYPER.beta1, HYPER.beta2, HYPER.eps, HYPER.weightDecay, step);
        await runPlan(
          gpu,
          (plan) =>
            adamwUpdate(plan, params.whole(), grads.whole(), m.whole(), v.whole(), hyper, {
              offset: 0,
              length: total,
              decay: mask,
              vec4,
            }),
        );
      }
      for (const [k, [name]] of shapes.entries()) {
        await expectTensor(gpu, name, params.get(name), states[k].params, ADAMW_F32_TOL.params);
      }
      for (const a of arenas) a.destroy();
      hyper.buffer.destroy();
    },
  );
}

Deno.test("zero clears a whole arena and ragged tensors up to 8 M floats, and nothing past a view", async () => {
  const gpu = await testGpu();
  for (const n of [1, 3, 5, 1023, 8_000_003]) {
    const t = upload(gpu, new Float64Array(n + 1).fill(NaN).fill(7, n), [n + 1], "filled");
    const view = new Tensor(t.buffer, [n], 0, "view");
    await runPlan(gpu, (plan) => zero(plan, view));
    const got = await readTensor(gpu, t);
    const firstNonZero = got.subarray(0, n).findIndex((x) => x !== 0);
    if (firstNonZero >= 0) throw new Error(`zero n=${n}: element ${firstNonZero} is ${got[firstNonZero]}`);
    if (got[n] !== 7) throw new Error(`zero n=${n}: wrote past the view (${got[n]})`);
    t.buffer.destroy();
  }
  const arena = new Arena("grads");
  arena.reserve("a", [3, 5]);
  arena.reserve("b", [1]);
  arena.allocate(gpu);
  writeTensor(gpu, arena.whole(), new Float32Array(arena.whole().size).fill(NaN));
  await runPlan(gpu, (plan) => zero(plan, arena.whole()));
  await expectTensor(gpu, "arena", arena.whole(), new Float64Array(arena.whole().size), { atol: 0, rtol: 0 });
  arena.destroy();
});

for (const n of [1, 3, 5, 1023, 70_001, 2_000_003, 8_388_613]) {
  Deno.test(`gradNormSquared matches Σg² and is bit-for-bit repeatable (n=${n})`, async () => {
    const gpu = await testGpu();
    const g = randn(n, n, 0.01);
    const grads = upload(gpu, g, [n], "grads");
    const partials = poisoned(gpu, [gradNormPartialCount(n)], "partials");
    const out1 = poisoned(gpu, [1], "norm1"), out2 = poisoned(gpu, [1], "norm2");
    await runPlan(gpu, (plan) => {
      gradNormSquared(plan, out1, grads, partials);
      gradNormSquared(plan, out2, grads, partials);
    });
    const [a, b] = [(await readTensor(gpu, out1))[0], (await readTensor(gpu, out2))[0]];
    assertClose("norm²", [a], [ref.gradNormSquared(g)], { atol: 0, rtol: 1e-5 });
    if (a !== b) throw new Error(`two runs differ: ${a} vs ${b}`);
    grads.buffer.destroy();
  });
}

Deno.test("gradNormSquared rejects a partials tensor smaller than it needs", async () => {
  const gpu = await testGpu();
  const n = 1_000_000;
  if (gradNormPartialCount(n) > NORM_MAX_PARTIALS) throw new Error("partial count above the maximum");
  let error: unknown;
  try {
    await runPlan(
      gpu,
      (plan) =>
        gradNormSquared(
          plan,
          poisoned(gpu, [1]),
          poisoned(gpu, [n], "grads"),
          poisoned(gpu, [64], "partials"),
        ),
    );
  } catch (e) {
    error = e;
  }
  if (!(error instanceof TypeError) || !error.message.includes("partials")) {
    throw new Error(`expected a TypeError naming partials, got ${error}`);
  }
});

for (const n of [1, 3, 6, 1029, 70_001]) {
  Deno.test(`emaUpdate follows the float64 moving average over 3 steps, equal elements stay exact (n=${n})`, async () => {
    const gpu = await testGpu();
    // Odd n: a view 256 bytes into its buffer, a guard on each side. vec4s, then the scalar kernel for the tail.
    const offset = n % 2 ? 64 : 0;
    const e0 = randn(n, n, 1), steps = [randn(n, n + 1, 1), randn(n, n + 2, 1), randn(n, n + 3, 1)];
    // Every seventh element is equal in both, as a frozen tensor is: it must not move by one bit.
    for (const p of steps) for (let i = 3; i < n; i += 7) p[i] = Math.fround(e0[i]);
    const guard = 12345;
    const host = new Float64Array(offset + n + 1).fill(guard);
    host.set(e0, offset);
    const whole = upload(gpu, host, [host.length], "ema buffer");
    const ema = new Tensor(whole.buffer, [n], offset * 4, "ema");
    const params = steps.map((p, i) => upload(gpu, p, [n], `params ${i}`));
    const expected = Float64Array.from(e0, Math.fround);
    const decays = [0.9, 0.999, 0];
    if (n % 2) {
      // A fixed decay per recorded plan.
      for (const [i, decay] of decays.entries()) {
        await runPlan(gpu, (plan) => emaUpdate(plan, ema, params[i], { decay }));
      }
    } else {
      // One recorded plan, its decay rewritten before each submission (the trainer's warm-up).
      const block = new UniformBlock(gpu, 1, "ema rate");
      const plan = new Plan(gpu, "ema steps");
      const current = upload(gpu, new Float64Array(n), [n], "current params");
      emaUpdate(plan, ema, current, { decay: block });
      for (const [i, decay] of decays.entries()) {
        await copyInto(gpu, params[i], current);
        setEmaDecay(block, decay);
        await plan.run();
      }
      plan.destroy();
      current.buffer.destroy();
      block.buffer.destroy();
    }
    for (const [i, decay] of decays.entries()) ref.emaStep(expected, steps[i], decay);
    const got = await readTensor(gpu, whole);
    assertClose("ema", got.subarray(offset, offset + n), expected, { atol: 1e-6, rtol: 1e-6 });
    for (let i = 3; i < n; i += 7) {
      if (got[offset + i] !== Math.fround(e0[i])) throw new Error(`element ${i} drifted: ${got[offset + i]}`);
    }
    if (got[offset + n] !== guard || (offset > 0 && got[offset - 1] !== guard)) {
      throw new Error("emaUpdate wrote outside its view");
    }
    whole.buffer.destroy();
    for (const p of params) p.buffer.destroy();
  });
}

/** Copies one tensor into another of the same size, on the GPU. */
async function copyInto(gpu: Gpu, from: Tensor, to: Tensor): Promise<void> {
  const encoder = gpu.device.createCommandEncoder();
  encoder.copyBufferToBuffer(from.buffer, from.offset, to.buffer, to.offset, from.byteLength);
  gpu.device.queue.submit([encoder.finish()]);
  await gpu.device.queue.onSubmittedWorkDone();
}

Deno.test("emaUpdate refuses tensors of different sizes and a decay outside [0, 1]", async () => {
  const gpu = await testGpu();
  const a = poisoned(gpu, [8], "a"), b = poisoned(gpu, [9], "b");
  for (
    const [x, y, decay, kind, needle] of [[a, b, 0.5, TypeError, "9 elements"], [
      a,
      a,
      1.5,
      RangeError,
      "1.5",
    ]] as const
  ) {
    let error: unknown;
    try {
      await runPlan(gpu, (plan) => emaUpdate(plan, x, y, { decay }));
    } catch (e) {
      error = e;
    }
    if (!(error instanceof kind) || !error.message.includes(needle)) {
      throw new Error(`expected a ${kind.name} naming ${needle}, got ${error}`);
    }
  }
});

Deno.test("clipScale computes clip_grad_norm_'s factor and adamwUpdate applies it to the gradients", async () => {
  const gpu = await testGpu();
  const n = 203;
  const g = randu(n, 5, -2, 2);
  const normSquared = ref.gradNormSquared(g);
  for (const maxNorm of [1, 1e6]) {
    const expectedScale = ref.clipScale(normSquared, maxNorm);
    const state = { params: randn(n, 6), m: randn(n, 7, 0.01), v: randu(n, 8, 0, 1e-4) };
    const params = upload(gpu, state.params, [n], "params");
    const m = upload(gpu, state.m, [n], "m"), v = upload(gpu, state.v, [n], "v");
    const grads = upload(gpu, g, [n], "grads");
    const norm = poisoned(gpu, [1], "norm"), scale = poisoned(gpu, [1], "scale");
    const hyper = createAdamwHyper(gpu);
    setAdamwHyper(hyper, HYPER.lr, HYPER.beta1, HYPER.beta2, HYPER.eps, HYPER.weightDecay, 4);
    await runPlan(gpu, (plan) => {
      gradNormSquared(plan, norm, grads, poisoned(gpu, [NORM_MAX_PARTIALS], "partials"));
      clipScale(plan, scale, norm, { maxNorm });
      adamwUpdate(plan, params, grads, m, v, hyper, { offset: 0, length: n, decay: true, gradScale: scale });
    });
    const gotScale = (await readTensor(gpu, scale))[0];
    assertClose(`scale (maxNorm ${maxNorm})`, [gotScale], [expectedScale], { atol: 0, rtol: 1e-6 });
    if (maxNorm === 1e6 && gotScale !== 1) throw new Error(`scale ${gotScale} should be exactly 1`);
    ref.adamwStepF32(state, g, { ...HYPER, step: 4 }, { gradScale: gotScale });
    await expectTensor(gpu, "params", params, state.params, ADAMW_F32_TOL.params);
    await expectTensor(gpu, "v", v, state.v, ADAMW_F32_TOL.v);
    hyper.buffer.destroy();
  }
});
