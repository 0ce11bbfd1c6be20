import {
  halfToFloat,
  parseSafetensors,
  readSafetensorsFile,
  serializeSafetensors,
  writeSafetensorsFile,
} from "../../lib/io/safetensors.ts";
import { writeFileAtomic } from "../../lib/io/atomic.ts";
import { assertEquals, assertThrows, rng } from "../support/check.ts";

const FIXTURES = new URL("../../../shared/fixtures/", import.meta.url);
const SOURCE = "test.safetensors";
const encoder = new TextEncoder();

/** A safetensors file from a header (object or raw JSON text) and data bytes; the length field may lie. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), lengthField?: number): Uint8Array {
  const json = encoder.encode(typeof header === "string" ? header : JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(lengthField ?? json.length), true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

/** Asserts parsing fails with `errorClass`, a message naming the file and containing `includes`. */
function expectParseError(
  bytes: Uint8Array,
  errorClass: new (...args: never[]) => Error,
  includes: string,
): void {
  const error = assertThrows(() => parseSafetensors(bytes, SOURCE), errorClass, includes);
  if (!error.message.startsWith(SOURCE)) throw new Error(`message does not name the file: ${error.message}`);
}

const f32 = (n: number) => ({ dtype: "F32", shape: [n], data_offsets: [0, 4 * n] });

Deno.test("parseSafetensors reads every shared fixture with the expected tensor counts and dtypes", async () => {
  const counts: Record<string, number> = {};
  for await (const entry of Deno.readDir(FIXTURES)) {
    if (!entry.name.endsWith(".safetensors")) continue;
    const { tensors } = await readSafetensorsFile(new URL(entry.name, FIXTURES));
    counts[entry.name] = tensors.size;
    for (const [name, { shape, data }] of tensors) {
      if (shape.reduce((n, d) => n * d, 1) !== data.length) {
        throw new Error(`${entry.name}: ${name} has a bad size`);
      }
    }
  }
  assertEquals(Object.keys(counts).length >= 8, true);
  assertEquals(counts["cct_2_3x2_32.weights.safetensors"], 31);
  assertEquals(counts["cct_2_3x2_32.train.weights.safetensors"], 31);
  const weights = await readSafetensorsFile(new URL("cct_2_3x2_32.weights.safetensors", FIXTURES));
  assertEquals(weights.tensors.get("classifier.fc.weight")!.shape, [10, 128]);
  assertEquals(weights.metadata.model, "cct_2_3x2_32");
  const train = await readSafetensorsFile(new URL("cct_2_3x2_32.train.safetensors", FIXTURES));
  const labels = train.tensors.get("labels")!;
  assertEquals([labels.dtype, labels.shape, labels.data instanceof Int32Array], ["I32", [8], true]);
  for (const name of ["cvt_2_4_32", "vit_2_4_32"]) {
    const io = await readSafetensorsFile(new URL(`${name}.io.safetensors`, FIXTURES));
    assertEquals(io.tensors.get("input")!.shape, [4, 3, 32, 32]);
  }
});

/** Bit-for-bit equality of two typed arrays (NaN payloads and -0 included), fast on large arrays. */
function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength),
    y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

Deno.test("re-serialising a fixture written by the Python tooling keeps every tensor bit for bit and the metadata", async () => {
  const { tensors, metadata } = await readSafetensorsFile(
    new URL("cct_2_3x2_32.weights.safetensors", FIXTURES),
  );
  const again = parseSafetensors(serializeSafetensors(tensors, metadata), "again");
  assertEquals(again.metadata, metadata);
  assertEquals([...again.tensors.keys()], [...tensors.keys()].sort());
  for (const [name, tensor] of tensors) {
    const copy = again.tensors.get(name)!;
    assertEquals(copy.shape, tensor.shape, name);
    if (!sameBits(copy.data, tensor.data)) throw new Error(`${name}: data changed in the round trip`);
  }
});

Deno.test("serializeSafetensors then parseSafetensors round-trips F32 and I32 tensors of awkward shapes", () => {
  const random = rng(7);
  const floats = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1);
  const input = new Map([
    ["z.last", { shape: [3, 1, 5], data: floats(15) }],
    ["a.first", { shape: [1], data: floats(1) }],
    ["scalar", { shape: [], data: new Float32Array([Math.PI]) }],
    ["empty", { shape: [0, 4], data: new Float32Array(0) }],
    ["labels", { shape: [7], data: Int32Array.from([0, -1, 2 ** 31 - 1, -(2 ** 31), 5, 6, 9]) }],
    ["odd", { shape: [3], data: new Float32Array([NaN, -0, Infinity]) }],
    ["ünïcode", { shape: [2], data: floats(2) }],
  ]);
  const bytes = serializeSafetensors(input, { step: "12", note: "ok" });
  const { tensors, metadata } = parseSafetensors(bytes, SOURCE);
  assertEquals(metadata, { step: "12", note: "ok" });
  assertEquals([...tensors.keys()], [...input.keys()].sort());
  for (const [name, { shape, data }] of input) {
    const got = tensors.get(name)!;
    assertEquals(got.shape, shape, name);
    assertEquals(got.dtype, data instanceof Int32Array ? "I32" : "F32", name);
    if (!sameBits(got.data, data)) throw new Error(`${name}: data changed in the round trip`);
  }
});

Deno.test("serializeSafetensors pads the header with spaces to a multiple of 8 and orders tensors by name", () => {
  const bytes = serializeSafetensors({
    b: { shape: [1], data: new Float32Array([2]) },
    a: { shape: [1], data: new Float32Array([1]) },
  });
  const length = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assertEquals(length % 8, 0);
  const header = new TextDecoder().decode(bytes.subarray(8, 8 + length));
  assertEquals(
    header.trimEnd(),
    '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
  );
  assertEquals(/^[^ ]* *$/.test(header), true);
  assertEquals(bytes.length, 8 + length + 8);
});

Deno.test("serializeSafetensors rejects a shape that disagrees with the data, a reserved name and non-string metadata", () => {
  assertThrows(
    () => serializeSafetensors({ w: { shape: [2, 2], data: new Float32Array(3) } }),
    TypeError,
    '"w"',
  );
  assertThrows(
    () => serializeSafetensors({ __metadata__: { shape: [1], data: new Float32Array(1) } }),
    TypeError,
  );
  assertThrows(
    () => serializeSafetensors({}, { step: 3 as unknown as string }),
    TypeError,
    "step",
  );
});

Deno.test("parseSafetensors widens F16, BF16 and F64 and narrows I64 exactly", () => {
  const half = new Uint16Array([0x3c00, 0xc000, 0x0001, 0x7c00, 0x8000, 0x3555]);
  const bf16 = new Uint16Array([0x3f80, 0xc049]);
  const f64 = new Float64Array([0.1, -1e-40]);
  const i64 = new BigInt64Array([-1n, 2147483647n, -2147483648n]);
  const parts = [half, bf16, f64, i64].map((a) => new Uint8Array(a.buffer));
  let at = 0;
  const offsets = parts.map((p) => [at, at += p.length]);
  const header = {
    h: { dtype: "F16", shape: [2, 3], data_offsets: offsets[0] },
    b: { dtype: "BF16", shape: [2], data_offsets: offsets[1] },
    d: { dtype: "F64", shape: [2], data_offsets: offsets[2] },
    l: { dtype: "I64", shape: [3], data_offsets: offsets[3] },
  };
  const data = new Uint8Array(at);
  parts.forEach((p, i) => data.set(p, offsets[i][0]));
  const { tensors } = parseSafetensors(rawFile(header, data), SOURCE);
  assertEquals([...tensors.get("h")!.data], [1, -2, 2 ** -24, Infinity, -0, 0.333251953125]);
  assertEquals(Object.is(tensors.get("h")!.data[4], -0), true);
  assertEquals([...tensors.get("b")!.data], [1, -3.140625]);
  assertEquals([...tensors.get("d")!.data], [Math.fround(0.1), Math.fround(-1e-40)]);
  assertEquals(tensors.get("l")!.data, Int32Array.from([-1, 2147483647, -2147483648]));
  assertEquals(halfToFloat(0x3555), 0.333251953125);
  assertEquals(Number.isNaN(halfToFloat(0x7e00)), true);
});

Deno.test("parseSafetensors refuses a file too short to hold the header length", () => {
  expectParseError(new Uint8Array(5), SyntaxError, "too short");
});

Deno.test("parseSafetensors refuses a header length beyond the end of the file", () => {
  expectParseError(rawFile({ w: f32(1) }, new Uint8Array(4), 4096), RangeError, "beyond the file");
  expectParseError(rawFile({}, new Uint8Array(0), 2 ** 60), RangeError, "beyond the file");
});

Deno.test("parseSafetensors refuses invalid JSON, invalid UTF-8 and a header that is not an object", () => {
  expectParseError(rawFile('{"w": {"dtype": "F32",'), SyntaxError, "not valid UTF-8 JSON");
  const badUtf8 = rawFile('{"w":1}');
  badUtf8[10] = 0xff;
  expectParseError(badUtf8, SyntaxError, "not valid UTF-8 JSON");
  expectParseError(rawFile("[1, 2]"), SyntaxError, "must be a JSON object");
  expectParseError(rawFile("null"), SyntaxError, "must be a JSON object");
});

Deno.test("parseSafetensors refuses non-string metadata", () => {
  expectParseError(rawFile({ __metadata__: { epoch: 3 } }), TypeError, '"epoch" must be a string');
  expectParseError(rawFile({ __metadata__: ["a"] }), TypeError, "__metadata__");
});

Deno.test("parseSafetensors refuses unknown and unsupported dtypes and malformed shapes", () => {
  const data = new Uint8Array(4);
  for (const inherited of ["toString", "constructor", "__proto__"]) {
    expectParseError(
      rawFile({ w: { dtype: inherited, shape: [1], data_offsets: [0, 4] } }, data),
      TypeError,
      "unknown dtype",
    );
  }
  expectParseError(
    rawFile({ w: { dtype: "Q7", shape: [1], data_offsets: [0, 4] } }, data),
    TypeError,
    "unknown dtype",
  );
  expectParseError(
    rawFile({ w: { dtype: "U8", shape: [4], data_offsets: [0, 4] } }, data),
    TypeError,
    "not supported",
  );
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: [-1], data_offsets: [0, 4] } }, data),
    TypeError,
    "shape",
  );
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: [0.5, 2], data_offsets: [0, 4] } }, data),
    TypeError,
    "shape",
  );
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: "1", data_offsets: [0, 4] } }, data),
    TypeError,
    "shape",
  );
});

Deno.test("parseSafetensors refuses a byte size that disagrees with shape × dtype size", () => {
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, new Uint8Array(8)),
    TypeError,
    "needs 12 B",
  );
});

Deno.test("parseSafetensors refuses offsets beyond the data, overlapping, leaving gaps or trailing bytes", () => {
  expectParseError(rawFile({ w: f32(2) }, new Uint8Array(4)), RangeError, "out of range");
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: [1], data_offsets: [4, 0] } }, new Uint8Array(4)),
    RangeError,
    "out of range",
  );
  expectParseError(
    rawFile({ w: { dtype: "F32", shape: [1], data_offsets: [0] } }, new Uint8Array(4)),
    RangeError,
    "data_offsets",
  );
  expectParseError(
    rawFile({ a: f32(2), b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12)),
    RangeError,
    "overlap",
  );
  expectParseError(
    rawFile({ a: f32(1), b: { dtype: "F32", shape: [1], data_offsets: [8, 12] } }, new Uint8Array(12)),
    RangeError,
    "belong to no tensor",
  );
  expectParseError(rawFile({ a: f32(1) }, new Uint8Array(8)), RangeError, "cover 4 B");
});

Deno.test("parseSafetensors refuses duplicate tensor names that JSON.parse would silently merge", () => {
  const header =
    '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  expectParseError(rawFile(header, new Uint8Array(4)), TypeError, 'duplicate tensor name "w"');
  // Equal keys in nested objects or equal strings among values are not duplicates.
  const fine = '{"__metadata__":{"w":"w"},"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}';
  assertEquals(parseSafetensors(rawFile(fine, new Uint8Array(4)), SOURCE).metadata, { w: "w" });
});

Deno.test("parseSafetensors refuses an I64 value beyond int32 naming the tensor", () => {
  const data = new Uint8Array(new BigInt64Array([1n, 2n ** 31n]).buffer);
  expectParseError(
    rawFile({ labels: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, data),
    RangeError,
    '"labels": int64 element 1 (2147483648) does not fit',
  );
});

Deno.test("parseSafetensors on random byte flips and truncations throws only its documented errors", () => {
  const random = rng(2024);
  const original = serializeSafetensors({
    a: { shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) },
    b: { shape: [2], data: Int32Array.from([7, -8]) },
    c: { shape: [], data: new Float32Array([0.5]) },
  }, { epoch: "1" });
  let parsed = 0, refused = 0;
  for (let trial = 0; trial < 3000; trial++) {
    let bytes = original.slice();
    const mode = trial % 3;
    if (mode === 0 || mode === 2) {
      const flips = 1 + Math.floor(random() * 4);
      for (let f = 0; f < flips; f++) {
        // Bias half the flips into the length field and header, where parsing decisions are made.
        const limit = random() < 0.5 ? 8 + 100 : bytes.length;
        bytes[Math.floor(random() * limit)] ^= 1 << Math.floor(random() * 8);
      }
    }
    if (mode >= 1) bytes = bytes.subarray(0, Math.floor(random() * bytes.length));
    try {
      parseSafetensors(bytes, SOURCE);
      parsed++;
    } catch (error) {
      const documented = error instanceof SyntaxError || error instanceof RangeError ||
        error instanceof TypeError;
      if (!documented || !error.message.startsWith(SOURCE) || error.cause !== undefined) {
        throw new Error(`trial ${trial}: undocumented ${error}`);
      }
      refused++;
    }
  }
  assertEquals(parsed + refused, 3000);
  if (refused < 1500) throw new Error(`only ${refused} of 3000 corruptions were refused`);
});

Deno.test({
  name: "writeFileAtomic replaces a file completely and leaves no temporary file behind",
  fn: async () => {
    const dir = await Deno.makeTempDir({ dir: "/tmp", prefix: "io_test_" });
    try {
      const path = `${dir}/weights.safetensors`;
      await writeSafetensorsFile(path, { w: { shape: [2], data: new Float32Array([1, 2]) } });
      await writeSafetensorsFile(path, { w: { shape: [3], data: new Float32Array([3, 4, 5]) } }, { v: "2" });
      const { tensors, metadata } = await readSafetensorsFile(path);
      assertEquals([...tensors.get("w")!.data], [3, 4, 5]);
      assertEquals(metadata, { v: "2" });
      const names = [];
      for await (const entry of Deno.readDir(dir)) names.push(entry.name);
      assertEquals(names, ["weights.safetensors"]);
      // A failing write (the target is a directory) leaves the old content and no temporary file.
      await Deno.mkdir(`${dir}/sub`);
      let failed = false;
      await writeFileAtomic(`${dir}/sub`, new Uint8Array([1])).catch(() => (failed = true));
      assertEquals(failed, true);
      const after = [];
      for await (const entry of Deno.readDir(dir)) after.push(entry.name);
      assertEquals(after.sort(), ["sub", "weights.safetensors"]);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "writeFileAtomic fails cleanly when the folder does not exist",
  fn: async () => {
    let error: unknown;
    await writeFileAtomic("/tmp/no-such-folder-io-test/x.bin", new Uint8Array(1)).catch((e) => (error = e));
    assertEquals(error instanceof Deno.errors.NotFound, true);
  },
});

Deno.test("readSafetensorsFile names the path in its errors", async () => {
  const path = new URL("cct_2_3x2_32.pth", FIXTURES);
  const error = await readSafetensorsFile(path).catch((e) => e);
  assertEquals(error instanceof RangeError || error instanceof SyntaxError, true);
  assertEquals(String(error.message).startsWith(String(path)), true);
});
