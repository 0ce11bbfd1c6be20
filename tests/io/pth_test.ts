import { parsePth, readPthFile, UnsafePickleError } from "../../lib/io/pth.ts";
import { readSafetensorsFile } from "../../lib/io/safetensors.ts";
import { crc32, readZipDirectory, readZipEntry } from "../../lib/io/zip.ts";
import { assertEquals, assertThrows, rng } from "../support/check.ts";

const SHARED = new URL("../../../shared/fixtures/", import.meta.url);
const LOCAL = new URL("./fixtures/", import.meta.url);
const SOURCE = "evil.pth";
const encoder = new TextEncoder();

/** Bit-for-bit equality of two typed arrays (NaN payloads and -0 included). */
function sameBits(a: ArrayBufferView, b: ArrayBufferView): boolean {
  if (a.byteLength !== b.byteLength) return false;
  const x = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  const y = new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

import {
  bytes,
  get,
  global,
  MARK,
  ORDERED_DICT,
  type Part,
  pth,
  put,
  REDUCE,
  SETITEM,
  SETITEMS,
  short,
  STOP,
  TUPLE,
  u16,
  u32,
  unicode,
} from "../support/pickle.ts";

/** Asserts parsing fails with `errorClass`, a message naming the file and containing `includes`. */
function expectPthError(
  file: Uint8Array,
  errorClass: new (...args: never[]) => Error,
  includes: string,
): Error {
  const error = assertThrows(() => parsePth(file, SOURCE), errorClass, includes);
  if (!error.message.startsWith(SOURCE)) throw new Error(`message does not name the file: ${error.message}`);
  return error;
}

/** `("storage", torch.<type>, key, "cpu", numel)` then BINPERSID. */
const storage = (type: string, key: string, numel: number) => [
  MARK,
  short("storage"),
  global("torch", type),
  short(key),
  short("cpu"),
  "J",
  u32(numel),
  TUPLE,
  "Q",
];
/** `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())` with 1-byte ints. */
const tensor = (store: Part, offset: number, size: number[], stride: number[]) => [
  global("torch._utils", "_rebuild_tensor_v2"),
  MARK,
  store,
  "K",
  offset,
  MARK,
  size.map((d) => ["K", d]),
  TUPLE,
  MARK,
  stride.map((d) => ["K", d]),
  TUPLE,
  0x89,
  ORDERED_DICT,
  TUPLE,
  REDUCE,
];
const floats = (...values: number[]) => new Uint8Array(new Float32Array(values).buffer);
/** A stride-0 view of `count` elements of the 1-element float storage `key`: `storage[0].expand(count)`. */
const expanded = (key: string, count: number) => [
  global("torch._utils", "_rebuild_tensor_v2"),
  MARK,
  storage("FloatStorage", key, 1),
  ["K", 0, "J", u32(count), 0x85, "K", 0, 0x85], // offset 0, size (count,), stride (0,)
  [0x89, ORDERED_DICT, TUPLE, REDUCE],
];
/**
 * Dicts nested `depth` deep, each holding the one inside twice, `{a: d, b: BINGET d}`, around `inner` (a
 * pickle fragment leaving a dict on the stack). Uses memo entries 0 to `depth`.
 */
function sharedChain(depth: number, inner: Part): Part {
  const parts: Part[] = [];
  for (let i = depth; i >= 1; i--) parts.push(ORDERED_DICT, short("a"));
  parts.push(inner, put(0));
  for (let i = 1; i <= depth; i++) parts.push(SETITEM, short("b"), get(i - 1), SETITEM, put(i));
  return parts;
}

// --- tests ---------------------------------------------------------------------------------------------------

Deno.test("parsePth reads the official-format checkpoint equal bit for bit to its safetensors twin", async () => {
  const weights = await readPthFile(new URL("cct_2_3x2_32.pth", SHARED));
  const { tensors } = await readSafetensorsFile(new URL("cct_2_3x2_32.weights.safetensors", SHARED));
  assertEquals(weights.size, 31);
  assertEquals([...weights.keys()].sort(), [...tensors.keys()].sort());
  for (const [name, expected] of tensors) {
    const got = weights.get(name)!;
    assertEquals([got.dtype, got.shape], ["F32", expected.shape], name);
    if (!sameBits(got.data, expected.data)) {
      throw new Error(`${name}: data differs from the safetensors twin`);
    }
  }
});

for (const file of ["mixed.pth", "mixed_deflate.pth"]) {
  Deno.test(`parsePth reads ${file} (f16, bf16, f64, int64, int32, shared and strided views) as the generator expects`, async () => {
    const weights = await readPthFile(new URL(file, LOCAL));
    const { tensors } = await readSafetensorsFile(new URL("mixed.expected.safetensors", LOCAL));
    assertEquals([...weights.keys()].sort(), [...tensors.keys()].sort());
    for (const [name, expected] of tensors) {
      const got = weights.get(name)!;
      assertEquals(got.shape, expected.shape, name);
      assertEquals(got.data.constructor, expected.data.constructor, name);
      if (!sameBits(got.data, expected.data)) {
        throw new Error(`${name}: got [${got.data}], expected [${expected.data}]`);
      }
    }
    assertEquals(
      Object.fromEntries([...weights].map(([name, t]) => [name, t.dtype])),
      {
        "conv.weight": "F32",
        grid: "F32",
        grid_transposed: "F32",
        grid_window: "F32",
        half: "F16",
        bf16: "BF16",
        double: "F64",
        labels: "I64",
        int32: "I32",
        scalar: "F32",
        empty: "F32",
        "nested.expanded": "F32",
      },
    );
  });
}

Deno.test("parsePth runs a hand-written pickle using FRAME, LONG1, BININT2, LONG_BINPUT/GET, TUPLE1-3 and SETITEMS", () => {
  const pickle = bytes(
    [0x80, 2, 0x95, new Uint8Array(8)], // PROTO 2, FRAME
    [ORDERED_DICT, MARK, short("w")],
    [global("torch._utils", "_rebuild_tensor_v2"), MARK, storage("FloatStorage", "s0", 6), "q", 7], // BINPUT 7
    [0x8a, 1, 1], // storage offset 1 as LONG1
    ["K", 1, "M", u16(2), "K", 2, 0x87], // size (1, 2, 2) as TUPLE3
    ["J", u32(6), 0x8a, 2, u16(1), "K", 2, 0x87], // stride (6, 1, 2): a transposed view
    [0x89, ORDERED_DICT, "r", u32(2000), TUPLE, REDUCE], // hooks memoised with LONG_BINPUT
    [unicode("b"), global("torch._utils", "_rebuild_parameter"), tensor(["h", 7], 0, [2], [1])], // BINGET 7
    [0x88, "j", u32(2000), 0x87, REDUCE, SETITEMS], // (tensor, True, hooks via LONG_BINGET)
    [short("extra"), "N", SETITEM, STOP], // a non-tensor value is skipped
  );
  const weights = parsePth(pth(pickle, { s0: floats(0, 1, 2, 3, 4, 5) }), SOURCE);
  assertEquals([...weights.keys()], ["w", "b"]);
  assertEquals(weights.get("w")!.shape, [1, 2, 2]);
  assertEquals([...weights.get("w")!.data], [1, 3, 2, 4]);
  assertEquals([...weights.get("b")!.data], [0, 1]);
});

Deno.test("parsePth refuses GLOBALs outside the allow-list, naming the global and its offset", () => {
  for (
    const [module, name] of [["os", "system"], ["builtins", "eval"], ["__builtin__", "getattr"], [
      "torch",
      "load",
    ]]
  ) {
    const pickle = bytes(0x80, 2, global(module, name), MARK, unicode("echo pwned"), TUPLE, REDUCE, STOP);
    const error = expectPthError(pth(pickle), UnsafePickleError, `GLOBAL ${module}.${name} at byte 2`);
    assertEquals(error instanceof SyntaxError, true);
  }
});

Deno.test("parsePth refuses opcodes outside the allow-list, naming the opcode and its offset", () => {
  const cases: [Part, string][] = [
    [[short("os"), short("system"), 0x93], "STACK_GLOBAL (0x93) at byte 14"],
    [["i", "os\nsystem\n"], "INST (0x69) at byte 2"],
    [[global("collections", "OrderedDict"), ")", 0x81], "NEWOBJ (0x81) at byte 28"],
    [["o"], "OBJ (0x6f) at byte 2"],
    [["P", "x\n"], "PERSID (0x50) at byte 2"],
    [[0x82, 1], "EXT1 (0x82) at byte 2"],
    [["0"], "POP (0x30) at byte 2"],
    [[0xff], "unknown (0xff) at byte 2"],
  ];
  for (const [body, message] of cases) {
    expectPthError(pth(bytes(0x80, 2, body, STOP)), UnsafePickleError, message);
  }
});

Deno.test("parsePth refuses REDUCE on a storage type, BUILD on anything but a dict, and a path-like storage key", () => {
  expectPthError(
    pth(bytes(0x80, 2, global("torch", "FloatStorage"), ")", REDUCE, STOP)),
    UnsafePickleError,
    "REDUCE on torch.FloatStorage",
  );
  expectPthError(pth(bytes(0x80, 2, "]", "}", "b", STOP)), UnsafePickleError, "BUILD of a list");
  expectPthError(
    pth(bytes(0x80, 2, storage("FloatStorage", "../../etc/passwd", 1), STOP)),
    UnsafePickleError,
    "persistent id",
  );
});

Deno.test("parsePth refuses a truncated pickle, a stack underflow and a memo read before write", () => {
  expectPthError(pth(bytes(0x80, 2, "X", u32(100), "abc")), SyntaxError, "truncated");
  expectPthError(pth(bytes(0x80, 2, SETITEM, STOP)), SyntaxError, "underflow");
  expectPthError(pth(bytes(0x80, 2, "h", 3, STOP)), SyntaxError, "memo entry 3");
});

Deno.test("parsePth refuses a storage too small for its view, a missing storage and an int64 beyond int32", () => {
  const one = (store: Part, size: number[], stride: number[], offset = 0) =>
    bytes(0x80, 2, ORDERED_DICT, short("w"), tensor(store, offset, size, stride), SETITEM, STOP);
  expectPthError(
    pth(one(storage("FloatStorage", "0", 4), [2, 3], [3, 1]), { "0": floats(1, 2, 3, 4) }),
    RangeError,
    "reads element 5 of a 4-element storage",
  );
  expectPthError(
    pth(one(storage("FloatStorage", "0", 4), [4], [1]), { "0": floats(1, 2, 3) }),
    RangeError,
    "storage holds 12 B",
  );
  expectPthError(pth(one(storage("FloatStorage", "9", 1), [1], [1])), SyntaxError, "a/data/9");
  const longs = new Uint8Array(new BigInt64Array([5n, -(2n ** 40n)]).buffer);
  expectPthError(
    pth(one(storage("LongStorage", "0", 2), [2], [1]), { "0": longs }),
    RangeError,
    '"w": int64 element 1',
  );
});

Deno.test("parsePth refuses the legacy format, non-ZIP bytes, a root that is not a dict and corrupt storage bytes", async () => {
  expectPthError(bytes(0x80, 2, 0x8a, 10), SyntaxError, "legacy");
  expectPthError(encoder.encode("definitely not a zip archive"), SyntaxError, "not a ZIP archive");
  expectPthError(pth(bytes(0x80, 2, "]", STOP)), TypeError, "not a dict");
  const file = await Deno.readFile(new URL("cct_2_3x2_32.pth", SHARED));
  file[file.length - 50_000] ^= 0x10; // inside the last storages
  expectPthError(file, SyntaxError, "CRC-32");
});

Deno.test("parsePth on random byte flips and truncations throws only its documented errors", async () => {
  const original = await Deno.readFile(new URL("mixed.pth", LOCAL));
  const random = rng(99);
  let parsed = 0, refused = 0;
  const trials = 2000;
  for (let trial = 0; trial < trials; trial++) {
    let file = original.slice();
    const flips = trial % 3 === 1 ? 0 : 1 + Math.floor(random() * 3);
    for (let f = 0; f < flips; f++) file[Math.floor(random() * file.length)] ^= 1 << Math.floor(random() * 8);
    if (trial % 3 !== 0) file = file.subarray(0, Math.floor(random() * file.length));
    try {
      parsePth(file, SOURCE);
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
  assertEquals(parsed + refused, trials);
  if (refused < trials / 2) throw new Error(`only ${refused} of ${trials} corruptions were refused`);
});

Deno.test("parsePth on random mutations of the pickle itself (CRC kept valid) throws only its documented errors", async () => {
  const original = await Deno.readFile(new URL("mixed.pth", LOCAL));
  const entries = readZipDirectory(original, "mixed.pth");
  const storages: Record<string, Uint8Array> = {};
  for (const [name, entry] of entries) {
    if (name.startsWith("mixed/data/")) {
      storages[name.slice("mixed/data/".length)] = readZipEntry(original, entry);
    }
  }
  const pickle = readZipEntry(original, entries.get("mixed/data.pkl")!);
  const random = rng(5);
  const counts = { parsed: 0, unsafe: 0, refused: 0 };
  const trials = 3000;
  for (let trial = 0; trial < trials; trial++) {
    let mutated = pickle.slice();
    const flips = 1 + Math.floor(random() * 3);
    for (let f = 0; f < flips; f++) {
      const at = Math.floor(random() * mutated.length);
      // Small integer arguments (sizes, strides, offsets, memo indices) are where a reader is most easily fooled.
      mutated[at] = random() < 0.5
        ? mutated[at] ^ (1 << Math.floor(random() * 8))
        : Math.floor(random() * 256);
    }
    if (trial % 4 === 3) mutated = mutated.subarray(0, Math.floor(random() * mutated.length));
    try {
      parsePth(pth(mutated, storages), SOURCE);
      counts.parsed++;
    } catch (error) {
      const documented = error instanceof SyntaxError || error instanceof RangeError ||
        error instanceof TypeError;
      if (!documented || !error.message.startsWith(SOURCE) || error.cause !== undefined) {
        throw new Error(`trial ${trial}: undocumented ${error}`);
      }
      if (error instanceof UnsafePickleError) counts.unsafe++;
      else counts.refused++;
    }
  }
  assertEquals(counts.parsed + counts.unsafe + counts.refused, trials);
  if (counts.unsafe === 0 || counts.refused === 0) {
    throw new Error(`too few refusals: ${JSON.stringify(counts)}`);
  }
});

Deno.test("parsePth refuses a stride-0 view with an absurd element count before allocating it", () => {
  const pickle = bytes(
    [0x80, 2, ORDERED_DICT, short("w"), global("torch._utils", "_rebuild_tensor_v2"), MARK],
    [
      storage("FloatStorage", "0", 1),
      "K",
      0,
      "J",
      u32(2 ** 30),
      0x85,
      "K",
      0,
      0x85,
      0x89,
      ORDERED_DICT,
      TUPLE,
    ],
    [REDUCE, SETITEM, STOP],
  );
  expectPthError(pth(pickle, { "0": floats(1) }), RangeError, "more than 268435456 elements");
});

Deno.test("parsePth refuses a dict of tensors reached by two paths, however deeply shared dicts nest", () => {
  const inner = [ORDERED_DICT, short("w"), tensor(storage("FloatStorage", "0", 1), 0, [1], [1]), SETITEM];
  const chain = (depth: number) => pth(bytes(0x80, 2, sharedChain(depth, inner), STOP), { "0": floats(1) });
  expectPthError(chain(1), SyntaxError, 'the dict of tensors at "a" is reached by two paths (again at "b")');
  // 2^depth paths to the innermost dict: walking each would take exponential time and memory.
  for (const depth of [16, 30]) {
    expectPthError(chain(depth), SyntaxError, `reached by two paths (again at "${"a.".repeat(depth - 1)}b")`);
  }
  // Deeper than 32 dicts is refused outright (names would grow with the depth), shared or not.
  expectPthError(chain(40), SyntaxError, "dicts nested more than 32 deep");
  // A dict containing itself is still refused.
  expectPthError(
    pth(bytes(0x80, 2, ORDERED_DICT, put(0), short("self"), get(0), SETITEM, STOP)),
    SyntaxError,
    'the pickled dict contains itself (at "self")',
  );
});

Deno.test("parsePth walks a dict without tensors once however many paths reach it", () => {
  const config = [ORDERED_DICT, short("epoch"), "K", 3, SETITEM];
  const pickle = bytes(
    [0x80, 2, ORDERED_DICT, short("w"), tensor(storage("FloatStorage", "0", 2), 0, [2], [1]), SETITEM],
    [short("config"), sharedChain(30, config), SETITEM, STOP], // 2^30 paths to `config`
  );
  const weights = parsePth(pth(pickle, { "0": floats(1, 2) }), SOURCE);
  assertEquals([...weights.keys()], ["w"]);
  assertEquals([...weights.get("w")!.data], [1, 2]);
});

Deno.test("parsePth materialises a tensor listed under several names once, sharing its data", () => {
  const pickle = bytes(
    [0x80, 2, ORDERED_DICT, MARK],
    [short("tied0"), tensor(storage("FloatStorage", "0", 3), 0, [3], [1]), put(0)],
    [short("tied1"), get(0), short("tied2"), get(0)],
    [short("big0"), expanded("1", 2 ** 21), put(1)], // 8 MiB once, not once per name
    Array.from({ length: 7 }, (_, i) => [short(`big${i + 1}`), get(1)]),
    [SETITEMS, STOP],
  );
  const weights = parsePth(pth(pickle, { "0": floats(1, 2, 3), "1": floats(7) }), SOURCE);
  assertEquals(weights.size, 11);
  const tied = weights.get("tied0")!.data, big = weights.get("big0")!.data;
  assertEquals([...tied], [1, 2, 3]);
  assertEquals([big.length, big[0], big[big.length - 1]], [2 ** 21, 7, 7]);
  for (const [name, t] of weights) {
    assertEquals(t.data === (name.startsWith("tied") ? tied : big), true, `${name} has its own copy`);
  }
});

Deno.test("parsePth refuses views with far more elements in all than storage bytes before allocating", () => {
  // The probe: a 1-element storage viewed as [2^26] with stride 0, under 8 names (2 GiB as 8 copies).
  const names = bytes(
    [0x80, 2, ORDERED_DICT, MARK, short("w0"), expanded("0", 2 ** 26), put(0)],
    Array.from({ length: 7 }, (_, i) => [short(`w${i + 1}`), get(0)]),
    [SETITEMS, STOP],
  );
  expectPthError(
    pth(names, { "0": floats(1) }),
    RangeError,
    "views hold 67108864 elements in all, more than the 4194336 allowed for 4 B of storage " +
      "(8 per byte + 4194304)",
  );
  // Distinct views, each well within the per-tensor limit, are counted together.
  const distinct = bytes(
    [0x80, 2, ORDERED_DICT, MARK],
    Array.from({ length: 5 }, (_, i) => [short(`w${i}`), expanded("0", 2 ** 20)]),
    [SETITEMS, STOP],
  );
  expectPthError(pth(distinct, { "0": floats(1) }), RangeError, "views hold 5242880 elements in all");
});

Deno.test("crc32 gives the standard check value", () => {
  assertEquals(crc32(encoder.encode("123456789")), 0xcbf43926);
  assertEquals(crc32(new Uint8Array(0)), 0);
});

Deno.test("readPthFile names the path in its errors", async () => {
  const path = new URL("cct_2_3x2_32.weights.safetensors", SHARED);
  const error = await readPthFile(path).catch((e) => e);
  assertEquals(error instanceof SyntaxError, true);
  assertEquals(String(error.message).startsWith(String(path)), true);
});
