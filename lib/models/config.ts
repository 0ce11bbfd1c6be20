/**
 * Model configurations and the registry of named variants (SPEC §1–2). A variant only states depth, width,
 * heads and tokenizer; one builder derives everything else (token counts, parameter table, cost).
 */

/** The three families of the paper. */
export type Family = "vit" | "cvt" | "cct";

/** How token positions are encoded. */
export type PositionalEmbedding = "learnable" | "sine" | "none";

/** Every option of a model; the registry fills them from a name. */
export interface ModelConfig {
  /** Registered name this config came from, or "custom". */
  name: string;
  /** Architecture family: ViT-Lite, CVT or CCT. */
  family: Family;
  /** Encoder blocks. */
  layers: number;
  /** Attention heads per block; divides `dim`. */
  heads: number;
  /** Embedding width d. */
  dim: number;
  /** MLP hidden width = dim · mlpRatio. */
  mlpRatio: number;
  /** Input height in pixels. */
  imgHeight: number;
  /** Input width in pixels. */
  imgWidth: number;
  /** Input channels (3 for RGB). */
  inChannels: number;
  /** Output classes: the length of each image's logit vector. */
  numClasses: number;
  /** Positional encoding added to the tokens. */
  positionalEmbedding: PositionalEmbedding;
  /** Dropout probability after the positional embedding, the attention projection and the MLP, in [0, 1). */
  dropout: number;
  /** Dropout probability on the attention weights, in [0, 1). */
  attentionDropout: number;
  /** Stochastic-depth (drop-path) probability of the last block, rising linearly from 0 at the first. */
  stochasticDepth: number;
  /** CCT: conv kernel size; ViT-Lite/CVT: patch size. */
  kernelSize: number;
  /** CCT: number of conv → ReLU → max-pool blocks (1 for ViT-Lite/CVT). */
  convLayers: number;
  /** CCT: channels between conv layers (the official `in_planes`, 64). */
  convChannels: number;
}

/** Options a user may override when building a model (SPEC §2: every model accepts these). */
export interface ModelOptions {
  /** Square image size, or [height, width]. */
  imgSize?: number | [number, number];
  /** Input channels (default 3). */
  inChannels?: number;
  /** Output classes (default: the variant's, e.g. 10 for `*_32`). */
  numClasses?: number;
  /** Positional encoding (default: `"sine"` for `*_sine` names, else `"learnable"`). */
  positionalEmbedding?: PositionalEmbedding;
  /** See {@link ModelConfig.dropout} (default 0). */
  dropout?: number;
  /** See {@link ModelConfig.attentionDropout} (default 0.1). */
  attentionDropout?: number;
  /** See {@link ModelConfig.stochasticDepth} (default 0.1). */
  stochasticDepth?: number;
  /** CCT kernel size / ViT-Lite and CVT patch size. */
  kernelSize?: number;
  /** CCT conv-layer count. */
  convLayers?: number;
}

const widths: Record<number, { heads: number; mlpRatio: number; dim: number }> = {
  2: { heads: 2, mlpRatio: 1, dim: 128 },
  4: { heads: 2, mlpRatio: 1, dim: 128 },
  6: { heads: 4, mlpRatio: 2, dim: 256 },
  7: { heads: 4, mlpRatio: 2, dim: 256 },
  14: { heads: 6, mlpRatio: 3, dim: 384 },
};

interface Variant {
  family: Family;
  layers: number;
  kernelSize: number;
  convLayers: number;
  imgSize: number;
  numClasses: number;
  positionalEmbedding: PositionalEmbedding;
}

const registry = new Map<string, Variant>();

function register(name: string, v: Omit<Variant, "positionalEmbedding">, sine = true): void {
  registry.set(name, { ...v, positionalEmbedding: "learnable" });
  if (sine) registry.set(`${name}_sine`, { ...v, positionalEmbedding: "sine" });
}

for (const layers of [2, 4, 6, 7]) {
  register(`vit_${layers}_4_32`, {
    family: "vit",
    layers,
    kernelSize: 4,
    convLayers: 1,
    imgSize: 32,
    numClasses: 10,
  });
  register(`cvt_${layers}_4_32`, {
    family: "cvt",
    layers,
    kernelSize: 4,
    convLayers: 1,
    imgSize: 32,
    numClasses: 10,
  });
}
for (const [layers, k, n] of [[2, 3, 2], [4, 3, 2], [6, 3, 1], [6, 3, 2], [7, 3, 1], [7, 3, 2]]) {
  register(`cct_${layers}_${k}x${n}_32`, {
    family: "cct",
    layers,
    kernelSize: k,
    convLayers: n,
    imgSize: 32,
    numClasses: 10,
  });
}
// The official CIFAR-100 twins put `_sine` before `_c100`.
register("cct_7_3x1_32_c100", {
  family: "cct",
  layers: 7,
  kernelSize: 3,
  convLayers: 1,
  imgSize: 32,
  numClasses: 100,
}, false);
registry.set("cct_7_3x1_32_sine_c100", {
  ...registry.get("cct_7_3x1_32_c100")!,
  positionalEmbedding: "sine",
});
register("cct_7_7x2_224", {
  family: "cct",
  layers: 7,
  kernelSize: 7,
  convLayers: 2,
  imgSize: 224,
  numClasses: 102,
});
register("cct_14_7x2_224", {
  family: "cct",
  layers: 14,
  kernelSize: 7,
  convLayers: 2,
  imgSize: 224,
  numClasses: 1000,
});
register("cct_14_7x2_384", {
  family: "cct",
  layers: 14,
  kernelSize: 7,
  convLayers: 2,
  imgSize: 384,
  numClasses: 1000,
});
register("cct_14_7x2_384_fl", {
  family: "cct",
  layers: 14,
  kernelSize: 7,
  convLayers: 2,
  imgSize: 384,
  numClasses: 102,
});

/**
 * Every registered model name, in registry order: the official variants (`vit_*`, `cvt_*`, `cct_*`) and their
 * `_sine` twins.
 *
 * @example Pick the CIFAR-sized CCT variants
 * ```ts
 * import { modelNames } from "@compact-transformers/cct";
 *
 * const small = modelNames().filter((n) => n.startsWith("cct_") && n.endsWith("_32"));
 * console.log(small); // ["cct_2_3x2_32", "cct_4_3x2_32", …, "cct_7_3x2_32"]
 * ```
 */
export function modelNames(): string[] {
  return [...registry.keys()];
}

/**
 * A variant the registry lacks but the paper's naming spells out: `cct_<blocks>_<kernel>x<convs>_<size>` and
 * `vit|cvt_<blocks>_<patch>_<size>`, optionally `_sine`, with a depth that has a width (2, 4, 6, 7, 14), e.g.
 * `cct_2_7x1_32` (one 7×7 stride-2 conv: 49 tokens from 28×28; a training step 1.5× faster than cct_2_3x2).
 */
function variantFromName(name: string): Variant | undefined {
  const m = /^(cct|cvt|vit)_(\d+)_(\d+)(?:x(\d+))?_(\d+)(_sine)?$/.exec(name);
  if (!m || (m[1] === "cct") !== (m[4] !== undefined) || !(Number(m[2]) in widths)) return undefined;
  return {
    family: m[1] as Family,
    layers: Number(m[2]),
    kernelSize: Number(m[3]),
    convLayers: m[4] === undefined ? 1 : Number(m[4]),
    imgSize: Number(m[5]),
    numClasses: 10,
    positionalEmbedding: m[6] ? "sine" : "learnable",
  };
}

/**
 * The full configuration of a registered model, with overrides applied.
 *
 * @param name A registered name (see {@link modelNames}), e.g. `"cct_7_3x1_32"`, or another tokenizer or size
 * in the same grammar, e.g. `"cct_2_7x1_28"` (one 7×7 conv layer) or `"vit_4_7_28"` (patch 7).
 * @param options Overrides of the input geometry, classes and regularisation.
 * @returns The complete, validated configuration.
 * @throws {RangeError} If `name` is unknown (the message lists close names) or an override is invalid.
 *
 * @example CCT-7/3x1 for 28×28 grey-scale images
 * ```ts
 * import { modelConfig, parameterCount, tokenCount } from "@compact-transformers/cct";
 *
 * const config = modelConfig("cct_7_3x1_32", { imgSize: 28, inChannels: 1 });
 * console.log(config.dim, config.heads, tokenCount(config)); // 256 4 196
 * console.log(parameterCount(config)); // 3740171
 * ```
 */
export function modelConfig(name: string, options: ModelOptions = {}): ModelConfig {
  const v = registry.get(name) ?? variantFromName(name);
  if (!v) {
    const stem = name.split("_").slice(0, 2).join("_");
    const near = modelNames().filter((n) => n.startsWith(stem));
    throw new RangeError(
      `unknown model "${name}"${near.length ? `; did you mean ${near.join(", ")}?` : ""} ` +
        `(\`cli.ts info\` lists all)`,
    );
  }
  return customConfig({ name, family: v.family, layers: v.layers, ...widths[v.layers] }, {
    imgSize: v.imgSize,
    numClasses: v.numClasses,
    positionalEmbedding: v.positionalEmbedding,
    kernelSize: v.kernelSize,
    convLayers: v.convLayers,
    ...options,
  });
}

/**
 * A configuration from explicit architecture numbers (the generic constructors), for sizes the registry lacks.
 *
 * Options default to a 32×32 RGB input, 10 classes, learnable positions, dropout 0, attention dropout 0.1,
 * stochastic depth 0.1, and for CCT a 3×3 kernel with 2 conv layers (ViT-Lite/CVT: patch size 4).
 *
 * @param arch Family, depth, heads, width `dim` and MLP ratio; `name` defaults to `"custom"`.
 * @param options Input geometry, classes and regularisation.
 * @returns The complete, validated configuration.
 * @throws {RangeError} If a size is not a positive integer, `dim` is not divisible by `heads`, a probability
 * is outside [0, 1), or the image is too small for the tokenizer.
 *
 * @example A three-block CCT, 96 wide
 * ```ts
 * import { CompactTransformer, customConfig, parameterCount } from "@compact-transformers/cct";
 *
 * const config = customConfig(
 *   { name: "cct_3_3x2_28", family: "cct", layers: 3, heads: 2, dim: 96, mlpRatio: 2 },
 *   { imgSize: 28, inChannels: 1 },
 * );
 * const model = await CompactTransformer.create(config, { seed: 1 });
 * console.log(parameterCount(config), model.parameterCount); // 285323 285323
 * ```
 */
export function customConfig(
  arch: { name?: string; family: Family; layers: number; heads: number; dim: number; mlpRatio: number },
  options: ModelOptions = {},
): ModelConfig {
  const [h, w] = typeof options.imgSize === "number"
    ? [options.imgSize, options.imgSize]
    : options.imgSize ?? [32, 32];
  const config: ModelConfig = {
    name: arch.name ?? "custom",
    family: arch.family,
    layers: arch.layers,
    heads: arch.heads,
    dim: arch.dim,
    mlpRatio: arch.mlpRatio,
    imgHeight: h,
    imgWidth: w,
    inChannels: options.inChannels ?? 3,
    numClasses: options.numClasses ?? 10,
    positionalEmbedding: options.positionalEmbedding ?? "learnable",
    dropout: options.dropout ?? 0,
    attentionDropout: options.attentionDropout ?? 0.1,
    stochasticDepth: options.stochasticDepth ?? 0.1,
    kernelSize: options.kernelSize ?? (arch.family === "cct" ? 3 : 4),
    convLayers: arch.family === "cct" ? options.convLayers ?? 2 : 1,
    convChannels: 64,
  };
  validateConfig(config);
  return config;
}

function validateConfig(c: ModelConfig): void {
  const positive = (what: string, v: number) => {
    if (!Number.isInteger(v) || v < 1) {
      throw new RangeError(`model ${c.name}: ${what} must be a positive integer, got ${v}`);
    }
  };
  positive("layers", c.layers);
  positive("heads", c.heads);
  positive("dim", c.dim);
  positive("image height", c.imgHeight);
  positive("image width", c.imgWidth);
  positive("input channels", c.inChannels);
  positive("number of classes", c.numClasses);
  positive("kernel size", c.kernelSize);
  positive("conv layers", c.convLayers);
  if (c.dim % c.heads !== 0) {
    throw new RangeError(`model ${c.name}: dim ${c.dim} is not divisible by ${c.heads} heads`);
  }
  for (
    const [what, p] of [["dropout", c.dropout], ["attention dropout", c.attentionDropout], [
      "stochastic depth",
      c.stochasticDepth,
    ]] as const
  ) {
    if (!(p >= 0 && p < 1)) throw new RangeError(`model ${c.name}: ${what} must be in [0, 1), got ${p}`);
  }
  if (!["learnable", "sine", "none"].includes(c.positionalEmbedding)) {
    throw new RangeError(`model ${c.name}: positional embedding must be learnable, sine or none`);
  }
  const g = tokenizerGeometry(c);
  if (g.tokensH < 1 || g.tokensW < 1) {
    throw new RangeError(
      `model ${c.name}: image ${c.imgHeight}×${c.imgWidth} is too small for its tokenizer`,
    );
  }
}

/** One conv (→ ReLU → max-pool) stage of the tokenizer. */
export interface ConvStage {
  /** Input channels of the convolution. */
  inChannels: number;
  /** Output channels of the convolution (`dim` for the last stage). */
  outChannels: number;
  /** Square kernel size. */
  kernel: number;
  /** Convolution stride. */
  stride: number;
  /** Zero padding on every side. */
  padding: number;
  /** Whether the convolution has a bias (patch embeddings do, CCT convs do not). */
  bias: boolean;
  /** CCT stages apply ReLU then MaxPool2d(3, 2, 1); patch embeddings neither. */
  reluPool: boolean;
  /** Input height. */
  inH: number;
  /** Input width. */
  inW: number;
  /** Height of the convolution's output (before the pool). */
  convH: number;
  /** Width of the convolution's output (before the pool). */
  convW: number;
  /** Height after the stage (after the pool if any). */
  outH: number;
  /** Width after the stage (after the pool if any). */
  outW: number;
}

/** Tokenizer stages and the resulting token grid. */
export function tokenizerGeometry(c: ModelConfig): { stages: ConvStage[]; tokensH: number; tokensW: number } {
  const stages: ConvStage[] = [];
  let h = c.imgHeight, w = c.imgWidth;
  const conv = (x: number, k: number, s: number, p: number) => Math.floor((x + 2 * p - k) / s) + 1;
  const pool = (x: number) => Math.floor((x + 2 - 3) / 2) + 1;
  if (c.family === "cct") {
    const k = c.kernelSize;
    const stride = Math.max(1, Math.floor(k / 2) - 1), padding = Math.max(1, Math.floor(k / 2));
    for (let j = 0; j < c.convLayers; j++) {
      const inC = j === 0 ? c.inChannels : c.convChannels;
      const outC = j === c.convLayers - 1 ? c.dim : c.convChannels;
      const ch = conv(h, k, stride, padding), cw = conv(w, k, stride, padding);
      const oh = pool(ch), ow = pool(cw);
      stages.push({
        inChannels: inC,
        outChannels: outC,
        kernel: k,
        stride,
        padding,
        bias: false,
        reluPool: true,
        inH: h,
        inW: w,
        convH: ch,
        convW: cw,
        outH: oh,
        outW: ow,
      });
      h = oh, w = ow;
    }
  } else {
    const p = c.kernelSize;
    const ch = conv(h, p, p, 0), cw = conv(w, p, p, 0);
    stages.push({
      inChannels: c.inChannels,
      outChannels: c.dim,
      kernel: p,
      stride: p,
      padding: 0,
      bias: true,
      reluPool: false,
      inH: h,
      inW: w,
      convH: ch,
      convW: cw,
      outH: ch,
      outW: cw,
    });
    h = ch, w = cw;
  }
  return { stages, tokensH: h, tokensW: w };
}

/** Tokens out of the tokenizer (N). */
export function tokenCount(c: ModelConfig): number {
  const g = tokenizerGeometry(c);
  return g.tokensH * g.tokensW;
}

/** Sequence length inside the encoder (N, plus the class token for ViT-Lite). */
export function sequenceLength(c: ModelConfig): number {
  return tokenCount(c) + (c.family === "vit" ? 1 : 0);
}

/** How a parameter is initialised (SPEC §1, "Initialisation"). */
export type InitKind = "trunc_normal_0.02" | "trunc_normal_0.2" | "kaiming_conv" | "zeros" | "ones" | "sine";

/** One entry of the parameter table, under its official state-dict name. */
export interface ParameterSpec {
  /** Official PyTorch state-dict name, e.g. `"classifier.blocks.0.self_attn.qkv.weight"`. */
  name: string;
  /** PyTorch shape, e.g. `[3·dim, dim]` for a qkv weight. */
  shape: number[];
  /** Initialisation applied by a fresh model. */
  init: InitKind;
  /** Weight decay applies: every tensor of 2 or more dimensions (positional and class embeddings included), never 1-D biases and norm weights (SPEC §4, timm's grouping). */
  decay: boolean;
  /** False for the frozen sine table (stored in checkpoints, not trained). */
  trainable: boolean;
}

/** The parameter table in the official state-dict order. */
export function parameterSpecs(c: ModelConfig): ParameterSpec[] {
  const d = c.dim, r = c.dim * c.mlpRatio;
  const specs: ParameterSpec[] = [];
  const add = (name: string, shape: number[], init: InitKind, trainable = true) =>
    specs.push({ name, shape, init, decay: shape.length > 1 && init !== "sine", trainable });
  tokenizerGeometry(c).stages.forEach((s, j) => {
    add(
      `tokenizer.conv_layers.${j}.0.weight`,
      [s.outChannels, s.inChannels, s.kernel, s.kernel],
      "kaiming_conv",
    );
    if (s.bias) add(`tokenizer.conv_layers.${j}.0.bias`, [s.outChannels], "zeros");
  });
  if (c.family === "vit") add("classifier.class_emb", [1, 1, d], "zeros");
  else {
    add("classifier.attention_pool.weight", [1, d], "trunc_normal_0.02");
    add("classifier.attention_pool.bias", [1], "zeros");
  }
  if (c.positionalEmbedding === "learnable") {
    add("classifier.positional_emb", [1, sequenceLength(c), d], "trunc_normal_0.2");
  } else if (c.positionalEmbedding === "sine") {
    add("classifier.positional_emb", [1, sequenceLength(c), d], "sine", false);
  }
  for (let i = 0; i < c.layers; i++) {
    const p = `classifier.blocks.${i}`;
    add(`${p}.pre_norm.weight`, [d], "ones");
    add(`${p}.pre_norm.bias`, [d], "zeros");
    add(`${p}.self_attn.qkv.weight`, [3 * d, d], "trunc_normal_0.02");
    add(`${p}.self_attn.proj.weight`, [d, d], "trunc_normal_0.02");
    add(`${p}.self_attn.proj.bias`, [d], "zeros");
    add(`${p}.linear1.weight`, [r, d], "trunc_normal_0.02");
    add(`${p}.linear1.bias`, [r], "zeros");
    add(`${p}.norm1.weight`, [d], "ones");
    add(`${p}.norm1.bias`, [d], "zeros");
    add(`${p}.linear2.weight`, [d, r], "trunc_normal_0.02");
    add(`${p}.linear2.bias`, [d], "zeros");
  }
  add("classifier.norm.weight", [d], "ones");
  add("classifier.norm.bias", [d], "zeros");
  add("classifier.fc.weight", [c.numClasses, d], "trunc_normal_0.02");
  add("classifier.fc.bias", [c.numClasses], "zeros");
  return specs;
}

/** Learnable parameters (the sine table is stored but not counted, as in PyTorch's `requires_grad` count). */
export function parameterCount(c: ModelConfig): number {
  return parameterSpecs(c)
    .filter((p) => p.trainable)
    .reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/** Forward multiply-accumulates per image: conv + linear, and attention's two batched matmuls. */
export function forwardMacs(c: ModelConfig): { convLinear: number; attention: number; total: number } {
  let convLinear = 0;
  for (const s of tokenizerGeometry(c).stages) {
    convLinear += s.convH * s.convW * s.outChannels * s.inChannels * s.kernel * s.kernel;
  }
  const n = sequenceLength(c), d = c.dim, r = c.dim * c.mlpRatio;
  convLinear += c.layers * n * (3 * d * d + d * d + 2 * d * r);
  if (c.family !== "vit") convLinear += n * d; // attention_pool
  convLinear += d * c.numClasses;
  const attention = c.layers * 2 * n * n * d;
  return { convLinear, attention, total: convLinear + attention };
}
