/**
 * Parity with the official PyTorch code: logits of the fixtures' weights and inputs, and one training step's
 * loss and gradients (../shared/fixtures, produced by the official implementation).
 */
import { CompactTransformer } from "../../lib/models/model.ts";
import { readSafetensorsFile } from "../../lib/io/safetensors.ts";
import { assertEquals } from "../support/check.ts";

const FIXTURES = new URL("../../../shared/fixtures/", import.meta.url);

/** max |Δ| / max |ref|, the fixtures' comparison. */
function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  let worst = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    const e = Math.abs(actual[i] - expected[i]);
    worst = Number.isNaN(e) ? Infinity : Math.max(worst, e);
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return worst / scale;
}

function assertRelative(name: string, actual: ArrayLike<number>, expected: ArrayLike<number>, limit: number) {
  assertEquals(actual.length, expected.length, `${name}: length`);
  const err = relativeError(actual, expected);
  if (!(err <= limit)) throw new Error(`${name}: max|Δ|/max|ref| = ${err.toExponential(3)} > ${limit}`);
}

for (const name of ["cct_2_3x2_32", "cvt_2_4_32", "vit_2_4_32"]) {
  Deno.test(`${name} logits match the official code within 1e-4`, async () => {
    const io = await readSafetensorsFile(new URL(`${name}.io.safetensors`, FIXTURES));
    const model = await CompactTransformer.create(name);
    try {
      await model.loadWeights(new URL(`${name}.weights.safetensors`, FIXTURES).pathname);
      const input = io.tensors.get("input")!;
      const logits = await model.forward(
        input.data as Float32Array,
        input.shape as [number, number, number, number],
      );
      assertRelative(`${name} logits`, logits, io.tensors.get("logits_f64")!.data, 1e-4);
    } finally {
      model.destroy();
    }
  });
}

Deno.test("cct_2_3x2_32 loss and every gradient match the official training step within 1e-3", async () => {
  const step = await readSafetensorsFile(new URL("cct_2_3x2_32.train.safetensors", FIXTURES));
  const model = await CompactTransformer.create("cct_2_3x2_32", {
    dropout: 0,
    attentionDropout: 0,
    stochasticDepth: 0,
  });
  try {
    await model.loadWeights(new URL("cct_2_3x2_32.train.weights.safetensors", FIXTURES).pathname);
    const input = step.tensors.get("input")!;
    const labels = step.tensors.get("labels")!.data as Int32Array;
    const result = await model.lossAndGradients(
      input.data as Float32Array,
      input.shape as [number, number, number, number],
      labels,
    );
    assertRelative("loss", [result.loss], step.tensors.get("loss")!.data, 1e-5);
    assertRelative("logits", result.logits, step.tensors.get("logits")!.data, 1e-4);
    assertEquals(result.gradients.size, 31);
    for (const [param, grad] of result.gradients) {
      const expected = step.tensors.get(`grad.${param}`)!.data;
      if (param === "classifier.attention_pool.bias") {
        // Softmax is shift-invariant, so this gradient is exactly 0; both sides hold rounding noise (~1e-8).
        assertEquals(Math.abs(grad[0] - expected[0]) < 1e-7, true, `${param}: ${grad[0]} vs ${expected[0]}`);
      } else assertRelative(`grad ${param}`, grad, expected, 1e-3);
    }
  } finally {
    model.destroy();
  }
});
