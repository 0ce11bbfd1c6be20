import * as ref from "../reference/seqpool.ts";
import { seqPoolBackward, seqPoolForward } from "../../lib/kernels/seqpool.ts";
import { Plan } from "../../lib/gpu/plan.ts";
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

const TOL = { atol: 1e-5, rtol: 1e-4 };
/** dw and dbias sum over B·N rows. */
const SUM_TOL = { atol: 1e-4, rtol: 1e-4 };

Deno.test("reference seqPoolBackward matches finite differences for x, w and bias", () => {
  const s = { batch: 2, tokens: 5, dim: 7 };
  const x = randn(2 * 5 * 7, 1), w = randn(7, 2), bias = randn(1, 3);
  const probe = randn(2 * 7, 4);
  const { weights } = ref.seqPoolForward(x, w, bias, s);
  const grads = ref.seqPoolBackward(probe, x, weights, w, s);
  checkGradients(
    "seqpool",
    ([x, w, bias]) => dot(ref.seqPoolForward(x, w, bias, s).pooled, probe),
    [x, w, bias],
    [grads.dx, grads.dw, grads.dbias],
    { samples: 40 },
  );
});

const shapes = [
  { batch: 1, tokens: 1, dim: 8 },
  { batch: 3, tokens: 49, dim: 128 },
  { batch: 1, tokens: 64, dim: 33 },
  { batch: 3, tokens: 65, dim: 24 },
  { batch: 3, tokens: 256, dim: 64 },
  { batch: 3, tokens: 7, dim: 5 },
];

for (const s of shapes) {
  for (const accumulateDx of [false, true]) {
    Deno.test(
      `seqPool forward and backward match the reference (B=${s.batch}, N=${s.tokens}, d=${s.dim}` +
        `${accumulateDx ? ", dx accumulated" : ""})`,
      async () => {
        const gpu = await testGpu();
        const { batch: B, tokens: N, dim: d } = s;
        const seed = 100 * N + d + (accumulateDx ? 1 : 0);
        const x = randn(B * N * d, seed), w = randn(d, seed + 1, 0.3), bias = randn(1, seed + 2);
        const dpooled = randn(B * d, seed + 3);
        const dx0 = randn(B * N * d, seed + 4), dw0 = randn(d, seed + 5), dbias0 = randn(1, seed + 6);
        const expected = ref.seqPoolForward(x, w, bias, s);
        const grads = ref.seqPoolBackward(dpooled, x, expected.weights, w, s);

        const pooled = poisoned(gpu, [B, d], "pooled"), weights = poisoned(gpu, [B, N], "weights");
        const xT = upload(gpu, x, [B, N, d], "x"), wT = upload(gpu, w, [1, d], "w");
        const dx = accumulateDx ? upload(gpu, dx0, [B, N, d], "dx") : poisoned(gpu, [B, N, d], "dx");
        const dw = upload(gpu, dw0, [1, d], "dw"), dbias = upload(gpu, dbias0, [1], "dbias");
        await runPlan(gpu, (plan) => {
          seqPoolForward(plan, pooled, weights, xT, wT, upload(gpu, bias, [1], "bias"), s);
          seqPoolBackward(plan, dx, dw, dbias, upload(gpu, dpooled, [B, d], "dpooled"), xT, weights, wT, {
            ...s,
            accumulateDx,
          });
        });
        await expectTensor(gpu, "weights", weights, expected.weights, { atol: 1e-6, rtol: 1e-4 });
        await expectTensor(gpu, "pooled", pooled, expected.pooled, TOL);
        await expectTensor(gpu, "dx", dx, accumulateDx ? grads.dx.map((v, i) => v + dx0[i]) : grads.dx, TOL);
        await expectTensor(gpu, "dw (accumulated)", dw, grads.dw.map((v, i) => v + dw0[i]), SUM_TOL);
        await expectTensor(gpu, "dbias (accumulated)", dbias, [grads.dbias[0] + dbias0[0]], SUM_TOL);
      },
    );
  }
}

Deno.test("seqPool weights sum to one per sample even with large logits", async () => {
  const gpu = await testGpu();
  const s = { batch: 2, tokens: 30, dim: 16 };
  const x = randn(2 * 30 * 16, 9, 40), w = randn(16, 10, 3);
  const pooled = poisoned(gpu, [2, 16]), weights = poisoned(gpu, [2, 30]);
  await runPlan(
    gpu,
    (plan) =>
      seqPoolForward(
        plan,
        pooled,
        weights,
        upload(gpu, x, [2, 30, 16]),
        upload(gpu, w, [1, 16]),
        upload(gpu, new Float64Array(1), [1]),
        s,
      ),
  );
  const expected = ref.seqPoolForward(x, w, new Float64Array(1), s);
  await expectTensor(gpu, "weights", weights, expected.weights, { atol: 1e-6, rtol: 1e-4 });
  await expectTensor(gpu, "pooled", pooled, expected.pooled, { atol: 1e-4, rtol: 1e-4 });
  const { readTensor } = await import("../../lib/gpu/tensor.ts");
  const a = await readTensor(gpu, weights);
  assertClose(
    "row sums",
    [0, 1].map((b) => a.slice(b * 30, b * 30 + 30).reduce((p, q) => p + q, 0)),
    [1, 1],
    {
      atol: 1e-6,
      rtol: 0,
    },
  );
});

Deno.test("seqPool wrappers reject wrong shapes, naming the tensor", async () => {
  const gpu = await testGpu();
  const plan = new Plan(gpu, "bad shapes");
  const s = { batch: 2, tokens: 3, dim: 4 };
  const t = (shape: number[], label: string) => poisoned(gpu, shape, label);
  let message = "";
  try {
    seqPoolForward(plan, t([2, 4], "p"), t([2, 3], "a"), t([2, 3, 5], "x"), t([1, 4], "w"), t([1], "b"), s);
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    message = e.message;
  }
  if (!message.includes("x (x)")) throw new Error(`expected a TypeError naming x, got "${message}"`);
  try {
    seqPoolBackward(
      plan,
      t([2, 3, 4], "dx"),
      t([1, 5], "dw"),
      t([1], "db"),
      t([2, 4], "g"),
      t([2, 3, 4], "x"),
      t(
        [2, 3],
        "a",
      ),
      t([1, 4], "w"),
      s,
    );
    message = "";
  } catch (e) {
    if (!(e instanceof TypeError)) throw e;
    message = e.message;
  }
  if (!message.includes("dw")) throw new Error(`expected a TypeError naming dw, got "${message}"`);
  if (plan.length !== 0) throw new Error("a rejected call recorded a dispatch");
});
