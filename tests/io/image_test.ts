import assert from "node:assert/strict";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import jpeg from "npm:jpeg-js@0.4.4";
import { deflateSync, inflateSync } from "node:zlib";
import {
  convertChannels,
  type DecodedImage,
  decodeImage,
  detectImageFormat,
  resizeBilinear,
  toModelInput,
  toUint8CHW,
} from "../../lib/io/image.ts";
import { assertClose, rng } from "../support/check.ts";

/** `n` seeded random bytes. */
function randomBytes(n: number, seed: number): Uint8Array {
  const u = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(u() * 256));
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  for (let k = 0; k < 8; k++) n = n & 1 ? 0xedb88320 ^ (n >>> 1) : n >>> 1;
  return n;
});

/** One PNG chunk: length, type, data and the CRC-32 of type and data. */
function pngChunk(type: string, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(12 + data.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, data.length);
  out.set(new TextEncoder().encode(type), 4);
  out.set(data, 8);
  let crc = ~0;
  for (const b of out.subarray(4, 8 + data.length)) crc = CRC_TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
  view.setUint32(8 + data.length, ~crc >>> 0);
  return out;
}

/**
 * A PNG made by hand: the header, `before` (PLTE and the like), one IDAT holding `zlib` (by default the
 * deflated `rows`, already filtered: a filter byte then the packed samples of each row) and IEND.
 */
function handmadePng(
  { width, height, depth = 8, colourType, interlace = 0, rows = new Uint8Array(), zlib, before = [] }: {
    width: number;
    height: number;
    depth?: number;
    colourType: number;
    interlace?: number;
    rows?: Uint8Array;
    zlib?: Uint8Array;
    before?: Uint8Array[];
  },
): Uint8Array {
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, width);
  new DataView(ihdr.buffer).setUint32(4, height);
  ihdr.set([depth, colourType, 0, 0, interlace], 8);
  const parts = [
    Uint8Array.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    ...before,
    pngChunk("IDAT", zlib ?? deflateSync(rows)),
    pngChunk("IEND", new Uint8Array()),
  ];
  const out = new Uint8Array(parts.reduce((sum, part) => sum + part.length, 0));
  parts.reduce((offset, part) => (out.set(part, offset), offset + part.length), 0);
  return out;
}

/** The payload of a PNG's first `type` chunk, and where it starts. */
function findChunk(png: Uint8Array, type: string): { at: number; data: Uint8Array } {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  for (let at = 8; at < png.length;) {
    const length = view.getUint32(at);
    if (String.fromCharCode(...png.subarray(at + 4, at + 8)) === type) {
      return { at: at + 8, data: png.subarray(at + 8, at + 8 + length) };
    }
    at += 12 + length;
  }
  throw new Error(`no ${type} chunk`);
}

/** `png` with its IDAT's inflated rows replaced by `edit(rows)`, re-deflated under a correct CRC. */
function withRows(png: Uint8Array, edit: (rows: Uint8Array) => Uint8Array): Uint8Array {
  const { at, data } = findChunk(png, "IDAT");
  const idat = pngChunk("IDAT", deflateSync(edit(inflateSync(data))));
  const out = new Uint8Array(at - 8 + idat.length + png.length - (at + data.length + 4));
  out.set(png.subarray(0, at - 8));
  out.set(idat, at - 8);
  out.set(png.subarray(at + data.length + 4), at - 8 + idat.length);
  return out;
}

/** The float64 bilinear reference (half-pixel centres, edge clamp) of one channel, plain loops. */
function bilinearReference(src: number[][], outH: number, outW: number): number[][] {
  const inH = src.length, inW = src[0].length;
  const coord = (o: number, inSize: number, outSize: number) => {
    const s = Math.min(Math.max((o + 0.5) * (inSize / outSize) - 0.5, 0), inSize - 1);
    const lo = Math.floor(s);
    return [lo, Math.min(lo + 1, inSize - 1), s - lo];
  };
  const out: number[][] = [];
  for (let y = 0; y < outH; y++) {
    const [y0, y1, ty] = coord(y, inH, outH);
    out.push([]);
    for (let x = 0; x < outW; x++) {
      const [x0, x1, tx] = coord(x, inW, outW);
      const top = src[y0][x0] * (1 - tx) + src[y0][x1] * tx;
      const bottom = src[y1][x0] * (1 - tx) + src[y1][x1] * tx;
      out[y].push(top * (1 - ty) + bottom * ty);
    }
  }
  return out;
}

for (const channels of [1, 2, 3, 4]) {
  Deno.test(`decodeImage reads back an 8-bit PNG with ${channels} channel(s) exactly`, () => {
    const width = 5, height = 3;
    const data = randomBytes(width * height * channels, channels);
    const png = encodePng({ width, height, channels, data, depth: 8 });
    assert.equal(detectImageFormat(png), "png");
    const image = decodeImage(png, "tiny.png");
    assert.deepEqual({ ...image, data: [...image.data] }, { width, height, channels, data: [...data] });
  });
}

Deno.test("decodeImage scales a 16-bit PNG down to 8 bits by rounding", () => {
  const samples = Uint16Array.from([0, 257, 65535, 32896, 1000, 40000]);
  const png = encodePng({ width: 3, height: 2, channels: 1, depth: 16, data: samples });
  const image = decodeImage(png, "deep.png");
  assert.deepEqual([...image.data], [...samples].map((v) => Math.round(v / 257)));
});

Deno.test("decodeImage expands a 1-bit gray PNG to 0 and 255, rows starting on byte boundaries", () => {
  // 10 pixels per row: two bytes per row, the last six bits padding.
  const rows = [[1, 0, 1, 1, 0, 0, 0, 1, 1, 0], [0, 1, 0, 0, 1, 1, 1, 0, 0, 1]];
  const packed = new Uint8Array(4);
  rows.forEach((row, y) => row.forEach((bit, x) => (packed[y * 2 + (x >> 3)] |= bit << (7 - (x & 7)))));
  const png = encodePng({ width: 10, height: 2, channels: 1, depth: 1, data: packed });
  const image = decodeImage(png, "bits.png");
  assert.deepEqual([...image.data], rows.flat().map((b) => b * 255));
});

Deno.test("decodeImage expands a palette PNG to RGB", () => {
  const palette = [[255, 0, 0], [0, 128, 255], [10, 20, 30]];
  const indices = Uint8Array.from([0, 1, 2, 2, 1, 0]);
  const png = encodePng({ width: 3, height: 2, channels: 1, depth: 8, data: indices, palette });
  const image = decodeImage(png, "palette.png");
  assert.equal(image.channels, 3);
  assert.deepEqual([...image.data], [...indices].flatMap((i) => palette[i]));
});

Deno.test("decodeImage decodes a JPEG close to the encoded pixels", () => {
  // A smooth gradient, quality 95: JPEG is lossy, but a smooth image comes back within a few levels.
  const width = 16, height = 8;
  const rgba = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      rgba.set([x * 15, y * 30, 128, 255], (y * width + x) * 4);
    }
  }
  const encoded = jpeg.encode({ width, height, data: rgba }, 95).data;
  const bytes = new Uint8Array(encoded.buffer, encoded.byteOffset, encoded.byteLength);
  assert.equal(detectImageFormat(bytes), "jpeg");
  const image = decodeImage(bytes, "gradient.jpg");
  assert.equal(image.width, width);
  assert.equal(image.height, height);
  assert.equal(image.channels, 3);
  const expected = Array.from(
    { length: width * height * 3 },
    (_, i) => rgba[Math.floor(i / 3) * 4 + (i % 3)],
  );
  assertClose("jpeg pixels", image.data, expected, { atol: 8, rtol: 0 });
});

Deno.test("decodeImage rejects non-images and damaged images with a SyntaxError naming the file", () => {
  assert.throws(() => decodeImage(new TextEncoder().encode("hello, world"), "notes/readme.png"), {
    name: "SyntaxError",
    message: /^notes\/readme\.png: not a PNG or JPEG image \(.*found 68 65 6c 6c\)/,
  });
  assert.throws(() => decodeImage(new Uint8Array(), "empty.jpg"), {
    name: "SyntaxError",
    message: /^empty\.jpg: not a PNG or JPEG image .*an empty file/,
  });
  const png = encodePng({ width: 4, height: 4, channels: 3, data: randomBytes(48, 1) });
  assert.throws(() => decodeImage(png.subarray(0, 30), "cut.png"), {
    name: "SyntaxError",
    message: /^cut\.png: damaged PNG image/,
  });
  const jpg = jpeg.encode({ width: 8, height: 8, data: new Uint8Array(256).fill(90) }, 80).data;
  assert.throws(() => decodeImage(new Uint8Array(jpg.subarray(0, 40)), "cut.jpg"), {
    name: "SyntaxError",
    message: /^cut\.jpg: damaged JPEG image/,
  });
});

Deno.test("decodeImage checks the PNG chunk CRCs", () => {
  const png = encodePng({ width: 6, height: 4, channels: 3, data: randomBytes(72, 3) });
  // A flipped bit in a stored pixel byte of the deflate stream: unchecked, fast-png decodes other pixels.
  const { at, data } = findChunk(png, "IDAT");
  const flipped = png.slice();
  flipped[at + data.length - 10] ^= 0x01;
  assert.throws(() => decodeImage(flipped, "bits/flipped.png"), {
    name: "SyntaxError",
    message: /^bits\/flipped\.png: damaged PNG image: CRC mismatch for chunk IDAT/,
  });
  const header = png.slice();
  header[findChunk(png, "IHDR").at + 13] ^= 0x80; // the IHDR CRC itself
  assert.throws(() => decodeImage(header, "header.png"), {
    name: "SyntaxError",
    message: /^header\.png: damaged PNG image: CRC mismatch for chunk IHDR/,
  });
});

Deno.test("decodeImage checks the zlib Adler-32 of the PNG pixel data", () => {
  const rows = Uint8Array.from([0, 10, 20, 30, 0, 40, 50, 60]);
  const zlib = deflateSync(rows);
  zlib[zlib.length - 1] ^= 0x01; // the checksum, under a correct chunk CRC
  assert.throws(() => decodeImage(handmadePng({ width: 3, height: 2, colourType: 0, zlib }), "sum.png"), {
    name: "SyntaxError",
    message: /^sum\.png: damaged PNG image: the compressed pixel data \(IDAT\) is damaged: .*check/,
  });
});

Deno.test("decodeImage rejects PNG pixel data short or long for the size in the header", () => {
  const gray = (rows: number[]) =>
    handmadePng({ width: 3, height: 2, colourType: 0, rows: Uint8Array.from(rows) });
  assert.deepEqual([...decodeImage(gray([0, 1, 2, 3, 0, 4, 5, 6]), "exact.png").data], [1, 2, 3, 4, 5, 6]);
  assert.throws(() => decodeImage(gray([0, 1, 2, 3, 0, 4, 5]), "short.png"), {
    name: "SyntaxError",
    message: /^short\.png: damaged PNG image: the pixel data is short: 7 bytes, a 3×2 image needs 8/,
  });
  assert.throws(() => decodeImage(gray([0, 1, 2, 3, 0, 4, 5, 6, 7]), "long.png"), {
    name: "SyntaxError",
    message: /^long\.png: damaged PNG image: the pixel data is long/,
  });
  // 1 bit per pixel: 10 pixels need two bytes per row after the filter byte.
  const bits = handmadePng({
    width: 10,
    height: 1,
    depth: 1,
    colourType: 0,
    rows: Uint8Array.from([0, 0xff]),
  });
  assert.throws(() => decodeImage(bits, "bits.png"), { message: /short: 2 bytes, a 10×1 image needs 3/ });
  // Interlaced (Adam7): the rows of every pass count; a valid image still decodes exactly.
  const data = randomBytes(7 * 5 * 3, 9);
  const interlaced = encodePng({ width: 7, height: 5, channels: 3, data }, { interlace: "Adam7" });
  assert.deepEqual([...decodeImage(interlaced, "adam7.png").data], [...data]);
  assert.throws(() => decodeImage(withRows(interlaced, (rows) => rows.subarray(0, -1)), "adam7-short.png"), {
    name: "SyntaxError",
    message: /^adam7-short\.png: damaged PNG image: the pixel data is short/,
  });
});

Deno.test("decodeImage rejects a PNG with no pixels, naming the file", () => {
  for (const [width, height] of [[0, 0], [5, 0], [0, 3]]) {
    const png = handmadePng({ width, height, colourType: 0, rows: new Uint8Array(height) });
    assert.throws(() => decodeImage(png, "empty.png"), {
      name: "SyntaxError",
      message: new RegExp(`^empty\\.png: damaged PNG image: the image is ${width}×${height} pixels`),
    });
  }
});

Deno.test("decodeImage rejects a palette PNG without PLTE and ignores an RGB PNG's suggested PLTE", () => {
  const indices = handmadePng({ width: 2, height: 1, colourType: 3, rows: Uint8Array.from([0, 0, 1]) });
  assert.throws(() => decodeImage(indices, "indices.png"), {
    name: "SyntaxError",
    message: /^indices\.png: damaged PNG image: palette image without a PLTE chunk/,
  });
  // A PLTE in a truecolour image is only a suggestion for displays with few colours.
  const rgb = handmadePng({
    width: 2,
    height: 1,
    colourType: 2,
    rows: Uint8Array.from([0, 200, 100, 50, 1, 2, 3]),
    before: [pngChunk("PLTE", Uint8Array.from([9, 9, 9]))],
  });
  assert.deepEqual(decodeImage(rgb, "rgb.png"), {
    width: 2,
    height: 1,
    channels: 3,
    data: Uint8Array.from([200, 100, 50, 1, 2, 3]),
  });
});

Deno.test("convertChannels turns gray into RGB, RGB into ITU-R 601 luma and drops alpha", () => {
  const gray: DecodedImage = { width: 2, height: 1, channels: 1, data: Uint8Array.from([10, 200]) };
  assert.deepEqual([...convertChannels(gray, 3)], [10, 10, 10, 200, 200, 200]);
  const grayAlpha: DecodedImage = {
    width: 2,
    height: 1,
    channels: 2,
    data: Uint8Array.from([10, 0, 200, 99]),
  };
  assert.deepEqual([...convertChannels(grayAlpha, 1)], [10, 200]);
  const rgba: DecodedImage = {
    width: 1,
    height: 2,
    channels: 4,
    data: Uint8Array.from([1, 2, 3, 0, 250, 100, 50, 7]),
  };
  assert.deepEqual([...convertChannels(rgba, 3)], [1, 2, 3, 250, 100, 50]);
  assertClose("luma", convertChannels(rgba, 1), [
    0.299 * 1 + 0.587 * 2 + 0.114 * 3,
    0.299 * 250 + 0.587 * 100 + 0.114 * 50,
  ], { atol: 1e-4, rtol: 1e-6 });
  assert.throws(() => convertChannels(gray, 2), { name: "RangeError" });
  assert.throws(() => convertChannels({ ...gray, data: new Uint8Array(3) }, 1), { name: "TypeError" });
});

for (
  const [inH, inW, outH, outW] of [[2, 2, 4, 4], [5, 7, 3, 2], [3, 3, 3, 3], [1, 4, 3, 9], [6, 1, 1, 1], [
    7,
    5,
    32,
    32,
  ]]
) {
  Deno.test(`resizeBilinear matches the float64 reference from ${inH}×${inW} to ${outH}×${outW}`, () => {
    const channels = 2;
    const hwc = Float32Array.from(randomBytes(inH * inW * channels, inH * 100 + outW));
    const out = resizeBilinear(hwc, inH, inW, channels, outH, outW);
    for (let c = 0; c < channels; c++) {
      const src = Array.from(
        { length: inH },
        (_, y) => Array.from({ length: inW }, (_, x) => hwc[(y * inW + x) * channels + c]),
      );
      const expected = bilinearReference(src, outH, outW).flat();
      assertClose(`channel ${c}`, out.subarray(c * outH * outW, (c + 1) * outH * outW), expected, {
        atol: 1e-3,
        rtol: 1e-6,
      });
    }
  });
}

Deno.test("resizeBilinear reproduces PyTorch's align_corners=False values on a 2×2 → 4×4 upscale", () => {
  // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.], [2., 3.]]]]), size=4, mode="bilinear")
  const out = resizeBilinear(Float32Array.from([0, 1, 2, 3]), 2, 2, 1, 4, 4);
  assertClose(
    "upscale",
    out,
    [
      [0, 0.25, 0.75, 1],
      [0.5, 0.75, 1.25, 1.5],
      [1.5, 1.75, 2.25, 2.5],
      [2, 2.25, 2.75, 3],
    ].flat(),
    { atol: 1e-6, rtol: 0 },
  );
});

Deno.test("resizeBilinear rejects an empty input", () => {
  for (const [inH, inW] of [[0, 0], [0, 4], [3, 0]]) {
    assert.throws(() => resizeBilinear(new Float32Array(0), inH, inW, 1, 2, 2), {
      name: "RangeError",
      message: new RegExp(`input size must be positive integers, got ${inH}×${inW}`),
    });
  }
});

Deno.test("toModelInput converts, resizes and normalises to float32 CHW", () => {
  const width = 6, height = 4;
  const data = randomBytes(width * height * 4, 77);
  const image = decodeImage(encodePng({ width, height, channels: 4, data }), "rgba.png");
  const mean = [0.4914, 0.4822, 0.4465], std = [0.247, 0.2435, 0.2616];
  const input = toModelInput(image, { channels: 3, height: 5, width: 3, mean, std });
  assert.equal(input.length, 3 * 5 * 3);
  for (let c = 0; c < 3; c++) {
    const src = Array.from(
      { length: height },
      (_, y) => Array.from({ length: width }, (_, x) => data[(y * width + x) * 4 + c]),
    );
    const expected = bilinearReference(src, 5, 3).flat().map((v) => (v / 255 - mean[c]) / std[c]);
    assertClose(`channel ${c}`, input.subarray(c * 15, (c + 1) * 15), expected, { atol: 1e-5, rtol: 1e-5 });
  }
  // Same size and gray → 1 channel: a plain normalisation of the pixels.
  const gray = { width: 3, height: 2, channels: 1, data: Uint8Array.from([0, 51, 102, 153, 204, 255]) };
  assertClose(
    "identity",
    toModelInput(gray, { channels: 1, height: 2, width: 3, mean: [0.5], std: [0.25] }),
    [0, 51, 102, 153, 204, 255].map((v) => (v / 255 - 0.5) / 0.25),
    { atol: 1e-6, rtol: 1e-6 },
  );
  assert.throws(() => toModelInput(gray, { channels: 3, height: 2, width: 3, mean: [0.5], std: [0.25] }), {
    name: "TypeError",
    message: /expected 3 means and stds/,
  });
});

Deno.test("toUint8CHW rounds the resized pixels into bytes in CHW order", () => {
  const image: DecodedImage = {
    width: 2,
    height: 1,
    channels: 3,
    data: Uint8Array.from([10, 20, 30, 11, 21, 31]),
  };
  assert.deepEqual([...toUint8CHW(image, { channels: 3, height: 1, width: 2 })], [10, 11, 20, 21, 30, 31]);
  // 2 → 1 column averages the two pixels: (10 + 11)/2 = 10.5 rounds to 11.
  assert.deepEqual([...toUint8CHW(image, { channels: 3, height: 1, width: 1 })], [11, 21, 31]);
});
