/**
 * A safe reader for PyTorch `.pth` state dicts in the `torch.save` zip format (PyTorch ≥ 1.6): a ZIP holding
 * `<archive>/data.pkl` (a pickle), `<archive>/data/<key>` (raw little-endian storages) and `<archive>/version`.
 *
 * Python's pickle is a small stack machine whose GLOBAL and REDUCE opcodes can call any importable function, so
 * loading an untrusted checkpoint with `torch.load` can run code. This module never executes anything from the
 * file: it interprets only the opcodes a plain tensor state dict needs, and GLOBAL only for an allow-list
 * (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter` and the
 * storage types), whose effect is reimplemented here as data. Anything else is refused with an
 * {@link UnsafePickleError} naming the file, the opcode or global, and its byte offset in `data.pkl`.
 *
 * @module
 */
import { decodeElements, type TensorData } from "./safetensors.ts";
import { readZipDirectory, readZipEntry } from "./zip.ts";

/** One tensor of a checkpoint: floats as Float32Array, integers as Int32Array. */
export interface PthTensor {
  /** The storage dtype in safetensors notation: `"F32"`, `"F16"`, `"BF16"`, `"F64"`, `"I64"` or `"I32"`. */
  dtype: string;
  /** Dimensions, outermost first (`[]` for a scalar). */
  shape: number[];
  /** Row-major elements (non-contiguous views are copied into order). */
  data: TensorData;
}

/**
 * Thrown for a pickle opcode or global outside the allow-list. A `SyntaxError`: the file is outside the
 * grammar this reader accepts.
 */
export class UnsafePickleError extends SyntaxError {
  /** Always `"UnsafePickleError"`. */
  override name = "UnsafePickleError";
}

/** Storage classes → the dtype of their elements and its size in bytes. */
const STORAGE_TYPES: Record<string, { dtype: string; size: number }> = {
  "torch.FloatStorage": { dtype: "F32", size: 4 },
  "torch.HalfStorage": { dtype: "F16", size: 2 },
  "torch.BFloat16Storage": { dtype: "BF16", size: 2 },
  "torch.DoubleStorage": { dtype: "F64", size: 8 },
  "torch.LongStorage": { dtype: "I64", size: 8 },
  "torch.IntStorage": { dtype: "I32", size: 4 },
};
const CALLABLES = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_parameter",
]);

/** Names of the pickle opcodes (for error messages about refused ones). */
const OPCODE_NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

// The values a state-dict pickle can build. Python objects are modelled as plain data; nothing is callable.
type Key = string | number | boolean | null;
type Value = Key | PyTuple | PyList | PyDict | PyGlobal | StorageRef | TorchTensor;
class PyTuple {
  constructor(readonly items: Value[]) {}
}
class PyList {
  readonly items: Value[] = [];
}
class PyDict {
  readonly map = new Map<Key, Value>();
}
class PyGlobal {
  constructor(readonly name: string) {}
}
class StorageRef {
  constructor(readonly dtype: string, readonly size: number, readonly key: string, readonly numel: number) {}
}
class TorchTensor {
  constructor(
    readonly storage: StorageRef,
    readonly offset: number,
    readonly shape: number[],
    readonly stride: number[],
  ) {}
}

function describe(value: Value | undefined): string {
  if (value === undefined) return "nothing";
  if (value === null) return "None";
  if (typeof value !== "object") return `${typeof value} ${JSON.stringify(value)}`;
  if (value instanceof PyGlobal) return value.name;
  if (value instanceof PyTuple) return `a ${value.items.length}-tuple`;
  if (value instanceof PyList) return "a list";
  if (value instanceof PyDict) return "a dict";
  return value instanceof StorageRef ? "a storage" : "a tensor";
}

/** The pickle stack machine, restricted to the opcodes of a tensor state dict. */
class StateDictUnpickler {
  private at = 0;
  private readonly view: DataView;
  private stack: Value[] = [];
  private readonly marks: number[] = [];
  private readonly memo = new Map<number, Value>();
  private readonly storages = new Map<string, StorageRef>();
  private opcodeAt = 0;

  constructor(private readonly bytes: Uint8Array, private readonly where: string) {
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private fail(message: string): never {
    throw new SyntaxError(`${this.where}: ${message} at byte ${this.opcodeAt}`);
  }

  private take(n: number): number {
    if (this.at + n > this.bytes.length) this.fail(`pickle truncated (${n} B needed)`);
    const start = this.at;
    this.at += n;
    return start;
  }
  private u8(): number {
    return this.bytes[this.take(1)];
  }
  private u16(): number {
    return this.view.getUint16(this.take(2), true);
  }
  private u32(): number {
    return this.view.getUint32(this.take(4), true);
  }
  private utf8(n: number): string {
    const start = this.take(n);
    try {
      return new TextDecoder("utf-8", { fatal: true }).decode(this.bytes.subarray(start, start + n));
    } catch {
      return this.fail("string is not valid UTF-8");
    }
  }
  private line(): string {
    const end = this.bytes.indexOf(0x0a, this.at);
    if (end < 0 || end - this.at > 256) this.fail("GLOBAL name not terminated by a newline");
    const text = String.fromCharCode(...this.bytes.subarray(this.at, end));
    this.at = end + 1;
    return text;
  }

  private pop(): Value {
    const floor = this.marks.length ? this.marks[this.marks.length - 1] : 0;
    if (this.stack.length <= floor) this.fail("pickle stack underflow");
    return this.stack.pop()!;
  }
  private top(): Value {
    const floor = this.marks.length ? this.marks[this.marks.length - 1] : 0;
    if (this.stack.length <= floor) this.fail("pickle stack underflow");
    return this.stack[this.stack.length - 1];
  }
  private popMark(): Value[] {
    const mark = this.marks.pop();
    if (mark === undefined) this.fail("no MARK to pop to");
    return this.stack.splice(mark);
  }
  private key(value: Value): Key {
    if (value === null || typeof value !== "object") return value;
    return this.fail(`unsupported dict key (${describe(value)})`);
  }
  private dict(): PyDict {
    const target = this.top();
    return target instanceof PyDict ? target : this.fail(`SETITEM(S) on ${describe(target)}, not a dict`);
  }
  private list(): PyList {
    const target = this.top();
    return target instanceof PyList ? target : this.fail(`APPEND(S) on ${describe(target)}, not a list`);
  }
  private memoGet(index: number): Value {
    if (!this.memo.has(index)) this.fail(`memo entry ${index} read before being written`);
    return this.memo.get(index)!;
  }

  run(): Value {
    for (;;) {
      this.opcodeAt = this.at;
      const op = this.u8();
      switch (op) {
        case 0x80: { // PROTO
          const protocol = this.u8();
          if (protocol > 5) this.fail(`pickle protocol ${protocol} is unknown`);
          break;
        }
        case 0x95: // FRAME: a length hint for buffered readers; the bytes follow inline
          this.take(8);
          break;
        case 0x7d: // EMPTY_DICT
          this.stack.push(new PyDict());
          break;
        case 0x5d: // EMPTY_LIST
          this.stack.push(new PyList());
          break;
        case 0x29: // EMPTY_TUPLE
          this.stack.push(new PyTuple([]));
          break;
        case 0x28: // MARK
          this.marks.push(this.stack.length);
          break;
        case 0x74: // TUPLE
          this.stack.push(new PyTuple(this.popMark()));
          break;
        case 0x85: // TUPLE1
        case 0x86: // TUPLE2
        case 0x87: { // TUPLE3
          const items: Value[] = [];
          for (let i = 0; i < op - 0x84; i++) items.unshift(this.pop());
          this.stack.push(new PyTuple(items));
          break;
        }
        case 0x58: // BINUNICODE
          this.stack.push(this.utf8(this.u32()));
          break;
        case 0x8c: // SHORT_BINUNICODE
          this.stack.push(this.utf8(this.u8()));
          break;
        case 0x4a: // BININT
          this.stack.push(this.view.getInt32(this.take(4), true));
          break;
        case 0x4b: // BININT1
          this.stack.push(this.u8());
          break;
        case 0x4d: // BININT2
          this.stack.push(this.u16());
          break;
        case 0x8a: { // LONG1: little-endian two's complement of n bytes
          const n = this.u8(), start = this.take(n);
          let value = 0n;
          for (let i = n - 1; i >= 0; i--) value = (value << 8n) | BigInt(this.bytes[start + i]);
          if (n > 0 && this.bytes[start + n - 1] & 0x80) value -= 1n << BigInt(8 * n);
          if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
            this.fail(`integer ${value} is beyond 2^53`);
          }
          this.stack.push(Number(value));
          break;
        }
        case 0x47: // BINFLOAT (big-endian)
          this.stack.push(this.view.getFloat64(this.take(8), false));
          break;
        case 0x88: // NEWTRUE
          this.stack.push(true);
          break;
        case 0x89: // NEWFALSE
          this.stack.push(false);
          break;
        case 0x4e: // NONE
          this.stack.push(null);
          break;
        case 0x71: // BINPUT
          this.memo.set(this.u8(), this.top());
          break;
        case 0x72: // LONG_BINPUT
          this.memo.set(this.u32(), this.top());
          break;
        case 0x68: // BINGET
          this.stack.push(this.memoGet(this.u8()));
          break;
        case 0x6a: // LONG_BINGET
          this.stack.push(this.memoGet(this.u32()));
          break;
        case 0x73: { // SETITEM
          const value = this.pop(), key = this.key(this.pop());
          this.dict().map.set(key, value);
          break;
        }
        case 0x75: { // SETITEMS
          const items = this.popMark();
          if (items.length % 2) this.fail("SETITEMS with an odd number of items");
          const dict = this.dict();
          for (let i = 0; i < items.length; i += 2) dict.map.set(this.key(items[i]), items[i + 1]);
          break;
        }
        case 0x61: { // APPEND
          const value = this.pop();
          this.list().items.push(value);
          break;
        }
        case 0x65: { // APPENDS
          const items = this.popMark();
          this.list().items.push(...items);
          break;
        }
        case 0x63: { // GLOBAL
          const name = `${this.line()}.${this.line()}`;
          if (!CALLABLES.has(name) && !(name in STORAGE_TYPES)) {
            throw new UnsafePickleError(
              `${this.where}: refused pickle GLOBAL ${name} at byte ${this.opcodeAt} (only tensor state dicts are read)`,
            );
          }
          this.stack.push(new PyGlobal(name));
          break;
        }
        case 0x52: { // REDUCE
          const args = this.pop(), callable = this.pop();
          if (!(callable instanceof PyGlobal) || !CALLABLES.has(callable.name)) {
            throw new UnsafePickleError(
              `${this.where}: refused pickle REDUCE on ${describe(callable)} at byte ${this.opcodeAt}`,
            );
          }
          if (!(args instanceof PyTuple)) this.fail(`REDUCE arguments are ${describe(args)}, not a tuple`);
          this.stack.push(this.call(callable.name, args.items));
          break;
        }
        case 0x51: // BINPERSID
          this.stack.push(this.persistentLoad(this.pop()));
          break;
        case 0x62: { // BUILD: only OrderedDict's attribute state (e.g. `_metadata`), which is dropped
          const state = this.pop(), target = this.top();
          if (!(target instanceof PyDict) || !(state === null || state instanceof PyDict)) {
            throw new UnsafePickleError(
              `${this.where}: refused pickle BUILD of ${describe(target)} with ${
                describe(state)
              } at byte ${this.opcodeAt}`,
            );
          }
          break;
        }
        case 0x2e: { // STOP
          const result = this.pop();
          if (this.stack.length || this.marks.length) this.fail("STOP with values left on the stack");
          return result;
        }
        default: {
          const name = OPCODE_NAMES[op] ?? "unknown";
          throw new UnsafePickleError(
            `${this.where}: refused pickle opcode ${name} (0x${
              op.toString(16).padStart(2, "0")
            }) at byte ${this.opcodeAt}`,
          );
        }
      }
    }
  }

  private int(value: Value, what: string, min = 0): number {
    if (typeof value !== "number" || !Number.isSafeInteger(value) || value < min) {
      return this.fail(`${what} must be an integer ≥ ${min}, got ${describe(value)}`);
    }
    return value;
  }
  private ints(value: Value, what: string): number[] {
    if (!(value instanceof PyTuple)) return this.fail(`${what} must be a tuple, got ${describe(value)}`);
    return value.items.map((item) => this.int(item, what));
  }

  /** The effect of an allowed callable, as data. */
  private call(name: string, args: Value[]): Value {
    if (name === "collections.OrderedDict") {
      if (args.length) this.fail("OrderedDict called with arguments");
      return new PyDict();
    }
    if (name === "torch._utils._rebuild_parameter") {
      // (data, requires_grad, backward_hooks)
      if (args.length !== 3 || !(args[0] instanceof TorchTensor)) {
        this.fail("bad _rebuild_parameter arguments");
      }
      return args[0];
    }
    // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
    if (args.length !== 6 && args.length !== 7) this.fail(`_rebuild_tensor_v2 with ${args.length} arguments`);
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) return this.fail(`_rebuild_tensor_v2 of ${describe(storage)}`);
    const shape = this.ints(size, "tensor size"), strides = this.ints(stride, "tensor stride");
    if (shape.length !== strides.length) {
      this.fail(`tensor size [${shape}] and stride [${strides}] differ in rank`);
    }
    return new TorchTensor(storage, this.int(offset, "storage offset"), shape, strides);
  }

  /** `('storage', storage_type, key, location, numel)` → a reference to `data/<key>`. */
  private persistentLoad(pid: Value): Value {
    const items = pid instanceof PyTuple ? pid.items : [];
    const [tag, type, key, , numel] = items;
    if (
      items.length !== 5 || tag !== "storage" || !(type instanceof PyGlobal) ||
      !(type.name in STORAGE_TYPES) ||
      typeof key !== "string" || !/^[A-Za-z0-9_.-]+$/.test(key) || key.includes("..")
    ) {
      throw new UnsafePickleError(
        `${this.where}: refused persistent id ${describe(pid)} at byte ${this.opcodeAt}`,
      );
    }
    const { dtype, size } = STORAGE_TYPES[type.name];
    const count = this.int(numel, "storage size");
    const previous = this.storages.get(key);
    if (previous && (previous.dtype !== dtype || previous.numel !== count)) {
      this.fail(`storage ${key} is declared twice with different types or sizes`);
    }
    const ref = previous ?? new StorageRef(dtype, size, key, count);
    this.storages.set(key, ref);
    return ref;
  }
}

/** How {@link collectTensors} met a dict: its first path, and (once walked) whether it holds tensors. */
interface DictVisit {
  path: string;
  /** undefined while the dict is still being walked (it is on the current path). */
  hasTensors?: boolean;
}

/** How deeply dicts may nest: state dicts are one or two levels deep (`{"state_dict": {…}}`). */
const MAX_DICT_DEPTH = 32;

/**
 * Collects the tensors of a (possibly nested) dict, nested keys joined with ".", walking each dict once. A
 * state dict is a tree: a dict holding tensors that is reached by a second path (which would otherwise be
 * walked once per path, exponentially often when shared dicts nest) is refused, and so is a dict containing
 * itself. A dict without tensors (e.g. a config stored under two keys) may be shared: it adds nothing, so it
 * is not walked again. Dicts nested deeper than {@link MAX_DICT_DEPTH} are refused.
 *
 * @returns whether `dict` holds a tensor, directly or in a nested dict
 */
function collectTensors(
  dict: PyDict,
  prefix: string,
  out: Map<string, TorchTensor>,
  visits: Map<PyDict, DictVisit>,
  source: string,
  depth = 0,
): boolean {
  // Names grow with the depth: a deep chain of small dicts would make quadratically long names.
  if (depth > MAX_DICT_DEPTH) {
    throw new SyntaxError(
      `${source}: dicts nested more than ${MAX_DICT_DEPTH} deep (at "${prefix.slice(0, 80)}…")`,
    );
  }
  const visit: DictVisit = { path: prefix.slice(0, -1) };
  visits.set(dict, visit);
  let hasTensors = false;
  for (const [key, value] of dict.map) {
    const name = prefix + String(key);
    if (value instanceof TorchTensor) {
      if (out.has(name)) throw new TypeError(`${source}: duplicate tensor name "${name}"`);
      out.set(name, value);
      hasTensors = true;
    } else if (value instanceof PyDict) {
      const seen = visits.get(value);
      if (!seen) {
        hasTensors = collectTensors(value, `${name}.`, out, visits, source, depth + 1) || hasTensors;
      } else if (seen.hasTensors === undefined) {
        throw new SyntaxError(`${source}: the pickled dict contains itself (at "${name}")`);
      } else if (seen.hasTensors) {
        throw new SyntaxError(
          `${source}: the dict of tensors at "${seen.path}" is reached by two paths (again at "${name}"); ` +
            "shared sub-dicts are not supported, a state dict is a tree",
        );
      }
    }
  }
  visit.hasTensors = hasTensors;
  return hasTensors;
}

/** The most elements one tensor may have (1 GiB of float32). */
const MAX_ELEMENTS = 2 ** 28;
/**
 * The budget for all tensors of a file together: so many elements per byte of the storages they view (tensors
 * sharing a storage, e.g. tied weights or the slices of a fused matrix, each count in full)…
 */
const ELEMENTS_PER_STORAGE_BYTE = 8;
/** …plus this many (16 MiB of float32), for small stride-0 (expanded) views. */
const ELEMENT_ALLOWANCE = 2 ** 22;

/** A tensor view's element count, refusing absurd ones (only a stride-0 view can hold more than the file). */
function elementCount(tensor: TorchTensor, what: string): number {
  const count = tensor.shape.reduce((n, d) => n * d, 1);
  if (count > MAX_ELEMENTS) {
    throw new RangeError(`${what}: view [${tensor.shape}] has more than ${MAX_ELEMENTS} elements`);
  }
  return count;
}

/**
 * Reads a tensor's elements out of its storage (already checked to hold `numel` elements), following size,
 * stride and offset.
 */
function materialise(tensor: TorchTensor, storage: Uint8Array, what: string): TensorData {
  const { shape, stride, offset } = tensor, { dtype, numel } = tensor.storage;
  const count = elementCount(tensor, what);
  if (count === 0) return dtype.startsWith("F") || dtype === "BF16" ? new Float32Array(0) : new Int32Array(0);
  let last = offset, contiguous = true, expected = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    last += (shape[d] - 1) * stride[d];
    if (shape[d] !== 1 && stride[d] !== expected) contiguous = false;
    expected *= shape[d];
  }
  if (last >= numel) {
    throw new RangeError(
      `${what}: view [${shape}] with strides [${stride}] at offset ${offset} reads element ${last} of a ` +
        `${numel}-element storage`,
    );
  }
  if (contiguous) return decodeElements(dtype, storage, offset, count, what);
  // A non-contiguous view: decode the span it touches once, then gather in row-major order.
  const span = decodeElements(dtype, storage, offset, last - offset + 1, what);
  const out = span instanceof Float32Array ? new Float32Array(count) : new Int32Array(count);
  const index = new Array<number>(shape.length).fill(0);
  let at = 0;
  for (let i = 0; i < count; i++) {
    out[i] = span[at];
    for (let d = shape.length - 1; d >= 0; d--) {
      if (++index[d] < shape[d]) {
        at += stride[d];
        break;
      }
      at -= (shape[d] - 1) * stride[d];
      index[d] = 0;
    }
  }
  return out;
}

/**
 * Parses a `torch.save` zip checkpoint held in memory into its tensors, without executing anything from it.
 * A flat state dict gives its own names; tensors inside nested dicts (e.g. `{"model": {...}}`) are named with
 * the keys joined by "."; non-tensor values (numbers, strings, lists) are skipped.
 *
 * @param bytes the whole `.pth` file
 * @param source a label naming the file in error messages
 * @returns name → { dtype, shape, data } in the pickle's order; float storages (float32/16, bfloat16, float64)
 *   as Float32Array, int64/int32 as Int32Array (int64 checked to fit)
 * @throws {UnsafePickleError} for an opcode or global outside the allow-list (e.g. `os.system`)
 * @throws {SyntaxError} for a malformed archive or pickle, or the legacy pre-1.6 format
 * @throws {RangeError} for a storage too small for its tensor views, or an int64 beyond int32
 * @throws {TypeError} for a duplicate tensor name or a big-endian checkpoint
 * @example
 * ```ts ignore
 * import { parsePth } from "./pth.ts";
 * const weights = parsePth(await Deno.readFile("cct_7_3x1_32.pth"), "cct_7_3x1_32.pth");
 * console.log(weights.get("classifier.fc.weight")!.shape);
 * ```
 */
export function parsePth(bytes: Uint8Array, source = "<bytes>"): Map<string, PthTensor> {
  try {
    return parsePthUnchecked(bytes, source);
  } catch (error) {
    if (error instanceof Error && error.message.startsWith(source)) throw error;
    throw new SyntaxError(`${source}: malformed .pth checkpoint (${(error as Error)?.message ?? error})`, {
      cause: error,
    });
  }
}

function parsePthUnchecked(bytes: Uint8Array, source: string): Map<string, PthTensor> {
  if (bytes[0] === 0x80 && bytes.length > 1 && bytes[1] <= 5) {
    throw new SyntaxError(
      `${source}: legacy (PyTorch < 1.6) torch.save format is not supported; re-save it with a newer torch.save`,
    );
  }
  const entries = readZipDirectory(bytes, source);
  const pickles = [...entries.keys()].filter((name) => /^([^/]+\/)?data\.pkl$/.test(name));
  if (pickles.length !== 1) {
    throw new SyntaxError(
      `${source}: expected one <archive>/data.pkl in the ZIP, found ${
        pickles.length ? pickles.join(", ") : "none"
      }`,
    );
  }
  const prefix = pickles[0].slice(0, -"data.pkl".length);
  const byteorder = entries.get(`${prefix}byteorder`);
  if (byteorder) {
    const order = new TextDecoder().decode(readZipEntry(bytes, byteorder, source)).trim();
    if (order !== "little") throw new TypeError(`${source}: ${order}-endian checkpoints are not supported`);
  }

  const pickle = readZipEntry(bytes, entries.get(pickles[0])!, source);
  const root = new StateDictUnpickler(pickle, `${source}: ${pickles[0]}`).run();
  if (!(root instanceof PyDict)) {
    throw new TypeError(`${source}: the pickle holds ${describe(root)}, not a dict`);
  }
  const found = new Map<string, TorchTensor>();
  collectTensors(root, "", found, new Map(), source);

  // Read each storage once and weigh the distinct tensors against the storage bytes before allocating any:
  // stride-0 views, or one view listed under many names, could otherwise expand a tiny file without bound.
  const storages = new Map<string, Uint8Array>();
  const distinct = new Set<TorchTensor>();
  let storageBytes = 0, elements = 0;
  for (const [name, tensor] of found) {
    const { key, size, numel } = tensor.storage;
    if (!storages.has(key)) {
      const entry = entries.get(`${prefix}data/${key}`);
      if (!entry) {
        throw new SyntaxError(`${source}: storage ${prefix}data/${key} of tensor "${name}" is missing`);
      }
      const storage = readZipEntry(bytes, entry, source);
      if (storage.length !== numel * size) {
        throw new RangeError(
          `${source}: tensor "${name}": storage holds ${storage.length} B, expected ${numel} × ${size} B`,
        );
      }
      storages.set(key, storage);
      storageBytes += storage.length;
    }
    if (distinct.has(tensor)) continue;
    distinct.add(tensor);
    elements += elementCount(tensor, `${source}: tensor "${name}"`);
  }
  const budget = ELEMENTS_PER_STORAGE_BYTE * storageBytes + ELEMENT_ALLOWANCE;
  if (elements > budget) {
    throw new RangeError(
      `${source}: the tensors' views hold ${elements} elements in all, more than the ${budget} allowed for ` +
        `${storageBytes} B of storage (${ELEMENTS_PER_STORAGE_BYTE} per byte + ${ELEMENT_ALLOWANCE})`,
    );
  }

  // One array per distinct tensor object: names sharing a tensor (tied weights) share its data.
  const materialised = new Map<TorchTensor, TensorData>();
  const tensors = new Map<string, PthTensor>();
  for (const [name, tensor] of found) {
    let data = materialised.get(tensor);
    if (!data) {
      data = materialise(tensor, storages.get(tensor.storage.key)!, `${source}: tensor "${name}"`);
      materialised.set(tensor, data);
    }
    tensors.set(name, { dtype: tensor.storage.dtype, shape: tensor.shape, data });
  }
  return tensors;
}

/**
 * Reads and parses a `.pth` checkpoint (see {@link parsePth}); errors name the path.
 *
 * @param path the file to read
 */
export async function readPthFile(path: string | URL): Promise<Map<string, PthTensor>> {
  return parsePth(await Deno.readFile(path), String(path));
}
