import {
  forwardMacs,
  modelConfig,
  modelNames,
  parameterCount,
  parameterSpecs,
  sequenceLength,
  tokenCount,
} from "../../lib/models/config.ts";
import { initParameters, sinePositionalTable } from "../../lib/models/init.ts";
import { assertClose, assertEquals, assertThrows } from "../support/check.ts";

Deno.test("parameter counts equal the paper's (SPEC §2)", () => {
  const expected: Record<string, number> = {
    cct_2_3x2_32: 283_723,
    cct_7_3x1_32: 3_760_139,
    cct_7_3x2_32: 3_853_259,
    cvt_7_4_32: 3_716_619,
    vit_7_4_32: 3_716_874,
    cct_14_7x2_224: 22_367_273,
  };
  for (const [name, count] of Object.entries(expected)) {
    assertEquals(parameterCount(modelConfig(name)), count, name);
  }
});

Deno.test("tensor counts and token counts match the official models", () => {
  const tensors: Record<string, number> = {
    cct_7_3x1_32: 85,
    cct_2_3x2_32: 31,
    vit_7_4_32: 85,
    cvt_7_4_32: 86,
  };
  for (const [name, n] of Object.entries(tensors)) {
    assertEquals(parameterSpecs(modelConfig(name)).length, n, name);
  }
  const tokens: Record<string, number> = {
    cct_7_3x1_32: 256,
    cct_2_3x2_32: 64,
    cct_7_7x2_224: 196,
    cct_14_7x2_384: 576,
    vit_7_4_32: 65,
    cvt_7_4_32: 64,
  };
  for (const [name, n] of Object.entries(tokens)) assertEquals(sequenceLength(modelConfig(name)), n, name);
  assertEquals(sequenceLength(modelConfig("cct_2_3x2_32", { imgSize: 28, inChannels: 1 })), 49);
});

Deno.test("multiply-accumulate counts match the official README", () => {
  const expected: Record<string, [number, number]> = {
    cct_2_3x2_32: [0.033, 0.035],
    cct_7_3x1_32: [0.947, 1.18],
    cvt_7_4_32: [0.236, 0.250],
    vit_7_4_32: [0.239, 0.254],
  };
  for (const [name, [convLinear, total]] of Object.entries(expected)) {
    const m = forwardMacs(modelConfig(name));
    assertEquals(+(m.convLinear / 1e9).toFixed(3), convLinear, name);
    assertEquals(+(m.total / 1e9).toFixed(total < 1 ? 3 : 2), total, name);
  }
});

Deno.test("every registered name builds, with sine and c100 twins", () => {
  const names = modelNames();
  for (const n of ["cct_7_3x1_32_sine", "cct_7_3x1_32_sine_c100", "cvt_2_4_32_sine", "vit_7_4_32_sine"]) {
    assertEquals(names.includes(n), true, n);
  }
  assertEquals(modelConfig("cct_7_3x1_32_sine").positionalEmbedding, "sine");
  assertEquals(modelConfig("cct_7_3x1_32_sine_c100").numClasses, 100);
  for (const n of names) modelConfig(n);
});

Deno.test("names in the paper's grammar build variants the registry lacks", () => {
  const c = modelConfig("cct_2_7x1_28", { inChannels: 1 });
  assertEquals([c.name, c.kernelSize, c.convLayers, c.imgHeight, c.dim, c.heads], [
    "cct_2_7x1_28",
    7,
    1,
    28,
    128,
    2,
  ]);
  assertEquals(tokenCount(c), 49); // 28 → 14 (7×7 stride 2) → 7 (pool)
  const twoStage = modelConfig("cct_2_3x2_32", { imgSize: 28, inChannels: 1 });
  assertEquals(parameterCount(c), parameterCount(twoStage) - 64 * 9 - 128 * 64 * 9 + 128 * 49);
  assertEquals(modelConfig("cct_4_7x1_32_sine").positionalEmbedding, "sine");
  const vit = modelConfig("vit_4_7_28");
  assertEquals([vit.family, vit.kernelSize, tokenCount(vit)], ["vit", 7, 16]);
  for (const bad of ["cct_9_7x1_32", "cct_2_7_32", "vit_2_4x1_32", "cct_2_7x1", "cct_2_7x1_32_c100"]) {
    assertThrows(() => modelConfig(bad), RangeError, `unknown model "${bad}"`);
  }
});

Deno.test("bad options give RangeErrors that say what is wrong", () => {
  assertThrows(() => modelConfig("cct_9_3x2_32"), RangeError, "unknown model");
  assertThrows(() => modelConfig("cct_2_3x2_32", { dropout: 1.5 }), RangeError, "dropout");
  assertThrows(() => modelConfig("vit_2_4_32", { imgSize: 3 }), RangeError, "too small");
});

Deno.test("the sine table follows the official formula", () => {
  const t = sinePositionalTable(5, 6);
  const expected: number[] = [];
  for (let p = 0; p < 5; p++) {
    for (let i = 0; i < 6; i++) {
      const a = p / 10000 ** ((2 * Math.floor(i / 2)) / 6);
      expected.push(i % 2 ? Math.cos(a) : Math.sin(a));
    }
  }
  assertClose("sine table", t, expected, { atol: 1e-7, rtol: 1e-6 });
});

Deno.test("initialisation is seeded and has the prescribed statistics", () => {
  const c = modelConfig("cct_7_3x1_32");
  const a = initParameters(c, 1), b = initParameters(c, 1), other = initParameters(c, 2);
  const qkv = "classifier.blocks.3.self_attn.qkv.weight";
  assertEquals(a.get(qkv), b.get(qkv));
  assertEquals(a.get(qkv)![0] === other.get(qkv)![0], false);
  const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
  assertClose("qkv std", [std(a.get(qkv)!)], [0.02], { atol: 0, rtol: 0.02 });
  assertClose("conv std", [std(a.get("tokenizer.conv_layers.0.0.weight")!)], [Math.sqrt(2 / 27)], {
    atol: 0,
    rtol: 0.05,
  });
  assertClose("pos-emb std", [std(a.get("classifier.positional_emb")!)], [0.2], { atol: 0, rtol: 0.02 });
  assertEquals(a.get("classifier.norm.weight")!.every((v) => v === 1), true);
  assertEquals(a.get("classifier.fc.bias")!.every((v) => v === 0), true);
});
