/**
 * The paper's claim at small scale: CCT, CVT and ViT-Lite of about the same size, trained with the same recipe
 * and the same number of epochs on the same data, compared on test accuracy.
 *
 *   deno run --allow-read=/usr/share/datasets --allow-env=DENO_WEBGPU_BACKEND bench/compare_families.ts \
 *     [--dataset fashion-mnist] [--epochs 2] [--seed 0]
 *
 * Prints a Markdown table (model, parameters, epochs, minutes, test top-1) for the README.
 */
import { parseArgs } from "node:util";
import { CompactTransformer } from "../lib/models/model.ts";
import { loadDataset } from "../lib/data/load.ts";
import { Trainer } from "../lib/train/trainer.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    dataset: { type: "string", default: "fashion-mnist" },
    epochs: { type: "string", default: "2" },
    seed: { type: "string", default: "0" },
    models: { type: "string", default: "cct_2_3x2_32,cvt_2_4_32,vit_2_4_32" },
  },
});
const epochs = Number(values.epochs), seed = Number(values.seed);
const data = await loadDataset(values.dataset!, { seed });
const rows: string[] = [];
for (const name of values.models!.split(",")) {
  const model = await CompactTransformer.create(name, {
    imgSize: [data.height, data.width],
    inChannels: data.channels,
    numClasses: data.classes.length,
    seed,
  });
  const t0 = performance.now();
  const trainer = new Trainer(model, data, { epochs, seed, batchSize: 128 }, {
    // Every epoch is evaluated (evalEvery 1, the default), so `test` is always there.
    onEpoch: (s) => console.error(`${name} epoch ${s.epoch}: test top-1 ${(s.test!.top1 * 100).toFixed(2)}%`),
  });
  const last = (await trainer.run())!;
  const minutes = (performance.now() - t0) / 60000;
  rows.push(
    `| ${name} | ${model.parameterCount.toLocaleString("en-US")} | ${epochs} | ${minutes.toFixed(1)} | ` +
      `${(last.test!.top1 * 100).toFixed(2)}% |`,
  );
  trainer.destroy();
  model.destroy();
}
console.log(
  `\n${data.name}, ${data.channels}×${data.height}×${data.width}, seed ${seed}, batch 128, the default recipe\n`,
);
console.log("| model | parameters | epochs | minutes | test top-1 |\n|---|---|---|---|---|");
for (const r of rows) console.log(r);
