import { deepStrictEqual as assertEquals } from "node:assert";
import * as ref from "../reference/matmul.ts";
import {
  chooseMatmulVariant,
  columnSum,
  linearBackward,
  linearForward,
  matmul,
  MATMUL_K_SPLIT,
  matmulCandidates,
  matmulKSlices,
  type MatmulOptions,
  matmulShapeClass,
  type MatmulVariant,
  tuneMatmul,
} from "../../lib/kernels/matmul.ts";
import { clearTuneTable, lookupChoice, mergeTuneTableJson, tuneTableToJson } from "../../lib/gpu/autotune.ts";
import type { Gpu } from "../../lib/gpu/device.ts";
import type { Tensor } from "../../lib/gpu/tensor.ts";
import { readTensor } from "../../lib/gpu/tensor.ts";
import {
  assertClose,
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  runPlan,
  testGpu,
  type Tolerance,
  upload,
} from "../support/check.ts";

/** f32 products of O(1) data over k ≤ a few hundred terms: errors grow like √k·ε·Σ|a·b|. */
const TOL: Tolerance = { atol: 2e-5, rtol: 2e-5 };

/** Every variant the device can run, naive included: each must be correct, whichever the tuner picks. */
function variantsOf(gpu: Gpu): MatmulVariant[] {
  return ["naive", ...matmulCandidates(gpu)];
}

const roundUp4 = (x: number) => Math.ceil(x / 4) * 4;

interface Case {
  m: number;
  n: number;
  k: number;
  /** Leading dimensions padded to multiples of 4 plus slack (vec4 loads with k and edge tails). */
  padded?: boolean;
  /** Leading dimensions one more than the rows need (odd here): every vec4 path must step aside. */
  oddLd?: boolean;
}

/** Awkward shapes: 1s, primes, multiples of 4 but not of the tiles, and padded rows with a k tail. */
const CASES: Case[] = [
  { m: 1, n: 1, k: 1 },
  { m: 1, n: 7, k: 5 },
  { m: 13, n: 1, k: 3 },
  { m: 37, n: 29, k: 13 },
  { m: 36, n: 20, k: 44 },
  { m: 21, n: 19, k: 37, padded: true },
  // Several 32×64 tiles of subgroup32x8 in both directions, with partial tiles and a k tail.
  { m: 70, n: 133, k: 22, padded: true },
  // n = 4·j with padded rows: the vec4-store epilogue, with partial tiles in both directions.
  { m: 45, n: 76, k: 18, padded: true },
  // n = 4·j but odd leading dimensions: no vec4 loads or stores may be used.
  { m: 23, n: 16, k: 9, oddLd: true },
];

function layout(c: Case, transA: boolean, transB: boolean) {
  const [aRows, aCols] = transA ? [c.k, c.m] : [c.m, c.k];
  const [bRows, bCols] = transB ? [c.n, c.k] : [c.k, c.n];
  const pad = (x: number) => c.padded ? roundUp4(x) + 4 : c.oddLd ? x + 1 : x;
  return {
    lda: pad(aCols),
    ldb: pad(bCols),
    ldc: pad(c.n),
    sizeA: aRows * pad(aCols),
    sizeB: bRows * pad(bCols),
    sizeC: c.m * pad(c.n),
  };
}

for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
  Deno.test(
    `every matmul variant matches the reference on awkward shapes (transA ${transA}, transB ${transB})`,
    async () => {
      const gpu = await testGpu();
      const jobs: { name: string; out: Tensor; expected: Float64Array }[] = [];
      await runPlan(gpu, (plan) => {
        for (const variant of variantsOf(gpu)) {
          CASES.forEach((c, i) => {
            const l = layout(c, transA, transB);
            const seed = 100 * i + (transA ? 10 : 0) + (transB ? 20 : 0);
            const a = randn(l.sizeA, seed + 1), b = randn(l.sizeB, seed + 2);
            const opts = { m: c.m, n: c.n, k: c.k, transA, transB, lda: l.lda, ldb: l.ldb, ldc: l.ldc };
            const out = poisoned(gpu, [l.sizeC]);
            matmul(plan, out, upload(gpu, a, [l.sizeA]), upload(gpu, b, [l.sizeB]), { ...opts, variant });
            // Padding columns of C are never written: they stay NaN in both.
            const expected = ref.matmul(new Float64Array(l.sizeC).fill(NaN), a, b, opts).c;
            jobs.push({
              name: `${variant} ${c.m}×${c.n}×${c.k}${c.padded ? " padded" : c.oddLd ? " odd ld" : ""}`,
              out,
              expected,
            });
          });
        }
      });
      for (const j of jobs) {
        const got = await readTensor(gpu, j.out);
        const keep = [...j.expected.keys()].filter((i) => !Number.isNaN(j.expected[i]));
        const nanLeft = [...got.keys()].filter((i) => Number.isNaN(j.expected[i]) && !Number.isNaN(got[i]));
        if (nanLeft.length) throw new Error(`${j.name}: wrote ${nanLeft.length} elements outside C's rows`);
        assertClose(j.name, keep.map((i) => got[i]), keep.map((i) => j.expected[i]), TOL);
      }
    },
  );
}

Deno.test("matmul split along k into accumulating slices matches the reference for every transpose", async () => {
  const gpu = await testGpu();
  const m = 23, n = 18, k = 45;
  const jobs: { name: string; out: Tensor; expected: Float64Array }[] = [];
  await runPlan(gpu, (plan) => {
    for (const [transA, transB] of [[false, false], [true, false], [false, true], [true, true]]) {
      const a = randn(m * k, 31), b = randn(k * n, 32), base = randn(m * n, 33);
      const opts = { m, n, k, transA, transB, alpha: 0.5 };
      for (const accumulate of [false, true]) {
        const out = accumulate ? upload(gpu, base, [m, n]) : poisoned(gpu, [m, n]);
        matmul(plan, out, upload(gpu, a, [m * k]), upload(gpu, b, [k * n]), {
          ...opts,
          accumulate,
          kSplit: 8,
        });
        const expected = ref.matmul(base, a, b, { ...opts, accumulate }).c;
        jobs.push({ name: `transA ${transA} transB ${transB} accumulate ${accumulate}`, out, expected });
      }
    }
  });
  for (const j of jobs) await expectTensor(gpu, j.name, j.out, j.expected, TOL);
});

Deno.test("a weight gradient over a long K runs as equal k slices and matches the reference", async () => {
  const gpu = await testGpu();
  // K = 4100 ≥ 2·MATMUL_K_SPLIT takes the default split: 3 slices of 1368, 1368 and 1364 (no short tail slice).
  const m = 13, n = 20, k = 4100;
  const dy = randn(k * m, 41), x = randn(k * n, 42), base = randn(m * n, 43);
  const out = upload(gpu, base, [m, n]);
  const { Plan } = await import("../../lib/gpu/plan.ts");
  const plan = new Plan(gpu, "k slices");
  matmul(plan, out, upload(gpu, dy, [k, m]), upload(gpu, x, [k, n]), {
    m,
    n,
    k,
    transA: true,
    accumulate: true,
  });
  const slices = plan.kernelNames.filter((name) => name.startsWith("matmul")).length;
  await plan.run();
  plan.destroy();
  if (slices !== 3) throw new Error(`expected 3 k slices, got ${slices}`);
  assertEquals(matmulKSlices(k, MATMUL_K_SPLIT), [1368, 1368, 1364]);
  assertEquals(matmulKSlices(6272, MATMUL_K_SPLIT), [1568, 1568, 1568, 1568]);
  assertEquals(matmulKSlices(4097, 2048), [1368, 1368, 1361]);
  const expected = ref.matmul(base, dy, x, { m, n, k, transA: true, accumulate: true }).c;
  // Sums of 4100 unit-normal products (|ref| ~ 64): rounding grows like √k·ε·|partial sums|.
  await expectTensor(gpu, "dW += dyᵀ·x", out, expected, { atol: 5e-4, rtol: 1e-4 });
});

Deno.test("reference linearBackward matches finite differences", () => {
  const rows = 3, inF = 4, outF = 5;
  const x = randn(rows * inF, 1), w = randn(outF * inF, 2), b = randn(outF, 3), probe = randn(rows * outF, 4);
  const g = ref.linearBackward(probe, x, w, rows, inF, outF);
  checkGradients(
    "linear",
    ([x, w, b]) => dot(ref.linearForward(x, w, b, rows, inF, outF).y, probe),
    [x, w, b],
    [g.dx, g.dw, g.db],
  );
});

Deno.test("reference matmul with transB equals the reference linear layer", () => {
  const rows = 4, inF = 3, outF = 5;
  const x = randn(rows * inF, 1), w = randn(outF * inF, 2), b = randn(outF, 3);
  const got = ref.matmul(new Float64Array(rows * outF), x, w, {
    m: rows,
    n: outF,
    k: inF,
    transB: true,
    bias: b,
  });
  assertClose("x·Wᵀ + b", got.c, ref.linearForward(x, w, b, rows, inF, outF).y, { atol: 1e-14, rtol: 1e-14 });
});

for (const variant of ["blocked8x8", "blocked4x4", "subgroup16x8", "subgroup32x8", "naive"] as const) {
  Deno.test(`${variant} epilogue applies alpha, bias, GELU, relu and a residual, writes the pre-activation and accumulates`, async (t) => {
    const gpu = await testGpu();
    if (!variantsOf(gpu).includes(variant)) {
      // GL has no subgroups: the variant is unavailable there by design, and the others cover this backend.
      await t.step({ name: `${variant} is unavailable on this device`, ignore: true, fn: () => {} });
      return;
    }
    // n = 22: scalar stores; n = 44: vec4 stores (not for naive), two column tiles of subgroup16x8.
    for (const n of [22, 44]) await checkEpilogue(gpu, variant, n);
  });
}

async function checkEpilogue(gpu: Gpu, variant: MatmulVariant, n: number): Promise<void> {
  const m = 19, k = 9;
  const a = randn(m * k, 1), b = randn(k * n, 2), bias = randn(n, 3), base = randn(m * n, 4);
  const g = randn(m * n, 5, 2);
  const at = upload(gpu, a, [m, k]), bt = upload(gpu, b, [k, n]), biasT = upload(gpu, bias, [n]);
  const gelu = poisoned(gpu, [m, n]), pre = poisoned(gpu, [m, n]), relu = poisoned(gpu, [m, n]);
  const acc = upload(gpu, base, [m, n]), dgelu = poisoned(gpu, [m, n]);
  // A residual (added after the activation).
  const res = poisoned(gpu, [m, n]);
  const o: MatmulOptions = { m, n, k, alpha: 0.37, variant };
  await runPlan(gpu, (plan) => {
    matmul(plan, gelu, at, bt, { ...o, bias: biasT, activation: "gelu", preActivation: pre });
    matmul(plan, relu, at, bt, { ...o, bias: biasT, activation: "relu" });
    matmul(plan, acc, at, bt, { ...o, accumulate: true });
    matmul(plan, dgelu, at, bt, { ...o, geluGradOf: upload(gpu, g, [m, n]) });
    matmul(plan, res, at, bt, { ...o, bias: biasT, activation: "gelu", residual: upload(gpu, base, [m, n]) });
  });
  const zero = new Float64Array(m * n);
  const r0 = { m, n, k, alpha: 0.37 };
  const r = ref.matmul(zero, a, b, { ...r0, bias, activation: "gelu" });
  await expectTensor(gpu, `gelu (n ${n})`, gelu, r.c, TOL);
  await expectTensor(gpu, `preActivation (n ${n})`, pre, r.pre, TOL);
  await expectTensor(
    gpu,
    `relu (n ${n})`,
    relu,
    ref.matmul(zero, a, b, { ...r0, bias, activation: "relu" }).c,
    TOL,
  );
  await expectTensor(
    gpu,
    `accumulate (n ${n})`,
    acc,
    ref.matmul(base, a, b, { ...r0, accumulate: true }).c,
    TOL,
  );
  await expectTensor(
    gpu,
    `geluGradOf (n ${n})`,
    dgelu,
    ref.matmul(zero, a, b, { ...r0, geluGradOf: g }).c,
    TOL,
  );
  const plusBase = (x: Float64Array) => x.map((v, i) => v + base[i]);
  await expectTensor(gpu, `residual (n ${n})`, res, plusBase(r.c), TOL);
}

/**
 * Attention through strided batching on one qkv tensor [B, T, 3d]: scores[b,h] = α·q·kᵀ, then
 * ctx[b, :, h·hd…] = P[b,h]·v. Head offsets are element offsets, not 256-byte aligned.
 */
for (const hd of [4, 3]) {
  Deno.test(`batched matmul computes attention scores and context from column blocks of qkv (head dim ${hd})`, async () => {
    const gpu = await testGpu();
    const B = 2, T = 7, H = 3, d = H * hd;
    const qkv = randn(B * T * 3 * d, 11);
    const probs = randn(B * H * T * T, 12);
    const qkvT = upload(gpu, qkv, [B, T, 3 * d]), probsT = upload(gpu, probs, [B, H, T, T]);
    const alpha = 1 / Math.sqrt(hd);
    const scoresOpts = {
      m: T,
      n: T,
      k: hd,
      transB: true,
      alpha,
      lda: 3 * d,
      ldb: 3 * d,
      offA: 0,
      offB: d,
      batch: {
        dims: [B, H],
        strideA: [T * 3 * d, hd],
        strideB: [T * 3 * d, hd],
        strideC: [H * T * T, T * T],
      },
    };
    const ctxOpts = {
      m: T,
      n: hd,
      k: T,
      ldb: 3 * d,
      ldc: d,
      offB: 2 * d,
      batch: { dims: [B, H], strideA: [H * T * T, T * T], strideB: [T * 3 * d, hd], strideC: [T * d, hd] },
    };
    // dq = dS·k (k rows of qkv), the backward's use of a transposed-free batched product with offsets.
    const dkOpts = {
      m: T,
      n: hd,
      k: T,
      transA: true,
      ldb: 3 * d,
      ldc: d,
      offB: 0,
      batch: { dims: [B, H], strideA: [H * T * T, T * T], strideB: [T * 3 * d, hd], strideC: [T * d, hd] },
    };
    // Batching is shared code in every variant (checked on awkward shapes above); take the likely picks.
    const picks = new Set<MatmulVariant>([chooseMatmulVariant(gpu, scoresOpts), "blocked4x4"]);
    for (const variant of picks) {
      const scores = poisoned(gpu, [B, H, T, T]),
        ctx = poisoned(gpu, [B, T, d]),
        dk = poisoned(gpu, [B, T, d]);
      await runPlan(gpu, (plan) => {
        matmul(plan, scores, qkvT, qkvT, { ...scoresOpts, variant });
        matmul(plan, ctx, probsT, qkvT, { ...ctxOpts, variant });
        matmul(plan, dk, probsT, qkvT, { ...dkOpts, variant });
      });
      await expectTensor(
        gpu,
        `${variant} scores`,
        scores,
        ref.matmul(new Float64Array(B * H * T * T), qkv, qkv, scoresOpts).c,
        TOL,
      );
      await expectTensor(
        gpu,
        `${variant} context`,
        ctx,
        ref.matmul(new Float64Array(B * T * d), probs, qkv, ctxOpts).c,
        TOL,
      );
      await expectTensor(
        gpu,
        `${variant} dk`,
        dk,
        ref.matmul(new Float64Array(B * T * d), probs, qkv, dkOpts).c,
        TOL,
      );
    }
  });
}

for (const rows of [1, 67]) {
  Deno.test(`linearForward and linearBackward match the reference with GELU fusion (rows=${rows})`, async () => {
    const gpu = await testGpu();
    const inF = 20, hidden = 13, outF = 6;
    // Two layers: h = gelu(x·W1ᵀ + b1), y = h·W2ᵀ + b2; backward of layer 2 yields layer 1's pre-activation grad.
    const x = randn(rows * inF, 1), w1 = randn(hidden * inF, 2, 0.3), b1 = randn(hidden, 3);
    const w2 = randn(outF * hidden, 4, 0.3), b2 = randn(outF, 5), dy = randn(rows * outF, 6);
    const dw2Base = randn(outF * hidden, 7), db2Base = randn(outF, 8), dxBase = randn(rows * inF, 9);
    const xT = upload(gpu, x, [rows, inF]),
      w1T = upload(gpu, w1, [hidden, inF]),
      b1T = upload(gpu, b1, [hidden]);
    const w2T = upload(gpu, w2, [outF, hidden]), b2T = upload(gpu, b2, [outF]);
    const h = poisoned(gpu, [rows, hidden]),
      pre = poisoned(gpu, [rows, hidden]),
      y = poisoned(gpu, [rows, outF]);
    const dyT = upload(gpu, dy, [rows, outF]);
    const dpre = poisoned(gpu, [rows, hidden]);
    const dw2 = upload(gpu, dw2Base, [outF, hidden]), db2 = upload(gpu, db2Base, [outF]);
    const dw1 = upload(gpu, new Float64Array(hidden * inF), [hidden, inF]);
    const dx = upload(gpu, dxBase, [rows, inF]);
    await runPlan(gpu, (plan) => {
      linearForward(plan, h, xT, w1T, b1T, { activation: "gelu", preActivation: pre });
      linearForward(plan, y, h, w2T, b2T);
      linearBackward(plan, dpre, dw2, db2, dyT, h, w2T, { geluGradOf: pre });
      linearBackward(plan, dx, dw1, undefined, dpre, xT, w1T, { accumulateDx: true });
    });
    const l1 = ref.linearForward(x, w1, b1, rows, inF, hidden, "gelu");
    const l2 = ref.linearForward(l1.y, w2, b2, rows, hidden, outF);
    const g2 = ref.linearBackward(dy, l1.y, w2, rows, hidden, outF);
    const dpreRef =
      ref.matmul(new Float64Array(rows * hidden), dy, w2, { m: rows, n: hidden, k: outF, geluGradOf: l1.pre })
        .c;
    const g1 = ref.linearBackward(dpreRef, x, w1, rows, inF, hidden);
    await expectTensor(gpu, "h", h, l1.y, TOL);
    await expectTensor(gpu, "pre", pre, l1.pre, TOL);
    await expectTensor(gpu, "y", y, l2.y, TOL);
    await expectTensor(gpu, "dpre", dpre, dpreRef, TOL);
    await expectTensor(gpu, "dW2 (accumulated)", dw2, dw2Base.map((v, i) => v + g2.dw[i]), TOL);
    await expectTensor(gpu, "db2 (accumulated)", db2, db2Base.map((v, i) => v + g2.db[i]), TOL);
    await expectTensor(gpu, "dW1", dw1, g1.dw, TOL);
    await expectTensor(gpu, "dx (accumulated)", dx, dxBase.map((v, i) => v + g1.dx[i]), TOL);
  });
}

for (const [rows, cols] of [[1, 5], [5000, 13], [20_000, 24]]) {
  Deno.test(`columnSum matches the reference and accumulates (${rows}×${cols})`, async () => {
    const gpu = await testGpu();
    const x = randn(rows * cols, rows + cols), base = randn(cols, 3);
    const out = poisoned(gpu, [cols]), acc = upload(gpu, base, [cols]);
    const xT = upload(gpu, x, [rows, cols]);
    await runPlan(gpu, (plan) => {
      columnSum(plan, out, xT, { rows, cols });
      columnSum(plan, acc, xT, { rows, cols, accumulate: true });
    });
    const expected = ref.columnSum(x, rows, cols);
    // Sums of up to 20,000 unit normals: absolute error ~ √rows·ε·(typical partial sum).
    const tol = { atol: 1e-6 * Math.sqrt(rows) * 10, rtol: 1e-5 };
    await expectTensor(gpu, "columnSum", out, expected, tol);
    await expectTensor(gpu, "columnSum (accumulate)", acc, expected.map((v, i) => v + base[i]), tol);
  });
}

Deno.test("tuneMatmul records a winner that matmul then uses, and the table survives a JSON round trip", async () => {
  const gpu = await testGpu();
  clearTuneTable();
  const shape = { m: 40, n: 24, k: 16, transB: true };
  const candidates: MatmulVariant[] = ["blocked4x4", "blocked8x8"];
  const winners = await tuneMatmul(gpu, [shape], { candidates, reps: 1, samples: 1 });
  const cls = matmulShapeClass(shape);
  const winner = winners[cls];
  if (!candidates.includes(winner)) throw new Error(`winner ${winner} is not a candidate`);
  // The JSON that saveTuneTable writes and loadTuneTable reads (the test may not read files in /tmp).
  const json = tuneTableToJson();
  clearTuneTable();
  if (lookupChoice(gpu, "matmul", cls) !== undefined) throw new Error("table not cleared");
  const read = mergeTuneTableJson(json);
  if (read !== 1 || lookupChoice(gpu, "matmul", cls) !== winner) {
    throw new Error(`loaded ${read} entries, choice ${lookupChoice(gpu, "matmul", cls)}, expected ${winner}`);
  }
  const plan = { names: [] as string[] };
  const { Plan } = await import("../../lib/gpu/plan.ts");
  const p = new Plan(gpu, "uses tuned");
  matmul(p, poisoned(gpu, [40, 24]), poisoned(gpu, [40, 16]), poisoned(gpu, [24, 16]), shape);
  plan.names = p.kernelNames;
  p.destroy();
  clearTuneTable();
  if (plan.names[0] !== `matmul:${winner}`) throw new Error(`matmul used ${plan.names[0]}, tuned ${winner}`);
});

Deno.test("matmul rejects operands too small for the requested shape, naming the tensor", async () => {
  const gpu = await testGpu();
  const { Plan } = await import("../../lib/gpu/plan.ts");
  const plan = new Plan(gpu, "errors");
  const a = poisoned(gpu, [4, 3], "a"), b = poisoned(gpu, [3, 5], "b"), c = poisoned(gpu, [4, 4], "c");
  let message = "";
  try {
    matmul(plan, c, a, b, { m: 4, n: 5, k: 3 });
  } catch (e) {
    if (!(e instanceof RangeError)) throw e;
    message = e.message;
  }
  if (!message.includes("C c")) throw new Error(`expected a RangeError naming C, got "${message}"`);
  let typeError = false;
  try {
    linearForward(plan, c, a, poisoned(gpu, [5, 4], "w"));
  } catch (e) {
    typeError = e instanceof TypeError && e.message.includes("a");
  }
  if (!typeError) throw new Error("linearForward accepted x [4, 3] for W [5, 4]");
  const c5 = poisoned(gpu, [4, 5], "c5");
  let residualError = "";
  try {
    matmul(plan, c5, a, b, { m: 4, n: 5, k: 3, residual: c5 });
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    residualError = e.message;
  }
  if (!residualError.includes("residual c5")) {
    throw new Error(
      `expected a TypeError naming the residual that shares C's buffer, got "${residualError}"`,
    );
  }
  plan.destroy();
});
