/**
 * Kernel benchmark harness: every case validates nothing itself (the tests do that) but is timed the same way —
 * R repetitions of the plan recorded into one submission, GPU time from timestamp queries when the adapter has
 * them (else wall time of the awaited submission), median over several submissions.
 */
import type { Gpu } from "../lib/gpu/device.ts";
import type { Plan } from "../lib/gpu/plan.ts";

/** One benchmark: a plan to time, its work in FLOPs or bytes, and optionally a naive plan for comparison. */
export interface BenchCase {
  /** e.g. "matmul 4096×768×256 (cct_7 qkv)". */
  name: string;
  /** Floating-point operations of one run (2·M·N·K for a matmul); 0 when the case is bandwidth-bound. */
  flops: number;
  /** Bytes moved by one run, for bandwidth-bound kernels; 0 otherwise. */
  bytes: number;
  /** Builds the plans to time (inputs allocated and filled inside). */
  build(gpu: Gpu): Promise<{ plan: Plan; naive?: Plan; variants?: Record<string, Plan> }>;
}

/** Median GPU milliseconds of one run of `plan`. */
export async function timePlan(gpu: Gpu, plan: Plan, { reps = 5, samples = 7 } = {}): Promise<number> {
  await plan.run(); // compile and warm up
  const times: number[] = [];
  const device = gpu.device;
  const query = gpu.hasTimestamps ? device.createQuerySet({ type: "timestamp", count: 2 * reps }) : undefined;
  const resolve = query &&
    device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = query &&
    device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  for (let s = 0; s < samples; s++) {
    const encoder = device.createCommandEncoder();
    for (let r = 0; r < reps; r++) {
      plan.encode(
        encoder,
        query
          ? { querySet: query, beginningOfPassWriteIndex: 2 * r, endOfPassWriteIndex: 2 * r + 1 }
          : undefined,
      );
    }
    if (query) {
      encoder.resolveQuerySet(query, 0, 2 * reps, resolve!, 0);
      encoder.copyBufferToBuffer(resolve!, 0, read!, 0, 16 * reps);
    }
    const t0 = performance.now();
    device.queue.submit([encoder.finish()]);
    if (query) {
      await read!.mapAsync(GPUMapMode.READ);
      const stamps = new BigUint64Array(read!.getMappedRange().slice(0));
      read!.unmap();
      let ns = 0;
      for (let r = 0; r < reps; r++) ns += Number(stamps[2 * r + 1] - stamps[2 * r]);
      times.push(ns / 1e6 / reps);
    } else {
      await device.queue.onSubmittedWorkDone();
      times.push((performance.now() - t0) / reps);
    }
  }
  query?.destroy();
  resolve?.destroy();
  read?.destroy();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

/** "12.3 GFLOP/s" or "4.5 GB/s" for a case run in `ms`. */
export function rate(c: BenchCase, ms: number): string {
  return c.flops > 0
    ? `${(c.flops / ms / 1e6).toFixed(1)} GFLOP/s`
    : `${(c.bytes / ms / 1e6).toFixed(2)} GB/s`;
}
