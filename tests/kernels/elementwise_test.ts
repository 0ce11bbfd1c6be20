import * as ref from "../reference/elementwise.ts";
import { accumulate, add, copy, geluBackward, geluForward, scale } from "../../lib/kernels/elementwise.ts";
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

const sizes = [1, 7, 1023, 70_001];

Deno.test("reference erf matches known values", () => {
  assertClose("erf", [0, 0.5, 1, 2, 3, -1].map(ref.erf), [
    0,
    0.5204998778130465,
    0.8427007929497149,
    0.9953222650189527,
    0.9999779095030014,
    -0.8427007929497149,
  ], { atol: 1e-15, rtol: 1e-14 });
});

Deno.test("reference geluBackward matches finite differences", () => {
  const x = randn(40, 1, 3);
  const probe = randn(40, 2);
  checkGradients("gelu", ([x]) => dot(ref.geluForward(x), probe), [x], [ref.geluBackward(probe, x)]);
});

for (const n of sizes) {
  Deno.test(`geluForward and geluBackward match the reference (n=${n})`, async () => {
    const gpu = await testGpu();
    const x = randn(n, 10 + n, 3), dy = randn(n, 20 + n);
    const y = poisoned(gpu, [n]), dx = poisoned(gpu, [n]);
    const xt = upload(gpu, x, [n]), dyt = upload(gpu, dy, [n]);
    await runPlan(gpu, (plan) => {
      geluForward(plan, y, xt);
      geluBackward(plan, dx, dyt, xt);
    });
    await expectTensor(gpu, "gelu forward", y, ref.geluForward(x), { atol: 1e-6, rtol: 1e-5 });
    await expectTensor(gpu, "gelu backward", dx, ref.geluBackward(dy, x), { atol: 1e-6, rtol: 1e-5 });
  });
}

Deno.test("geluBackward accumulates into dx", async () => {
  const gpu = await testGpu();
  const n = 333;
  const x = randn(n, 1), dy = randn(n, 2), base = randn(n, 3);
  const dx = upload(gpu, base, [n]);
  await runPlan(gpu, (plan) => geluBackward(plan, dx, upload(gpu, dy, [n]), upload(gpu, x, [n]), true));
  await expectTensor(gpu, "gelu backward (accumulate)", dx, ref.add(base, ref.geluBackward(dy, x)));
});

Deno.test("add matches the reference on a size over 65,535 workgroups' worth", async () => {
  const gpu = await testGpu();
  const n = 256 * 65_535 + 5;
  const a = randn(n, 4), b = randn(n, 5);
  const out = poisoned(gpu, [n]);
  await runPlan(gpu, (plan) => add(plan, out, upload(gpu, a, [n]), upload(gpu, b, [n])));
  await expectTensor(gpu, "add", out, ref.add(a, b), { atol: 0, rtol: 1e-7 });
});

for (const n of [1, 6, 1024, 70_001]) {
  Deno.test(`accumulate, copy and scale match the reference, in place too (n=${n})`, async () => {
    const gpu = await testGpu();
    const a = randn(n, 30 + n), b = randn(n, 40 + n);
    const acc = upload(gpu, b, [n], "acc"), dst = poisoned(gpu, [n], "dst"), y = poisoned(gpu, [n], "y");
    const inPlace = upload(gpu, a, [n], "inPlace"), at = upload(gpu, a, [n], "a");
    await runPlan(gpu, (plan) => {
      accumulate(plan, acc, at);
      copy(plan, dst, at);
      scale(plan, y, at, -0.375);
      scale(plan, inPlace, inPlace, 3);
    });
    await expectTensor(gpu, "accumulate", acc, ref.accumulate(b, a), { atol: 0, rtol: 1e-7 });
    await expectTensor(gpu, "copy", dst, a, { atol: 0, rtol: 0 });
    await expectTensor(gpu, "scale", y, ref.scale(a, -0.375), { atol: 0, rtol: 1e-7 });
    await expectTensor(gpu, "scale (in place)", inPlace, ref.scale(a, 3), { atol: 0, rtol: 1e-7 });
  });
}

Deno.test("reference scale matches finite differences", () => {
  const x = randn(10, 3), probe = randn(10, 4);
  checkGradients("scale", ([x]) => dot(ref.scale(x, 1.7), probe), [x], [ref.scale(probe, 1.7)]);
});
