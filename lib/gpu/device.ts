/**
 * The WebGPU device: acquired once per process, with the adapter's real limits and the optional features
 * (`subgroups`, `shader-f16`, `timestamp-query`) that it offers.
 */

/** What the rest of the library needs to know about the device it runs on. */
export interface Gpu {
  /** The device every buffer, pipeline and submission of the library uses. */
  readonly device: GPUDevice;
  /** The adapter the device was requested from. */
  readonly adapter: GPUAdapter;
  /** Adapter description, e.g. "llvmpipe (LLVM 15.0.6, 256 bits)". */
  readonly description: string;
  /** "vulkan", "gl", … when known (from `DENO_WEBGPU_BACKEND`), otherwise "default". */
  readonly backend: string;
  /** Whether the adapter reports itself as a fallback (typically a software implementation). */
  readonly isFallbackAdapter: boolean;
  /** Whether the device was created with the `subgroups` feature (WGSL `enable subgroups;`). */
  readonly hasSubgroups: boolean;
  /** Whether the device has `shader-f16` (WGSL `enable f16;`). */
  readonly hasF16: boolean;
  /** Whether the device has `timestamp-query`, which `Plan.profile()` needs. */
  readonly hasTimestamps: boolean;
  /** Subgroup width when `hasSubgroups` and the adapter's width is fixed (8 on lavapipe), else 0. */
  readonly subgroupSize: number;
}

let current: Promise<Gpu> | undefined;
let lostReason: string | undefined;

/**
 * Returns the process-wide GPU, requesting it on first use.
 *
 * The adapter is requested with `powerPreference: "high-performance"`, the device with the adapter's own limits
 * (not WebGPU's defaults) and every optional feature the library can use. A failed request is not cached, so a
 * later call tries again.
 *
 * @returns The shared {@link Gpu}; every call resolves to the same object.
 * @throws {Error} If this Deno has no WebGPU or no adapter is found (the message says what to install).
 *
 * @example Report the adapter and its features
 * ```ts
 * import { getGpu } from "@compact-transformers/cct";
 *
 * const gpu = await getGpu();
 * console.log(gpu.description, gpu.backend, { subgroups: gpu.hasSubgroups, f16: gpu.hasF16 });
 * console.log("largest binding:", gpu.device.limits.maxStorageBufferBindingSize, "bytes");
 * ```
 */
export function getGpu(): Promise<Gpu> {
  current ??= requestGpu().catch((e) => {
    current = undefined;
    throw e;
  });
  return current;
}

/** Throws if the device was lost; called before work is submitted so a lost device is reported clearly. */
export function assertDeviceAlive(): void {
  if (lostReason !== undefined) throw new Error(`WebGPU device lost: ${lostReason}`);
}

const noAdapterHelp = [
  "No WebGPU adapter found (navigator.gpu.requestAdapter() returned null).",
  "On a machine without a GPU install Mesa's software adapter: `apt-get install -y mesa-vulkan-drivers`",
  "(Vulkan lavapipe; OpenGL llvmpipe from libgl1-mesa-dri also works).",
  "On a GPU server install the vendor's Vulkan driver (ICD).",
  "Pick a backend with DENO_WEBGPU_BACKEND=vulkan or DENO_WEBGPU_BACKEND=gl.",
].join("\n");

function envBackend(): string {
  try {
    return Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
  } catch {
    return "default"; // no --allow-env: not worth failing for a label
  }
}

async function requestGpu(): Promise<Gpu> {
  if (!("gpu" in navigator) || navigator.gpu === undefined) {
    throw new Error("navigator.gpu is missing: this Deno build has no WebGPU. Use Deno 2.x.");
  }
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (adapter === null) throw new Error(noAdapterHelp);

  const want: (keyof GPUSupportedLimits)[] = [
    "maxStorageBufferBindingSize",
    "maxBufferSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeWorkgroupStorageSize",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupsPerDimension",
    "maxUniformBufferBindingSize",
  ];
  const requiredLimits: Record<string, number> = {};
  for (const name of want) requiredLimits[name] = adapter.limits[name] as number;

  // `subgroups` can work although the adapter does not list it (lavapipe), so ask and fall back.
  const optional: GPUFeatureName[] = [];
  if (adapter.features.has("shader-f16")) optional.push("shader-f16");
  if (adapter.features.has("timestamp-query")) optional.push("timestamp-query");
  let device: GPUDevice | undefined;
  let hasSubgroups = false;
  try {
    device = await adapter.requestDevice({
      requiredFeatures: [...optional, "subgroups" as GPUFeatureName],
      requiredLimits,
    });
    hasSubgroups = true;
  } catch {
    device = await adapter.requestDevice({ requiredFeatures: optional, requiredLimits });
  }
  device.lost.then((info) => {
    lostReason = `${info.reason}: ${info.message}`;
    if (info.reason !== "destroyed") console.error(`WebGPU device lost (${lostReason})`);
  });
  const info = adapter.info;
  return {
    device,
    adapter,
    description: info.description || info.vendor || "unknown adapter",
    backend: envBackend(),
    isFallbackAdapter: (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? false,
    hasSubgroups,
    hasF16: device.features.has("shader-f16"),
    hasTimestamps: device.features.has("timestamp-query"),
    subgroupSize: hasSubgroups ? fixedSubgroupSize(info) : 0,
  };
}

/** Kernels written for one subgroup width are only valid where the width cannot vary. */
function fixedSubgroupSize(info: GPUAdapterInfo): number {
  const sizes = info as { subgroupMinSize?: number; subgroupMaxSize?: number };
  return sizes.subgroupMinSize !== undefined && sizes.subgroupMinSize === sizes.subgroupMaxSize
    ? sizes.subgroupMinSize
    : 0;
}
