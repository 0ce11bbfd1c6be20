import assert from "node:assert/strict";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import jpeg from "npm:jpeg-js@0.4.4";
import { classCounts, memoryFiles } from "../../lib/data/dataset.ts";
import { loadImageFolder } from "../../lib/data/folder.ts";
import { assertClose } from "../support/check.ts";

/** A solid-colour PNG of w×h (RGB). */
function solidPng(w: number, h: number, rgb: number[]): Uint8Array {
  return encodePng({
    width: w,
    height: h,
    channels: 3,
    data: Uint8Array.from({ length: w * h * 3 }, (_, i) => rgb[i % 3]),
  });
}

/** A solid-colour JPEG of w×h. */
function solidJpeg(w: number, h: number, rgb: number[]): Uint8Array {
  const data = Uint8Array.from({ length: w * h * 4 }, (_, i) => (i % 4 === 3 ? 255 : rgb[i % 4]));
  const out = jpeg.encode({ width: w, height: h, data }, 95).data;
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

const RED = [200, 10, 10], BLUE = [10, 10, 200], GREEN = [10, 200, 10];

Deno.test("loadImageFolder reads train/ and val/ trees, resizing PNG and JPEG files of any size", async () => {
  const files = memoryFiles({
    "set/train/red/a.png": solidPng(5, 7, RED),
    "set/train/red/b.PNG": solidPng(40, 30, RED),
    "set/train/blue/a.jpg": solidJpeg(16, 16, BLUE),
    "set/train/blue/notes.txt": new TextEncoder().encode("not an image, ignored"),
    "set/val/blue/z.jpeg": solidJpeg(9, 9, BLUE),
  });
  const data = await loadImageFolder("set", { height: 8, width: 6, files });
  assert.deepEqual([data.name, data.channels, data.height, data.width], ["set", 3, 8, 6]);
  assert.deepEqual(data.classes, ["blue", "red"]);
  assert.deepEqual([data.train.length, [...data.train.labels]], [3, [0, 1, 1]]);
  assert.deepEqual([data.test.length, [...data.test.labels]], [1, [0]]);
  // Solid colours survive resizing exactly (PNG) or nearly (JPEG); every plane holds one value.
  const plane = 48;
  const image = (split: typeof data.train, i: number, c: number) =>
    split.images.subarray((i * 3 + c) * plane, (i * 3 + c + 1) * plane);
  for (const c of [0, 1, 2]) {
    assert.ok(image(data.train, 1, c).every((v) => v === RED[c]), `red channel ${c}`);
    assertClose(`blue channel ${c}`, image(data.train, 0, c), new Array(plane).fill(BLUE[c]), {
      atol: 4,
      rtol: 0,
    });
    assertClose(`val blue channel ${c}`, image(data.test, 0, c), new Array(plane).fill(BLUE[c]), {
      atol: 4,
      rtol: 0,
    });
  }
  // Mean and std are measured on the training split when not given.
  assertClose("mean R", [data.mean[0]], [(10 + 200 + 200) / 3 / 255], { atol: 0.01, rtol: 0 });
});

Deno.test("loadImageFolder holds out a seeded, stratified validation fraction of a flat tree", async () => {
  const tree: Record<string, Uint8Array> = {};
  const colours = { blue: BLUE, green: GREEN, red: RED };
  for (const [name, rgb] of Object.entries(colours)) {
    for (let i = 0; i < 10; i++) tree[`flat/${name}/${String(i).padStart(2, "0")}.png`] = solidPng(3, 3, rgb);
  }
  const files = memoryFiles(tree);
  const load = (seed: number) =>
    loadImageFolder("flat", {
      channels: 1,
      height: 4,
      valFraction: 0.3,
      seed,
      files,
      mean: [0.5],
      std: [0.25],
    });
  const data = await load(1);
  assert.deepEqual([data.channels, data.height, data.width, data.mean, data.std], [1, 4, 4, [0.5], [0.25]]);
  assert.deepEqual(classCounts(data.train, 3), [7, 7, 7]);
  assert.deepEqual(classCounts(data.test, 3), [3, 3, 3]);
  // Gray conversion uses luma weights: green is brighter than red, red brighter than blue.
  const first = (label: number) => data.train.images[[...data.train.labels].indexOf(label) * 16];
  assert.ok(first(1) > first(2) && first(2) > first(0), `luma order ${first(0)} ${first(1)} ${first(2)}`);
  const again = await load(1);
  assert.deepEqual(again.test.images, data.test.images);
  assert.deepEqual(again.train.labels, data.train.labels);
});

Deno.test("loadImageFolder names the file that fails to decode and rejects empty trees", async () => {
  const files = memoryFiles({
    "bad/cat/1.png": solidPng(2, 2, RED),
    "bad/cat/2.png": new TextEncoder().encode("GIF89a, not really a png"),
    "bad/dog/1.png": solidPng(2, 2, BLUE),
  });
  await assert.rejects(() => loadImageFolder("bad", { files, valFraction: 0 }), {
    name: "SyntaxError",
    message: /^bad\/cat\/2\.png: not a PNG or JPEG image/,
  });
  const empty = memoryFiles({ "none/readme.txt": new Uint8Array(1) });
  await assert.rejects(() => loadImageFolder("none", { files: empty }), {
    name: "SyntaxError",
    message: "none: no class subdirectories found",
  });
  const valOnly = memoryFiles({
    "split/train/cat/1.png": solidPng(2, 2, RED),
    "split/val/dog/1.png": solidPng(2, 2, RED),
  });
  await assert.rejects(() => loadImageFolder("split", { files: valOnly }), {
    name: "SyntaxError",
    message: /^split\/val\/dog: class "dog" has no training directory/,
  });
  await assert.rejects(() => loadImageFolder("bad", { files, channels: 2 }), { name: "RangeError" });
  await assert.rejects(() => loadImageFolder("bad", { files, concurrency: NaN }), /concurrency/);
});

Deno.test("loadImageFolder refuses a class it could not train on, a single class and an empty val/", async () => {
  const reject = (tree: Record<string, Uint8Array>, root: string, message: RegExp, valFraction = 0.1) =>
    assert.rejects(() => loadImageFolder(root, { files: memoryFiles(tree), valFraction }), {
      name: "SyntaxError",
      message,
    });
  const png = solidPng(2, 2, RED);
  await reject(
    { "z/cat/1.png": png, "z/dog/1.png": png, "z/zebra/readme.txt": png, "z/yak/notes.md": png },
    "z",
    /^z\/yak: no \.png or \.jpg images \(nor zebra\)$/,
  );
  await reject({ "one/cat/1.png": png, "one/cat/2.png": png }, "one", /^one: one class folder \(cat\)/);
  await reject(
    { "s/train/cat/1.png": png, "s/train/dog/1.png": png, "s/val/cat/readme.txt": png },
    "s",
    /^s\/val: no \.png or \.jpg images to validate on$/,
  );
  // A hold-out never takes a class's last image: with one image of "a" and 60% held out, "a" still trains.
  const data = await loadImageFolder("h", {
    files: memoryFiles({ "h/a/1.png": png, "h/b/1.png": png, "h/b/2.png": png, "h/b/3.png": png }),
    valFraction: 0.6,
  });
  assert.deepEqual([Array.from(data.train.labels), Array.from(data.test.labels)], [[0, 1], [1, 1]]);
});

Deno.test("loadImageFolder holds out from root/train/ when there is no validation directory", async () => {
  const tree: Record<string, Uint8Array> = {};
  for (let i = 0; i < 4; i++) tree[`only/train/cat/${i}.png`] = solidPng(2, 2, RED);
  for (let i = 0; i < 4; i++) tree[`only/train/dog/${i}.png`] = solidPng(2, 2, BLUE);
  const data = await loadImageFolder("only", { files: memoryFiles(tree), valFraction: 0.25 });
  assert.deepEqual([data.classes, data.train.length, data.test.length], [["cat", "dog"], 6, 2]);
});
