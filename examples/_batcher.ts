/**
 * Micro-batching: requests that arrive within a few milliseconds of each other are answered by ONE call of a
 * batch function, one call at a time. Used by `examples/serve.ts` to run concurrent predictions as one forward
 * pass of the resident model.
 */

/** Options of {@link MicroBatcher}. */
export interface MicroBatcherOptions<I, O> {
  /** Answers a batch: one output per item, same order. Never called concurrently with itself. */
  run: (items: I[]) => Promise<O[]>;
  /** Most items per call (default 32). */
  maxBatch?: number;
  /** How long the first queued item waits for others before its batch runs (default 5 ms). */
  maxWaitMs?: number;
}

/** Counters of a {@link MicroBatcher}, for health checks and tests. */
export interface BatchStats {
  /** Items answered or failed so far. */
  requests: number;
  /** Calls of the batch function so far. */
  batches: number;
  /** Most items seen in one call. */
  largestBatch: number;
  /** Items waiting now. */
  queued: number;
}

/** One item's answer and the size of the batch that produced it. */
export interface Batched<O> {
  output: O;
  /** Items in the call that answered this one (including this one). */
  batchSize: number;
}

/** Why {@link MicroBatcher.submit} refused an item: the batcher was closed. */
export class BatcherClosedError extends Error {
  constructor() {
    super("the batcher is closed: the server is shutting down");
  }
}

interface Pending<I, O> {
  item: I;
  resolve: (value: Batched<O>) => void;
  reject: (reason: unknown) => void;
}

/** The batch sizes that get their own program: powers of two up to `maxBatch` (and `maxBatch` itself). */
export function batchBuckets(maxBatch: number): number[] {
  const buckets: number[] = [];
  for (let b = 1; b < maxBatch; b *= 2) buckets.push(b);
  buckets.push(maxBatch);
  return buckets;
}

/** The smallest bucket of {@link batchBuckets} that holds `n` items. */
export function bucketFor(n: number, maxBatch: number): number {
  if (!(Number.isInteger(n) && n >= 1 && n <= maxBatch)) {
    throw new RangeError(`bucketFor: batch of ${n} is outside [1, ${maxBatch}]`);
  }
  return batchBuckets(maxBatch).find((b) => b >= n)!;
}

/**
 * Collects submitted items into batches: a batch runs when `maxBatch` items are queued or `maxWaitMs` after its
 * first item arrived; while a batch runs the next ones queue, and run as soon as it is done.
 *
 * @example
 * ```ts
 * import { MicroBatcher } from "./_batcher.ts";
 * const batcher = new MicroBatcher<number, number>({ run: (xs) => Promise.resolve(xs.map((x) => 2 * x)) });
 * const [a, b] = await Promise.all([batcher.submit(1), batcher.submit(2)]);
 * console.log(a.output, b.output, a.batchSize); // 2 4 2
 * await batcher.close();
 * ```
 */
export class MicroBatcher<I, O> {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  #run: (items: I[]) => Promise<O[]>;
  #queue: Pending<I, O>[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #busy = false;
  #closed = false;
  #idle = Promise.withResolvers<void>();
  #stats = { requests: 0, batches: 0, largestBatch: 0 };

  constructor({ run, maxBatch = 32, maxWaitMs = 5 }: MicroBatcherOptions<I, O>) {
    if (!(Number.isInteger(maxBatch) && maxBatch >= 1)) {
      throw new RangeError(`MicroBatcher: maxBatch must be a positive integer, got ${maxBatch}`);
    }
    if (!(maxWaitMs >= 0)) throw new RangeError(`MicroBatcher: maxWaitMs must be ≥ 0, got ${maxWaitMs}`);
    this.#run = run;
    this.maxBatch = maxBatch;
    this.maxWaitMs = maxWaitMs;
  }

  /** Queues one item; resolves with its output once its batch has run, rejects if the batch failed. */
  submit(item: I): Promise<Batched<O>> {
    if (this.#closed) return Promise.reject(new BatcherClosedError());
    const { promise, resolve, reject } = Promise.withResolvers<Batched<O>>();
    this.#queue.push({ item, resolve, reject });
    this.#schedule();
    return promise;
  }

  /** A snapshot of the counters. */
  stats(): BatchStats {
    return { ...this.#stats, queued: this.#queue.length };
  }

  /** Refuses new items, runs the queued ones without waiting, and resolves when the last batch has finished. */
  close(): Promise<void> {
    this.#closed = true;
    this.#clearTimer();
    if (!this.#busy && this.#queue.length === 0) this.#idle.resolve();
    else if (!this.#busy) void this.#flush();
    return this.#idle.promise;
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #schedule(): void {
    if (this.#busy) return; // the running batch flushes the queue when it ends
    if (this.#queue.length >= this.maxBatch || this.#closed) {
      this.#clearTimer();
      void this.#flush();
    } else {
      this.#timer ??= setTimeout(() => {
        this.#timer = undefined;
        void this.#flush();
      }, this.maxWaitMs);
    }
  }

  async #flush(): Promise<void> {
    if (this.#busy || this.#queue.length === 0) return;
    const batch = this.#queue.splice(0, this.maxBatch);
    this.#busy = true;
    this.#stats.batches++;
    this.#stats.requests += batch.length;
    this.#stats.largestBatch = Math.max(this.#stats.largestBatch, batch.length);
    try {
      const outputs = await this.#run(batch.map((p) => p.item));
      if (outputs.length !== batch.length) {
        throw new Error(`batch function returned ${outputs.length} outputs for ${batch.length} items`);
      }
      batch.forEach((p, i) => p.resolve({ output: outputs[i], batchSize: batch.length }));
    } catch (error) {
      for (const p of batch) p.reject(error);
    } finally {
      this.#busy = false;
    }
    // Items that queued during the run have waited long enough: run them now rather than after another wait.
    if (this.#queue.length > 0) {
      this.#clearTimer();
      void this.#flush();
    } else if (this.#closed) this.#idle.resolve();
  }
}
