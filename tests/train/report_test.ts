import assert from "node:assert/strict";
import {
  confusionMatrixText,
  curveSeries,
  type EpochRecord,
  formatDuration,
  formatEpochSummary,
  formatProgressBar,
  formatProgressLine,
  MetricsLog,
  type MetricsRecord,
  progressBar,
  writeRunPlots,
} from "../../lib/train/report.ts";

const PROGRESS = {
  epoch: 3,
  epochs: 20,
  step: 120,
  steps: 468,
  loss: 0.42134,
  accuracy: 0.8612,
  lr: 8.7e-4,
  imagesPerSecond: 1234.4,
  etaSeconds: 252,
};

const SUMMARY = {
  epoch: 3,
  epochs: 20,
  trainLoss: 0.42134,
  trainAccuracy: 0.8612,
  test: { loss: 0.39, top1: 0.872, top5: 0.9914 },
  lr: 8.7e-4,
  seconds: 65,
  imagesPerSecond: 1234,
  best: true,
};

/** Length in terminal cells: every character here is one cell wide. */
function cells(text: string): number {
  return [...text].length;
}

Deno.test("formatDuration prints seconds, minutes and hours compactly and '--' when unknown", () => {
  const cases: [number, string][] = [
    [0, "0.0s"],
    [0.04, "0.0s"],
    [12.34, "12.3s"],
    [59.94, "59.9s"],
    [59.96, "1m00s"],
    [185, "3m05s"],
    [252, "4m12s"],
    [3599.4, "59m59s"],
    [3599.6, "1h00m"],
    [3720, "1h02m"],
    [3749, "1h02m"],
    [2 * 86400 + 60, "48h01m"],
    [-1, "--"],
    [NaN, "--"],
    [Infinity, "--"],
  ];
  for (const [seconds, text] of cases) assert.equal(formatDuration(seconds), text, `${seconds} s`);
});

Deno.test("progressBar fills whole cells and the last one by eighths", () => {
  assert.equal(progressBar(0, 3), "▕   ▏");
  assert.equal(progressBar(0.5, 4), "▕██  ▏");
  assert.equal(progressBar(0.1875, 2), "▕▍ ▏");
  assert.equal(progressBar(4.5 / 11, 11), "▕████▌      ▏");
  assert.equal(progressBar(1, 3), "▕███▏");
  assert.equal(progressBar(1.7, 3), "▕███▏");
  assert.equal(progressBar(NaN, 2), "▕  ▏");
  for (let i = 0; i <= 64; i++) assert.equal(cells(progressBar(i / 64, 7)), 9, "always the same width");
});

Deno.test("formatProgressBar prints the example line and fills exactly the terminal width", () => {
  assert.equal(
    formatProgressBar(PROGRESS, 100),
    "epoch 3/20 ▕██████▍                  ▏ 120/468 loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s",
  );
  assert.equal(
    formatProgressBar({ ...PROGRESS, step: 7 }, 84),
    "epoch 3/20 ▕▏        ▏   7/468 loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s",
  );
  for (let width = 80; width <= 200; width++) assert.equal(cells(formatProgressBar(PROGRESS, width)), width);
});

Deno.test("formatProgressBar drops the bar and then cuts the line on narrow terminals", () => {
  assert.equal(
    formatProgressBar(PROGRESS, 79),
    "epoch 3/20 120/468 loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s",
  );
  assert.equal(formatProgressBar(PROGRESS, 30), "epoch 3/20 120/468 loss 0.421…");
  for (let width = 1; width < 80; width++) assert.ok(cells(formatProgressBar(PROGRESS, width)) <= width);
});

Deno.test("formatProgressLine prints the plain periodic line without bar or escape codes", () => {
  assert.equal(
    formatProgressLine(PROGRESS),
    "epoch 3/20 step 120/468 (25.6%) loss 0.4213 acc 86.1% lr 8.7e-4 1,234 img/s ETA 4m12s",
  );
  assert.equal(
    formatProgressLine({ ...PROGRESS, step: 9, loss: NaN, imagesPerSecond: 3.25, etaSeconds: 4000, lr: 0 }),
    "epoch 3/20 step   9/468 (1.9%) loss nan acc 86.1% lr 0 3.3 img/s ETA 1h07m",
  );
  // deno-lint-ignore no-control-regex
  assert.ok(!/[\u001b\r\n▕▏█]/.test(formatProgressLine(PROGRESS)));
});

Deno.test("formatEpochSummary prints train, test, speed and the best marker", () => {
  assert.equal(
    formatEpochSummary(SUMMARY),
    "epoch 3/20 train loss 0.4213 acc 86.1% | test loss 0.3900 top-1 87.2% top-5 99.1% | " +
      "lr 8.7e-4 1m05s 1,234 img/s ★ best",
  );
  assert.equal(
    formatEpochSummary({ ...SUMMARY, test: undefined, best: false, seconds: 9.5, imagesPerSecond: 123456.7 }),
    "epoch 3/20 train loss 0.4213 acc 86.1% | lr 8.7e-4 9.5s 123,457 img/s",
  );
  assert.equal(
    formatEpochSummary({ ...SUMMARY, trainLoss: Infinity, best: false }),
    "epoch 3/20 train loss inf acc 86.1% | test loss 0.3900 top-1 87.2% top-5 99.1% | " +
      "lr 8.7e-4 1m05s 1,234 img/s",
  );
  assert.equal(
    formatEpochSummary({ ...SUMMARY, testEma: { loss: 0.35, top1: 0.8846, top5: 0.995 } }),
    "epoch 3/20 train loss 0.4213 acc 86.1% | test loss 0.3900 top-1 87.2% top-5 99.1% | " +
      "EMA loss 0.3500 top-1 88.5% | lr 8.7e-4 1m05s 1,234 img/s ★ best",
  );
});

Deno.test("MetricsLog logs the moving average's evaluation and curveSeries draws it", async () => {
  const dir = await tempDir();
  const log = await MetricsLog.load(`${dir}/metrics.jsonl`);
  const test = { loss: 1.5, top1: 0.35, top5: 0.9, count: 100 };
  const testEma = { loss: 1.25, top1: 0.5, top5: 0.95, count: 100 };
  const epoch = { epoch: 1, trainLoss: 1.8, trainAccuracy: 0.3, lr: 0, seconds: 1, imagesPerSecond: 1 };
  await log.logEpoch({ ...epoch, test, testEma });
  await log.logEpoch({ ...epoch, epoch: 2, test });
  const [first, second] = (await MetricsLog.load(`${dir}/metrics.jsonl`)).history as EpochRecord[];
  assert.deepEqual([first.test, first.testEma, second.testEma], [test, testEma, undefined]);
  const ema = curveSeries(log.history).find((s) => s.name === "EMA test top-1");
  assert.deepEqual(ema?.points, [[1, 0.5]]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("confusionMatrixText aligns counts with row totals, recall, precision and accuracy", () => {
  assert.equal(
    confusionMatrixText(["cat", "dog"], [[9, 1], [2, 8]]),
    [
      "true \\ pred    cat    dog | total recall",
      "cat              9      1 |    10  90.0%",
      "dog              2      8 |    10  80.0%",
      "total           11      9 |    20",
      "precision    81.8%  88.9% |",
      "accuracy 85.0% (17 of 20)",
    ].join("\n"),
  );
});

Deno.test("confusionMatrixText cuts long class names and prints '-' for a class without samples", () => {
  const text = confusionMatrixText(
    ["airplane", "automobile", "a very long class name indeed"],
    [[950, 20, 30], [3, 997, 0], [0, 0, 0]],
    12,
  );
  assert.equal(
    text,
    [
      "true \\ pred  airplane automob… a very … | total recall",
      "airplane          950       20       30 |  1000  95.0%",
      "automobile          3      997        0 |  1000  99.7%",
      "a very long…        0        0        0 |     0      -",
      "total             953     1017       30 |  2000",
      "precision       99.7%    98.0%     0.0% |",
      "accuracy 97.4% (1947 of 2000)",
    ].join("\n"),
  );
  const lines = text.split("\n").slice(0, 4);
  assert.ok(lines.every((l) => cells(l) === cells(lines[1])), "rows are aligned");
  assert.throws(() => confusionMatrixText(["a", "b"], [[1, 2]]), TypeError);
});

/** A fresh temporary folder under /tmp. */
function tempDir(): Promise<string> {
  return Deno.makeTempDir({ dir: "/tmp", prefix: "report_test_" });
}

/** A short run's records: two epochs with two progress reports each. */
async function writeRun(log: MetricsLog): Promise<void> {
  for (const epoch of [1, 2]) {
    for (const step of [5, 10]) {
      await log.logProgress({
        epoch,
        step,
        steps: 10,
        globalStep: (epoch - 1) * 10 + step,
        loss: 2 / (epoch + step / 10),
        accuracy: 0.1 * epoch + step / 100,
        lr: 1e-3,
        imagesPerSecond: 500,
        etaSeconds: 12,
      });
    }
    await log.logEpoch({
      epoch,
      trainLoss: 2 / epoch,
      trainAccuracy: 0.3 * epoch,
      test: { loss: 1.5 / epoch, top1: 0.35 * epoch, top5: 0.9, count: 100 },
      lr: 1e-3,
      seconds: 4.5,
      imagesPerSecond: 510,
      best: true,
    });
  }
}

Deno.test("MetricsLog appends JSON lines and load reads the same history back", async () => {
  const dir = await tempDir();
  const path = `${dir}/metrics.jsonl`;
  const log = await MetricsLog.load(path);
  assert.deepEqual(log.history, [], "a missing file is an empty log");
  await writeRun(log);
  const lines = (await Deno.readTextFile(path)).split("\n");
  assert.equal(lines.length, 7, "six records and the final newline");
  assert.equal(lines[6], "");
  const first = JSON.parse(lines[0]);
  assert.deepEqual({ ...first, time: undefined }, {
    type: "progress",
    epoch: 1,
    step: 5,
    steps: 10,
    globalStep: 5,
    loss: 2 / 1.5,
    accuracy: 0.1 + 5 / 100,
    lr: 1e-3,
    imagesPerSecond: 500,
    time: undefined,
  });
  assert.ok(!Number.isNaN(Date.parse(first.time)), "records carry an ISO time");
  const epoch = JSON.parse(lines[2]);
  assert.deepEqual(epoch.test, { loss: 1.5, top1: 0.35, top5: 0.9, count: 100 });
  const reloaded = await MetricsLog.load(path);
  assert.deepEqual(reloaded.history, log.history);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("MetricsLog keeps appends in call order when they are not awaited one by one", async () => {
  const dir = await tempDir();
  const log = new MetricsLog(`${dir}/metrics.jsonl`);
  const writes = Array.from(
    { length: 50 },
    (_, i) =>
      log.logProgress({ epoch: 1, step: i + 1, steps: 50, loss: i, accuracy: 0, lr: 0, imagesPerSecond: 1 }),
  );
  await Promise.all(writes);
  const steps = (await MetricsLog.load(log.path)).history.map((r) => r.type === "progress" ? r.step : -1);
  assert.deepEqual(steps, Array.from({ length: 50 }, (_, i) => i + 1));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("MetricsLog.load ignores a truncated last line and the next append cuts it off the file", async () => {
  const dir = await tempDir();
  const path = `${dir}/metrics.jsonl`;
  await writeRun(new MetricsLog(path));
  const full = await Deno.readTextFile(path);
  const good = full.split("\n").slice(0, 5).join("\n") + "\n";
  // A crash in the middle of the sixth record (the epoch 2 summary), inside a multi-byte character too.
  await Deno.writeTextFile(path, good + '{"type":"epoch","epoch":2,"note":"caf\u00e9');
  const bytes = await Deno.readFile(path);
  await Deno.writeFile(path, bytes.subarray(0, bytes.length - 1));

  const log = await MetricsLog.load(path);
  assert.equal(log.history.length, 5);
  assert.deepEqual(log.history.map((r) => r.type), ["progress", "progress", "epoch", "progress", "progress"]);
  assert.equal((await Deno.readFile(path)).length, bytes.length - 1, "load alone leaves the file untouched");

  await log.logEpoch({
    epoch: 2,
    trainLoss: 1,
    trainAccuracy: 0.6,
    lr: 1e-3,
    seconds: 4,
    imagesPerSecond: 500,
  });
  const text = await Deno.readTextFile(path);
  assert.ok(text.startsWith(good), "the good records are kept byte for byte");
  assert.ok(!text.includes("caf"), "the torn line is gone");
  const again = await MetricsLog.load(path);
  assert.deepEqual(again.history, log.history);
  assert.equal(again.history.length, 6);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("MetricsLog.load keeps a complete last line that lost its newline and appends on a new line", async () => {
  const dir = await tempDir();
  const path = `${dir}/metrics.jsonl`;
  await Deno.writeTextFile(
    path,
    '{"type":"epoch","epoch":1,"trainLoss":2}\n{"type":"epoch","epoch":2,"trainLoss":1}',
  );
  const log = await MetricsLog.load(path);
  assert.equal(log.history.length, 2);
  await log.append({ type: "epoch", epoch: 3, trainLoss: 0.5 } as MetricsRecord);
  const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
  assert.deepEqual(lines.map((l) => JSON.parse(l).epoch), [1, 2, 3]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("MetricsLog.load rejects a corrupt line in the middle with SyntaxError naming the line", async () => {
  const dir = await tempDir();
  const path = `${dir}/metrics.jsonl`;
  await Deno.writeTextFile(path, '{"type":"epoch","epoch":1}\nnot json\n{"type":"epoch","epoch":2}\n');
  await assert.rejects(
    MetricsLog.load(path),
    (e: Error) => e instanceof SyntaxError && e.message.includes(":2:"),
  );
  await Deno.writeTextFile(path, '{"type":"epoch","epoch":1}\n[1,2]\n{"type":"epoch","epoch":2}\n');
  await assert.rejects(MetricsLog.load(path), SyntaxError);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("MetricsLog.rewind drops records past a checkpoint's epoch and rewrites the file", async () => {
  const dir = await tempDir();
  const path = `${dir}/metrics.jsonl`;
  const log = new MetricsLog(path);
  await writeRun(log);
  await log.rewind(1);
  assert.deepEqual(log.history.map((r) => [r.type, r.epoch]), [["progress", 1], ["progress", 1], [
    "epoch",
    1,
  ]]);
  assert.deepEqual((await MetricsLog.load(path)).history, log.history);
  assert.deepEqual((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), ["metrics.jsonl"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("curveSeries places progress at fractional epochs and treats logged nulls as gaps", () => {
  const history = [
    { type: "progress", epoch: 1, step: 5, steps: 10, loss: 2, accuracy: 0.1, lr: 0, imagesPerSecond: 1 },
    { type: "progress", epoch: 1, step: 10, steps: 10, loss: null, accuracy: 0.1, lr: 0, imagesPerSecond: 1 },
    {
      type: "epoch",
      epoch: 1,
      trainLoss: 1.8,
      trainAccuracy: 0.3,
      test: { loss: 1.5, top1: 0.4, top5: 0.9 },
      lr: 0,
      seconds: 1,
      imagesPerSecond: 1,
    },
  ] as unknown as MetricsRecord[];
  const series = curveSeries(history);
  assert.deepEqual(series.map((s) => s.name), ["train loss", "test loss", "train accuracy", "test top-1"]);
  assert.deepEqual(series[0].points, [[0.5, 2], [1, NaN]]);
  assert.deepEqual(series[1].points, [[1, 1.5]]);
  assert.deepEqual(series[2], {
    name: "train accuracy",
    points: [[1, 0.3]],
    axis: "right",
    color: "#2ca02c",
  });
  assert.deepEqual(series[3].points, [[1, 0.4]]);
  // Without progress records the training loss comes from the epoch summaries.
  assert.deepEqual(curveSeries(history.slice(2))[0].points, [[1, 1.8]]);
  assert.deepEqual(curveSeries([]), []);
});

Deno.test("writeRunPlots writes curves.svg and confusion.svg atomically into the run folder", async () => {
  const dir = await tempDir();
  const log = new MetricsLog(`${dir}/metrics.jsonl`);
  await writeRun(log);
  const written = await writeRunPlots(`${dir}/`, log.history, {
    classes: ["cat", "dog"],
    confusion: [[40, 10], [5, 45]],
    title: "CCT-2/3x2",
  });
  assert.deepEqual(written, [`${dir}/curves.svg`, `${dir}/confusion.svg`]);
  const curves = await Deno.readTextFile(`${dir}/curves.svg`);
  assert.ok(curves.startsWith("<?xml") && curves.trimEnd().endsWith("</svg>"));
  for (
    const name of ["train loss", "test loss", "train accuracy", "test top-1", "CCT-2/3x2: training curves"]
  ) {
    assert.ok(curves.includes(`>${name}<`), name);
  }
  const confusion = await Deno.readTextFile(`${dir}/confusion.svg`);
  assert.ok(confusion.includes(">CCT-2/3x2: test confusion matrix after epoch 2<"));
  assert.ok(confusion.includes(">cat<") && confusion.includes(">45<"));
  const names = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).sort();
  assert.deepEqual(names, ["confusion.svg", "curves.svg", "metrics.jsonl"], "no temporary files left behind");

  // Without a confusion matrix only the curves are (re)written; an empty history still gives a valid chart.
  assert.deepEqual(await writeRunPlots(dir, []), [`${dir}/curves.svg`]);
  assert.ok((await Deno.readTextFile(`${dir}/curves.svg`)).includes(">no data<"));
  await assert.rejects(writeRunPlots(dir, [], { classes: ["a"], confusion: [[1, 2], [3, 4]] }), TypeError);
  await Deno.remove(dir, { recursive: true });
});
