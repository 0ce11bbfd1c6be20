/**
 * Recording work for the GPU. A {@link Plan} is a list of dispatches built once (pipelines from the cache, bind
 * groups, per-dispatch size uniforms packed into one buffer) and then encoded into one command encoder as many
 * times as needed: a training step or an inference batch is one `plan.submit()`.
 */
import { assertDeviceAlive, type Gpu } from "./device.ts";
import { Tensor } from "./tensor.ts";

/** Largest number of workgroups in one grid dimension (WebGPU's limit). */
export const MAX_GROUPS_PER_DIM = 65535;

/** Sizes passed to a shader as a small uniform struct: u32, i32 or f32 fields in declaration order. */
export type UniformField = { u32: number } | { i32: number } | { f32: number };

/** Something a binding can be: a tensor view, a raw buffer binding, or uniform values packed by the plan. */
export type Binding = Tensor | GPUBufferBinding | { uniform: readonly (number | UniformField)[] };

/**
 * A uniform buffer the host rewrites between submissions (learning rate, step, RNG seed).
 *
 * Unlike the inline `{ uniform: [...] }` bindings of a {@link Plan}, which are fixed when the plan is
 * finalized, a block's values can change every step: write them through {@link UniformBlock.u32} or
 * {@link UniformBlock.f32}, call {@link UniformBlock.flush}, and submit.
 *
 * @example A per-step scale factor read by a kernel
 * ```ts
 * import { getGpu, Plan, UniformBlock } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * const step = new UniformBlock(gpu, 2, "step"); // word 0: u32 step, word 1: f32 scale
 * const plan = new Plan(gpu, "scaled step");
 * // plan.dispatch("myKernel", code, [step.binding(), out, input], groups);
 * for (let i = 0; i < 100; i++) {
 *   step.u32[0] = i;
 *   step.f32[1] = 1 / (1 + i);
 *   step.flush();
 *   plan.submit();
 * }
 * ```
 */
export class UniformBlock {
  /** The GPU buffer (`UNIFORM | COPY_DST`), at least 16 bytes and a multiple of 16. */
  readonly buffer: GPUBuffer;
  /** Host copy of the contents; {@link UniformBlock.u32} and {@link UniformBlock.f32} are views of it. */
  readonly data: ArrayBuffer;
  /** The contents as 32-bit unsigned words (write `u32` and `i32` fields here). */
  readonly u32: Uint32Array;
  /** The same contents as 32-bit floats (write `f32` fields here). */
  readonly f32: Float32Array;
  /**
   * Creates a zero-filled block.
   *
   * @param gpu The device to allocate on.
   * @param words Number of 32-bit fields; the buffer is padded to a multiple of 16 bytes.
   * @param label Debug label of the buffer.
   */
  constructor(readonly gpu: Gpu, words: number, label: string) {
    const bytes = Math.max(16, Math.ceil((words * 4) / 16) * 16);
    this.buffer = gpu.device.createBuffer({
      label,
      size: bytes,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    this.data = new ArrayBuffer(bytes);
    this.u32 = new Uint32Array(this.data);
    this.f32 = new Float32Array(this.data);
  }
  /** Queues the current values; they take effect from the next submission. */
  flush(): void {
    this.gpu.device.queue.writeBuffer(this.buffer, 0, this.data);
  }
  /** The whole buffer as a binding, to pass among a dispatch's bindings. */
  binding(): GPUBufferBinding {
    return { buffer: this.buffer };
  }
}

interface PipelineEntry {
  pipeline: GPUComputePipeline;
  check: Promise<void>;
}

const pipelineCaches = new WeakMap<GPUDevice, Map<string, PipelineEntry>>();

/** Compiles (once per device and source) the pipeline of a fully specialised kernel. */
export function getPipeline(gpu: Gpu, name: string, code: string): PipelineEntry {
  let cache = pipelineCaches.get(gpu.device);
  if (!cache) pipelineCaches.set(gpu.device, cache = new Map());
  const key = `${name}\n${code}`;
  let entry = cache.get(key);
  if (!entry) {
    const device = gpu.device;
    device.pushErrorScope("validation");
    const module = device.createShaderModule({ label: name, code });
    const pipeline = device.createComputePipeline({
      label: name,
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    const check = device.popErrorScope().then(async (error) => {
      if (error) {
        const info = await module.getCompilationInfo();
        const lines = info.messages.map((m) => `  ${m.type} at ${m.lineNum}:${m.linePos}: ${m.message}`);
        throw new Error(`kernel ${name}: pipeline creation failed: ${error.message}\n${lines.join("\n")}`);
      }
    });
    check.catch(() => {}); // reported by Plan.ready(); avoid an unhandled rejection meanwhile
    entry = { pipeline, check };
    cache.set(key, entry);
  }
  return entry;
}

interface Step {
  name: string;
  pipeline: GPUComputePipeline;
  bindings: Binding[];
  groups: [number, number, number];
  bindGroup?: GPUBindGroup;
}

/**
 * An ordered list of dispatches, recorded once and submitted many times.
 *
 * {@link Plan.dispatch} compiles (or takes from the cache) each kernel's pipeline; the first
 * {@link Plan.encode} packs the inline uniforms into one buffer and creates the bind groups. After that a
 * submission only records the dispatches into one compute pass: no allocation, no validation round trip.
 *
 * @example Double a tensor in place with a custom kernel
 * ```ts
 * import { getGpu, Plan, readTensor, uploadTensor } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * const x = uploadTensor(gpu, new Float32Array([1, 2, 3, 4, 5]), [5], "x");
 * const code = `
 *   struct Sizes { n: u32 }
 *   @group(0) @binding(0) var<uniform> sizes: Sizes;
 *   @group(0) @binding(1) var<storage, read_write> x: array<f32>;
 *   @compute @workgroup_size(64) fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
 *     if (gid.x < sizes.n) { x[gid.x] = 2.0 * x[gid.x]; }
 *   }`;
 * const plan = new Plan(gpu, "double");
 * plan.dispatch("double", code, [{ uniform: [x.size] }, x], Math.ceil(x.size / 64));
 * await plan.run(); // validates, submits, waits
 * console.log(await readTensor(gpu, x)); // Float32Array [2, 4, 6, 8, 10]
 * plan.destroy();
 * ```
 */
export class Plan {
  #steps: Step[] = [];
  #checks: Promise<void>[] = [];
  #uniforms: GPUBuffer | undefined;
  #finalized = false;

  /**
   * Creates an empty plan.
   *
   * @param gpu The device whose pipelines and buffers the plan uses.
   * @param label Names the plan in error messages, profiles and debug labels.
   */
  constructor(readonly gpu: Gpu, readonly label: string) {}

  /** Number of dispatches in the plan. */
  get length(): number {
    return this.#steps.length;
  }

  /** Names of the kernels in order (for profiles and error messages). */
  get kernelNames(): string[] {
    return this.#steps.map((s) => s.name);
  }

  /**
   * Appends one dispatch. `bindings[i]` is `@binding(i)` of `@group(0)` in `code`, whose entry point is `main`.
   * Every binding must be used by the shader (the layout is derived from it).
   */
  dispatch(
    name: string,
    code: string,
    bindings: Binding[],
    groups: number | [number, number?, number?],
  ): void {
    if (this.#finalized) throw new Error(`plan ${this.label}: dispatch("${name}") after finalize()`);
    const g = typeof groups === "number" ? [groups, 1, 1] : [groups[0], groups[1] ?? 1, groups[2] ?? 1];
    for (const n of g) {
      if (!Number.isInteger(n) || n < 0 || n > MAX_GROUPS_PER_DIM) {
        throw new RangeError(`kernel ${name}: bad workgroup count [${g}] (each 0..${MAX_GROUPS_PER_DIM})`);
      }
    }
    const entry = getPipeline(this.gpu, name, code);
    this.#checks.push(entry.check);
    this.#steps.push({ name, pipeline: entry.pipeline, bindings, groups: g as [number, number, number] });
  }

  /** Appends all dispatches of another (unfinalized) plan. */
  append(other: Plan): void {
    if (this.#finalized) throw new Error(`plan ${this.label}: append after finalize()`);
    for (const s of other.#steps) this.#steps.push({ ...s, bindGroup: undefined });
    this.#checks.push(...other.#checks);
  }

  /** Creates the uniform buffer and the bind groups; called by the first encode. */
  finalize(): void {
    if (this.#finalized) return;
    this.#finalized = true;
    const device = this.gpu.device;
    const align = Math.max(256, device.limits.minUniformBufferOffsetAlignment);
    // Pack every inline uniform into one buffer, one aligned slot each.
    const slots: { step: number; index: number; offset: number; bytes: ArrayBuffer }[] = [];
    let total = 0;
    this.#steps.forEach((s, step) =>
      s.bindings.forEach((b, index) => {
        if ("uniform" in b) {
          const bytes = packUniform(b.uniform);
          slots.push({ step, index, offset: total, bytes });
          total += Math.ceil(bytes.byteLength / align) * align;
        }
      })
    );
    if (total > 0) {
      this.#uniforms = device.createBuffer({
        label: `${this.label}:uniforms`,
        size: total,
        usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        mappedAtCreation: true,
      });
      const mapped = new Uint8Array(this.#uniforms.getMappedRange());
      for (const s of slots) mapped.set(new Uint8Array(s.bytes), s.offset);
      this.#uniforms.unmap();
    }
    const uniformAt = new Map(slots.map((s) => [`${s.step}:${s.index}`, s]));
    this.#steps.forEach((s, step) => {
      device.pushErrorScope("validation");
      s.bindGroup = device.createBindGroup({
        label: s.name,
        layout: s.pipeline.getBindGroupLayout(0),
        entries: s.bindings.map((b, index) => {
          if (b instanceof Tensor) return { binding: index, resource: b.binding() };
          if ("uniform" in b) {
            const slot = uniformAt.get(`${step}:${index}`)!;
            return {
              binding: index,
              resource: { buffer: this.#uniforms!, offset: slot.offset, size: slot.bytes.byteLength },
            };
          }
          return { binding: index, resource: b };
        }),
      });
      const check = device.popErrorScope().then((error) => {
        if (error) throw new Error(`kernel ${s.name} (plan ${this.label}): bind group: ${error.message}`);
      });
      check.catch(() => {});
      this.#checks.push(check);
    });
  }

  /** Records every dispatch into `encoder` in one compute pass. */
  encode(encoder: GPUCommandEncoder, timestampWrites?: GPUComputePassTimestampWrites): void {
    this.finalize();
    const pass = encoder.beginComputePass({ label: this.label, timestampWrites });
    for (const s of this.#steps) {
      if (s.groups[0] * s.groups[1] * s.groups[2] === 0) continue;
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup!);
      pass.dispatchWorkgroups(s.groups[0], s.groups[1], s.groups[2]);
    }
    pass.end();
  }

  /** Encodes and submits the plan once; does not wait. */
  submit(): void {
    assertDeviceAlive();
    const encoder = this.gpu.device.createCommandEncoder({ label: this.label });
    this.encode(encoder);
    this.gpu.device.queue.submit([encoder.finish()]);
  }

  /** Resolves when every pipeline and bind group of the plan is valid; rejects naming the kernel otherwise. */
  async ready(): Promise<void> {
    this.finalize();
    await Promise.all(this.#checks);
  }

  /** Submits once and waits for completion, surfacing validation and out-of-memory errors by name. */
  async run(): Promise<void> {
    await this.runAndRead([]);
  }

  /**
   * Submits the plan and copies of `outputs` in ONE submission and waits once (each wait costs ≥ 11 ms on
   * llvmpipe, so a forward pass and its readback share it). Returns the outputs' contents in order.
   */
  async runAndRead(outputs: Tensor[]): Promise<Float32Array[]> {
    await this.ready();
    assertDeviceAlive();
    const device = this.gpu.device;
    device.pushErrorScope("out-of-memory");
    device.pushErrorScope("validation");
    const encoder = device.createCommandEncoder({ label: this.label });
    this.encode(encoder);
    const staging = outputs.map((t) => {
      const buffer = device.createBuffer({
        label: `${t.label}:readback`,
        size: Math.max(4, t.byteLength),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      if (t.byteLength > 0) encoder.copyBufferToBuffer(t.buffer, t.offset, buffer, 0, t.byteLength);
      return buffer;
    });
    device.queue.submit([encoder.finish()]);
    const validation = await device.popErrorScope();
    const oom = await device.popErrorScope();
    if (validation) throw new Error(`plan ${this.label}: submission failed: ${validation.message}`);
    if (oom) throw new Error(`plan ${this.label}: out of GPU memory: ${oom.message}`);
    const results: Float32Array[] = [];
    if (staging.length === 0) await device.queue.onSubmittedWorkDone();
    for (const [i, buffer] of staging.entries()) {
      await buffer.mapAsync(GPUMapMode.READ);
      results.push(new Float32Array(buffer.getMappedRange().slice(0, outputs[i].byteLength)));
      buffer.unmap();
      buffer.destroy();
    }
    assertDeviceAlive();
    return results;
  }

  /**
   * Runs the plan once with every dispatch in its own timed pass (timestamp queries) and returns each kernel's
   * GPU milliseconds, in order. For profiling only: separate passes add a little overhead per dispatch.
   */
  async profile(): Promise<{ name: string; ms: number }[]> {
    if (!this.gpu.hasTimestamps) throw new Error("profile(): the device has no timestamp-query feature");
    await this.ready();
    const device = this.gpu.device;
    const steps = this.#steps.filter((s) => s.groups[0] * s.groups[1] * s.groups[2] > 0);
    const count = 2 * steps.length;
    const querySet = device.createQuerySet({ type: "timestamp", count });
    const resolve = device.createBuffer({
      size: 8 * count,
      usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
    });
    const read = device.createBuffer({
      size: 8 * count,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = device.createCommandEncoder({ label: `${this.label} (profile)` });
    steps.forEach((s, i) => {
      const pass = encoder.beginComputePass({
        timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
      });
      pass.setPipeline(s.pipeline);
      pass.setBindGroup(0, s.bindGroup!);
      pass.dispatchWorkgroups(s.groups[0], s.groups[1], s.groups[2]);
      pass.end();
    });
    encoder.resolveQuerySet(querySet, 0, count, resolve, 0);
    encoder.copyBufferToBuffer(resolve, 0, read, 0, 8 * count);
    device.queue.submit([encoder.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const stamps = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    for (const b of [resolve, read]) b.destroy();
    querySet.destroy();
    return steps.map((s, i) => ({ name: s.name, ms: Number(stamps[2 * i + 1] - stamps[2 * i]) / 1e6 }));
  }

  /** Frees the plan's uniform buffer (tensors belong to their owners). */
  destroy(): void {
    this.#uniforms?.destroy();
  }
}

function packUniform(fields: readonly (number | UniformField)[]): ArrayBuffer {
  const bytes = new ArrayBuffer(Math.max(16, Math.ceil((fields.length * 4) / 16) * 16));
  const view = new DataView(bytes);
  fields.forEach((f, i) => {
    if (typeof f === "number") {
      if (!Number.isInteger(f) || f < 0) throw new RangeError(`uniform field ${i}: ${f} is not a u32`);
      view.setUint32(i * 4, f, true);
    } else if ("u32" in f) view.setUint32(i * 4, f.u32, true);
    else if ("i32" in f) view.setInt32(i * 4, f.i32, true);
    else view.setFloat32(i * 4, f.f32, true);
  });
  return bytes;
}

/**
 * A 2-D grid covering `n` invocations of `workgroupSize` lanes. Shaders recover the linear index with
 * {@link LINEAR_INDEX_WGSL}: `gid.x + gid.y * (num_workgroups.x * workgroupSize)`.
 */
export function grid1d(n: number, workgroupSize: number): [number, number, number] {
  const groups = Math.ceil(n / workgroupSize);
  if (groups <= MAX_GROUPS_PER_DIM) return [groups, 1, 1];
  const y = Math.ceil(groups / MAX_GROUPS_PER_DIM);
  return [Math.ceil(groups / y), y, 1];
}

/** WGSL helper matching {@link grid1d}; needs `@builtin(global_invocation_id) gid` and `num_workgroups) nwg`. */
export const LINEAR_INDEX_WGSL = (workgroupSize: number) =>
  `fn linear_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 { return gid.x + gid.y * (nwg.x * ${workgroupSize}u); }`;
