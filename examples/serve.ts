/**
 * An HTTP prediction server: one model resident on the GPU, concurrent requests micro-batched into one forward
 * pass.
 *
 * ```sh
 * # a checkpoint written by `cli.ts train` (it carries the model, normalisation and class names):
 * deno run --allow-net=127.0.0.1 --allow-read=runs/x/best.safetensors examples/serve.ts \
 *   --weights runs/x/best.safetensors
 * # an official checkpoint without metadata: name the model
 * deno run --allow-net=127.0.0.1 --allow-read=cct_7_3x1_32.pth examples/serve.ts \
 *   --weights cct_7_3x1_32.pth --model cct_7_3x1_32
 * # smoke tests only: random weights, meaningless predictions
 * deno run --allow-net=127.0.0.1 examples/serve.ts --model cct_2_3x2_32 --port 0
 *
 * curl -s --data-binary @cat.png -H 'content-type: image/png' 'http://127.0.0.1:8000/predict?top=3'
 * curl -s http://127.0.0.1:8000/health
 * ```
 *
 * Add `--allow-env=DENO_WEBGPU_BACKEND` to let the health report name the backend (without it the server still
 * runs on whatever backend Deno picks). `--port 0` picks a free port; the first line printed is always
 * `listening on http://HOST:PORT`.
 *
 * Endpoints:
 * - `POST /predict[?top=K][&tta=MODE]`, body: PNG or JPEG bytes (`content-type` image/png, image/jpeg,
 *   application/octet-stream or none) → `{ predictions: [{ class, index, probability }] }`, best first, with
 *   headers `x-batch-size` (images scored by the same forward pass), `x-batch-padded` (its program size) and
 *   `x-tta-views`. `tta` (default `--tta`, itself default `none`): `flip` averages the logits of the image and
 *   its mirror, `flip-shift` also those of the image moved one pixel each way, as `cli.ts predict --tta` does;
 *   each view is one image of a batch, so views of concurrent requests share forward passes.
 * - `GET /health` → `{ ok: true, model, classes, input, backend, adapter, maxBatch, tta, activePredictions,
 *   requests, batches, largestBatch, queued }` (`requests`/`batches`: images scored, counting each view, and
 *   forward passes so far).
 * - Anything wrong with a request is a 4xx `{ error }` naming the problem; the server keeps serving.
 *
 * SIGINT/SIGTERM (or aborting `signal` when imported) stops accepting connections, answers the requests in
 * flight, then frees the model.
 *
 * @module
 */
import { parseArgs } from "node:util";
// A JSR user writes: import { … } from "jsr:@compact-transformers/cct";
import {
  checkpointInfo,
  CompactTransformer,
  decodeImage,
  modelConfig,
  parseWeights,
  TEST_TIME_AUGMENTATIONS,
  type TestTimeAugmentation,
  toModelInput,
  toUint8CHW,
  ttaInputs,
} from "../mod.ts";
import { BatcherClosedError, type BatchStats, bucketFor, MicroBatcher } from "./_batcher.ts";

/** A model ready for inference, with what turns an image into its input and an index into a class name. */
export interface InferenceModel {
  model: CompactTransformer;
  /** Per-channel normalisation of pixel values scaled to [0, 1]. */
  mean: number[];
  std: number[];
  /** Class names, by output index. */
  classes: string[];
}

/**
 * Loads a model for serving: `weights` with our metadata (model, normalisation, classes); or `weights` without
 * metadata (an official checkpoint) plus the registered `model` name; or `model` alone, with seeded random
 * weights, for smoke tests.
 */
export async function loadInferenceModel(
  { weights, model: name }: { weights?: string; model?: string },
): Promise<InferenceModel> {
  if (weights === undefined) {
    if (name === undefined) {
      throw new TypeError("name a checkpoint with --weights FILE or a model with --model NAME");
    }
    const model = await CompactTransformer.create(name);
    return { model, ...defaultNormalisation(model), classes: indexNames(model.config.numClasses) };
  }
  const file = parseWeights(await Deno.readFile(weights), weights);
  if (file.metadata.config) {
    const info = checkpointInfo(file.metadata, weights);
    const model = await CompactTransformer.create(info.config);
    await model.loadWeights(file.tensors);
    return { model, mean: info.mean, std: info.std, classes: info.classes };
  }
  if (name === undefined) {
    throw new TypeError(`${weights} carries no model description: name the model with --model NAME`);
  }
  const fc = file.tensors.get("classifier.fc.weight");
  const model = await CompactTransformer.create(modelConfig(name, fc ? { numClasses: fc.shape[0] } : {}));
  await model.loadWeights(file.tensors);
  return { model, ...defaultNormalisation(model), classes: indexNames(model.config.numClasses) };
}

/** Official CIFAR-size models use CIFAR-10 statistics, ImageNet-size ones ImageNet's (SPEC §4). */
function defaultNormalisation(model: CompactTransformer): { mean: number[]; std: number[] } {
  const c = model.config;
  const imagenet = c.imgHeight >= 224;
  const mean = imagenet ? [0.485, 0.456, 0.406] : [0.4914, 0.4822, 0.4465];
  const std = imagenet ? [0.229, 0.224, 0.225] : [0.2470, 0.2435, 0.2616];
  return { mean: mean.slice(0, c.inChannels), std: std.slice(0, c.inChannels) };
}

function indexNames(n: number): string[] {
  return Array.from({ length: n }, (_, i) => String(i));
}

/** Options of {@link servePredictions}. */
export interface ServeOptions {
  /** Interface to listen on (default 127.0.0.1). */
  hostname?: string;
  /** Port (default 8000; 0 picks a free one). */
  port?: number;
  /** Most images per forward pass (default 32): a request is one image, or one per view with TTA. */
  maxBatch?: number;
  /** How long a request waits for others to share its forward pass (default 5 ms). */
  maxWaitMs?: number;
  /** Largest accepted request body (default 8 MiB). */
  maxBodyBytes?: number;
  /** Largest accepted image, in pixels, checked from its header before decoding (default 4096²). */
  maxPixels?: number;
  /** Test-time augmentation of requests without `?tta=` (default "none"). */
  tta?: TestTimeAugmentation;
  /** Aborting it shuts the server down gracefully. */
  signal?: AbortSignal;
  /** Called once listening (default: prints `listening on http://HOST:PORT`). */
  onListen?: (addr: Deno.NetAddr) => void;
}

/** A running server. */
export interface PredictionServer {
  readonly addr: Deno.NetAddr;
  /** Resolves when the server has stopped and every queued prediction has been answered. */
  readonly finished: Promise<void>;
  /** Request and batch counters. */
  stats(): BatchStats;
  /** Stops accepting connections, answers the requests in flight, resolves when done. */
  shutdown(): Promise<void>;
}

/** A request error: becomes a JSON `{ error }` response with this status. */
class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) {
    super(message);
  }
}

const ACCEPTED_TYPES = ["image/png", "image/jpeg", "application/octet-stream"];

/**
 * Serves predictions of `loaded.model` over HTTP (see the module doc for the endpoints). The caller keeps
 * ownership of the model: destroy it after `finished`.
 */
export function servePredictions(loaded: InferenceModel, options: ServeOptions = {}): PredictionServer {
  const {
    hostname = "127.0.0.1",
    port = 8000,
    maxBatch = 32,
    maxWaitMs = 5,
    maxBodyBytes = 8 * 1024 * 1024,
    maxPixels = 4096 * 4096,
    tta: defaultTta = "none",
    signal,
    onListen = (addr: Deno.NetAddr) => console.log(`listening on ${urlOf(addr)}`),
  } = options;
  const { model, mean, std, classes } = loaded;
  const c = model.config;
  const plane = c.inChannels * c.imgHeight * c.imgWidth;
  if (classes.length !== c.numClasses) {
    throw new TypeError(`${c.name}: ${classes.length} class names for ${c.numClasses} outputs`);
  }

  // One forward pass per batch, padded with zero images up to a bucket size so that only a few programs
  // (one per bucket: 1, 2, 4, …, maxBatch) are ever built.
  const batcher = new MicroBatcher<Float32Array, { logits: Float32Array; padded: number }>({
    maxBatch,
    maxWaitMs,
    run: async (inputs) => {
      const padded = bucketFor(inputs.length, maxBatch);
      const batch = new Float32Array(padded * plane);
      inputs.forEach((x, i) => batch.set(x, i * plane));
      const logits = await model.forward(batch, [padded, c.inChannels, c.imgHeight, c.imgWidth]);
      return inputs.map((_, i) => ({
        logits: logits.slice(i * c.numClasses, (i + 1) * c.numClasses),
        padded,
      }));
    },
  });

  let activePredictions = 0;

  async function predict(request: Request, url: URL): Promise<Response> {
    activePredictions++;
    try {
      return await predictCounted(request, url);
    } finally {
      activePredictions--;
    }
  }

  async function predictCounted(request: Request, url: URL): Promise<Response> {
    const top = parseTop(url.searchParams.get("top"), c.numClasses);
    const tta = parseTta(url.searchParams.get("tta"), defaultTta);
    const type = (request.headers.get("content-type") ?? "").split(";")[0].trim().toLowerCase();
    if (type !== "" && !ACCEPTED_TYPES.includes(type)) {
      throw new HttpError(415, `unsupported content-type "${type}": send ${ACCEPTED_TYPES.join(", ")}`);
    }
    const body = await readBody(request, maxBodyBytes);
    if (body.length === 0) {
      throw new HttpError(400, "empty body: send the PNG or JPEG bytes as the request body");
    }
    const size = imageSize(body);
    if (size && size.width * size.height > maxPixels) {
      throw new HttpError(
        413,
        `image of ${size.width}×${size.height} pixels exceeds the limit of ${maxPixels}`,
      );
    }
    let inputs: Float32Array[];
    try {
      const image = decodeImage(body, "request body");
      const spec = { channels: c.inChannels, height: c.imgHeight, width: c.imgWidth, mean, std };
      // Views are formed on bytes, as in training and `cli.ts predict --tta`; one view keeps the float path.
      inputs = tta === "none" ? [toModelInput(image, spec)] : ttaInputs(toUint8CHW(image, spec), spec, tta);
    } catch (error) {
      throw new HttpError(400, error instanceof Error ? error.message : String(error));
    }
    let answers;
    try {
      answers = await Promise.all(inputs.map((input) => batcher.submit(input)));
    } catch (error) {
      if (error instanceof BatcherClosedError) throw new HttpError(503, error.message);
      throw error; // a failed forward pass: 500
    }
    const logits = answers[0].output.logits;
    for (const answer of answers.slice(1)) {
      for (let i = 0; i < logits.length; i++) logits[i] += answer.output.logits[i];
    }
    for (let i = 0; i < logits.length; i++) logits[i] /= answers.length;
    const probabilities = softmax(logits);
    const predictions = Array.from(probabilities, (probability, index) => ({
      class: classes[index],
      index,
      probability,
    })).sort((a, b) => b.probability - a.probability).slice(0, top);
    return Response.json({ predictions }, {
      headers: {
        "x-batch-size": String(answers[0].batchSize),
        "x-batch-padded": String(answers[0].output.padded),
        "x-tta-views": String(answers.length),
      },
    });
  }

  function health(): Response {
    return Response.json({
      ok: true,
      model: c.name,
      classes,
      input: [c.inChannels, c.imgHeight, c.imgWidth],
      backend: model.gpu.backend,
      adapter: model.gpu.description,
      maxBatch,
      tta: defaultTta,
      activePredictions,
      ...batcher.stats(),
    });
  }

  async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const routes: Record<string, [string, () => Promise<Response> | Response]> = {
      "/predict": ["POST", () => predict(request, url)],
      "/health": ["GET", health],
    };
    try {
      const route = routes[url.pathname];
      if (!route) {
        throw new HttpError(404, `no such endpoint ${url.pathname}: use POST /predict or GET /health`);
      }
      const [method, run] = route;
      if (request.method !== method && !(method === "GET" && request.method === "HEAD")) {
        throw new HttpError(405, `${request.method} ${url.pathname} is not allowed: use ${method}`, {
          allow: method === "GET" ? "GET, HEAD" : method,
        });
      }
      return await run();
    } catch (error) {
      if (error instanceof HttpError) {
        return Response.json({ error: error.message }, { status: error.status, headers: error.headers });
      }
      console.error(error);
      return Response.json({ error: `internal error: ${error instanceof Error ? error.message : error}` }, {
        status: 500,
      });
    }
  }

  // Not Deno.serve's own `signal`: in Deno 2.9 aborting it drops the connections of requests in flight, while
  // `server.shutdown()` answers them first.
  const server = Deno.serve({ hostname, port, onListen, handler: handle });
  let stopping: Promise<void> | undefined;
  const shutdown = () => {
    // Queued predictions run at once instead of waiting out the batch window; requests still arriving get 503.
    stopping ??= Promise.all([server.shutdown(), batcher.close()]).then(() => {});
    return stopping;
  };
  if (signal?.aborted) void shutdown();
  else signal?.addEventListener("abort", () => void shutdown(), { once: true });
  const finished = server.finished.then(() => batcher.close());
  return {
    addr: server.addr,
    finished,
    stats: () => batcher.stats(),
    shutdown: async () => {
      await shutdown();
      await finished;
    },
  };
}

/** `http://host:port`, with IPv6 hosts bracketed. */
function urlOf(addr: Deno.NetAddr): string {
  const host = addr.hostname.includes(":") ? `[${addr.hostname}]` : addr.hostname;
  return `http://${host}:${addr.port}`;
}

/** `?top=K`: an integer ≥ 1 (default 5); values above the class count return every class. */
function parseTop(raw: string | null, classes: number): number {
  if (raw === null) return Math.min(5, classes);
  const k = /^\d+$/.test(raw) ? Number(raw) : NaN;
  if (!(Number.isSafeInteger(k) && k >= 1)) {
    throw new HttpError(400, `bad top=${JSON.stringify(raw)}: expected an integer from 1 to ${classes}`);
  }
  return Math.min(k, classes);
}

/** `?tta=MODE`: one of {@link TEST_TIME_AUGMENTATIONS}; absent means the server's default. */
function parseTta(raw: string | null, fallback: TestTimeAugmentation): TestTimeAugmentation {
  if (raw === null) return fallback;
  if (!(TEST_TIME_AUGMENTATIONS as readonly string[]).includes(raw)) {
    throw new HttpError(
      400,
      `bad tta=${JSON.stringify(raw)}: expected one of ${TEST_TIME_AUGMENTATIONS.join(", ")}`,
    );
  }
  return raw as TestTimeAugmentation;
}

/** The request body, refusing more than `limit` bytes (by content-length, or while reading a chunked body). */
async function readBody(request: Request, limit: number): Promise<Uint8Array> {
  const tooLarge = () => new HttpError(413, `body over the limit of ${limit} bytes`);
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) throw tooLarge();
  if (request.body === null) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  const reader = request.body.getReader();
  for (;;) {
    let chunk: ReadableStreamReadResult<Uint8Array>;
    try {
      chunk = await reader.read();
    } catch (error) {
      // The client went away, or a shutdown cut off a body still arriving.
      throw new HttpError(
        400,
        `could not read the request body: ${error instanceof Error ? error.message : error}`,
      );
    }
    const { done, value } = chunk;
    if (done) break;
    total += value.length;
    if (total > limit) {
      await reader.cancel();
      throw tooLarge();
    }
    chunks.push(value);
  }
  const body = new Uint8Array(total);
  let offset = 0;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return body;
}

/**
 * Width and height from a PNG's IHDR or a JPEG's start-of-frame, without decoding, so a small file that would
 * decode to gigabytes is refused first. `null` when not found (the decoder then reports the problem).
 */
export function imageSize(bytes: Uint8Array): { width: number; height: number } | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length >= 24 && bytes[0] === 0x89 && bytes[1] === 0x50) {
    return { width: view.getUint32(16), height: view.getUint32(20) };
  }
  if (bytes.length < 4 || bytes[0] !== 0xff || bytes[1] !== 0xd8) return null;
  let i = 2;
  while (i + 9 < bytes.length) {
    if (bytes[i] !== 0xff) return null;
    const marker = bytes[i + 1];
    if (marker === 0xff) {
      i++;
      continue;
    }
    // SOF0..SOF15 except DHT (c4), JPG (c8) and DAC (cc): [ff, marker, length(2), precision, height(2), width(2)].
    if (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) {
      return { width: view.getUint16(i + 7), height: view.getUint16(i + 5) };
    }
    i += 2 + view.getUint16(i + 2);
  }
  return null;
}

/** Softmax of one row of logits, in float64 (max subtracted). */
function softmax(logits: Float32Array): Float64Array {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  const out = Float64Array.from(logits, (x) => Math.exp(x - max));
  const sum = out.reduce((a, b) => a + b, 0);
  for (let i = 0; i < out.length; i++) out[i] /= sum;
  return out;
}

const USAGE = `usage: serve.ts (--weights FILE [--model NAME] | --model NAME) [options]

  --weights FILE         checkpoint: ours (safetensors with metadata) or official (.pth/.safetensors, with --model)
  --model NAME           registered model; alone, random weights (for smoke tests only)
  --host HOST            interface to listen on (default 127.0.0.1)
  --port N               port (default 8000; 0 picks a free one)
  --max-batch N          most images per forward pass (default 32; a TTA request is one per view)
  --batch-wait-ms MS     how long a request waits for others to batch with (default 5)
  --max-body-bytes N     largest request body (default 8388608)
  --tta MODE             test-time augmentation of requests without ?tta=: none (default), flip (the image
                         and its mirror), flip-shift (those and four one-pixel shifts); only for a model
                         trained with those augmentations
  --no-warmup            skip building the batch-1 program before listening`;

/** Reads an integer flag in [min, max]; throws RangeError naming the flag. */
function intFlag(
  value: string | undefined,
  flag: string,
  fallback: number,
  min: number,
  max: number,
): number {
  if (value === undefined) return fallback;
  const n = /^\d+$/.test(value) ? Number(value) : NaN;
  if (!(Number.isSafeInteger(n) && n >= min && n <= max)) {
    throw new RangeError(`--${flag}: expected an integer from ${min} to ${max}, got "${value}"`);
  }
  return n;
}

/** `--tta MODE`, checked (default "none"). */
function ttaFlag(value: string | undefined): TestTimeAugmentation {
  if (value === undefined) return "none";
  if (!(TEST_TIME_AUGMENTATIONS as readonly string[]).includes(value)) {
    throw new RangeError(`--tta ${value}: expected one of ${TEST_TIME_AUGMENTATIONS.join(", ")}`);
  }
  return value as TestTimeAugmentation;
}

async function main(args: string[]): Promise<number> {
  let options: ServeOptions & { warmup: boolean; weights?: string; model?: string };
  try {
    const { values: v } = parseArgs({
      args,
      options: {
        weights: { type: "string" },
        model: { type: "string" },
        host: { type: "string", default: "127.0.0.1" },
        port: { type: "string" },
        "max-batch": { type: "string" },
        "batch-wait-ms": { type: "string" },
        "max-body-bytes": { type: "string" },
        tta: { type: "string" },
        "no-warmup": { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (v.help) {
      console.log(USAGE);
      return 0;
    }
    if (v.weights === undefined && v.model === undefined) {
      throw new TypeError("give --weights FILE or --model NAME");
    }
    options = {
      weights: v.weights,
      model: v.model,
      hostname: v.host,
      port: intFlag(v.port, "port", 8000, 0, 65535),
      maxBatch: intFlag(v["max-batch"], "max-batch", 32, 1, 256),
      maxWaitMs: intFlag(v["batch-wait-ms"], "batch-wait-ms", 5, 0, 10_000),
      maxBodyBytes: intFlag(v["max-body-bytes"], "max-body-bytes", 8 * 1024 * 1024, 1, 2 ** 31),
      tta: ttaFlag(v.tta),
      warmup: !v["no-warmup"],
    };
  } catch (error) {
    console.error(`serve.ts: ${error instanceof Error ? error.message : error}\n\n${USAGE}`);
    return 2;
  }

  let loaded: InferenceModel;
  try {
    loaded = await loadInferenceModel(options);
  } catch (error) {
    console.error(`serve.ts: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  const c = loaded.model.config;
  // Builds the batch-1 program (pipelines compile once) so the first request is not the slow one.
  if (options.warmup) {
    await loaded.model.forward(new Float32Array(c.inChannels * c.imgHeight * c.imgWidth), [
      1,
      c.inChannels,
      c.imgHeight,
      c.imgWidth,
    ]);
  }

  const stop = new AbortController();
  const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  const onSignal = () => stop.abort();
  for (const s of signals) Deno.addSignalListener(s, onSignal);
  const server = servePredictions(loaded, { ...options, signal: stop.signal });
  await server.finished;
  for (const s of signals) Deno.removeSignalListener(s, onSignal);
  const stats = server.stats();
  loaded.model.destroy();
  console.log(`stopped after ${stats.requests} predictions in ${stats.batches} batches`);
  return 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
