/**
 * The prediction server example (examples/serve.ts), end to end: it runs as a subprocess on a free loopback port
 * with a randomly initialised cct_2_3x2_32 and gets real PNG and JPEG requests, a concurrent burst that must be
 * batched, and malformed requests that must be refused with a 4xx JSON error while it keeps serving. Plus unit
 * tests of the micro-batcher, which need no GPU.
 *
 * Needs, besides the usual test flags: `--allow-run=deno` (or the absolute path of the deno binary) and
 * `--allow-net=127.0.0.1`. Traffic goes to 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { encode as encodePng } from "npm:fast-png@8.0.0";
import jpeg from "npm:jpeg-js@0.4.4";
import { batchBuckets, BatcherClosedError, bucketFor, MicroBatcher } from "../examples/_batcher.ts";
import { rng } from "./support/check.ts";
import { denoCommand } from "./support/deno.ts";
import { modelConfig, parameterSpecs } from "../lib/models/config.ts";
import { serializeSafetensors, type TensorToWrite } from "../lib/io/safetensors.ts";

const ROOT = new URL("..", import.meta.url);
const SERVER = new URL("../examples/serve.ts", import.meta.url);
const HOST = "127.0.0.1";
const MAX_BODY = 64 * 1024;
/** Every request and every wait on the server is bounded by this. */
const REQUEST_TIMEOUT_MS = 20_000;
const STARTUP_TIMEOUT_MS = 40_000;

// ---------------------------------------------------------------------------------------------------------------
// The micro-batcher

/** A promise resolved from outside, to hold a batch function until the test lets it go. */
function gate(): { promise: Promise<void>; open: () => void } {
  const { promise, resolve } = Promise.withResolvers<void>();
  return { promise, open: () => resolve() };
}

Deno.test("bucketFor rounds a batch up to the next power of two, capped at maxBatch", () => {
  assert.deepEqual(batchBuckets(32), [1, 2, 4, 8, 16, 32]);
  assert.deepEqual(batchBuckets(12), [1, 2, 4, 8, 12]);
  assert.deepEqual(batchBuckets(1), [1]);
  assert.deepEqual([1, 2, 3, 5, 8, 9, 17, 32].map((n) => bucketFor(n, 32)), [1, 2, 4, 8, 8, 16, 32, 32]);
  assert.equal(bucketFor(11, 12), 12);
  assert.throws(() => bucketFor(0, 32), RangeError);
  assert.throws(() => bucketFor(33, 32), RangeError);
});

Deno.test("MicroBatcher answers items submitted together with one call, each with its own output", async () => {
  const calls: number[][] = [];
  const batcher = new MicroBatcher<number, number>({
    maxWaitMs: 10,
    run: (xs) => {
      calls.push(xs);
      return Promise.resolve(xs.map((x) => x * 10));
    },
  });
  const answers = await Promise.all([3, 1, 2].map((x) => batcher.submit(x)));
  assert.deepEqual(answers.map((a) => a.output), [30, 10, 20]);
  assert.deepEqual(answers.map((a) => a.batchSize), [3, 3, 3]);
  assert.deepEqual(calls, [[3, 1, 2]]);
  assert.deepEqual(batcher.stats(), { requests: 3, batches: 1, largestBatch: 3, queued: 0 });
  await batcher.close();
});

Deno.test("MicroBatcher splits a burst into batches of at most maxBatch and never runs two at once", async () => {
  let running = 0, mostRunning = 0;
  const sizes: number[] = [];
  const held = gate();
  const batcher = new MicroBatcher<number, number>({
    maxBatch: 4,
    maxWaitMs: 1,
    run: async (xs) => {
      running++;
      mostRunning = Math.max(mostRunning, running);
      sizes.push(xs.length);
      await held.promise;
      running--;
      return xs.map((x) => -x);
    },
  });
  const answers = Array.from({ length: 11 }, (_, i) => batcher.submit(i));
  // The first four filled a batch at once; the rest queue behind it however long it takes.
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(sizes, [4]);
  assert.equal(batcher.stats().queued, 7);
  held.open();
  const outputs = await Promise.all(answers);
  assert.deepEqual(outputs.map((a) => a.output), Array.from({ length: 11 }, (_, i) => -i));
  assert.deepEqual(sizes, [4, 4, 3]);
  assert.equal(mostRunning, 1);
  await batcher.close();
});

Deno.test("MicroBatcher rejects every item of a failed batch and answers later items normally", async () => {
  let fail = true;
  const batcher = new MicroBatcher<number, number>({
    maxWaitMs: 1,
    run: (xs) => fail ? Promise.reject(new Error("device lost")) : Promise.resolve(xs),
  });
  const failed = await Promise.allSettled([batcher.submit(1), batcher.submit(2)]);
  assert.deepEqual(failed.map((r) => r.status), ["rejected", "rejected"]);
  assert.match(String((failed[0] as PromiseRejectedResult).reason), /device lost/);
  fail = false;
  assert.equal((await batcher.submit(5)).output, 5);
  await batcher.close();
});

Deno.test("MicroBatcher.close runs the queued items without waiting, then refuses new ones", async () => {
  const batcher = new MicroBatcher<number, number>({ maxWaitMs: 60_000, run: (xs) => Promise.resolve(xs) });
  const pending = batcher.submit(7);
  await batcher.close(); // would hang for a minute if close waited for the timer
  assert.equal((await pending).output, 7);
  await assert.rejects(batcher.submit(8), BatcherClosedError);
});

// ---------------------------------------------------------------------------------------------------------------
// The server, as a subprocess

/** `n` seeded random bytes. */
function randomBytes(n: number, seed: number): Uint8Array {
  const u = rng(seed);
  return Uint8Array.from({ length: n }, () => Math.floor(u() * 256));
}

/** A seeded random RGB PNG. */
function randomPng(width: number, height: number, seed: number, channels = 3): Uint8Array {
  return encodePng({ width, height, channels, data: randomBytes(width * height * channels, seed) });
}

/** A seeded random JPEG (jpeg-js takes RGBA). */
function randomJpeg(width: number, height: number, seed: number): Uint8Array {
  const encoded = jpeg.encode({ width, height, data: randomBytes(width * height * 4, seed) }, 90);
  return new Uint8Array(encoded.data);
}

interface Reply {
  status: number;
  headers: Headers;
  // deno-lint-ignore no-explicit-any
  body: any;
}

interface Prediction {
  class: string;
  index: number;
  probability: number;
}

/** `promise`, or a rejection with `message` after `ms` milliseconds (the timer is always cleared). */
async function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let id: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    id = setTimeout(() => reject(new Error(message)), Math.max(ms, 0));
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(id);
  }
}

/** Reads lines of the server's stdout until `listening on …`; the rest is collected in the background. */
async function readListeningLine(
  stdout: ReadableStream<Uint8Array>,
): Promise<{ first: string; port: number; rest: Promise<string> }> {
  const reader = stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (!text.includes("\n")) {
    const { done, value } = await withTimeout(
      reader.read(),
      deadline - Date.now(),
      `no "listening on" line within ${STARTUP_TIMEOUT_MS} ms`,
    );
    if (done) throw new Error(`the server exited before listening; stdout: ${JSON.stringify(text)}`);
    text += value;
  }
  const first = text.slice(0, text.indexOf("\n"));
  const match = /^listening on http:\/\/127\.0\.0\.1:(\d+)$/.exec(first);
  if (!match) throw new Error(`unexpected first line from the server: ${JSON.stringify(first)}`);
  const rest = (async () => {
    let more = text.slice(first.length + 1);
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return more;
      more += value;
    }
  })();
  return { first, port: Number(match[1]), rest };
}

/** Whether a TCP connection to the port on loopback is accepted. */
async function accepts(port: number): Promise<boolean> {
  try {
    const conn = await Deno.connect({ hostname: HOST, port });
    conn.close();
    return true;
  } catch {
    return false;
  }
}

/** The backend this test runs on (`DENO_WEBGPU_BACKEND`, which the server inherits), when readable. */
function envBackend(): string | undefined {
  try {
    return Deno.env.get("DENO_WEBGPU_BACKEND") ?? "default";
  } catch {
    return undefined;
  }
}

/** Reads a whole stream as text. */
async function streamText(stream: ReadableStream<Uint8Array>): Promise<string> {
  let text = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) text += chunk;
  return text;
}

/** The server process with narrow permissions: loopback only, no file access unless `permissions` add some. */
function serverCommand(args: string[], permissions: string[] = []): Deno.Command {
  return new Deno.Command(denoCommand("tests/serve_test.ts", "--allow-net=127.0.0.1"), {
    args: [
      "run",
      "--no-prompt",
      `--allow-net=${HOST}`,
      "--allow-env=DENO_WEBGPU_BACKEND",
      ...permissions,
      SERVER.pathname,
      ...args,
    ],
    cwd: ROOT.pathname,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  });
}

interface RunningServer {
  child: Deno.ChildProcess;
  port: number;
  /** The rest of stdout after the `listening on` line, complete when the process exits. */
  stdout: Promise<string>;
  stderr: Promise<string>;
}

/**
 * Starts the server on a free port and waits until it listens: by default a randomly initialised cct_2_3x2_32.
 */
async function launch(
  extra: string[],
  { model = ["--model", "cct_2_3x2_32"], permissions = [] as string[] } = {},
): Promise<RunningServer> {
  const child = serverCommand([...model, "--port", "0", ...extra], permissions).spawn();
  const stderr = streamText(child.stderr);
  try {
    const { port, rest } = await readListeningLine(child.stdout);
    return { child, port, stdout: rest, stderr };
  } catch (error) {
    child.kill("SIGKILL");
    await child.status;
    throw new Error(`${(error as Error).message}\nserver stderr:\n${await stderr}`);
  }
}

/** Sends SIGTERM (unless already sent) and waits for the exit; SIGKILL when it does not come in time. */
async function stop(
  server: RunningServer,
  signal = true,
): Promise<{ status: Deno.CommandStatus; killed: boolean; stdout: string; stderr: string }> {
  if (signal) server.child.kill("SIGTERM");
  let status: Deno.CommandStatus, killed = false;
  try {
    status = await withTimeout(server.child.status, REQUEST_TIMEOUT_MS, "no exit");
  } catch {
    server.child.kill("SIGKILL");
    status = await server.child.status;
    killed = true;
  }
  return { status, killed, stdout: await server.stdout, stderr: await server.stderr };
}

/** One bounded request to the server; the answer must be JSON. */
async function call(server: RunningServer, path: string, init: RequestInit = {}): Promise<Reply> {
  const url = `http://${HOST}:${server.port}${path}`;
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const text = await res.text();
  assert.match(res.headers.get("content-type") ?? "", /application\/json/, `${path}: ${text}`);
  return { status: res.status, headers: res.headers, body: JSON.parse(text) };
}

/** POST /predict with `body` (and `type` as content-type unless empty). */
function predict(
  server: RunningServer,
  body: Uint8Array | ReadableStream<Uint8Array> | null,
  query = "",
  type = "image/png",
): Promise<Reply> {
  return call(server, `/predict${query}`, {
    method: "POST",
    body: body instanceof Uint8Array ? new Uint8Array(body) : body,
    headers: type ? { "content-type": type } : {},
  });
}

/** Checks a ranking of cct_2_3x2_32's 10 classes: distinct indices, best first; all 10 sum to 1. */
function assertRanking(predictions: Prediction[], count: number): void {
  assert.equal(predictions.length, count);
  for (const p of predictions) {
    assert.ok(Number.isInteger(p.index) && p.index >= 0 && p.index < 10, `index ${p.index}`);
    assert.equal(p.class, String(p.index)); // random init: classes are named by index
    assert.ok(p.probability >= 0 && p.probability <= 1, `probability ${p.probability}`);
  }
  for (let i = 1; i < predictions.length; i++) {
    assert.ok(predictions[i - 1].probability >= predictions[i].probability, "not sorted best first");
  }
  assert.equal(new Set(predictions.map((p) => p.index)).size, count, "an index repeats");
  if (count === 10) {
    const sum = predictions.reduce((s, p) => s + p.probability, 0);
    assert.ok(Math.abs(sum - 1) <= 1e-5, `probabilities sum to ${sum}`);
  }
}

/** Eight images of both formats, several channel counts and awkward sizes (converted and resized). */
const IMAGES = [
  randomPng(32, 32, 1),
  randomPng(17, 45, 2, 1), // gray
  randomPng(32, 32, 3, 4), // RGBA
  randomJpeg(32, 32, 4),
  randomJpeg(50, 23, 5),
  randomPng(32, 32, 6),
  randomJpeg(8, 8, 7),
  randomPng(1, 1, 8),
];

const isJpeg = (bytes: Uint8Array) => bytes[0] === 0xff;

Deno.test({
  name: "the prediction server answers PNG and JPEG requests, batches concurrent ones and refuses bad ones",
  fn: async (t) => {
    const server = await launch(["--batch-wait-ms", "20", "--max-body-bytes", String(MAX_BODY)]);
    let stopped: Awaited<ReturnType<typeof stop>>;
    try {
      await t.step("GET /health names the model, its classes and the backend", async () => {
        const r = await call(server, "/health");
        assert.equal(r.status, 200);
        assert.equal(r.body.ok, true);
        assert.equal(r.body.model, "cct_2_3x2_32");
        assert.deepEqual(r.body.classes, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]);
        assert.deepEqual(r.body.input, [3, 32, 32]);
        assert.equal(
          r.body.backend,
          envBackend() ?? r.body.backend,
          "the server runs on the backend under test",
        );
        assert.equal(r.body.batches, 0);
        assert.equal(r.body.tta, "none");
      });

      const singles: Prediction[][] = [];

      await t.step("POST /predict ranks every class for PNG and JPEG images, one at a time", async () => {
        for (const [i, image] of IMAGES.entries()) {
          const r = await predict(server, image, "?top=10", isJpeg(image) ? "image/jpeg" : "image/png");
          assert.equal(r.status, 200, JSON.stringify(r.body));
          assert.equal(r.headers.get("x-batch-size"), "1", `image ${i} was alone`);
          assertRanking(r.body.predictions, 10);
          singles.push(r.body.predictions);
        }
        // Random images through random weights still give different answers.
        assert.notDeepEqual(singles[0], singles[5]);
      });

      await t.step(
        "top defaults to 5, takes any positive integer and is capped at the class count",
        async () => {
          const byTop = async (query: string, type = "application/octet-stream") =>
            (await predict(server, IMAGES[0], query, type)).body.predictions as Prediction[];
          assert.deepEqual(await byTop(""), singles[0].slice(0, 5));
          assert.deepEqual(await byTop("?top=1", ""), singles[0].slice(0, 1)); // no content-type: sniffed
          assert.deepEqual(await byTop("?top=1000"), singles[0]);
        },
      );

      await t.step(
        "eight concurrent requests are answered by fewer forward passes, same answers",
        async () => {
          const before = (await call(server, "/health")).body;
          const replies = await Promise.all(IMAGES.map((image) => predict(server, image, "?top=10", "")));
          const after = (await call(server, "/health")).body;
          const sizes = replies.map((r) => Number(r.headers.get("x-batch-size")));
          for (const [i, r] of replies.entries()) {
            assert.equal(r.status, 200, JSON.stringify(r.body));
            assertRanking(r.body.predictions, 10);
            // Same image, batch of 1 vs. padded batch: same probabilities (float32 sums in another order).
            for (const p of r.body.predictions as Prediction[]) {
              const alone = singles[i].find((q) => q.index === p.index)!;
              assert.ok(
                Math.abs(p.probability - alone.probability) <= 1e-4 + 1e-3 * alone.probability,
                `image ${i}, class ${p.index}: ${p.probability} in a batch of ${
                  sizes[i]
                }, ${alone.probability} alone`,
              );
            }
            assert.ok([1, 2, 4, 8].includes(Number(r.headers.get("x-batch-padded"))));
            assert.ok(Number(r.headers.get("x-batch-padded")) >= sizes[i]);
          }
          assert.equal(after.requests - before.requests, 8);
          assert.ok(
            after.batches - before.batches < 8,
            `${after.batches - before.batches} batches for 8 requests`,
          );
          assert.ok(Math.max(...sizes) >= 2, `batch sizes ${sizes}`);
          assert.ok(after.largestBatch >= 2);
        },
      );

      await t.step(
        "tta=flip gives an image and its mirror the same answer; flip-shift scores six views",
        async () => {
          const [w, h] = [32, 32];
          const pixels = randomBytes(w * h * 3, 21);
          const mirror = new Uint8Array(pixels.length);
          for (let y = 0; y < h; y++) {
            for (let x = 0; x < w; x++) {
              for (let c = 0; c < 3; c++) mirror[(y * w + x) * 3 + c] = pixels[(y * w + w - 1 - x) * 3 + c];
            }
          }
          const png = (data: Uint8Array) => encodePng({ width: w, height: h, channels: 3, data });
          const probabilities = async (data: Uint8Array, query: string, views: string) => {
            const r = await predict(server, png(data), query);
            assert.equal(r.status, 200, JSON.stringify(r.body));
            assert.equal(r.headers.get("x-tta-views"), views, query);
            assertRanking(r.body.predictions, 10);
            const byIndex = new Array<number>(10);
            for (const p of r.body.predictions as Prediction[]) byIndex[p.index] = p.probability;
            return byIndex;
          };
          const close = (a: number[], b: number[]) => a.every((p, i) => Math.abs(p - b[i]) <= 1e-6);
          const flipped = await probabilities(pixels, "?top=10&tta=flip", "2");
          const mirrorFlipped = await probabilities(mirror, "?top=10&tta=flip", "2");
          assert.ok(close(flipped, mirrorFlipped), `${flipped} vs ${mirrorFlipped}`);
          // Random weights are not mirror-symmetric: one view of each differs from the average.
          const alone = await probabilities(pixels, "?top=10&tta=none", "1");
          assert.ok(!close(alone, flipped), "one view and flip TTA gave the same probabilities");
          const before = (await call(server, "/health")).body;
          const shifted = await probabilities(pixels, "?top=10&tta=flip-shift", "6");
          const after = (await call(server, "/health")).body;
          assert.equal(after.requests - before.requests, 6, "each view is one image scored");
          assert.ok(!close(shifted, flipped), "flip-shift gave flip's probabilities");
        },
      );

      await t.step("bad requests get a 4xx JSON error naming the problem", async () => {
        const text = new TextEncoder().encode("hello, I am not an image");
        const damaged = IMAGES[0].slice(0, 60);
        const giant = randomPng(4, 4, 9);
        new DataView(giant.buffer).setUint32(16, 100_000); // IHDR width
        new DataView(giant.buffer).setUint32(20, 100_000); // IHDR height
        const png = IMAGES[0];
        const cases: [string, () => Promise<Reply>, number, RegExp][] = [
          ["text body", () => predict(server, text, "", "text/plain"), 415, /content-type "text\/plain"/],
          [
            "text as bytes",
            () => predict(server, text, "", "application/octet-stream"),
            400,
            /not a PNG or JPEG/,
          ],
          ["empty body", () => predict(server, new Uint8Array(0)), 400, /empty body/],
          ["no body", () => predict(server, null, "", ""), 400, /empty body/],
          ["damaged PNG", () => predict(server, damaged), 400, /damaged PNG/],
          ["100000² pixels", () => predict(server, giant), 413, /100000×100000 pixels/],
          [
            "over the limit",
            () => predict(server, randomBytes(MAX_BODY + 1, 10)),
            413,
            /limit of 65536 bytes/,
          ],
          ["top=abc", () => predict(server, png, "?top=abc"), 400, /top="abc"/],
          ["top=0", () => predict(server, png, "?top=0"), 400, /top="0"/],
          ["top=-2", () => predict(server, png, "?top=-2"), 400, /top="-2"/],
          ["top=2.5", () => predict(server, png, "?top=2.5"), 400, /top="2.5"/],
          ["tta=mirror", () => predict(server, png, "?tta=mirror"), 400, /tta="mirror": expected one of/],
          ["GET /predict", () => call(server, "/predict"), 405, /GET \/predict is not allowed: use POST/],
          ["POST /health", () => call(server, "/health", { method: "POST", body: "x" }), 405, /use GET/],
          ["unknown path", () => call(server, "/v1/classify"), 404, /no such endpoint \/v1\/classify/],
        ];
        for (const [what, send, status, message] of cases) {
          const r = await send();
          assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
          assert.equal(typeof r.body.error, "string", what);
          assert.match(r.body.error, message, what);
        }
        assert.equal((await call(server, "/predict")).headers.get("allow"), "POST");
        const streamed = new ReadableStream<Uint8Array>({
          start(controller) {
            for (let i = 0; i < 5; i++) controller.enqueue(randomBytes(MAX_BODY / 4, 11 + i));
            controller.close();
          },
        });
        const r = await predict(server, streamed);
        assert.equal(r.status, 413, "a chunked body without content-length is cut off at the limit too");
        assert.match(r.body.error, /limit of 65536 bytes/);
      });

      await t.step("the server keeps serving after the bad requests", async () => {
        const r = await predict(server, IMAGES[3], "?top=10", "image/jpeg");
        assert.equal(r.status, 200);
        assert.deepEqual(
          r.body.predictions.map((p: Prediction) => p.index),
          singles[3].map((p) => p.index),
        );
        const health = (await call(server, "/health")).body;
        assert.equal(health.ok, true);
        assert.equal(health.queued, 0);
        assert.equal(health.activePredictions, 0);
      });
    } finally {
      stopped = await stop(server);
    }
    assert.ok(!stopped.killed, `the server did not exit within ${REQUEST_TIMEOUT_MS} ms of SIGTERM`);
    assert.equal(
      stopped.status.code,
      0,
      `server exit code ${stopped.status.code}; stderr:\n${stopped.stderr}`,
    );
    assert.match(stopped.stdout, /stopped after \d+ predictions in \d+ batches/);
  },
});

Deno.test("on SIGTERM the server answers the prediction it holds, stops listening and exits with 0", async () => {
  // A batch window far longer than the test: the request is still queued when the signal arrives.
  const server = await launch(["--batch-wait-ms", "10000", "--no-warmup"]);
  let stopped: Awaited<ReturnType<typeof stop>>;
  try {
    const held = predict(server, IMAGES[0], "?top=10").then((r) => r, (e: Error) => e);
    const deadline = Date.now() + REQUEST_TIMEOUT_MS;
    while ((await call(server, "/health")).body.queued < 1) {
      assert.ok(Date.now() < deadline, "the prediction never reached the queue");
      await new Promise((r) => setTimeout(r, 20));
    }
    server.child.kill("SIGTERM");
    while (await accepts(server.port)) {
      assert.ok(Date.now() < deadline, "the server still accepts connections after SIGTERM");
      await new Promise((r) => setTimeout(r, 20));
    }
    const r = await held;
    if (r instanceof Error) throw r;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assertRanking(r.body.predictions, 10);
  } finally {
    stopped = await stop(server, false);
  }
  assert.ok(!stopped.killed, `the server did not exit within ${REQUEST_TIMEOUT_MS} ms of SIGTERM`);
  assert.equal(stopped.status.code, 0, `server exit code ${stopped.status.code}; stderr:\n${stopped.stderr}`);
  assert.match(stopped.stdout, /stopped after 1 predictions in 1 batches/);
});

Deno.test("the server refuses bad command lines with a message and a non-zero exit", async () => {
  const cases: [string[], number, RegExp][] = [
    [
      ["--model", "cct_2_3x2_32", "--port", "http"],
      2,
      /--port: expected an integer from 0 to 65535, got "http"/,
    ],
    [["--port", "0"], 2, /give --weights FILE or --model NAME/],
    [["--model", "cct_2_3x2_32", "--tta", "mirror"], 2, /--tta mirror: expected one of none, flip/],
    [["--model", "cct_99_3x2_32", "--port", "0"], 1, /unknown model "cct_99_3x2_32"/],
    [["--weights", "missing.safetensors", "--port", "0"], 1, /missing\.safetensors/],
  ];
  for (const [args, code, message] of cases) {
    const out = await withTimeout(serverCommand(args).output(), REQUEST_TIMEOUT_MS, `${args}: no exit`);
    const stderr = new TextDecoder().decode(out.stderr);
    assert.equal(out.code, code, `${args.join(" ")}: ${stderr}`);
    assert.match(stderr, message);
    assert.equal(
      new TextDecoder().decode(out.stdout),
      "",
      "nothing on stdout, in particular no listening line",
    );
  }
});

Deno.test("a checkpoint with metadata is served with its geometry and class names, reading only that file", async () => {
  // A 1×28×28, 3-class cct_2_3x2 as `cli.ts train` would save it: official names plus our metadata.
  const config = modelConfig("cct_2_3x2_32", { imgSize: 28, inChannels: 1, numClasses: 3 });
  const u = rng(99);
  const tensors = new Map<string, TensorToWrite>();
  for (const spec of parameterSpecs(config)) {
    const size = spec.shape.reduce((a, b) => a * b, 1);
    tensors.set(spec.name, {
      shape: spec.shape,
      data: Float32Array.from({ length: size }, () => 0.1 * (u() - 0.5)),
    });
  }
  const classes = ["cat", "dog", "bird"];
  const path = await Deno.makeTempFile({ dir: "/tmp", suffix: ".safetensors" });
  try {
    await Deno.writeFile(
      path,
      serializeSafetensors(tensors, {
        format: "cct-webgpu/1",
        model: config.name,
        config: JSON.stringify(config),
        mean: JSON.stringify([0.2860]),
        std: JSON.stringify([0.3530]),
        classes: JSON.stringify(classes),
        dataset: "test",
      }),
    );
    const server = await launch([], { model: ["--weights", path], permissions: [`--allow-read=${path}`] });
    let stopped: Awaited<ReturnType<typeof stop>>;
    try {
      const health = (await call(server, "/health")).body;
      assert.equal(health.model, "cct_2_3x2_32");
      assert.deepEqual(health.classes, classes);
      assert.deepEqual(health.input, [1, 28, 28]);
      const r = await predict(server, IMAGES[0], "?top=3"); // RGB 32×32 → gray 28×28
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const predictions = r.body.predictions as Prediction[];
      assert.deepEqual(predictions.map((p) => p.class).sort(), [...classes].sort());
      for (const p of predictions) assert.equal(p.class, classes[p.index]);
      const sum = predictions.reduce((a, p) => a + p.probability, 0);
      assert.ok(Math.abs(sum - 1) <= 1e-5, `probabilities sum to ${sum}`);
    } finally {
      stopped = await stop(server);
    }
    assert.equal(stopped.status.code, 0, stopped.stderr);
  } finally {
    await Deno.remove(path);
  }
});
