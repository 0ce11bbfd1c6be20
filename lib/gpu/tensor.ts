/**
 * Tensors are views into GPU buffers: a buffer, a byte offset and a shape. Long-lived tensors (parameters,
 * gradients, optimizer moments, activations) are carved out of a few large allocations by an {@link Arena}.
 */
import type { Gpu } from "./device.ts";

const STORAGE_USAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** Offsets of views inside one buffer are aligned to this many bytes (the portable storage-offset alignment). */
export const VIEW_ALIGNMENT = 256;

/** Number of elements of a shape. */
export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A float32 (or int32/uint32, when a kernel says so) tensor living in a GPU buffer.
 *
 * A tensor is only a view, `shape` elements at byte `offset` of `buffer`, row-major and densely packed; it owns
 * nothing, and several tensors may share one buffer (see {@link Arena}). Create standalone tensors with
 * {@link createTensor} or {@link uploadTensor}.
 *
 * @example Upload, view under another shape, read back
 * ```ts
 * import { getGpu, readTensor, uploadTensor } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * const x = uploadTensor(gpu, Float32Array.from({ length: 12 }, (_, i) => i), [2, 6], "x");
 * const tokens = x.reshape([2, 3, 2]); // [B, N, d], same memory
 * const first = x.prefix([6]); // the first row only
 * console.log(tokens.shape, first.byteLength); // [2, 3, 2] 24
 * console.log(await readTensor(gpu, first)); // Float32Array [0, 1, 2, 3, 4, 5]
 * x.buffer.destroy();
 * ```
 */
export class Tensor {
  /** Number of elements (the product of `shape`). */
  readonly size: number;
  /**
   * Creates a view; does not allocate.
   *
   * @param buffer The buffer holding the data (needs `STORAGE` usage to be bound).
   * @param shape Dimensions, outermost first; non-negative integers.
   * @param offset Byte offset of the first element; bound views need a multiple of 256.
   * @param label Names the tensor in error messages; defaults to the buffer's label.
   * @throws {TypeError} If a dimension is not a non-negative integer.
   * @throws {RangeError} If the view extends past the end of `buffer`.
   */
  constructor(
    readonly buffer: GPUBuffer,
    readonly shape: readonly number[],
    readonly offset: number = 0,
    readonly label: string = buffer.label,
  ) {
    for (const d of shape) {
      if (!Number.isInteger(d) || d < 0) throw new TypeError(`tensor ${label}: bad shape [${shape}]`);
    }
    this.size = sizeOf(shape);
    if (offset + this.size * 4 > buffer.size) {
      throw new RangeError(
        `tensor ${label}: view [${shape}] at ${offset} overruns buffer of ${buffer.size} B`,
      );
    }
  }

  /** Size of the view in bytes (4 per element). */
  get byteLength(): number {
    return this.size * 4;
  }

  /** The binding of this view; empty tensors bind 4 bytes so that the bind group stays valid. */
  binding(): GPUBufferBinding {
    return { buffer: this.buffer, offset: this.offset, size: Math.max(4, this.byteLength) };
  }

  /** A view of this tensor's first elements under `shape` (a scratch buffer serving several sizes). */
  prefix(shape: readonly number[]): Tensor {
    if (sizeOf(shape) > this.size) {
      throw new TypeError(`tensor ${this.label}: [${shape}] does not fit in [${this.shape}]`);
    }
    return new Tensor(this.buffer, shape, this.offset, this.label);
  }

  /** The same memory under another shape of equal size. */
  reshape(shape: readonly number[]): Tensor {
    if (sizeOf(shape) !== this.size) {
      throw new TypeError(`tensor ${this.label}: cannot reshape [${this.shape}] to [${shape}]`);
    }
    return new Tensor(this.buffer, shape, this.offset, this.label);
  }
}

/** A tensor in a buffer of its own. */
export function createTensor(gpu: Gpu, shape: readonly number[], label: string): Tensor {
  const bytes = Math.max(16, Math.ceil((sizeOf(shape) * 4) / 16) * 16);
  const buffer = gpu.device.createBuffer({ label, size: bytes, usage: STORAGE_USAGE });
  return new Tensor(buffer, shape, 0, label);
}

/** Copies host data into a tensor (queued; ordered before the next submission). */
export function writeTensor(gpu: Gpu, t: Tensor, data: Float32Array | Int32Array | Uint32Array): void {
  if (data.length !== t.size) {
    throw new TypeError(
      `writeTensor ${t.label}: expected ${t.size} elements [${t.shape}], got ${data.length}`,
    );
  }
  if (data.length === 0) return;
  gpu.device.queue.writeBuffer(t.buffer, t.offset, data as Float32Array<ArrayBuffer>);
}

/** Creates a tensor holding `data`. */
export function uploadTensor(
  gpu: Gpu,
  data: Float32Array | Int32Array | Uint32Array,
  shape: readonly number[],
  label: string,
): Tensor {
  const t = createTensor(gpu, shape, label);
  writeTensor(gpu, t, data);
  return t;
}

/** Reads a tensor back to the host. Waits for the GPU: never call inside a training step. */
export async function readTensor(gpu: Gpu, t: Tensor): Promise<Float32Array> {
  const bytes = await readBytes(gpu, t);
  return new Float32Array(bytes);
}

/** Reads an int32 tensor back to the host. */
export async function readTensorInt(gpu: Gpu, t: Tensor): Promise<Int32Array> {
  return new Int32Array(await readBytes(gpu, t));
}

async function readBytes(gpu: Gpu, t: Tensor): Promise<ArrayBuffer> {
  if (t.size === 0) return new ArrayBuffer(0);
  const staging = gpu.device.createBuffer({
    label: `${t.label}:readback`,
    size: t.byteLength,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = gpu.device.createCommandEncoder();
  encoder.copyBufferToBuffer(t.buffer, t.offset, staging, 0, t.byteLength);
  gpu.device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const copy = staging.getMappedRange().slice(0);
  staging.unmap();
  staging.destroy();
  return copy;
}

/**
 * Carves many named tensors out of one buffer: reserve every shape first, then `allocate` once.
 * One buffer per table means one dispatch can update all parameters (AdamW, zeroing, norms).
 *
 * Views are aligned to {@link VIEW_ALIGNMENT} bytes; a new buffer is zero-filled, padding included.
 *
 * @example A parameter table
 * ```ts
 * import { Arena, getGpu, writeTensor } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * const params = new Arena("params");
 * params.reserve("fc.weight", [10, 128]);
 * params.reserve("fc.bias", [10]);
 * params.allocate(gpu);
 * writeTensor(gpu, params.get("fc.bias"), new Float32Array(10).fill(0.1));
 * const all = params.whole(); // one flat view for whole-table kernels
 * console.log(params.names(), all.size); // ["fc.weight", "fc.bias"] 1344
 * params.destroy();
 * ```
 */
export class Arena {
  #entries: { name: string; shape: readonly number[]; offset: number }[] = [];
  #bytes = 0;
  #tensors = new Map<string, Tensor>();
  /** The backing buffer; `undefined` before {@link Arena.allocate} and after {@link Arena.destroy}. */
  buffer: GPUBuffer | undefined;

  /**
   * Creates an empty arena; nothing is allocated until {@link Arena.allocate}.
   *
   * @param label Label of the buffer, used in error messages.
   */
  constructor(readonly label: string) {}

  /** Reserves a named view; returns its byte offset in the arena. */
  reserve(name: string, shape: readonly number[]): number {
    if (this.buffer) throw new Error(`arena ${this.label}: reserve("${name}") after allocate()`);
    if (this.#entries.some((e) => e.name === name)) throw new Error(`arena ${this.label}: "${name}" twice`);
    const offset = this.#bytes;
    this.#entries.push({ name, shape, offset });
    const bytes = Math.max(4, sizeOf(shape) * 4);
    this.#bytes = Math.ceil((offset + bytes) / VIEW_ALIGNMENT) * VIEW_ALIGNMENT;
    return offset;
  }

  /** Total bytes, including alignment padding (padding stays zero, so whole-arena ops may cover it). */
  get byteLength(): number {
    return Math.max(VIEW_ALIGNMENT, this.#bytes);
  }

  /**
   * Creates the buffer and the reserved views. Call once, after the last {@link Arena.reserve}.
   *
   * @param gpu The device to allocate on.
   * @returns This arena, for chaining.
   * @throws {RangeError} If the arena exceeds the largest buffer, or a view the largest storage binding.
   */
  allocate(gpu: Gpu): this {
    const maxBinding = gpu.device.limits.maxStorageBufferBindingSize;
    if (this.byteLength > gpu.device.limits.maxBufferSize) {
      throw new RangeError(`arena ${this.label}: ${this.byteLength} B exceeds the device's largest buffer`);
    }
    this.buffer = gpu.device.createBuffer({ label: this.label, size: this.byteLength, usage: STORAGE_USAGE });
    for (const e of this.#entries) {
      if (sizeOf(e.shape) * 4 > maxBinding) {
        throw new RangeError(`arena ${this.label}: "${e.name}" is larger than one storage binding`);
      }
      this.#tensors.set(e.name, new Tensor(this.buffer, e.shape, e.offset, e.name));
    }
    return this;
  }

  /**
   * The view reserved under `name`.
   *
   * @throws {Error} If there is no such name or the arena is not allocated.
   */
  get(name: string): Tensor {
    const t = this.#tensors.get(name);
    if (!t) {
      throw new Error(`arena ${this.label}: no tensor "${name}"${this.buffer ? "" : " (not allocated)"}`);
    }
    return t;
  }

  /** Whether `name` was reserved (allocated or not). */
  has(name: string): boolean {
    return this.#entries.some((e) => e.name === name);
  }

  /** Reserved names in reservation order (which is also offset order). */
  names(): string[] {
    return this.#entries.map((e) => e.name);
  }

  /** The whole arena as one flat tensor (padding included). */
  whole(): Tensor {
    if (!this.buffer) throw new Error(`arena ${this.label}: not allocated`);
    return new Tensor(this.buffer, [this.byteLength / 4], 0, this.label);
  }

  /** Frees the buffer; the views become invalid. The arena can be allocated again. */
  destroy(): void {
    this.buffer?.destroy();
    this.buffer = undefined;
    this.#tensors.clear();
  }
}

/**
 * Named tensors, each in a buffer of its own. Activations need this: WebGPU forbids binding one buffer both
 * read-write and read-only in a dispatch, even at disjoint ranges, and layers read one activation while writing
 * the next. (Parameters and gradients are only ever read, or only written, within a dispatch: they use an Arena.)
 *
 * @example Activations of a two-layer block
 * ```ts
 * import { BufferTable, getGpu } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * const [batch, tokens, dim] = [32, 64, 128];
 * const acts = new BufferTable("acts");
 * acts.reserve("x", [batch, tokens, dim]);
 * acts.reserve("hidden", [batch, tokens, 2 * dim]);
 * acts.allocate(gpu);
 * const hidden = acts.get("hidden"); // [B, N, 2d], a buffer of its own
 * console.log(hidden.shape, acts.byteLength); // [32, 64, 256] 3145728
 * acts.destroy();
 * ```
 */
export class BufferTable {
  #shapes = new Map<string, readonly number[]>();
  #tensors = new Map<string, Tensor>();

  /**
   * Creates an empty table; nothing is allocated until {@link BufferTable.allocate}.
   *
   * @param label Prefix of the buffer labels, used in error messages.
   */
  constructor(readonly label: string) {}

  /**
   * Declares a tensor to be created by {@link BufferTable.allocate}.
   *
   * @throws {Error} If `name` is already reserved.
   */
  reserve(name: string, shape: readonly number[]): void {
    if (this.#shapes.has(name)) throw new Error(`${this.label}: "${name}" twice`);
    this.#shapes.set(name, shape);
  }

  /**
   * Creates one buffer per reserved tensor.
   *
   * @param gpu The device to allocate on.
   * @returns This table, for chaining.
   * @throws {RangeError} If a tensor is larger than the largest storage binding.
   */
  allocate(gpu: Gpu): this {
    for (const [name, shape] of this.#shapes) {
      if (sizeOf(shape) * 4 > gpu.device.limits.maxStorageBufferBindingSize) {
        throw new RangeError(`${this.label}: "${name}" [${shape}] is larger than one storage binding`);
      }
      this.#tensors.set(name, createTensor(gpu, shape, `${this.label}: ${name}`));
    }
    return this;
  }

  /**
   * The tensor reserved under `name`.
   *
   * @throws {Error} If there is no such name or the table is not allocated.
   */
  get(name: string): Tensor {
    const t = this.#tensors.get(name);
    if (!t) throw new Error(`${this.label}: no tensor "${name}"`);
    return t;
  }

  /** Whether `name` was reserved (allocated or not). */
  has(name: string): boolean {
    return this.#shapes.has(name);
  }

  /** Total bytes of all tensors. */
  get byteLength(): number {
    let n = 0;
    for (const s of this.#shapes.values()) n += sizeOf(s) * 4;
    return n;
  }

  /** Frees every buffer of the table. */
  destroy(): void {
    for (const t of this.#tensors.values()) t.buffer.destroy();
    this.#tensors.clear();
  }
}
