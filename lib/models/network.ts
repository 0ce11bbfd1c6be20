/**
 * The forward and backward pass of ViT-Lite / CVT / CCT as sequences of kernel calls recorded into a plan.
 *
 * Tensors live in three tables: parameters and their gradients (arenas keyed by the official names, shared by
 * every batch size) and the activations of one batch size ({@link Activations}). Forward saves, per block, what
 * backward needs; an inference-only table shares one set of block buffers across all blocks.
 */
import type { Gpu } from "../gpu/device.ts";
import type { Plan, UniformBlock } from "../gpu/plan.ts";
import { BufferTable, type Tensor } from "../gpu/tensor.ts";
import { attentionBackward, attentionForward } from "../kernels/attention.ts";
import {
  conv2dBackwardBias,
  conv2dBackwardData,
  conv2dBackwardWeights,
  conv2dForward,
  maxPool2dBackward,
  maxPool2dForward,
  prepareConvGradient,
} from "../kernels/conv.ts";
import { conv2dReluMaxPoolBackwardWeights, conv2dReluMaxPoolForward } from "../kernels/conv_pool.ts";
import {
  dropoutBackward,
  dropoutForward,
  residualDropPath,
  residualDropPathBackward,
} from "../kernels/dropout.ts";
import { geluBackward } from "../kernels/elementwise.ts";
import {
  classTokenBackward,
  classTokenConcat,
  positionalEmbeddingAdd,
  positionalEmbeddingBackward,
  selectToken,
  selectTokenBackward,
} from "../kernels/embedding.ts";
import { linearBackward, linearForward } from "../kernels/matmul.ts";
import { layerNormBackward, layerNormForward } from "../kernels/norm.ts";
import { seqPoolBackward, seqPoolForward } from "../kernels/seqpool.ts";
import { type ConvStage, type ModelConfig, sequenceLength, tokenizerGeometry } from "./config.ts";

/** Words of the per-step seed block: one for the embedding dropout, six per encoder block. */
export function seedWords(c: ModelConfig): number {
  return 1 + 6 * c.layers;
}

/** Seed slots of block `i` (each random site draws its own mask, as each PyTorch module call does). */
function blockSeeds(i: number) {
  const base = 1 + 6 * i;
  return {
    attention: base,
    proj: base + 1,
    dropPath1: base + 2,
    mlp1: base + 3,
    mlp2: base + 4,
    dropPath2: base + 5,
  };
}

/** Dropout rates in effect: the config's in training, zero in evaluation. */
export interface Rates {
  /** Dropout probability of the embedding, attention projection and MLP outputs. */
  dropout: number;
  /** Dropout probability of the attention weights. */
  attentionDropout: number;
  /** Drop-path rate of each block (linear in depth, SPEC §1). */
  dropPath: number[];
}

/** Rates for training (`train`) or evaluation. */
export function ratesOf(c: ModelConfig, train: boolean): Rates {
  return {
    dropout: train ? c.dropout : 0,
    attentionDropout: train ? c.attentionDropout : 0,
    dropPath: Array.from(
      { length: c.layers },
      (_, i) => train && c.layers > 1 ? (i * c.stochasticDepth) / (c.layers - 1) : 0,
    ),
  };
}

/**
 * The activations of one batch size; `saved` keeps each block's tensors for backward.
 *
 * Tensors are named as in the recorded passes: `"input"` [B, C, H, W], `"tokens"` [B, N, d], the residual
 * stream through {@link Activations.stream}, per-block tensors through {@link Activations.block}, `"logits"`
 * [B, classes]; with `saved`, also the activation gradients (`"dlogits"`, `"dstream"`, …).
 */
export class Activations {
  /** The buffers, one per tensor (see {@link BufferTable} for why not an arena). */
  readonly arena: BufferTable;
  /** Batch size B these activations were allocated for. */
  readonly batch: number;
  /** Tokens out of the tokenizer (N, without the class token). */
  readonly tokens: number;
  /** Sequence length inside the encoder (N, plus 1 for ViT-Lite's class token). */
  readonly seq: number;
  /** Whether every block keeps its own tensors and activation gradients exist (training). */
  readonly saved: boolean;

  /**
   * Allocates every activation of `config` for `batch` images.
   *
   * @param gpu The device to allocate on.
   * @param config The model the activations belong to.
   * @param batch Batch size B.
   * @param saved Keep each block's tensors and allocate gradient buffers, for a backward pass; otherwise
   * blocks share one set and the residual stream ping-pongs between two buffers (inference).
   */
  constructor(readonly gpu: Gpu, readonly config: ModelConfig, batch: number, saved: boolean) {
    this.batch = batch;
    this.saved = saved;
    const c = config, B = batch, d = c.dim, r = c.dim * c.mlpRatio;
    const N = sequenceLength(c);
    this.seq = N;
    const geo = tokenizerGeometry(c);
    this.tokens = geo.tokensH * geo.tokensW;
    const a = this.arena = new BufferTable(`activations b${B}${saved ? " (training)" : ""}`);
    a.reserve("input", [B, c.inChannels, c.imgHeight, c.imgWidth]);
    geo.stages.forEach((s, j) => {
      const last = j === geo.stages.length - 1;
      if (s.reluPool) {
        if (!fusedStage(c, s, j)) a.reserve(`conv${j}`, [B, s.outChannels, s.convH, s.convW]);
        const pooled = last ? [B, s.outH * s.outW, s.outChannels] : [B, s.outChannels, s.outH, s.outW];
        a.reserve(last ? "tokens" : `pool${j}`, pooled);
        a.reserve(`argmax${j}`, pooled);
      } else a.reserve("tokens", [B, this.tokens, d]);
    });
    if (c.family === "vit") a.reserve("sequence", [B, N, d]);
    if (c.positionalEmbedding !== "none") a.reserve("h0", [B, N, d]);
    const blockTensors: [string, number[]][] = [
      ["ln0", [B, N, d]],
      ["mean0", [B * N]],
      ["rstd0", [B * N]],
      ["qkv", [B, N, 3 * d]],
      ["probs", [B, c.heads, N, N]],
      ["att", [B, N, d]],
      ["a", [B, N, d]],
      ["n1", [B, N, d]],
      ["mean1", [B * N]],
      ["rstd1", [B * N]],
      ["f1", [B, N, r]],
      ["g", [B, N, r]],
    ];
    for (let i = 0; i < (saved ? c.layers : 1); i++) {
      for (const [name, shape] of blockTensors) a.reserve(`${name}.${i}`, shape);
    }
    // The residual stream between blocks: saved per block for training, two ping-pong buffers otherwise.
    for (let i = 1; i <= (saved ? c.layers : 2); i++) a.reserve(`h${i}`, [B, N, d]);
    a.reserve("proj", [B, N, d]);
    a.reserve("f2", [B, N, d]);
    a.reserve("hn", [B, N, d]);
    a.reserve("meanN", [B * N]);
    a.reserve("rstdN", [B * N]);
    if (c.family !== "vit") a.reserve("poolWeights", [B, N]);
    a.reserve("pooled", [B, d]);
    a.reserve("logits", [B, c.numClasses]);
    if (saved) {
      // Gradients of activations: reused across blocks.
      a.reserve("dlogits", [B, c.numClasses]);
      a.reserve("dpooled", [B, d]);
      for (const g of ["dstream", "dscratch", "dbranch"]) a.reserve(g, [B, N, d]);
      a.reserve("dwide", [B, N, Math.max(3 * d, r)]);
      if (c.dropout > 0) a.reserve("dgelu", [B, N, r]);
      if (c.family === "vit") a.reserve("dtokens", [B, this.tokens, d]);
      if (c.family !== "vit") a.reserve("dpoolLogits", [B, N]);
      geo.stages.forEach((s, j) => {
        if (s.reluPool && !fusedStage(c, s, j)) a.reserve(`dconv${j}`, [B, s.outChannels, s.convH, s.convW]);
        if (s.reluPool && j < geo.stages.length - 1) {
          a.reserve(`dpool${j}`, [B, s.outChannels, s.outH, s.outW]);
        }
      });
    }
    a.allocate(gpu);
  }

  /**
   * The activation named `name`, e.g. `"input"` or `"logits"`.
   *
   * @throws {Error} If there is no such activation for this model and mode.
   */
  get(name: string): Tensor {
    return this.arena.get(name);
  }

  /** Block `i`'s tensor `name` (block 0's when activations are not saved per block). */
  block(name: string, i: number): Tensor {
    return this.arena.get(`${name}.${this.saved ? i : 0}`);
  }

  /** The residual stream entering block `i` (h0 for i = 0). */
  stream(i: number): Tensor {
    if (i === 0) return this.streamIn();
    return this.arena.get(`h${this.saved ? i : ((i - 1) % 2) + 1}`);
  }

  /** The encoder's input: after class token, positional embedding and dropout. */
  streamIn(): Tensor {
    const c = this.config;
    if (c.positionalEmbedding !== "none") return this.get("h0");
    return c.family === "vit" ? this.get("sequence") : this.get("tokens");
  }

  /** Frees every activation buffer. */
  destroy(): void {
    this.arena.destroy();
  }
}

/** Parameter views by official name. */
export type TensorTable = { get(name: string): Tensor };

/** Everything a recorded pass reads: parameters, activations, rates, and the seed block (when any rate > 0). */
export interface PassContext {
  /** The model's configuration. */
  config: ModelConfig;
  /** Parameters by official name (a parameter arena). */
  params: TensorTable;
  /** The activations of the batch size being recorded. */
  acts: Activations;
  /** Dropout and drop-path rates of the pass (zero for evaluation). */
  rates: Rates;
  /** Per-step random seeds, one word per random site; required when any rate is non-zero. */
  seeds?: UniformBlock;
}

function seedOf(ctx: PassContext, word: number) {
  if (!ctx.seeds) throw new Error("a seed block is needed when dropout rates are non-zero");
  return { block: ctx.seeds, word };
}

/** Records the forward pass from `acts.input` to `acts.logits`. */
export function recordForward(plan: Plan, ctx: PassContext): void {
  const { config: c, params: P, acts: A, rates } = ctx;
  const B = A.batch, N = A.seq, d = c.dim;
  const rows = B * N;
  const geo = tokenizerGeometry(c);

  // Tokenizer.
  let x = A.get("input");
  geo.stages.forEach((s, j) => {
    const conv = convSizes(s, B);
    const w = P.get(`tokenizer.conv_layers.${j}.0.weight`);
    if (!s.reluPool) {
      const bias = P.get(`tokenizer.conv_layers.${j}.0.bias`);
      conv2dForward(plan, A.get("tokens"), x, w, bias, { ...conv, outLayout: "tokens" });
      return;
    }
    const last = j === geo.stages.length - 1;
    const pooled = A.get(last ? "tokens" : `pool${j}`);
    if (fusedStage(c, s, j)) {
      const outLayout = poolSizes(s, B, last).outLayout;
      conv2dReluMaxPoolForward(plan, pooled, A.get(`argmax${j}`), x, w, { ...conv, outLayout });
    } else {
      conv2dForward(plan, A.get(`conv${j}`), x, w, undefined, { ...conv, relu: true });
      maxPool2dForward(plan, pooled, A.get(`argmax${j}`), A.get(`conv${j}`), poolSizes(s, B, last));
    }
    x = pooled;
  });

  // Class token, positional embedding, dropout.
  let seq = A.get("tokens");
  if (c.family === "vit") {
    classTokenConcat(plan, A.get("sequence"), seq, P.get("classifier.class_emb"), {
      batch: B,
      tokens: A.tokens,
      dim: d,
    });
    seq = A.get("sequence");
  }
  if (c.positionalEmbedding !== "none") {
    positionalEmbeddingAdd(plan, A.get("h0"), seq, P.get("classifier.positional_emb"), {
      batch: B,
      tokens: N,
      dim: d,
    });
  }
  const h0 = A.streamIn();
  if (rates.dropout > 0) dropoutForward(plan, h0, h0, { p: rates.dropout, seed: seedOf(ctx, 0) });

  // out = residual + dropPath(dropout(x·Wᵀ + b)) of the linear layer `layer`. Without drop-path and dropout the
  // residual is added in the matmul's epilogue and `scratch` is not used.
  const residualBranch = (
    out: Tensor,
    residual: Tensor,
    scratch: Tensor,
    x: Tensor,
    layer: string,
    dropPath: ReturnType<typeof dropPathOf>,
    dropoutWord: number,
  ) => {
    const w = P.get(`${layer}.weight`), b = P.get(`${layer}.bias`);
    if (plainBranch(ctx, dropPath)) {
      linearForward(plan, out, x, w, b, { residual });
      return;
    }
    linearForward(plan, scratch, x, w, b);
    if (rates.dropout > 0) {
      dropoutForward(plan, scratch, scratch, { p: rates.dropout, seed: seedOf(ctx, dropoutWord) });
    }
    residualDropPath(plan, out, residual, scratch, dropPath);
  };

  // Encoder blocks.
  for (let i = 0; i < c.layers; i++) {
    const p = `classifier.blocks.${i}`;
    const seeds = blockSeeds(i);
    const h = A.stream(i), hNext = A.stream(i + 1);
    const ln0 = A.block("ln0", i), qkv = A.block("qkv", i), att = A.block("att", i);
    const a = A.block("a", i), n1 = A.block("n1", i), f1 = A.block("f1", i), g = A.block("g", i);
    const proj = A.get("proj"), f2 = A.get("f2");
    layerNormForward(
      plan,
      ln0,
      A.block("mean0", i),
      A.block("rstd0", i),
      h,
      P.get(`${p}.pre_norm.weight`),
      P.get(`${p}.pre_norm.bias`),
      { rows, dim: d },
    );
    linearForward(plan, qkv, ln0, P.get(`${p}.self_attn.qkv.weight`));
    attentionForward(plan, att, A.block("probs", i), qkv, {
      batch: B,
      tokens: N,
      dim: d,
      heads: c.heads,
      dropout: rates.attentionDropout,
      seed: rates.attentionDropout > 0 ? seedOf(ctx, seeds.attention) : undefined,
    });
    residualBranch(a, h, proj, att, `${p}.self_attn.proj`, dropPathOf(ctx, i, seeds.dropPath1), seeds.proj);
    // The official quirk: the stream is replaced by its LayerNorm (SPEC §1).
    layerNormForward(
      plan,
      n1,
      A.block("mean1", i),
      A.block("rstd1", i),
      a,
      P.get(`${p}.norm1.weight`),
      P.get(`${p}.norm1.bias`),
      { rows, dim: d },
    );
    linearForward(plan, g, n1, P.get(`${p}.linear1.weight`), P.get(`${p}.linear1.bias`), {
      activation: "gelu",
      preActivation: f1,
    });
    if (rates.dropout > 0) dropoutForward(plan, g, g, { p: rates.dropout, seed: seedOf(ctx, seeds.mlp1) });
    residualBranch(hNext, n1, f2, g, `${p}.linear2`, dropPathOf(ctx, i, seeds.dropPath2), seeds.mlp2);
  }

  // Head.
  layerNormForward(
    plan,
    A.get("hn"),
    A.get("meanN"),
    A.get("rstdN"),
    A.stream(c.layers),
    P.get("classifier.norm.weight"),
    P.get("classifier.norm.bias"),
    { rows, dim: d },
  );
  if (c.family === "vit") {
    selectToken(plan, A.get("pooled"), A.get("hn"), { batch: B, tokens: N, dim: d, index: 0 });
  } else {
    seqPoolForward(
      plan,
      A.get("pooled"),
      A.get("poolWeights"),
      A.get("hn"),
      P.get("classifier.attention_pool.weight"),
      P.get("classifier.attention_pool.bias"),
      { batch: B, tokens: N, dim: d },
    );
  }
  linearForward(
    plan,
    A.get("logits"),
    A.get("pooled"),
    P.get("classifier.fc.weight"),
    P.get("classifier.fc.bias"),
  );
}

/** The conv kernels' sizes for tokenizer stage `s` at batch `B`. */
function convSizes(s: ConvStage, B: number) {
  return {
    batch: B,
    inChannels: s.inChannels,
    height: s.inH,
    width: s.inW,
    outChannels: s.outChannels,
    kernel: s.kernel,
    stride: s.stride,
    padding: s.padding,
  };
}

/** Input channels up to which the first conv → ReLU → max-pool stage runs fused (see {@link fusedStage}). */
const FUSED_STAGE_MAX_CHANNELS = 4;

/**
 * Whether stage `j` runs as the fused conv → ReLU → max-pool kernels (`lib/kernels/conv_pool.ts`), which never
 * write the conv-sized output or its gradient (the 1→64 stage of cct_2_3x2 on 28×28: 2.5–3.7× faster, and
 * 2 × 25.7 MB less at batch 128). Only the first stage (no input gradient needed) with few input channels (the
 * fused kernels recompute overlapping conv outputs). Its backward reads the ReLU mask from the pooled output, so
 * that must survive until backward: not the case when the pooled tokens are the encoder's input itself (no
 * positional embedding), where dropout writes in place.
 */
function fusedStage(c: ModelConfig, s: ConvStage, j: number): boolean {
  const tokensAreStream = j === tokenizerGeometry(c).stages.length - 1 && c.positionalEmbedding === "none";
  // Measured only for 3×3 convs; a 7×7 stem (cct_7_7x2_224) makes a 5k-line shader: unmeasured, left unfused.
  return j === 0 && s.reluPool && s.inChannels <= FUSED_STAGE_MAX_CHANNELS && s.kernel <= 3 &&
    !tokensAreStream;
}

/** The official MaxPool2d(3, 2, 1) after stage `s`; the last stage writes tokens [B, H·W, C]. */
function poolSizes(s: ConvStage, B: number, last: boolean) {
  return {
    batch: B,
    channels: s.outChannels,
    height: s.convH,
    width: s.convW,
    kernel: 3,
    stride: 2,
    padding: 1,
    outLayout: (last ? "tokens" : "nchw") as "tokens" | "nchw",
  };
}

/** A residual branch without drop-path or dropout: its add runs in the matmul epilogue, its gradient in place. */
function plainBranch(ctx: PassContext, dropPath: ReturnType<typeof dropPathOf>): boolean {
  return dropPath.p === 0 && ctx.rates.dropout === 0;
}

function dropPathOf(ctx: PassContext, i: number, word: number) {
  const p = ctx.rates.dropPath[i];
  return {
    batch: ctx.acts.batch,
    perSample: ctx.acts.seq * ctx.config.dim,
    p,
    seed: p > 0 ? seedOf(ctx, word) : undefined,
  };
}

/**
 * Records the backward pass from `acts.dlogits` to every trainable parameter's gradient in `grads`, which are
 * ACCUMULATED into (zero them first). Must follow {@link recordForward} of the same context in the same plan or
 * an earlier submission (attention's saved probabilities are consumed).
 */
export function recordBackward(plan: Plan, ctx: PassContext, grads: TensorTable): void {
  const { config: c, params: P, acts: A, rates } = ctx;
  const B = A.batch, N = A.seq, d = c.dim;
  const rows = B * N;
  const G = (name: string) => grads.get(name);
  let dstream = A.get("dstream"), dscratch = A.get("dscratch");
  const dbranch = A.get("dbranch"), dwide = A.get("dwide");
  const r = c.dim * c.mlpRatio;
  const dwideR = dwide.prefix([B, N, r]), dwide3 = dwide.prefix([B, N, 3 * d]);
  // ∂ of a residual branch `out = residual + dropPath(dropout(branch))`, given ∂out (which stays ∂residual).
  // Without drop-path and dropout it is ∂out itself: read it in place instead of copying it (the branch's
  // backward only reads it, and the residual's gradient is not written until that is done).
  const branchGradient = (dout: Tensor, dropPath: ReturnType<typeof dropPathOf>, dropoutWord: number) => {
    if (plainBranch(ctx, dropPath)) return dout;
    residualDropPathBackward(plan, dout, dbranch, dout, dropPath);
    if (rates.dropout > 0) {
      dropoutBackward(plan, dbranch, dbranch, { p: rates.dropout, seed: seedOf(ctx, dropoutWord) });
    }
    return dbranch;
  };

  // Head.
  linearBackward(
    plan,
    A.get("dpooled"),
    G("classifier.fc.weight"),
    G("classifier.fc.bias"),
    A.get("dlogits"),
    A.get("pooled"),
    P.get("classifier.fc.weight"),
  );
  if (c.family === "vit") {
    selectTokenBackward(plan, dscratch, A.get("dpooled"), { batch: B, tokens: N, dim: d, index: 0 });
  } else {
    seqPoolBackward(
      plan,
      dscratch,
      G("classifier.attention_pool.weight"),
      G("classifier.attention_pool.bias"),
      A.get("dpooled"),
      A.get("hn"),
      A.get("poolWeights"),
      P.get("classifier.attention_pool.weight"),
      { batch: B, tokens: N, dim: d, scratch: A.get("dpoolLogits") },
    );
  }
  layerNormBackward(
    plan,
    dstream,
    G("classifier.norm.weight"),
    G("classifier.norm.bias"),
    dscratch,
    A.stream(c.layers),
    A.get("meanN"),
    A.get("rstdN"),
    P.get("classifier.norm.weight"),
    { rows, dim: d },
  );

  // Blocks, last to first; `dstream` holds ∂L/∂h_{i+1} on entry and ∂L/∂h_i on exit.
  for (let i = c.layers - 1; i >= 0; i--) {
    const p = `classifier.blocks.${i}`;
    const seeds = blockSeeds(i);
    // h_{i+1} = n1 + dropPath(dropout(f2)): ∂n1 starts as dstream itself.
    const dmlp = branchGradient(dstream, dropPathOf(ctx, i, seeds.dropPath2), seeds.mlp2);
    // f2 = dropout(gelu(f1))·W2ᵀ + b2; f1 = n1·W1ᵀ + b1.
    if (rates.dropout > 0) {
      const dgelu = A.get("dgelu");
      linearBackward(
        plan,
        dgelu,
        G(`${p}.linear2.weight`),
        G(`${p}.linear2.bias`),
        dmlp,
        A.block("g", i),
        P.get(`${p}.linear2.weight`),
      );
      dropoutBackward(plan, dgelu, dgelu, { p: rates.dropout, seed: seedOf(ctx, seeds.mlp1) });
      geluBackward(plan, dwideR, dgelu, A.block("f1", i));
    } else {
      linearBackward(
        plan,
        dwideR,
        G(`${p}.linear2.weight`),
        G(`${p}.linear2.bias`),
        dmlp,
        A.block("g", i),
        P.get(`${p}.linear2.weight`),
        { geluGradOf: A.block("f1", i) },
      );
    }
    linearBackward(
      plan,
      dstream,
      G(`${p}.linear1.weight`),
      G(`${p}.linear1.bias`),
      dwideR,
      A.block("n1", i),
      P.get(`${p}.linear1.weight`),
      { accumulateDx: true },
    );
    // n1 = LayerNorm(a).
    layerNormBackward(
      plan,
      dscratch,
      G(`${p}.norm1.weight`),
      G(`${p}.norm1.bias`),
      dstream,
      A.block("a", i),
      A.block("mean1", i),
      A.block("rstd1", i),
      P.get(`${p}.norm1.weight`),
      { rows, dim: d },
    );
    // a = h + dropPath(dropout(proj)): ∂h starts as dscratch.
    const dproj = branchGradient(dscratch, dropPathOf(ctx, i, seeds.dropPath1), seeds.proj);
    linearBackward(
      plan,
      dstream,
      G(`${p}.self_attn.proj.weight`),
      G(`${p}.self_attn.proj.bias`),
      dproj,
      A.block("att", i),
      P.get(`${p}.self_attn.proj.weight`),
    );
    attentionBackward(plan, dwide3, dstream, A.block("qkv", i), A.block("probs", i), {
      batch: B,
      tokens: N,
      dim: d,
      heads: c.heads,
      // The forward kept its dropout mask in the sign of the saved probabilities: no seed needed here.
      dropout: rates.attentionDropout,
      out: A.block("att", i),
    });
    linearBackward(
      plan,
      dstream,
      G(`${p}.self_attn.qkv.weight`),
      undefined,
      dwide3,
      A.block("ln0", i),
      P.get(`${p}.self_attn.qkv.weight`),
    );
    layerNormBackward(
      plan,
      dscratch,
      G(`${p}.pre_norm.weight`),
      G(`${p}.pre_norm.bias`),
      dstream,
      A.stream(i),
      A.block("mean0", i),
      A.block("rstd0", i),
      P.get(`${p}.pre_norm.weight`),
      { rows, dim: d, accumulateDx: true },
    );
    [dstream, dscratch] = [dscratch, dstream];
  }

  // Embeddings.
  if (rates.dropout > 0) dropoutBackward(plan, dstream, dstream, { p: rates.dropout, seed: seedOf(ctx, 0) });
  if (c.positionalEmbedding === "learnable") {
    positionalEmbeddingBackward(plan, G("classifier.positional_emb"), dstream, {
      batch: B,
      tokens: N,
      dim: d,
    });
  }
  let dtokens = dstream;
  if (c.family === "vit") {
    dtokens = A.get("dtokens");
    classTokenBackward(plan, dtokens, G("classifier.class_emb"), dstream, {
      batch: B,
      tokens: A.tokens,
      dim: d,
    });
  }

  // Tokenizer, last stage first.
  const geo = tokenizerGeometry(c);
  let dy = dtokens;
  for (let j = geo.stages.length - 1; j >= 0; j--) {
    const s = geo.stages[j];
    const last = j === geo.stages.length - 1;
    const input = j === 0 ? A.get("input") : A.get(`pool${j - 1}`);
    const conv = convSizes(s, B);
    const dw = G(`tokenizer.conv_layers.${j}.0.weight`), w = P.get(`tokenizer.conv_layers.${j}.0.weight`);
    if (!s.reluPool) {
      conv2dBackwardWeights(plan, dw, dy, input, { ...conv, outLayout: "tokens", accumulate: true });
      conv2dBackwardBias(plan, G(`tokenizer.conv_layers.${j}.0.bias`), dy, {
        ...conv,
        outLayout: "tokens",
        accumulate: true,
      });
      continue;
    }
    if (fusedStage(c, s, j)) {
      const pooled = A.get(last ? "tokens" : `pool${j}`);
      const outLayout = poolSizes(s, B, last).outLayout;
      conv2dReluMaxPoolBackwardWeights(plan, dw, dy, A.get(`argmax${j}`), pooled, input, {
        ...conv,
        outLayout,
        accumulate: true,
      });
      continue;
    }
    const dconv = A.get(`dconv${j}`);
    maxPool2dBackward(plan, dconv, dy, A.get(`argmax${j}`), {
      ...poolSizes(s, B, last),
      reluOutput: A.get(`conv${j}`),
    });
    // One channels-last copy of dconv (made by whichever backward needs it first) serves both backwards.
    const preparedDy = prepareConvGradient(plan, dconv, conv);
    conv2dBackwardWeights(plan, dw, dconv, input, { ...conv, accumulate: true, preparedDy });
    if (j > 0) {
      dy = A.get(`dpool${j - 1}`);
      conv2dBackwardData(plan, dy, dconv, w, { ...conv, preparedDy });
    }
  }
}
