/**
 * Kernel benchmark harness: cases are validated by the tests, not here; each is timed the same way — R
 * repetitions of the plan recorded into one submission, GPU time from timestamp queries when the adapter has
 * them (else wall time of the awaited submission), median over several submissions.
 */
import type { Gpu } from "../lib/gpu/device.ts";
import type { Plan } from "../lib/gpu/plan.ts";
import { timePlanMs } from "../lib/gpu/autotune.ts";

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

/** Median GPU milliseconds of one run of `plan` (the autotuner's timer, with benchmark-length defaults). */
export function timePlan(gpu: Gpu, plan: Plan, { reps = 5, samples = 7 } = {}): Promise<number> {
  return timePlanMs(gpu, plan, { reps, samples });
}

/** "12.3 GFLOP/s" or "4.5 GB/s" for a case run in `ms`. */
export function rate(c: BenchCase, ms: number): string {
  return c.flops > 0
    ? `${(c.flops / ms / 1e6).toFixed(1)} GFLOP/s`
    : `${(c.bytes / ms / 1e6).toFixed(2)} GB/s`;
}
