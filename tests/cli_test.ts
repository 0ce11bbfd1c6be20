/**
 * The command line end to end, in process: a tiny training run on an image folder, then eval, predict, convert
 * and resume on its files; and every kind of bad input giving one clear line and a non-zero exit.
 */
import { join } from "node:path";
import { main } from "../cli.ts";
import { CompactTransformer, parseWeights } from "../lib/models/model.ts";
import type { HostTensor } from "../lib/models/weights.ts";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import { bytes, global, pth, REDUCE, STOP } from "./support/pickle.ts";
import { assertEquals } from "./support/check.ts";

const FIXTURES = new URL("../../shared/fixtures/", import.meta.url).pathname;

/** Runs the CLI, capturing what it prints. */
async function run(...args: string[]): Promise<{ code: number; out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const log = console.log, error = console.error;
  console.log = (...a: unknown[]) => out.push(a.join(" "));
  console.error = (...a: unknown[]) => err.push(a.join(" "));
  try {
    const code = await main(args);
    return { code, out: out.join("\n"), err: err.join("\n") };
  } finally {
    console.log = log;
    console.error = error;
  }
}

function expectFailure(r: { code: number; err: string }, code: number, ...includes: string[]): void {
  assertEquals(r.code, code, `exit code (stderr: ${r.err})`);
  for (const s of includes) {
    if (!r.err.includes(s)) throw new Error(`stderr lacks "${s}": ${r.err}`);
  }
  if (r.err.includes("    at ")) throw new Error(`a stack trace leaked: ${r.err}`);
}

function png(value: number, size = 16, mirrored = false): Uint8Array {
  // `value` on the left half and its complement on the right, or the other way round when mirrored.
  const valueSide = (i: number) => (i % size) < size / 2 !== mirrored;
  const data = new Uint8Array(size * size).map((_, i) => (valueSide(i) ? value : 255 - value));
  return encodePng({ width: size, height: size, data, channels: 1 });
}

/** Class name → probability, from `predict --json`'s entry for one image. */
function probabilities(
  result: { predictions: { class: string; probability: number }[] },
): Map<string, number> {
  return new Map(result.predictions.map((p) => [p.class, p.probability]));
}

Deno.test("train, eval, predict and resume work on an image folder", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "cli_test_" });
  try {
    for (const [cls, value] of [["dark", 20], ["light", 230]] as const) {
      await Deno.mkdir(join(dir, "data", cls), { recursive: true });
      for (let i = 0; i < 12; i++) await Deno.writeFile(join(dir, "data", cls, `${i}.png`), png(value + i));
    }
    const out = join(dir, "run");
    const common = ["--data", join(dir, "data"), "--img-size", "16", "--batch-size", "8", "--output", out];
    const trained = await run(
      "train",
      "--model",
      "cct_2_3x2_32",
      "--epochs",
      "1",
      "--log-every",
      "1",
      ...common,
    );
    assertEquals(trained.code, 0, trained.err);
    for (
      const f of [
        "best.safetensors",
        "last.safetensors",
        "last.state.safetensors",
        "metrics.jsonl",
        "curves.svg",
      ]
    ) {
      await Deno.stat(join(out, f));
    }
    const evaluated = await run(
      "eval",
      "--weights",
      join(out, "best.safetensors"),
      "--data",
      join(dir, "data"),
    );
    assertEquals(evaluated.code, 0, evaluated.err);
    if (!/top-1 \d+\.\d+%/.test(evaluated.out)) throw new Error(evaluated.out);
    const flipped = await run(
      "eval",
      "--weights",
      join(out, "best.safetensors"),
      "--data",
      join(dir, "data"),
      "--tta",
      "flip",
    );
    assertEquals(flipped.code, 0, flipped.err);
    if (!/flip TTA\): top-1 \d+\.\d+%/.test(flipped.out)) throw new Error(flipped.out);
    const predicted = await run(
      "predict",
      "--weights",
      join(out, "best.safetensors"),
      "--json",
      "--top",
      "2",
      join(dir, "data", "dark", "0.png"),
    );
    assertEquals(predicted.code, 0, predicted.err);
    const [result] = JSON.parse(predicted.out);
    assertEquals(result.predictions.length, 2);
    assertEquals(["dark", "light"].includes(result.predictions[0].class), true);
    // Averaged with its mirror, an image scores exactly as its mirror does; alone it does not.
    const mirror = join(dir, "mirror.png");
    await Deno.writeFile(mirror, png(20, 16, true));
    const pair = [join(dir, "data", "dark", "0.png"), mirror];
    const weights = ["--weights", join(out, "best.safetensors"), "--json", "--top", "2"];
    const plain = await run("predict", ...weights, ...pair);
    const flip = await run("predict", ...weights, "--tta", "flip", ...pair);
    assertEquals(flip.code, 0, flip.err);
    const [a, b] = JSON.parse(flip.out).map(probabilities);
    const [plainA, plainB] = JSON.parse(plain.out).map(probabilities);
    for (const cls of ["dark", "light"]) {
      assertEquals(
        Math.abs(a.get(cls)! - b.get(cls)!) < 1e-6,
        true,
        `${cls}: ${a.get(cls)} vs ${b.get(cls)}`,
      );
      assertEquals(Math.abs(a.get(cls)! - plainA.get(cls)!) > 1e-6, true, `${cls}: TTA changed nothing`);
    }
    assertEquals(plainA.get("dark") !== plainB.get("dark"), true, "the mirror alone scores differently");
    const resumed = await run(
      "train",
      "--resume",
      join(out, "last.state.safetensors"),
      "--epochs",
      "3",
      "--eval-every",
      "0",
      "--batch-size",
      "8",
      "--model-ema-decay",
      "0.9",
      "--model-ema-warmup",
    );
    // No --data or --img-size: the resume file names the folder, and its model the geometry.
    assertEquals(resumed.code, 0, resumed.err);
    if (!resumed.out.includes("resuming")) throw new Error(resumed.out);
    // --eval-every 0: only the last epoch is evaluated, the weights and (from the resume on) their average.
    const summaries = resumed.out.split("\n").filter((line) => /^epoch \d\/3 train/.test(line));
    assertEquals(summaries.map((line) => line.includes("| test ")), [false, true], resumed.out);
    assertEquals(summaries.map((line) => line.includes("| EMA loss ")), [false, true], resumed.out);
    const ema = parseWeights(await Deno.readFile(join(out, "last_ema.safetensors")), "last_ema.safetensors");
    const last = parseWeights(await Deno.readFile(join(out, "last.safetensors")), "last.safetensors");
    assertEquals(ema.metadata.weights, "ema");
    assertEquals(last.metadata.weights, undefined);
    const fc = "classifier.fc.weight";
    if (ema.tensors.get(fc)!.data.every((x, i) => x === last.tensors.get(fc)!.data[i])) {
      throw new Error("last_ema.safetensors holds the weights, not their average");
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("train --finetune starts a new run from weights: its own, a library-saved file or an official .pth, for RGB or gray images", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "cli_finetune_" });
  try {
    const folder = async (name: string, classes: [string, number][], channels: 1 | 3, size: number) => {
      for (const [cls, value] of classes) {
        await Deno.mkdir(join(dir, name, cls), { recursive: true });
        for (let i = 0; i < 8; i++) {
          const data = new Uint8Array(size * size * channels).fill(value + i);
          await Deno.writeFile(
            join(dir, name, cls, `${i}.png`),
            encodePng({ width: size, height: size, data, channels }),
          );
        }
      }
      return join(dir, name);
    };
    const two = await folder("two", [["dark", 20], ["light", 230]], 1, 16);
    const renamed = await folder("renamed", [["night", 20], ["day", 230]], 1, 16);
    const three = await folder("three", [["dark", 20], ["mid", 120], ["light", 230]], 1, 16);
    const rgb = await folder("rgb", [["dark", 20], ["light", 230]], 3, 32);
    // With every learning rate 0 a run's weights are the ones it started from, bit for bit.
    const frozen = ["--epochs", "1", "--lr", "0", "--warmup-lr", "0", "--min-lr", "0", "--batch-size", "8"];
    const weights = async (path: string) => parseWeights(await Deno.readFile(path), path).tensors;
    const sameExcept = (a: Map<string, HostTensor>, b: Map<string, HostTensor>, except: string[]) => {
      const names = [...a.keys()].filter((n) => !except.includes(n));
      assertEquals(names.length > 20, true, `only ${names.length} tensors compared`);
      for (const name of names) {
        assertEquals(b.get(name)?.data.every((x, i) => x === a.get(name)!.data[i]), true, `${name} changed`);
      }
    };
    /** A frozen run from `initial` on `data`; its printed output and final weights. */
    const frozenRun = async (out: string, initial: string, data: string, ...flags: string[]) => {
      const r = await run(
        "train",
        "--finetune",
        initial,
        "--data",
        data,
        ...frozen,
        ...flags,
        "--output",
        out,
      );
      assertEquals(r.code, 0, r.err);
      return { out: r.out, weights: await weights(join(out, "last.safetensors")) };
    };
    const head = ["classifier.fc.weight", "classifier.fc.bias"];

    const first = join(dir, "first");
    const trained = await run(
      "train",
      ...["--model", "cct_2_3x2_32", "--epochs", "1", "--data", two, "--img-size", "16", "--batch-size", "8"],
      ...["--output", first],
    );
    assertEquals(trained.code, 0, trained.err);
    const start = join(first, "last.safetensors");

    // Its own checkpoint, no --model and no --img-size: the same 16-pixel model, every tensor as it is (a
    // 32-pixel default would have resized the positional embedding).
    const again = await frozenRun(join(dir, "again"), start, two);
    if (!again.out.includes(`initial weights: ${start}\n`)) throw new Error(again.out);
    sameExcept(await weights(start), again.weights, []);

    // Three classes, or two of other names: a new head, the rest unchanged.
    const wider = await frozenRun(join(dir, "wider"), start, three);
    if (!wider.out.includes(`re-initialised ${head.join(", ")}`)) throw new Error(wider.out);
    assertEquals(wider.weights.get("classifier.fc.weight")!.shape, [3, 128]);
    sameExcept(await weights(start), wider.weights, head);
    const other = await frozenRun(join(dir, "other"), start, renamed);
    if (!other.out.includes(`re-initialised ${head.join(", ")} (other class names)`)) {
      throw new Error(other.out);
    }
    sameExcept(await weights(start), other.weights, head);

    // A file from CompactTransformer.saveWeights (a config but no data description), deeper than cct_2.
    const deep = await CompactTransformer.create("cct_4_3x2_32", { imgSize: 16, numClasses: 2, seed: 3 });
    const deepFile = join(dir, "deep.safetensors");
    await Deno.writeFile(deepFile, await deep.saveWeights());
    deep.destroy();
    const fromLibrary = await frozenRun(join(dir, "library"), deepFile, two);
    sameExcept(await weights(deepFile), fromLibrary.weights, []);
    // ... which a shallower --model must not silently cut down.
    const cut = await run(
      "train",
      "--finetune",
      deepFile,
      "--model",
      "cct_2_3x2_32",
      "--data",
      two,
      ...frozen,
    );
    expectFailure(cut, 1, deepFile, "22 tensors do not fit cct_2_3x2_32", "classifier.blocks.2.");

    // The official CIFAR-10 checkpoint onto two RGB classes: fine-tuning as in the paper's transfer runs.
    const official = join(FIXTURES, "cct_2_3x2_32.pth");
    const model = ["--model", "cct_2_3x2_32", "--img-size", "32"];
    const tuned = await frozenRun(join(dir, "tuned"), official, rgb, ...model);
    if (!tuned.out.includes(`re-initialised ${head.join(", ")}`)) throw new Error(tuned.out);
    sameExcept(await weights(official), tuned.weights, head);

    // ... and onto gray images: the first conv's RGB filters summed (timm's rule), the rest as saved.
    const conv = "tokenizer.conv_layers.0.0.weight";
    const gray = await frozenRun(join(dir, "gray"), official, two, ...model, "--channels", "1");
    if (!gray.out.includes(`adapted ${conv}`)) throw new Error(gray.out);
    const rgbConv = (await weights(official)).get(conv)!.data as Float32Array;
    const summed = new Float32Array(64 * 9);
    for (let i = 0; i < rgbConv.length; i++) summed[Math.floor(i / 27) * 9 + (i % 9)] += rgbConv[i];
    assertEquals(Array.from(gray.weights.get(conv)!.data), Array.from(summed));
    sameExcept(await weights(official), gray.weights, [...head, conv]);

    expectFailure(await run("train", "--finetune", official, "--data", rgb), 2, official, "--model");
    expectFailure(
      await run("train", "--finetune", start, "--resume", join(first, "last.state.safetensors")),
      2,
      "--resume",
      "--finetune",
    );
    expectFailure(await run("train", "--data", two, "--channels", "2"), 2, "--channels 2");
    expectFailure(
      await run("train", "--dataset", "synthetic", "--img-size", "20"),
      2,
      "--img-size",
      "synthetic",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("convert turns the official .pth into safetensors that predict can use", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "cli_convert_" });
  try {
    const out = join(dir, "cct.safetensors");
    const converted = await run(
      "convert",
      "--model",
      "cct_2_3x2_32",
      join(FIXTURES, "cct_2_3x2_32.pth"),
      out,
    );
    assertEquals(converted.code, 0, converted.err);
    const image = join(dir, "x.png");
    await Deno.writeFile(image, png(100, 32));
    const predicted = await run("predict", "--model", "cct_2_3x2_32", "--weights", out, image);
    assertEquals(predicted.code, 0, predicted.err);
    if (!predicted.out.includes("%")) throw new Error(predicted.out);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bad input gives one clear line naming the file and a non-zero exit", async () => {
  const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "cli_bad_" });
  try {
    const good = await Deno.readFile(join(FIXTURES, "cct_2_3x2_32.weights.safetensors"));
    const image = join(dir, "x.png");
    await Deno.writeFile(image, png(100, 32));
    const file = async (name: string, data: Uint8Array) => {
      await Deno.writeFile(join(dir, name), data);
      return join(dir, name);
    };
    const truncated = await file("truncated.safetensors", good.slice(0, good.length - 100));
    expectFailure(
      await run("predict", "--model", "cct_2_3x2_32", "--weights", truncated, image),
      1,
      truncated,
    );

    const lying = good.slice();
    const headerLength = Number(new DataView(lying.buffer).getBigUint64(0, true));
    const header = new TextDecoder().decode(lying.subarray(8, 8 + headerLength)).replace(
      /"data_offsets":\[(\d+),(\d+)\]/,
      (_, a, b) => `"data_offsets":[${a},${Number(b) + 4}]`.padEnd(`"data_offsets":[${a},${b}]`.length + 2),
    );
    const bad = new TextEncoder().encode(header);
    const patched = new Uint8Array(8 + bad.length + lying.length - 8 - headerLength);
    new DataView(patched.buffer).setBigUint64(0, BigInt(bad.length), true);
    patched.set(bad, 8);
    patched.set(lying.subarray(8 + headerLength), 8 + bad.length);
    const offsets = await file("offsets.safetensors", patched);
    expectFailure(await run("predict", "--model", "cct_2_3x2_32", "--weights", offsets, image), 1, offsets);

    const evil = await file("evil.pth", pth(bytes(0x80, 2, global("os", "system"), "(", ")", REDUCE, STOP)));
    expectFailure(await run("convert", evil, join(dir, "out.safetensors")), 1, evil, "os.system");

    const text = await file("notes.png", new TextEncoder().encode("not an image"));
    expectFailure(
      await run("predict", "--model", "cct_2_3x2_32", "--weights", join(FIXTURES, "cct_2_3x2_32.pth"), text),
      1,
      text,
      "not a PNG or JPEG",
    );

    const vit = join(FIXTURES, "vit_2_4_32.weights.safetensors");
    expectFailure(
      await run("predict", "--model", "cct_2_3x2_32", "--weights", vit, image),
      1,
      vit,
      "does not fit",
    );

    expectFailure(await run("train", "--epochs", "zero"), 2, "--epochs");
    expectFailure(await run("train", "--tta", "mirror"), 2, "--tta mirror", "flip-shift");
    expectFailure(await run("train", "--model-ema-decay", "1"), 2, "--model-ema-decay 1", "< 1");
    expectFailure(await run("eval", "--weights", "w.safetensors", "--tta", "mirror"), 2, "--tta mirror");
    expectFailure(
      await run("predict", "--weights", "w.safetensors", "--tta", "mirror", "x.png"),
      2,
      "--tta mirror",
    );
    expectFailure(await run("frobnicate"), 2, "unknown command");
    expectFailure(await run("train", "--dataset", "cifar10"), 1, "needs a directory");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("info prints the adapter and the whole zoo", async () => {
  const r = await run("info");
  assertEquals(r.code, 0);
  for (const s of ["adapter", "cct_7_3x1_32", "3,760,139", "cct_14_7x2_384"]) {
    if (!r.out.includes(s)) throw new Error(`info lacks ${s}`);
  }
});
