import * as ref from "../reference/attention.ts";
import {
  attentionBackward,
  type AttentionBlocking,
  attentionForward,
  type AttentionOptions,
  BLOCKED,
  NAIVE,
  SUBGROUP_NARROW,
} from "../../lib/kernels/attention.ts";
import { type Plan, UniformBlock } from "../../lib/gpu/plan.ts";
import { Arena, readTensor, type Tensor, writeTensor } from "../../lib/gpu/tensor.ts";
import type { Gpu } from "../../lib/gpu/device.ts";
import {
  assertClose,
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

const PROBS_TOL = { atol: 1e-6, rtol: 1e-4 };
const OUT_TOL = { atol: 1e-5, rtol: 1e-4 };
const GRAD_TOL = { atol: 3e-5, rtol: 1e-3 };

Deno.test("reference attentionBackward matches finite differences without dropout", () => {
  const s = { batch: 2, tokens: 5, dim: 8, heads: 2 };
  const qkv = randn(2 * 5 * 24, 1);
  const probe = randn(2 * 5 * 8, 2);
  const { probs } = ref.attentionForward(qkv, s);
  checkGradients(
    "attention",
    ([x]) => dot(ref.attentionForward(x, s).out, probe),
    [qkv],
    [ref.attentionBackward(probe, qkv, probs, s)],
    { samples: 40 },
  );
});

Deno.test("reference attentionBackward matches finite differences with dropout 0.3", () => {
  const s = { batch: 1, tokens: 6, dim: 12, heads: 3, dropout: 0.3, seed: 99 };
  const qkv = randn(6 * 36, 3);
  const probe = randn(6 * 12, 4);
  const { probs } = ref.attentionForward(qkv, s);
  checkGradients(
    "attention (dropout)",
    ([x]) => dot(ref.attentionForward(x, s).out, probe),
    [qkv],
    [ref.attentionBackward(probe, qkv, probs, s)],
    { samples: 40 },
  );
});

Deno.test("reference dropoutScale keeps about 1 − p of the probabilities and scales them by 1/keep", () => {
  const mask = ref.dropoutScale({ batch: 2, tokens: 30, dim: 8, heads: 2, dropout: 0.3, seed: 5 });
  const kept = mask.filter((v) => v > 0);
  const fraction = kept.length / mask.length;
  if (Math.abs(fraction - 0.7) > 0.03) throw new Error(`kept fraction ${fraction}, expected ≈ 0.7`);
  assertClose("kept scale", kept, new Float64Array(kept.length).fill(1 / 0.7), { atol: 0, rtol: 1e-15 });
});

interface Case {
  batch: number;
  tokens: number;
  dim: number;
  heads: number;
  dropout: number;
  /** Pass the forward output to backward (δ from rowsum(dout ⊙ out)). */
  withOut: boolean;
  /** How the dropout seed reaches the kernels (default: a uniform u32 binding). */
  seedKind?: "binding" | "block" | "value";
}

const cases: Case[] = [
  { batch: 1, tokens: 1, dim: 16, heads: 1, dropout: 0, withOut: false },
  { batch: 3, tokens: 49, dim: 128, heads: 2, dropout: 0, withOut: true },
  { batch: 1, tokens: 64, dim: 24, heads: 6, dropout: 0.3, withOut: false },
  { batch: 3, tokens: 65, dim: 32, heads: 4, dropout: 0.3, withOut: true, seedKind: "block" },
  { batch: 1, tokens: 256, dim: 64, heads: 4, dropout: 0, withOut: false },
  { batch: 3, tokens: 13, dim: 48, heads: 6, dropout: 0.3, withOut: false, seedKind: "value" },
  { batch: 3, tokens: 7, dim: 8, heads: 2, dropout: 0, withOut: true },
  { batch: 1, tokens: 1, dim: 8, heads: 1, dropout: 0.3, withOut: true },
];

/** A uniform block holding the dropout seed. */
function seedBlock(gpu: Gpu, seed: number): UniformBlock {
  const block = new UniformBlock(gpu, 4, "attention seed");
  block.u32[0] = seed;
  block.flush();
  return block;
}

async function checkCase(c: Case, extra: Partial<AttentionOptions> = {}): Promise<void> {
  const gpu = await testGpu();
  const { batch: B, tokens: N, dim: d, heads: H } = c;
  const seed = 1000 + B * 7 + N;
  const s = { ...c, seed };
  const qkv = randn(B * N * 3 * d, 11 + N);
  const dout = randn(B * N * d, 12 + N);
  const expected = ref.attentionForward(qkv, s);
  const dqkvRef = ref.attentionBackward(dout, qkv, expected.probs, s);

  const qkvT = upload(gpu, qkv, [B, N, 3 * d], "qkv");
  const doutT = upload(gpu, dout, [B, N, d], "dout");
  const out = poisoned(gpu, [B, N, d], "out");
  const probs = poisoned(gpu, [B, H, N, N], "probs");
  const dqkv = poisoned(gpu, [B, N, 3 * d], "dqkv");
  // Word 2 of the block holds the seed in "block" mode.
  const block = seedBlock(gpu, c.seedKind === "block" ? 0 : seed);
  block.u32[2] = seed;
  block.flush();
  const seedOption = c.seedKind === "block"
    ? { block, word: 2 }
    : c.seedKind === "value"
    ? seed
    : block.binding();
  const options: AttentionOptions = { ...c, seed: seedOption, ...extra };
  await runPlan(gpu, (plan) => attentionForward(plan, out, probs, qkvT, options));
  await expectTensor(gpu, "probs", probs, ref.signedProbs(expected.probs, s), PROBS_TOL);
  await expectTensor(gpu, "out", out, expected.out, OUT_TOL);
  await runPlan(
    gpu,
    (plan) =>
      attentionBackward(plan, dqkv, doutT, qkvT, probs, { ...options, out: c.withOut ? out : undefined }),
  );
  await expectTensor(gpu, "dqkv", dqkv, dqkvRef, GRAD_TOL);
  block.buffer.destroy();
}

for (const c of cases) {
  Deno.test(
    `attention forward and backward match the reference (B=${c.batch}, N=${c.tokens}, d=${c.dim}, ` +
      `heads=${c.heads}, dropout=${c.dropout}${c.withOut ? ", δ from out" : ""}` +
      `${c.dropout && c.seedKind ? `, seed as ${c.seedKind}` : ""})`,
    () => checkCase(c),
  );
}

/**
 * Blockings of the subgroup kernels (Vulkan; other adapters fall back to the register-blocked kernels, so these
 * cases then test those) on shapes that are not multiples of their tiles: tall tiles of 3, 12 and 25 rows, head
 * dimensions of 3, 5, 8 and 16 vec4s, one and several (batch, head) pairs, one key block per row (n ≤ 8·keys: the
 * in-register softmax, δ fused into the score-gradient loop or not) and several (forward in registers up to
 * `softmaxKeys` per lane, or in blocks).
 */
const blockingCases: { label: string; c: Case; blocking: AttentionBlocking }[] = [
  {
    label: "tall tiles (default) with one token and a head dimension of 12",
    c: { batch: 1, tokens: 1, dim: 12, heads: 1, dropout: 0.3, withOut: true },
    blocking: BLOCKED,
  },
  {
    label: "tall tiles of 3 rows with 5 tokens and a head dimension of 20",
    c: { batch: 2, tokens: 5, dim: 40, heads: 2, dropout: 0, withOut: false },
    blocking: { ...BLOCKED, productRows: 4, scoreRows: 4 },
  },
  {
    label: "tall tiles (default) with 50 tokens, masked backward and δ fused",
    c: { batch: 2, tokens: 50, dim: 128, heads: 2, dropout: 0.3, withOut: true },
    blocking: BLOCKED,
  },
  {
    label: "tall tiles with baked shapes and 8 steps per iteration, δ by a first pass",
    c: { batch: 1, tokens: 49, dim: 64, heads: 2, dropout: 0.1, withOut: false },
    blocking: { ...BLOCKED, bakeShapes: true, steps: 8 },
  },
  {
    label: "tall tiles of 12 query rows and several key blocks per row",
    c: { batch: 1, tokens: 70, dim: 96, heads: 3, dropout: 0.3, withOut: true },
    blocking: { ...BLOCKED, scoreRows: 12, keys: 4, softmaxKeys: 0 },
  },
  {
    label: "tall tiles (default), 13 keys per lane: the forward softmax in registers, backward in key blocks",
    c: { batch: 2, tokens: 100, dim: 64, heads: 1, dropout: 0.3, withOut: true },
    blocking: BLOCKED,
  },
  {
    label: "the 8-row subgroup kernels (the previous default)",
    c: { batch: 2, tokens: 49, dim: 128, heads: 2, dropout: 0.3, withOut: true },
    blocking: SUBGROUP_NARROW,
  },
];

for (const { label, c, blocking } of blockingCases) {
  Deno.test(
    `attention with ${label} matches the reference (B=${c.batch}, N=${c.tokens}, d=${c.dim}, heads=${c.heads}, ` +
      `dropout=${c.dropout})`,
    () => checkCase(c, { blocking }),
  );
}

Deno.test("the register-blocked kernels without subgroups match the reference too", () =>
  checkCase(
    { batch: 3, tokens: 33, dim: 64, heads: 2, dropout: 0.3, withOut: false },
    { blocking: { ...BLOCKED, subgroup: false } },
  ));

Deno.test("the naive attention kernels match the reference too", () =>
  checkCase({ batch: 2, tokens: 11, dim: 16, heads: 2, dropout: 0.3, withOut: false }, { blocking: NAIVE }));

Deno.test("attention splits the batch into chunks when a tensor exceeds the binding limit", async () => {
  const gpu = await testGpu();
  const B = 3, N = 20, d = 16, H = 2, dropout = 0.3, seed = 4242;
  const s = { batch: B, tokens: N, dim: d, heads: H, dropout, seed };
  const qkv = randn(B * N * 3 * d, 31);
  const dout = randn(B * N * d, 32);
  const expected = ref.attentionForward(qkv, s);
  const dqkvRef = ref.attentionBackward(dout, qkv, expected.probs, s);
  // Views in one arena, as the model allocates them; a small first tensor shifts the others off offset 0.
  const arena = new Arena("attention chunk test");
  arena.reserve("pad", [3]);
  for (const [name, shape] of Object.entries({ qkv: [B, N, 3 * d], dout: [B, N, d], out: [B, N, d] })) {
    arena.reserve(name, shape);
  }
  arena.reserve("probs", [B, H, N, N]);
  arena.reserve("dqkv", [B, N, 3 * d]);
  arena.allocate(gpu);
  const t = (name: string) => arena.get(name);
  writeTensor(gpu, t("qkv"), Float32Array.from(qkv));
  writeTensor(gpu, t("dout"), Float32Array.from(dout));
  for (const name of ["out", "probs", "dqkv"]) {
    writeTensor(gpu, t(name), new Float32Array(t(name).size).fill(NaN));
  }
  const block = seedBlock(gpu, seed);
  // 4 KiB windows: qkv (3,840 B per batch element) forces one batch element per chunk.
  const options = { ...s, seed: block.binding(), maxBindingBytes: 4096 + 256 };
  let dispatches = 0;
  const count = (plan: Plan) => dispatches = plan.length;
  await runPlan(gpu, (plan) => {
    attentionForward(plan, t("out"), t("probs"), t("qkv"), options);
    count(plan);
  });
  if (dispatches !== 6) {
    throw new Error(`forward recorded ${dispatches} dispatches, expected 2 per chunk × 3`);
  }
  await expectTensor(gpu, "probs (chunked)", t("probs"), ref.signedProbs(expected.probs, s), PROBS_TOL);
  await expectTensor(gpu, "out (chunked)", t("out"), expected.out, OUT_TOL);
  await runPlan(gpu, (plan) => attentionBackward(plan, t("dqkv"), t("dout"), t("qkv"), t("probs"), options));
  await expectTensor(gpu, "dqkv (chunked)", t("dqkv"), dqkvRef, GRAD_TOL);
  assertClose("pad untouched", await readTensor(gpu, t("pad")), [0, 0, 0], { atol: 0, rtol: 0 });
  arena.destroy();
  block.buffer.destroy();
});

Deno.test("attention dropout follows the seed in the uniform, rewritten between submissions", async () => {
  const gpu = await testGpu();
  const B = 2, N = 9, d = 16, H = 2, dropout = 0.3;
  const qkv = randn(B * N * 3 * d, 41);
  const qkvT = upload(gpu, qkv, [B, N, 3 * d], "qkv");
  const out = poisoned(gpu, [B, N, d], "out");
  const probs = poisoned(gpu, [B, H, N, N], "probs");
  const block = seedBlock(gpu, 1);
  const { Plan } = await import("../../lib/gpu/plan.ts");
  const plan = new Plan(gpu, "seeded attention");
  attentionForward(plan, out, probs, qkvT, {
    batch: B,
    tokens: N,
    dim: d,
    heads: H,
    dropout,
    seed: block.binding(),
  });
  for (const seed of [1, 2]) {
    block.u32[0] = seed;
    block.flush();
    await plan.run();
    const expected = ref.attentionForward(qkv, { batch: B, tokens: N, dim: d, heads: H, dropout, seed });
    await expectTensor(gpu, `out (seed ${seed})`, out, expected.out, OUT_TOL);
  }
  plan.destroy();
  block.buffer.destroy();
});

Deno.test("attention wrappers reject wrong shapes, naming the tensor", async () => {
  const gpu = await testGpu();
  const { Plan } = await import("../../lib/gpu/plan.ts");
  const plan = new Plan(gpu, "bad shapes");
  const o = { batch: 2, tokens: 4, dim: 8, heads: 2 };
  const t = (shape: number[], label: string): Tensor => poisoned(gpu, shape, label);
  const expectError = (f: () => void, type: ErrorConstructor, words: string) => {
    try {
      f();
    } catch (e) {
      if (!(e instanceof type) || !String(e.message).includes(words)) throw e;
      return;
    }
    throw new Error(`expected a ${type.name} mentioning "${words}"`);
  };
  expectError(
    () => attentionForward(plan, t([2, 4, 8], "o"), t([2, 2, 4, 5], "p"), t([2, 4, 24], "x"), o),
    TypeError,
    "probs",
  );
  expectError(
    () =>
      attentionBackward(
        plan,
        t([2, 4, 23], "dx"),
        t([2, 4, 8], "g"),
        t([2, 4, 24], "x"),
        t([2, 2, 4, 4], "p"),
        o,
      ),
    TypeError,
    "dqkv",
  );
  expectError(
    () =>
      attentionForward(plan, t([2, 4, 6], "o"), t([2, 2, 4, 4], "p"), t([2, 4, 18], "x"), { ...o, dim: 6 }),
    RangeError,
    "multiple of 4",
  );
  expectError(
    () =>
      attentionForward(plan, t([2, 4, 8], "o"), t([2, 2, 4, 4], "p"), t([2, 4, 24], "x"), {
        ...o,
        dropout: 0.1,
      }),
    TypeError,
    "seed",
  );
  if (plan.length !== 0) throw new Error("a rejected call recorded a dispatch");
});
