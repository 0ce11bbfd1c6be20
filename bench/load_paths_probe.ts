/**
 * What one per-invocation vec4 load costs on this adapter, by where the data lives: a storage buffer (read-only
 * and read-write bindings), a uniform buffer, an rgba32float texture (`textureLoad`), workgroup memory (filled
 * once per workgroup, barrier included), and no load at all (the loop's own cost). Every invocation runs the
 * same loop of independent loads and sums them, so the figure is the load path's throughput.
 *
 * Why: on lavapipe a storage-buffer load whose address differs between invocations becomes a loop over the
 * SIMD lanes with a bounds check and a branch per lane (Mesa's `emit_load_mem`), and the matmul and conv GEMM
 * kernels are bound by such loads rather than by multiply-adds (`shaders/matmul.ts`). This bench says how much
 * another path would save before any kernel is rewritten for it.
 *
 * Run: `deno run --allow-read=. --allow-env bench/load_paths_probe.ts [--pattern=lanes|scattered]`
 * (`lanes`, the default: neighbouring invocations read neighbouring vec4s, as a GEMM's operand loads do;
 * `scattered`: a stride of 67 vec4s between invocations and steps).
 */
import { getGpu } from "../lib/gpu/device.ts";

/** vec4 elements of the source: 64 KiB, the largest uniform binding WebGPU guarantees. */
const ELEMENTS = 4096;
const LOADS_PER_INVOCATION = 512;
const WORKGROUP = 64;
const WORKGROUPS = 512;

type Path = "storage" | "storage read_write" | "uniform" | "texture" | "workgroup" | "none";
const PATHS: Path[] = ["storage", "storage read_write", "uniform", "texture", "workgroup", "none"];

function shader(path: Path, scattered: boolean): string {
  const declare: Record<Path, string> = {
    "storage": "@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;",
    "storage read_write": "@group(0) @binding(0) var<storage, read_write> src: array<vec4<f32>>;",
    "uniform": `@group(0) @binding(0) var<uniform> src: array<vec4<f32>, ${ELEMENTS}>;`,
    "texture": "@group(0) @binding(0) var src: texture_2d<f32>;",
    "workgroup": "@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;\n" +
      `var<workgroup> tile: array<vec4<f32>, ${ELEMENTS}>;`,
    "none": "@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;",
  };
  const load: Record<Path, string> = {
    "storage": "src[i]",
    "storage read_write": "src[i]",
    "uniform": "src[i]",
    "texture": "textureLoad(src, vec2<u32>(i & 63u, i >> 6u), 0)",
    "workgroup": "tile[i]",
    "none": "vec4<f32>(f32(i))",
  };
  const fill = path === "workgroup"
    ? `for (var j = l; j < ${ELEMENTS}u; j += ${WORKGROUP}u) { tile[j] = src[j]; }\n  workgroupBarrier();`
    : "";
  const [start, step] = scattered ? [`(g.x * 13u) % ${ELEMENTS}u`, 67] : ["g.x % 64u", 64];
  return /* wgsl */ `
${declare[path]}
@group(0) @binding(1) var<storage, read_write> out: array<vec4<f32>>;
@compute @workgroup_size(${WORKGROUP})
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(local_invocation_index) l: u32) {
  ${fill}
  var sum = vec4<f32>(0.0);
  var i = ${start};
  for (var k = 0u; k < ${LOADS_PER_INVOCATION}u; k++) {
    sum += ${load[path]};
    i = (i + ${step}u) & ${ELEMENTS - 1}u;
  }
  out[g.x] = sum;
}`;
}

const scattered = Deno.args.includes("--pattern=scattered");
const gpu = await getGpu();
const { device } = gpu;
const data = new Float32Array(ELEMENTS * 4).map((_, i) => (i % 7) * 1e-3);
const storage = device.createBuffer({
  size: data.byteLength,
  usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
});
const uniform = device.createBuffer({
  size: data.byteLength,
  usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
});
const texture = device.createTexture({
  size: [64, ELEMENTS / 64],
  format: "rgba32float",
  usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST,
});
device.queue.writeBuffer(storage, 0, data);
device.queue.writeBuffer(uniform, 0, data);
device.queue.writeTexture({ texture }, data, { bytesPerRow: 64 * 16 }, [64, ELEMENTS / 64]);
const out = device.createBuffer({ size: WORKGROUPS * WORKGROUP * 16, usage: GPUBufferUsage.STORAGE });

/** Median wall milliseconds of one dispatch (four per submission, five submissions). */
async function time(path: Path): Promise<number> {
  const module = device.createShaderModule({ code: shader(path, scattered) });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const source: GPUBindingResource = path === "uniform"
    ? { buffer: uniform }
    : path === "texture"
    ? texture.createView()
    : { buffer: storage };
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [{ binding: 0, resource: source }, { binding: 1, resource: { buffer: out } }],
  });
  const run = async (dispatches: number) => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    for (let d = 0; d < dispatches; d++) pass.dispatchWorkgroups(WORKGROUPS);
    pass.end();
    device.queue.submit([encoder.finish()]);
    await device.queue.onSubmittedWorkDone();
  };
  await run(1); // compile and warm up
  const samples: number[] = [];
  for (let s = 0; s < 5; s++) {
    const t0 = performance.now();
    await run(4);
    samples.push((performance.now() - t0) / 4);
  }
  return samples.sort((a, b) => a - b)[2];
}

const loads = WORKGROUPS * WORKGROUP * LOADS_PER_INVOCATION;
console.log(`${gpu.description} (${gpu.backend}), ${scattered ? "scattered" : "lane-adjacent"} addresses`);
for (let round = 1; round <= 2; round++) {
  const cells: string[] = [];
  for (const path of PATHS) {
    const ms = await time(path);
    cells.push(`${path} ${(ms * 1e6 / loads).toFixed(2)} ns`);
  }
  console.log(`round ${round}, wall ns per vec4 load: ${cells.join(" | ")}`);
}
