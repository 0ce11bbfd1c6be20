/**
 * Kernel selection per adapter. Kernel wrappers build plans synchronously, so they cannot time anything: they ask
 * an in-memory table keyed by (adapter description, backend, kernel family, shape class) and fall back to a
 * static default. A family's async tuner (e.g. `tuneMatmul`) times candidate plans with timestamp queries and
 * records the winner here; the table can be saved to and loaded from a JSON file the caller names.
 * (`tuneMatmul` lives in `lib/kernels/matmul.ts`: lib/gpu may not import the kernel layer above it.)
 */
import type { Gpu } from "./device.ts";
import type { Plan } from "./plan.ts";
import { writeFileAtomic } from "../io/atomic.ts";

/** One remembered choice and, when it was measured, the median milliseconds of every candidate. */
export interface TuneEntry {
  choice: string;
  timings?: Record<string, number>;
}

const table = new Map<string, TuneEntry>();

/** The table key of a (device, family, shape class). */
export function tuneKey(gpu: Gpu, family: string, shapeClass: string): string {
  return `${gpu.description}|${gpu.backend}|${family}|${shapeClass}`;
}

/** Power-of-two bucket of a size (1, 2, 4, …), so nearby shapes share a tuned choice. */
export function sizeClass(n: number): number {
  return n <= 1 ? 1 : 2 ** Math.ceil(Math.log2(n));
}

/** The recorded choice for a shape class, if any. */
export function lookupChoice(gpu: Gpu, family: string, shapeClass: string): string | undefined {
  return table.get(tuneKey(gpu, family, shapeClass))?.choice;
}

/** Records (or overrides) the choice for a shape class. */
export function recordChoice(
  gpu: Gpu,
  family: string,
  shapeClass: string,
  choice: string,
  timings?: Record<string, number>,
): void {
  table.set(tuneKey(gpu, family, shapeClass), timings ? { choice, timings } : { choice });
}

/** Forgets every recorded choice (tests, or after the adapter changed). */
export function clearTuneTable(): void {
  table.clear();
}

/** A copy of the whole table, keyed by {@link tuneKey}. */
export function tuneTableSnapshot(): Record<string, TuneEntry> {
  return Object.fromEntries([...table].map(([k, v]) => [k, structuredClone(v)]));
}

/** The whole table as JSON text (what {@link saveTuneTable} writes). */
export function tuneTableToJson(): string {
  return JSON.stringify(tuneTableSnapshot(), null, 2) + "\n";
}

/**
 * Merges a table from JSON text; returns the number of entries read. Throws SyntaxError naming `source` when the
 * text is not a tune table.
 */
export function mergeTuneTableJson(text: string, source = "tune table"): number {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (e) {
    throw new SyntaxError(`${source}: not JSON (${(e as Error).message})`);
  }
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    throw new SyntaxError(`${source}: expected an object of entries`);
  }
  let count = 0;
  for (const [key, entry] of Object.entries(data as Record<string, unknown>)) {
    const choice = (entry as { choice?: unknown })?.choice;
    if (typeof choice !== "string") throw new SyntaxError(`${source}: entry "${key}" has no choice`);
    table.set(key, entry as TuneEntry);
    count++;
  }
  return count;
}

/** Merges a table saved by {@link saveTuneTable}; returns the number of entries read (0 when the file is absent). */
export async function loadTuneTable(path: string): Promise<number> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return 0;
    throw e;
  }
  return mergeTuneTableJson(text, `tune table ${path}`);
}

/** Writes the whole table as JSON (only call where the user allowed writing that path). */
export async function saveTuneTable(path: string): Promise<void> {
  await writeFileAtomic(path, new TextEncoder().encode(tuneTableToJson()));
}

/**
 * Median GPU milliseconds of one run of `plan`: `reps` runs per submission, `samples` submissions, timestamp queries
 * when the device has them (wall time of the awaited submission otherwise). Runs the plan once first to compile.
 */
export async function timePlanMs(gpu: Gpu, plan: Plan, { reps = 3, samples = 3 } = {}): Promise<number> {
  await plan.run();
  const device = gpu.device;
  const query = gpu.hasTimestamps ? device.createQuerySet({ type: "timestamp", count: 2 * reps }) : undefined;
  const resolve = query &&
    device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = query &&
    device.createBuffer({ size: 16 * reps, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const times: number[] = [];
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

/**
 * Times every candidate plan, records the fastest for (family, shapeClass) and returns its name. A candidate
 * whose plan fails (invalid on this device) is skipped; when every candidate fails, the error of the last is thrown.
 */
export async function tuneChoice(
  gpu: Gpu,
  family: string,
  shapeClass: string,
  candidates: Record<string, () => Plan>,
  timing?: { reps?: number; samples?: number },
): Promise<string> {
  const timings: Record<string, number> = {};
  let lastError: unknown;
  for (const [name, build] of Object.entries(candidates)) {
    const plan = build();
    try {
      timings[name] = await timePlanMs(gpu, plan, timing);
    } catch (e) {
      lastError = e;
    } finally {
      plan.destroy();
    }
  }
  const ranked = Object.entries(timings).sort((a, b) => a[1] - b[1]);
  if (ranked.length === 0) throw lastError ?? new Error(`tune ${family} ${shapeClass}: no candidates`);
  recordChoice(gpu, family, shapeClass, ranked[0][0], timings);
  return ranked[0][0];
}
