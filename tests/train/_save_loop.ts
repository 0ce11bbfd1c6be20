/** Child process of the kill-during-save test: saves a resume file over and over, reporting each save. */
import { CompactTransformer } from "../../lib/models/model.ts";
import { customConfig } from "../../lib/models/config.ts";
import { createSynthetic } from "../../lib/data/synthetic.ts";
import { Trainer } from "../../lib/train/trainer.ts";
import { saveTrainingState } from "../../lib/train/checkpoint.ts";

const dir = Deno.args[0];
const data = createSynthetic({ seed: 1, trainSize: 128, testSize: 0, size: 16, channels: 1 });
// A wide model so each save takes long enough for the kill to land inside one.
const config = customConfig({ name: "tiny_cct", family: "cct", layers: 4, heads: 2, dim: 256, mlpRatio: 2 }, {
  imgSize: 16,
  inChannels: 1,
  numClasses: data.classes.length,
  convLayers: 1,
});
const model = await CompactTransformer.create(config);
const trainer = new Trainer(model, data, { batchSize: 64 });
for (let i = 1; i < 10_000; i++) {
  trainer.state = { epoch: 0, globalStep: i, bestTop1: 0 };
  await saveTrainingState(dir, trainer);
  console.log(`saved ${i}`);
}
