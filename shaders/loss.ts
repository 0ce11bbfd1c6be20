/**
 * Loss kernels: fused log-softmax + cross-entropy forward and backward (hard labels with label smoothing, or soft
 * targets for mixup/cutmix), and top-1 metrics accumulated on the GPU so the host reads them only every k steps.
 * One row per invocation: batches are ≤ 1024 rows, and on llvmpipe a row loop beats workgroup tree reductions.
 */

/** Rows per workgroup of the cross-entropy kernel. */
export const CROSS_ENTROPY_WORKGROUP = 64;
/** Lanes of the single workgroup that accumulates metrics. */
export const METRICS_WORKGROUP = 64;

/**
 * Per row: logp = x − max − log Σ exp(x − max); target t' = (1−ε)·t + ε/C (t one-hot for hard labels);
 * loss = −Σ t'·logp; dlogits = (softmax·Σt' − t')·gradScale (= softmax − t' for normalised targets).
 * Hard labels outside [0, C) give loss 0 and zero gradient (padding rows).
 * Bindings: sizes {batch, classes, smoothing, grad_scale}, losses [B], dlogits [B, C], logits [B, C],
 * targets (i32 [B] or f32 [B, C]).
 */
export function crossEntropyWgsl(soft: boolean): string {
  const wg = CROSS_ENTROPY_WORKGROUP;
  const targetDecl = soft ? "array<f32>" : "array<i32>";
  // Hard labels: Σ t' = 1 and only the label's term differs from ε/C, so the loss needs no target loop.
  const lossCode = soft
    ? /* wgsl */ `
  var weighted = 0.0;
  var total = 0.0;
  for (var c = 0u; c < classes; c++) {
    let t = keep * targets[base + c] + uniform_share;
    weighted += t * ((logits[base + c] - mx) - log_sum);
    total += t;
  }
  losses[row] = -weighted;`
    : /* wgsl */ `
  let label = targets[row];
  if (label < 0 || u32(label) >= classes) {
    losses[row] = 0.0;
    for (var c = 0u; c < classes; c++) { dlogits[base + c] = 0.0; }
    return;
  }
  let logp_label = (logits[base + u32(label)] - mx) - log_sum;
  let mean_logp = shifted_sum / f32(classes) - log_sum;
  losses[row] = -(keep * logp_label + sizes.smoothing * mean_logp);`;
  const gradCode = soft
    ? "let t = keep * targets[base + c] + uniform_share; dlogits[base + c] = (p * total - t) * sizes.grad_scale;"
    : "let t = select(uniform_share, keep + uniform_share, c == u32(label)); " +
      "dlogits[base + c] = (p - t) * sizes.grad_scale;";
  return /* wgsl */ `
struct Sizes { batch: u32, classes: u32, smoothing: f32, grad_scale: f32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> losses: array<f32>;
@group(0) @binding(2) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> targets: ${targetDecl};
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row = gid.x;
  if (row >= sizes.batch) { return; }
  let classes = sizes.classes;
  let base = row * classes;
  var mx = logits[base];
  for (var c = 1u; c < classes; c++) { mx = max(mx, logits[base + c]); }
  var sum_exp = 0.0;
  var shifted_sum = 0.0;
  for (var c = 0u; c < classes; c++) {
    let s = logits[base + c] - mx;
    sum_exp += exp(s);
    shifted_sum += s;
  }
  let log_sum = log(sum_exp);
  let inv_sum = 1.0 / sum_exp;
  let keep = 1.0 - sizes.smoothing;
  let uniform_share = sizes.smoothing / f32(classes);
  ${lossCode}
  for (var c = 0u; c < classes; c++) {
    let p = exp(logits[base + c] - mx) * inv_sum;
    ${gradCode}
  }
}
`;
}

/**
 * metrics[0] += Σ loss, metrics[1] += #(argmax logits == label), metrics[2] += #rows counted. Hard labels outside
 * [0, C) are not counted; soft targets use the argmax of the target row as the label. One workgroup: each lane
 * takes rows lane, lane+64, …; lane 0 adds the 64 partials in a fixed order (deterministic).
 * Bindings: sizes {batch, classes}, metrics [≥3], losses [B], logits [B, C], labels (i32 [B] or f32 [B, C]).
 */
export function accumulateMetricsWgsl(soft: boolean): string {
  const wg = METRICS_WORKGROUP;
  const labelCode = soft
    ? /* wgsl */ `
    var label = 0u;
    var best_t = labels[base];
    for (var c = 1u; c < classes; c++) {
      let t = labels[base + c];
      if (t > best_t) { best_t = t; label = c; }
    }
    let counted = true;`
    : /* wgsl */ `
    let raw = labels[row];
    let counted = raw >= 0 && u32(raw) < classes;
    let label = u32(max(raw, 0));`;
  return /* wgsl */ `
struct Sizes { batch: u32, classes: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> metrics: array<f32>;
@group(0) @binding(2) var<storage, read> losses: array<f32>;
@group(0) @binding(3) var<storage, read> logits: array<f32>;
@group(0) @binding(4) var<storage, read> labels: ${soft ? "array<f32>" : "array<i32>"};
var<workgroup> lane_loss: array<f32, ${wg}>;
var<workgroup> lane_correct: array<f32, ${wg}>;
var<workgroup> lane_count: array<f32, ${wg}>;
@compute @workgroup_size(${wg})
fn main(@builtin(local_invocation_index) lane: u32) {
  let classes = sizes.classes;
  var loss_sum = 0.0;
  var correct = 0.0;
  var count = 0.0;
  for (var row = lane; row < sizes.batch; row += ${wg}u) {
    let base = row * classes;
    ${labelCode}
    var best = 0u;
    var best_x = logits[base];
    for (var c = 1u; c < classes; c++) {
      let x = logits[base + c];
      if (x > best_x) { best_x = x; best = c; }
    }
    loss_sum += losses[row];
    if (counted) {
      count += 1.0;
      if (best == label) { correct += 1.0; }
    }
  }
  lane_loss[lane] = loss_sum;
  lane_correct[lane] = correct;
  lane_count[lane] = count;
  workgroupBarrier();
  if (lane == 0u) {
    var l = 0.0;
    var k = 0.0;
    var n = 0.0;
    for (var i = 0u; i < ${wg}u; i++) {
      l += lane_loss[i];
      k += lane_correct[i];
      n += lane_count[i];
    }
    metrics[0] += l;
    metrics[1] += k;
    metrics[2] += n;
  }
}
`;
}
