/**
 * Compact Transformers (ViT-Lite, CVT, CCT — Hassani et al., arXiv 2104.05704) trained and run on WebGPU.
 *
 * All heavy math runs in WGSL compute kernels on Deno's built-in `navigator.gpu`.
 *
 * @example Acquire the GPU and describe it
 * ```ts
 * import { getGpu } from "@compact-transformers/cct";
 * const gpu = await getGpu();
 * console.log(gpu.description, gpu.hasSubgroups);
 * ```
 *
 * @module
 */
export { getGpu, type Gpu } from "./lib/gpu/device.ts";
