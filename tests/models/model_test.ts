/** Model-level behaviour beyond the official fixtures: every family and embedding, other sizes, round trips. */
import { CompactTransformer } from "../../lib/models/model.ts";
import { customConfig, modelConfig, sequenceLength } from "../../lib/models/config.ts";
import { parseSafetensors } from "../../lib/io/safetensors.ts";
import { adaptInputChannels, canAdaptChannels } from "../../lib/models/weights.ts";
import { assertClose, assertEquals, assertRejects, assertThrows, randn } from "../support/check.ts";

const cases: [string, Parameters<typeof CompactTransformer.create>[1]][] = [
  ["cct_2_3x2_32", { positionalEmbedding: "sine" }],
  ["cct_2_3x2_32", { positionalEmbedding: "none", imgSize: 28, inChannels: 1, numClasses: 7 }],
  ["cvt_2_4_32", { positionalEmbedding: "sine", imgSize: [24, 20], inChannels: 2 }],
  ["vit_2_4_32", { positionalEmbedding: "none", numClasses: 3 }],
  ["cct_2_3x2_32", { kernelSize: 7, convLayers: 1, imgSize: 40 }],
];

for (const [name, options] of cases) {
  Deno.test(`${name} ${JSON.stringify(options)}: finite logits, every parameter gets a gradient, weights round-trip`, async () => {
    const model = await CompactTransformer.create(name, { ...options, seed: 3 });
    const c = model.config;
    try {
      const n = 3;
      const shape = [n, c.inChannels, c.imgHeight, c.imgWidth] as [number, number, number, number];
      const input = Float32Array.from(randn(n * c.inChannels * c.imgHeight * c.imgWidth, 11));
      const logits = await model.forward(input, shape);
      assertEquals(logits.length, n * c.numClasses);
      assertEquals(logits.every(Number.isFinite), true, "finite logits");
      const labels = Int32Array.from({ length: n }, (_, i) => i % c.numClasses);
      const { gradients, loss } = await model.lossAndGradients(input, shape, labels);
      assertEquals(Number.isFinite(loss), true);
      for (const p of model.parameters()) {
        if (!p.trainable) {
          assertEquals(gradients.has(p.name), false, `${p.name} is frozen`);
          continue;
        }
        const g = gradients.get(p.name)!;
        // The pooling bias has an exactly-zero gradient (softmax is shift-invariant).
        if (p.name !== "classifier.attention_pool.bias") {
          assertEquals(g.some((v) => v !== 0), true, `${p.name} receives a gradient`);
        }
      }
      // Save, load into a fresh model with other initial weights: identical logits.
      const bytes = await model.saveWeights({ note: "round trip" });
      const file = parseSafetensors(bytes);
      assertEquals(file.metadata.note, "round trip");
      assertEquals(file.metadata.model, c.name);
      const twin = await CompactTransformer.create(c, { seed: 99 });
      await twin.loadWeights(bytes);
      assertEquals(await twin.forward(input, shape), logits);
      twin.destroy();
    } finally {
      model.destroy();
    }
  });
}

Deno.test("the sine embedding is the official table and is not trained", async () => {
  const model = await CompactTransformer.create("cct_2_3x2_32_sine");
  try {
    const spec = model.parameters().find((p) => p.name === "classifier.positional_emb")!;
    assertEquals(spec.trainable, false);
    const table = (await model.getWeights()).get("classifier.positional_emb")!;
    assertClose("pe[1, 0]", [table[128]], [Math.sin(1)], { atol: 1e-7, rtol: 0 });
    assertClose("pe[1, 1]", [table[129]], [Math.cos(1)], { atol: 1e-7, rtol: 0 });
  } finally {
    model.destroy();
  }
});

Deno.test("loading reports every missing, unexpected and mis-shaped tensor in one error", async () => {
  const model = await CompactTransformer.create("cct_2_3x2_32");
  try {
    const weights = await model.getWeights();
    const tensors = new Map([...weights].map(([k, v]) => [k, { shape: shapeOf(model, k), data: v }]));
    tensors.delete("classifier.norm.bias");
    tensors.set("classifier.extra", { shape: [1], data: new Float32Array(1) });
    tensors.set("classifier.fc.weight", { shape: [5, 128], data: new Float32Array(640) });
    const e = await assertRejects(
      () => model.loadWeights(tensors),
      TypeError,
      "does not fit model cct_2_3x2_32",
    );
    for (
      const part of [
        "missing 1: classifier.norm.bias",
        "unexpected 1: classifier.extra",
        "classifier.fc.weight [5,128]",
      ]
    ) {
      if (!e.message.includes(part)) throw new Error(`"${part}" not in: ${e.message}`);
    }
  } finally {
    model.destroy();
  }
});

Deno.test("non-strict loading replaces the head and resizes a learnable positional embedding", async () => {
  const source = await CompactTransformer.create("cct_2_3x2_32", { seed: 5 });
  const bytes = await source.saveWeights();
  const original = (await source.getWeights()).get("classifier.positional_emb")!;
  source.destroy();
  const model = await CompactTransformer.create("cct_2_3x2_32", { imgSize: 64, numClasses: 4 });
  try {
    assertEquals(sequenceLength(model.config), 256);
    await assertRejects(() => model.loadWeights(bytes), TypeError, "wrong shape");
    const report = await model.loadWeights(bytes, { strict: false });
    assertEquals(report.reinitialised.sort(), ["classifier.fc.bias", "classifier.fc.weight"]);
    assertEquals(report.adapted, ["classifier.positional_emb"]);
    const pe = (await model.getWeights()).get("classifier.positional_emb")!;
    assertEquals(pe.length, 256 * 128);
    // 8×8 → 16×16 bilinear (align_corners false): the corner token keeps the saved corner's value.
    assertClose("corner", [pe[0]], [original[0]], { atol: 1e-7, rtol: 0 });
  } finally {
    model.destroy();
  }
});

Deno.test("non-strict loading adapts the first conv to another input channel count (timm's rule)", async (t) => {
  // An image with equal channels must score the same through the source model and the adapted one.
  for (
    const [family, from, to] of [["cct_2_3x2_32", 3, 1], ["cct_2_3x2_32", 1, 3], [
      "cvt_2_4_32",
      3,
      1,
    ]] as const
  ) {
    await t.step(`${family}: ${from} → ${to} channels`, async () => {
      const source = await CompactTransformer.create(family, { inChannels: from, seed: 11 });
      const bytes = await source.saveWeights();
      const model = await CompactTransformer.create(family, { inChannels: to, seed: 12 });
      try {
        await assertRejects(() => model.loadWeights(bytes), TypeError, "tokenizer.conv_layers.0.0.weight");
        const report = await model.loadWeights(bytes, { strict: false });
        assertEquals(report.adapted, ["tokenizer.conv_layers.0.0.weight"]);
        assertEquals(report.reinitialised, []);
        const n = 2, hw = 32 * 32;
        const gray = Float32Array.from(randn(n * hw, 13));
        const spread = (c: number) => {
          const x = new Float32Array(n * c * hw);
          for (let i = 0; i < n; i++) {
            for (let k = 0; k < c; k++) x.set(gray.subarray(i * hw, (i + 1) * hw), (i * c + k) * hw);
          }
          return x;
        };
        const want = await source.forward(spread(from), [n, from, 32, 32]);
        const got = await model.forward(spread(to), [n, to, 32, 32]);
        assertClose("logits", got, want, { atol: 1e-5, rtol: 1e-4 });
      } finally {
        source.destroy();
        model.destroy();
      }
    });
  }
  // Element by element, on a [2, from, 2, 2] weight of distinct values.
  const saved = (from: number) => Float32Array.from({ length: 2 * from * 4 }, (_, i) => i + 1);
  const taps = (w: Float32Array, channels: number, o: number, c: number) =>
    Array.from(w.subarray((o * channels + c) * 4, (o * channels + c + 1) * 4));
  const scaled = (values: number[], k: number) => values.map((v) => v * k);
  const three = saved(3), one = saved(1);
  const toFour = adaptInputChannels(three, 3, [2, 4, 2, 2]); // cyclic, scaled by 3/4
  for (const [o, c] of [[0, 0], [0, 3], [1, 2], [1, 3]]) {
    assertClose(`3→4 [${o}, ${c}]`, taps(toFour, 4, o, c), scaled(taps(three, 3, o, c % 3), 0.75));
  }
  const toThree = adaptInputChannels(one, 1, [2, 3, 2, 2]); // repeated, divided by 3
  for (const [o, c] of [[0, 0], [0, 2], [1, 1]]) {
    assertClose(`1→3 [${o}, ${c}]`, taps(toThree, 3, o, c), scaled(taps(one, 1, o, 0), 1 / 3));
  }
  const toOne = adaptInputChannels(saved(2), 2, [2, 1, 2, 2]); // summed
  assertEquals(taps(toOne, 1, 1, 0), [9 + 13, 10 + 14, 11 + 15, 12 + 16]);
  // Other pairs have no rule that keeps a response: refused, so a non-strict load reports a wrong shape.
  assertEquals([canAdaptChannels(2, 3), canAdaptChannels(4, 3), canAdaptChannels(3, 3)], [
    false,
    false,
    false,
  ]);
  assertThrows(() => adaptInputChannels(saved(2), 2, [2, 3, 2, 2]), RangeError, "2 → 3");
});

Deno.test("inputs of the wrong shape are refused with a TypeError naming the model", async () => {
  const model = await CompactTransformer.create(customConfig(modelConfig("cct_2_3x2_32"), { imgSize: 28 }));
  try {
    await assertRejects(
      () => model.forward(new Float32Array(3 * 32 * 32), [1, 3, 32, 32]),
      TypeError,
      "[n, 3, 28, 28]",
    );
  } finally {
    model.destroy();
  }
});

function shapeOf(model: CompactTransformer, name: string): number[] {
  return model.parameters().find((p) => p.name === name)!.shape;
}
