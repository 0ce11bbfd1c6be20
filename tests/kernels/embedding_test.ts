import * as ref from "../reference/embedding.ts";
import {
  classTokenBackward,
  classTokenConcat,
  positionalEmbeddingAdd,
  positionalEmbeddingBackward,
  selectToken,
  selectTokenBackward,
} from "../../lib/kernels/embedding.ts";
import {
  checkGradients,
  dot,
  expectTensor,
  poisoned,
  randn,
  runPlan,
  testGpu,
  upload,
} from "../support/check.ts";

// Pure data movement is exact; the batch sums round once per addition.
const EXACT = { atol: 0, rtol: 0 };
const SUM_TOL = { atol: 1e-5, rtol: 1e-5 };

// [batch, tokens, dim]: a token or batch of 1, dims off the vec4 path (1, 3, 130) and the zoo's (128, 256).
const shapes: [number, number, number][] = [[1, 1, 1], [3, 5, 3], [2, 1, 130], [1, 49, 128], [5, 17, 256]];

Deno.test("reference embedding backwards match finite differences", () => {
  const [batch, tokens, dim] = [2, 3, 4];
  const x = randn(batch * tokens * dim, 1), pe = randn(tokens * dim, 2), cls = randn(dim, 3);
  const probe = randn(batch * tokens * dim, 4), probeCls = randn(batch * (tokens + 1) * dim, 5);
  const probeSel = randn(batch * dim, 6);
  checkGradients(
    "positionalEmbedding",
    ([x, pe]) => dot(ref.positionalEmbeddingAdd(x, pe, batch, tokens, dim), probe),
    [x, pe],
    [probe, ref.positionalEmbeddingBackward(probe, batch, tokens, dim)],
  );
  const g = ref.classTokenBackward(probeCls, batch, tokens, dim);
  checkGradients(
    "classToken",
    ([x, cls]) => dot(ref.classTokenConcat(x, cls, batch, tokens, dim), probeCls),
    [x, cls],
    [g.dx, g.dcls],
  );
  checkGradients(
    "selectToken",
    ([x]) => dot(ref.selectToken(x, batch, tokens, dim, 2), probeSel),
    [x],
    [ref.selectTokenBackward(probeSel, batch, tokens, dim, 2)],
  );
});

for (const [batch, tokens, dim] of shapes) {
  const n = batch * tokens * dim;
  Deno.test(`positional embedding add and backward match the reference at [${batch}, ${tokens}, ${dim}]`, async () => {
    const gpu = await testGpu();
    const x = randn(n, n),
      pe = randn(tokens * dim, n + 1),
      dy = randn(n, n + 2),
      dpe0 = randn(tokens * dim, n + 3);
    const y = poisoned(gpu, [batch, tokens, dim], "y");
    const inPlace = upload(gpu, x, [batch, tokens, dim], "inPlace");
    const pet = upload(gpu, pe, [tokens, dim], "pe"), dpe = upload(gpu, dpe0, [tokens, dim], "dpe");
    await runPlan(gpu, (plan) => {
      positionalEmbeddingAdd(plan, y, upload(gpu, x, [batch, tokens, dim], "x"), pet, { batch, tokens, dim });
      positionalEmbeddingAdd(plan, inPlace, inPlace, pet, { batch, tokens, dim });
      positionalEmbeddingBackward(plan, dpe, upload(gpu, dy, [n], "dy"), { batch, tokens, dim });
    });
    const expected = ref.positionalEmbeddingAdd(x, pe, batch, tokens, dim).map(Math.fround);
    await expectTensor(gpu, "y", y, expected, EXACT);
    await expectTensor(gpu, "y (in place)", inPlace, expected, EXACT);
    const dpeRef = ref.positionalEmbeddingBackward(dy, batch, tokens, dim).map((v, i) => v + dpe0[i]);
    await expectTensor(gpu, "dpe (accumulated)", dpe, dpeRef, SUM_TOL);
  });

  Deno.test(`class token concat and backward match the reference at [${batch}, ${tokens}, ${dim}]`, async () => {
    const gpu = await testGpu();
    const m = batch * (tokens + 1) * dim;
    const x = randn(n, n + 4), cls = randn(dim, n + 5), dy = randn(m, n + 6), dcls0 = randn(dim, n + 7);
    const dxBase = randn(n, n + 8);
    const y = poisoned(gpu, [batch, tokens + 1, dim], "y"), dx = poisoned(gpu, [batch, tokens, dim], "dx");
    const dxAcc = upload(gpu, dxBase, [n], "dxAcc");
    const dcls = upload(gpu, dcls0, [dim], "dcls");
    const dyt = upload(gpu, dy, [m], "dy");
    await runPlan(gpu, (plan) => {
      classTokenConcat(plan, y, upload(gpu, x, [n], "x"), upload(gpu, cls, [dim], "cls"), {
        batch,
        tokens,
        dim,
      });
      classTokenBackward(plan, dx, dcls, dyt, { batch, tokens, dim });
      classTokenBackward(plan, dxAcc, dcls, dyt, { batch, tokens, dim, accumulateDx: true });
    });
    const g = ref.classTokenBackward(dy, batch, tokens, dim);
    await expectTensor(gpu, "y", y, ref.classTokenConcat(x, cls, batch, tokens, dim), EXACT);
    await expectTensor(gpu, "dx", dx, g.dx, EXACT);
    await expectTensor(gpu, "dx (accumulated)", dxAcc, g.dx.map((v, i) => v + dxBase[i]), SUM_TOL);
    await expectTensor(
      gpu,
      "dcls (accumulated twice)",
      dcls,
      g.dcls.map((v, c) => 2 * v + dcls0[c]),
      SUM_TOL,
    );
  });

  const index = tokens - 1;
  Deno.test(`selectToken and its backward match the reference at [${batch}, ${tokens}, ${dim}], index ${index}`, async () => {
    const gpu = await testGpu();
    const x = randn(n, n + 9), dy = randn(batch * dim, n + 10), base = randn(n, n + 11);
    const y = poisoned(gpu, [batch, dim], "y"), dx = poisoned(gpu, [batch, tokens, dim], "dx");
    const dxAcc = upload(gpu, base, [n], "dxAcc"), dyt = upload(gpu, dy, [batch * dim], "dy");
    await runPlan(gpu, (plan) => {
      selectToken(plan, y, upload(gpu, x, [n], "x"), { batch, tokens, dim, index });
      selectTokenBackward(plan, dx, dyt, { batch, tokens, dim, index });
      selectTokenBackward(plan, dxAcc, dyt, { batch, tokens, dim, index, accumulate: true });
    });
    const dxRef = ref.selectTokenBackward(dy, batch, tokens, dim, index);
    await expectTensor(gpu, "y", y, ref.selectToken(x, batch, tokens, dim, index), EXACT);
    await expectTensor(gpu, "dx", dx, dxRef, EXACT);
    await expectTensor(gpu, "dx (accumulated)", dxAcc, dxRef.map((v, i) => Math.fround(v + base[i])), EXACT);
  });
}

Deno.test("selectToken rejects an index outside the tokens", async () => {
  const gpu = await testGpu();
  await runPlan(gpu, (plan) => {
    let error: unknown;
    try {
      selectToken(plan, poisoned(gpu, [2, 4]), poisoned(gpu, [2, 3, 4]), {
        batch: 2,
        tokens: 3,
        dim: 4,
        index: 3,
      });
    } catch (e) {
      error = e;
    }
    if (!(error instanceof RangeError) || !error.message.includes("index")) {
      throw new Error(`expected a RangeError about the index, got ${error}`);
    }
  });
});
