/**
 * safetensors read and write. The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON mapping
 * each tensor name to `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the first byte after
 * the header) plus an optional `"__metadata__"` map of strings, then the tensor bytes, little-endian.
 *
 * The whole header is parsed and validated before any tensor is decoded, so a bad file never half-loads.
 * Errors name the file (the `source` label) and what is wrong: `SyntaxError` when the file cannot be parsed,
 * `RangeError` for offsets and lengths, `TypeError` for dtypes, shapes and metadata types.
 *
 * @module
 */
import { writeFileAtomic } from "./atomic.ts";

/** Tensor data as held in memory: floats widened or narrowed to float32, integers narrowed to int32. */
export type TensorData = Float32Array | Int32Array;

/** One tensor read from a safetensors file. */
export interface SafetensorsTensor {
  /** The dtype stored in the file (`"F32"`, `"F16"`, `"BF16"`, `"F64"`, `"I32"` or `"I64"`). */
  dtype: string;
  /** Dimensions, outermost first (`[]` for a scalar). */
  shape: number[];
  /** Float32Array for float dtypes, Int32Array for integer ones. */
  data: TensorData;
}

/** A tensor to write: its dtype follows its data (Float32Array → F32, Int32Array → I32). */
export interface TensorToWrite {
  /** Dimensions, outermost first; their product must equal `data.length`. */
  shape: readonly number[];
  /** Row-major elements. */
  data: TensorData;
}

/** What {@link parseSafetensors} returns. */
export interface Safetensors {
  /** Tensors in the order of their data in the file. */
  tensors: Map<string, SafetensorsTensor>;
  /** The `__metadata__` map (empty when absent). */
  metadata: Record<string, string>;
}

/** Bytes per element of the dtypes this module reads. */
const READABLE_DTYPES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8 };
/** Dtypes the format defines that this module does not read (a clearer error than "unknown"). */
const OTHER_DTYPES = new Set([
  "BOOL",
  "U8",
  "I8",
  "U16",
  "I16",
  "U32",
  "U64",
  "F8_E4M3",
  "F8_E5M2",
  "F8_E8M0",
]);
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
/** The Python/Rust libraries refuse headers above 100 MB; so do we, before allocating a string for one. */
const MAX_HEADER_BYTES = 100_000_000;

/** Widens IEEE binary16 bits to a number. */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

/**
 * Decodes `count` little-endian elements of `dtype` starting at element `first` of `bytes` into a new array:
 * float dtypes to Float32Array, integer dtypes to Int32Array (int64 checked to fit).
 * `what` names the tensor in the RangeError thrown for an int64 beyond int32.
 */
export function decodeElements(
  dtype: string,
  bytes: Uint8Array,
  first: number,
  count: number,
  what: string,
): TensorData {
  const size = READABLE_DTYPES[dtype];
  const start = bytes.byteOffset + first * size;
  const view = new DataView(bytes.buffer, start, count * size);
  switch (dtype) {
    case "F32":
    case "I32": {
      const copy = bytes.buffer.slice(start, start + count * 4);
      const out = dtype === "F32" ? new Float32Array(copy) : new Int32Array(copy);
      if (!LITTLE_ENDIAN) {
        const v = new DataView(copy);
        for (let i = 0; i < count; i++) v.setUint32(4 * i, view.getUint32(4 * i, true));
      }
      return out;
    }
    case "F16": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      return out;
    }
    case "BF16": {
      const out = new Float32Array(count), bits = new Uint32Array(out.buffer);
      for (let i = 0; i < count; i++) bits[i] = view.getUint16(2 * i, true) << 16;
      return out;
    }
    case "F64": {
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      return out;
    }
    case "I64": {
      const out = new Int32Array(count);
      for (let i = 0; i < count; i++) {
        const lo = view.getInt32(8 * i, true), hi = view.getInt32(8 * i + 4, true);
        if (hi !== lo >> 31) {
          throw new RangeError(
            `${what}: int64 element ${i} (${view.getBigInt64(8 * i, true)}) does not fit in int32`,
          );
        }
        out[i] = lo;
      }
      return out;
    }
  }
  throw new TypeError(`${what}: cannot decode dtype ${dtype}`);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * The keys of the top-level object of a JSON text that JSON.parse already accepted, in order, duplicates kept
 * (JSON.parse silently keeps only the last of duplicate names, which would hide a conflicting entry).
 */
function topLevelKeys(json: string): string[] {
  const keys: string[] = [];
  let depth = 0, expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === "\\" ? 2 : 1;
      if (depth === 1 && expectKey) keys.push(JSON.parse(json.slice(i, j + 1)));
      expectKey = false;
      i = j;
    } else if (c === "{" || c === "[") {
      depth++;
      expectKey = c === "{" && depth === 1;
    } else if (c === "}" || c === "]") {
      depth--;
    } else if (c === "," && depth === 1) {
      expectKey = true;
    }
  }
  return keys;
}

function checkShape(shape: unknown, what: string): number[] {
  if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
    throw new TypeError(
      `${what}: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
    );
  }
  return shape as number[];
}

function elementCount(shape: readonly number[]): number {
  return shape.reduce((n, d) => n * d, 1);
}

interface HeaderEntry {
  name: string;
  dtype: string;
  shape: number[];
  begin: number;
  end: number;
}

/**
 * Parses a safetensors file held in memory. The header is validated completely before any data is decoded.
 *
 * @param bytes the whole file
 * @param source a label naming the file in error messages
 * @returns the tensors (in file order) and the metadata
 * @throws {SyntaxError} when the header is not a JSON object, or the file is too short to hold one
 * @throws {RangeError} when the header length or data offsets do not fit the file, overlap or leave gaps, or an
 *   int64 does not fit in int32
 * @throws {TypeError} for an unknown or unsupported dtype, a bad shape, a byte size that disagrees with shape ×
 *   dtype, non-string metadata or a duplicate tensor name
 * @example
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors({ w: { shape: [2], data: new Float32Array([1, 2]) } });
 * console.assert(parseSafetensors(bytes).tensors.get("w")!.data[1] === 2);
 * ```
 */
export function parseSafetensors(bytes: Uint8Array, source = "<bytes>"): Safetensors {
  try {
    return parseUnchecked(bytes, source);
  } catch (error) {
    // Every intended error names the source; anything else (a bug) is still reported against the file.
    if (error instanceof Error && error.message.startsWith(source)) throw error;
    throw new SyntaxError(`${source}: malformed safetensors file (${(error as Error)?.message ?? error})`, {
      cause: error,
    });
  }
}

function parseUnchecked(bytes: Uint8Array, source: string): Safetensors {
  if (bytes.length < 8) {
    throw new SyntaxError(
      `${source}: ${bytes.length} bytes is too short for a safetensors header length (8 B)`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const lengthLo = view.getUint32(0, true), lengthHi = view.getUint32(4, true);
  const headerLength = lengthHi * 0x100000000 + lengthLo;
  if (headerLength > bytes.length - 8) {
    throw new RangeError(
      `${source}: header length ${headerLength} B extends beyond the file (${
        bytes.length - 8
      } B after the length)`,
    );
  }
  if (headerLength > MAX_HEADER_BYTES) {
    throw new RangeError(
      `${source}: header length ${headerLength} B exceeds the ${MAX_HEADER_BYTES} B limit`,
    );
  }

  let text: string, header: unknown;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength));
    header = JSON.parse(text);
  } catch (error) {
    throw new SyntaxError(`${source}: header is not valid UTF-8 JSON (${(error as Error).message})`);
  }
  if (!isPlainObject(header)) {
    throw new SyntaxError(
      `${source}: header must be a JSON object, got ${Array.isArray(header) ? "an array" : header}`,
    );
  }
  const names = topLevelKeys(text);
  const seen = new Set<string>();
  for (const name of names) {
    if (seen.has(name)) throw new TypeError(`${source}: duplicate tensor name "${name}" in the header`);
    seen.add(name);
  }

  const metadata: Record<string, string> = {};
  const rawMetadata = header["__metadata__"];
  if (rawMetadata !== undefined) {
    if (!isPlainObject(rawMetadata)) {
      throw new TypeError(`${source}: __metadata__ must be an object of strings`);
    }
    for (const [key, value] of Object.entries(rawMetadata)) {
      if (typeof value !== "string") {
        throw new TypeError(
          `${source}: __metadata__ value of "${key}" must be a string, got ${JSON.stringify(value)}`,
        );
      }
      metadata[key] = value;
    }
  }

  const dataLength = bytes.length - 8 - headerLength;
  const entries: HeaderEntry[] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const what = `${source}: tensor "${name}"`;
    if (!isPlainObject(info)) throw new TypeError(`${what}: entry must be an object`);
    const { dtype, shape, data_offsets: offsets } = info;
    if (typeof dtype !== "string") throw new TypeError(`${what}: dtype must be a string`);
    if (!Object.hasOwn(READABLE_DTYPES, dtype)) {
      throw new TypeError(
        OTHER_DTYPES.has(dtype)
          ? `${what}: dtype ${dtype} is not supported (F32, F16, BF16, F64, I32, I64 are)`
          : `${what}: unknown dtype ${JSON.stringify(dtype)}`,
      );
    }
    const dims = checkShape(shape, what);
    if (
      !Array.isArray(offsets) || offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
    ) {
      throw new RangeError(
        `${what}: data_offsets must be two non-negative integers, got ${JSON.stringify(offsets)}`,
      );
    }
    const [begin, end] = offsets as number[];
    if (begin > end || end > dataLength) {
      throw new RangeError(
        `${what}: data_offsets [${begin}, ${end}] out of range of the ${dataLength} B of data`,
      );
    }
    const expected = elementCount(dims) * READABLE_DTYPES[dtype];
    if (end - begin !== expected) {
      throw new TypeError(
        `${what}: ${end - begin} B of data but shape [${dims}] × ${dtype} needs ${expected} B`,
      );
    }
    entries.push({ name, dtype, shape: dims, begin, end });
  }

  // The data must be covered exactly, like the reference implementation demands: no overlap, no gap.
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  for (const entry of entries) {
    if (entry.begin < covered) {
      throw new RangeError(
        `${source}: tensor "${entry.name}" data_offsets [${entry.begin}, ${entry.end}] overlap the previous ` +
          `tensor (which ends at ${covered})`,
      );
    }
    if (entry.begin > covered) {
      throw new RangeError(`${source}: data bytes ${covered}..${entry.begin} belong to no tensor`);
    }
    covered = entry.end;
  }
  if (covered !== dataLength) {
    throw new RangeError(`${source}: tensors cover ${covered} B but the file holds ${dataLength} B of data`);
  }

  const data = bytes.subarray(8 + headerLength);
  const tensors = new Map<string, SafetensorsTensor>();
  for (const { name, dtype, shape, begin } of entries) {
    const decoded = decodeElements(
      dtype,
      data.subarray(begin),
      0,
      elementCount(shape),
      `${source}: tensor "${name}"`,
    );
    tensors.set(name, { dtype, shape, data: decoded });
  }
  return { tensors, metadata };
}

/**
 * Serialises tensors to safetensors bytes: F32 for Float32Array, I32 for Int32Array; tensors sorted by name, data
 * contiguous in that order; the header padded with spaces to a multiple of 8 bytes (as the reference library
 * does) so every tensor's data stays aligned.
 *
 * @param tensors name → { shape, data }, as a Map or a plain object
 * @param metadata optional string → string map stored as `__metadata__`
 * @returns the file's bytes
 * @throws {TypeError} when a shape disagrees with its data's length, data is not Float32Array/Int32Array, a
 *   name is `__metadata__`, or a metadata value is not a string
 * @example
 * ```ts
 * import { serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors(new Map([["b", { shape: [1], data: new Int32Array([7]) }]]), { step: "3" });
 * console.assert(bytes.length % 8 === 0);
 * ```
 */
export function serializeSafetensors(
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Uint8Array {
  const list = [...(tensors instanceof Map ? tensors.entries() : Object.entries(tensors))]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) {
    for (const [key, value] of Object.entries(metadata)) {
      if (typeof value !== "string") {
        throw new TypeError(`metadata "${key}" must be a string, got ${typeof value}`);
      }
    }
    header["__metadata__"] = metadata;
  }
  let offset = 0;
  for (const [name, { shape, data }] of list) {
    if (name === "__metadata__") throw new TypeError(`"__metadata__" cannot name a tensor`);
    const dtype = data instanceof Float32Array ? "F32" : data instanceof Int32Array ? "I32" : undefined;
    if (!dtype) throw new TypeError(`tensor "${name}": data must be a Float32Array or Int32Array`);
    const dims = checkShape([...shape], `tensor "${name}"`);
    if (elementCount(dims) !== data.length) {
      throw new TypeError(
        `tensor "${name}": shape [${dims}] holds ${elementCount(dims)} elements, data ${data.length}`,
      );
    }
    header[name] = { dtype, shape: dims, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padding = (8 - (json.length % 8)) % 8;
  if (padding) {
    const padded = new Uint8Array(json.length + padding).fill(0x20);
    padded.set(json);
    json = padded;
  }
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, json.length, true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const [, { data }] of list) {
    if (LITTLE_ENDIAN) {
      out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    } else {
      const f32 = data instanceof Float32Array;
      for (let i = 0; i < data.length; i++) {
        if (f32) view.setFloat32(at + 4 * i, data[i], true);
        else view.setInt32(at + 4 * i, data[i], true);
      }
    }
    at += data.byteLength;
  }
  return out;
}

/**
 * Reads and parses a safetensors file; errors name the path.
 *
 * @param path the file to read
 */
export async function readSafetensorsFile(path: string | URL): Promise<Safetensors> {
  return parseSafetensors(await Deno.readFile(path), String(path));
}

/**
 * Serialises tensors (see {@link serializeSafetensors}) and writes them to `path` atomically, so an interrupted
 * write leaves any previous file intact.
 *
 * @param path the file to create or replace
 * @param tensors name → { shape, data }
 * @param metadata optional string → string map
 */
export async function writeSafetensorsFile(
  path: string,
  tensors: Map<string, TensorToWrite> | Record<string, TensorToWrite>,
  metadata?: Record<string, string>,
): Promise<void> {
  await writeFileAtomic(path, serializeSafetensors(tensors, metadata));
}
