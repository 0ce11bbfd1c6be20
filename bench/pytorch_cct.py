#!/usr/bin/python3
"""PyTorch peer of the Deno/WebGPU Compact Transformers: ViT-Lite, CVT and CCT (arXiv 2104.05704).

Written from /work/shared/SPEC.md (the official code cannot be downloaded here) with the official state-dict
names, so it loads the project's safetensors checkpoints and the reference fixtures directly. Used for
side-by-side throughput figures (see bench/README.md) and as an independent check of the fixtures.

  /usr/bin/python3 bench/pytorch_cct.py --verify [--fixtures ../shared/fixtures]
  /usr/bin/python3 bench/pytorch_cct.py --bench-train cct_2_3x2_32 --img-size 28 --channels 1 --batch 128 --threads 2
  /usr/bin/python3 bench/pytorch_cct.py --bench-infer cct_2_3x2_32 --img-size 28 --channels 1 --batch 128 --threads 2

Each bench mode prints one JSON line; its keys match `cli.ts bench` (inferenceImagesPerSecond, latencyBatch1Ms,
trainImagesPerSecond, trainStepMs) plus the spread of the samples and which BLAS library and kernel ran.
Needs Debian's python3-torch (PyTorch 1.13) and numpy: run it with /usr/bin/python3, not a pyenv python.
"""

import argparse
import json
import math
import os
import re
import struct
import sys
import time

# --- model zoo (SPEC §2) -----------------------------------------------------------------------------------

# family number -> (layers, heads, mlp ratio, embedding dim)
ZOO = {2: (2, 2, 1, 128), 4: (4, 2, 1, 128), 6: (6, 4, 2, 256), 7: (7, 4, 2, 256), 14: (14, 6, 3, 384)}
NAME_RE = re.compile(r"^(vit|cvt|cct)_(\d+)_(\d+)(?:x(\d+))?_(\d+)((?:_(?:sine|fl|c100))*)$")


def model_config(name, img_size=None, in_channels=3, num_classes=None, positional_embedding=None, dropout=0.0,
                 attention_dropout=0.1, stochastic_depth=0.1):
    """The configuration of a registered model name (e.g. cct_7_3x1_32, vit_7_4_32_sine, cct_7_3x1_32_sine_c100)."""
    m = NAME_RE.match(name)
    if not m:
        raise ValueError(f"unknown model name {name!r}")
    kind, fam, kernel, n_conv, size, suffix = m.groups()
    fam, kernel, size = int(fam), int(kernel), int(size)
    if fam not in ZOO:
        raise ValueError(f"unknown model family {fam} in {name!r}")
    if (kind == "cct") != (n_conv is not None):
        raise ValueError(f"{name!r}: CCT names read kernel x convLayers, ViT-Lite/CVT names a patch size")
    layers, heads, mlp_ratio, dim = ZOO[fam]
    flags = set(suffix.strip("_").split("_")) - {""}
    default_classes = 10
    if "c100" in flags:
        default_classes = 100
    elif "fl" in flags or (kind == "cct" and size == 224 and fam == 7):
        default_classes = 102
    elif size in (224, 384):
        default_classes = 1000
    return {
        "name": name,
        "kind": kind,
        "layers": layers,
        "heads": heads,
        "mlp_ratio": mlp_ratio,
        "dim": dim,
        "kernel": kernel,
        "n_conv": int(n_conv) if n_conv else 1,
        "img_size": img_size or size,
        "in_channels": in_channels,
        "num_classes": num_classes or default_classes,
        # the official _sine constructors drop the argument; SPEC says we honour it
        "positional_embedding": positional_embedding or ("sine" if "sine" in flags else "learnable"),
        "dropout": dropout,
        "attention_dropout": attention_dropout,
        "stochastic_depth": stochastic_depth,
    }


# --- safetensors (8-byte little-endian header length, JSON header, raw little-endian data) -------------------

ST_DTYPES = {"F32": "<f4", "F64": "<f8", "F16": "<f2", "I32": "<i4", "I64": "<i8", "U8": "u1", "I8": "i1"}


def read_safetensors(path):
    """Returns ({name: numpy array}, metadata) of a safetensors file."""
    import numpy as np

    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    out = {}
    for key, info in header.items():
        if info["dtype"] not in ST_DTYPES:
            raise ValueError(f"{path}: {key}: unsupported dtype {info['dtype']}")
        start, end = info["data_offsets"]
        buf = raw[8 + n + start:8 + n + end]
        out[key] = np.frombuffer(buf, dtype=ST_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out, meta


# --- the model (SPEC §1) ------------------------------------------------------------------------------------

def build_model(cfg):
    """A torch.nn.Module with the official structure and state-dict names for `cfg` (see model_config)."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class DropPath(nn.Module):
        """Stochastic depth per sample: x · mask / keep, mask ~ Bernoulli(keep)."""

        def __init__(self, p):
            super().__init__()
            self.p = p

        def forward(self, x):
            if self.p == 0.0 or not self.training:
                return x
            keep = 1.0 - self.p
            mask = torch.floor(keep + torch.rand((x.shape[0],) + (1,) * (x.ndim - 1), dtype=x.dtype))
            return x.div(keep) * mask

    class Attention(nn.Module):
        def __init__(self, dim, heads, attention_dropout, projection_dropout):
            super().__init__()
            self.num_heads = heads
            self.scale = (dim // heads) ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            self.attn_drop = nn.Dropout(attention_dropout)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(projection_dropout)

        def forward(self, x):
            b, n, c = x.shape
            # columns: q | k | v blocks of d, each split into heads of head_dim consecutive columns
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = self.attn_drop(attn.softmax(dim=-1))
            x = (attn @ v).transpose(1, 2).reshape(b, n, c)
            return self.proj_drop(self.proj(x))

    class EncoderBlock(nn.Module):
        def __init__(self, dim, heads, mlp_dim, dropout, attention_dropout, drop_path):
            super().__init__()
            self.pre_norm = nn.LayerNorm(dim)
            self.self_attn = Attention(dim, heads, attention_dropout, dropout)
            self.linear1 = nn.Linear(dim, mlp_dim)
            self.dropout1 = nn.Dropout(dropout)
            self.norm1 = nn.LayerNorm(dim)
            self.linear2 = nn.Linear(mlp_dim, dim)
            self.dropout2 = nn.Dropout(dropout)
            self.drop_path = DropPath(drop_path)

        def forward(self, x):
            x = x + self.drop_path(self.self_attn(self.pre_norm(x)))
            x = self.norm1(x)  # official quirk: the residual stream is replaced by its LayerNorm
            y = self.linear2(self.dropout1(F.gelu(self.linear1(x))))  # exact erf GELU
            return x + self.drop_path(self.dropout2(y))

    class Tokenizer(nn.Module):
        def __init__(self, c):
            super().__init__()
            d = c["dim"]
            if c["kind"] == "cct":
                k = c["kernel"]
                stride, pad = max(1, k // 2 - 1), max(1, k // 2)
                chans = [c["in_channels"]] + [64] * (c["n_conv"] - 1) + [d]
                self.conv_layers = nn.Sequential(*[
                    nn.Sequential(
                        nn.Conv2d(chans[i], chans[i + 1], k, stride, pad, bias=False),
                        nn.ReLU(),
                        nn.MaxPool2d(3, 2, 1),
                    ) for i in range(c["n_conv"])
                ])
            else:  # plain patch embedding with bias: names tokenizer.conv_layers.0.0.{weight,bias}
                p = c["kernel"]
                self.conv_layers = nn.Sequential(
                    nn.Sequential(nn.Conv2d(c["in_channels"], d, p, p, 0, bias=True), nn.Identity(), nn.Identity()))
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight)  # fan-in, gain √2

        def forward(self, x):
            return self.conv_layers(x).flatten(2, 3).transpose(-2, -1)  # token = h·W + w

    def sine_table(n, d):
        p = torch.arange(n, dtype=torch.float64)[:, None]
        i = torch.arange(d, dtype=torch.float64)[None, :]
        angle = p / torch.pow(10000.0, 2 * torch.div(i, 2, rounding_mode="floor") / d)
        pe = torch.where(i.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
        return pe.float()[None]

    class Classifier(nn.Module):
        def __init__(self, c, n_tokens):
            super().__init__()
            d = c["dim"]
            self.seq_pool = c["kind"] != "vit"
            if not self.seq_pool:
                self.class_emb = nn.Parameter(torch.zeros(1, 1, d))
                n_tokens += 1
            else:
                self.attention_pool = nn.Linear(d, 1)
            pe = c["positional_embedding"]
            if pe == "learnable":
                self.positional_emb = nn.Parameter(torch.zeros(1, n_tokens, d))
                nn.init.trunc_normal_(self.positional_emb, std=0.2)
            elif pe == "sine":
                self.positional_emb = nn.Parameter(sine_table(n_tokens, d), requires_grad=False)
            elif pe == "none":
                self.positional_emb = None
            else:
                raise ValueError(f"positional embedding {pe!r}: learnable | sine | none")
            self.dropout = nn.Dropout(c["dropout"])
            L = c["layers"]
            rates = [i * c["stochastic_depth"] / (L - 1) if L > 1 else 0.0 for i in range(L)]
            self.blocks = nn.ModuleList([
                EncoderBlock(d, c["heads"], d * c["mlp_ratio"], c["dropout"], c["attention_dropout"], r)
                for r in rates
            ])
            self.norm = nn.LayerNorm(d)
            self.fc = nn.Linear(d, c["num_classes"])
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)  # absolute bounds ±2
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

        def forward(self, x):
            if not self.seq_pool:
                x = torch.cat((self.class_emb.expand(x.shape[0], -1, -1), x), dim=1)
            if self.positional_emb is not None:
                x = x + self.positional_emb
            x = self.dropout(x)
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            if self.seq_pool:
                w = F.softmax(self.attention_pool(x), dim=1)  # [B, N, 1], softmax over tokens
                x = (w.transpose(-1, -2) @ x).squeeze(-2)
            else:
                x = x[:, 0]
            return self.fc(x)

    class CompactTransformer(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.config = c
            self.tokenizer = Tokenizer(c)
            with torch.no_grad():
                n = self.tokenizer(torch.zeros(1, c["in_channels"], c["img_size"], c["img_size"])).shape[1]
            self.classifier = Classifier(c, n)

        def forward(self, x):
            return self.classifier(self.tokenizer(x))

    return CompactTransformer(cfg)


def load_weights(model, tensors):
    """Loads a {official name: numpy array} dict strictly (every name, every shape)."""
    import torch

    model.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)


# --- BLAS in use -----------------------------------------------------------------------------------------------

def blas_info():
    """Which libblas.so.3 this process loaded, and OpenBLAS's config and core kernel when it is OpenBLAS."""
    import ctypes

    libs = set()
    with open("/proc/self/maps") as f:
        for line in f:
            path = line.split()[-1]
            if re.search(r"lib(open)?blas", path):
                libs.add(os.path.realpath(path))
    info = {"libraries": sorted(libs)}
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_config.restype = ctypes.c_char_p
            lib.openblas_get_corename.restype = ctypes.c_char_p
            info["openblas"] = lib.openblas_get_config().decode()
            info["core"] = lib.openblas_get_corename().decode()
            info["openblas_threads"] = lib.openblas_get_num_threads()
            break
        except (OSError, AttributeError):
            continue
    if "openblas" not in info:
        info["openblas"] = None  # the reference BLAS: slow; select OpenBLAS with update-alternatives
    info["sgemm1024Gflops"] = sgemm_gflops()
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            info[var] = os.environ[var]
    return info


def sgemm_gflops(n=1024, runs=5):
    """Best GFLOP/s of an n³ float32 matmul through torch (OpenBLAS ≈ 150–200 here, the reference BLAS a few)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return round(2 * n**3 / best / 1e9)


# --- verification against the fixtures --------------------------------------------------------------------------

def rel_err(a, b):
    """max |a − b| / max |b| (the fixtures' README measure)."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def verify(fixtures, tol):
    """Checks logits (and activations) of each fixture model, parameter counts, the .pth, and a training step."""
    import numpy as np
    import torch

    ok = True

    def report(label, err, limit):
        nonlocal ok
        good = err <= limit
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {label}: {err:.3e} (limit {limit:.0e})")

    for name in ("cct_2_3x2_32", "cvt_2_4_32", "vit_2_4_32"):
        weights, _ = read_safetensors(os.path.join(fixtures, f"{name}.weights.safetensors"))
        io, meta = read_safetensors(os.path.join(fixtures, f"{name}.io.safetensors"))
        model = build_model(model_config(name))
        load_weights(model, weights)
        model.eval()
        with torch.no_grad():
            x = torch.from_numpy(io["input"])
            logits = model(x).numpy()
            report(f"{name} logits vs float32 reference", rel_err(logits, io["logits"]), tol)
            report(f"{name} logits vs float64 reference", rel_err(logits, io["logits_f64"]), tol)
            model64 = build_model(model_config(name)).double()
            load_weights(model64, {k: v.astype(np.float64) for k, v in weights.items()})
            model64.eval()
            # logits_f64 is stored as F32, so float32 rounding (~6e-8) bounds this check
            report(f"{name} float64 model vs float64 reference",
                   rel_err(model64(x.double()).numpy(), io["logits_f64"]), 1e-6)
            # intermediate activations of the images the metadata names
            acts = {k[4:]: v for k, v in io.items() if k.startswith("act.")}
            if acts:
                n = acts["tokens"].shape[0]
                idx = json.loads(meta.get("act_images", "null")) if "act_images" in meta else list(range(n))
                if isinstance(idx, int):
                    idx = [idx]
                got = capture_activations(model, x[idx])
                worst = max(rel_err(got[k], v) for k, v in acts.items() if k in got)
                missing = sorted(set(acts) - set(got))
                report(f"{name} activations ({len(acts) - len(missing)} of {len(acts)}), worst", worst, tol)
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        print(f"     {name}: {count:,} parameters, {len(weights)} tensors")

    expected = {"cct_2_3x2_32": 283723, "cct_7_3x1_32": 3760139, "cct_7_3x2_32": 3853259, "cvt_7_4_32": 3716619,
                "vit_7_4_32": 3716874, "cct_14_7x2_224": 22367273}
    for name, n in expected.items():
        got = sum(p.numel() for p in build_model(model_config(name)).parameters())
        good = got == n
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name} parameter count {got:,} (SPEC {n:,})")
    tensors = {"cct_7_3x1_32": 85, "cct_2_3x2_32": 31, "vit_7_4_32": 85, "cvt_7_4_32": 86}
    for name, n in tensors.items():
        got = len(build_model(model_config(name)).state_dict())
        good = got == n
        ok &= good
        print(f"{'ok  ' if good else 'FAIL'} {name} state dict holds {got} tensors (SPEC {n})")

    pth = os.path.join(fixtures, "cct_2_3x2_32.pth")
    if os.path.exists(pth):
        sd = torch.load(pth, map_location="cpu")
        st, _ = read_safetensors(os.path.join(fixtures, "cct_2_3x2_32.weights.safetensors"))
        if set(sd) != set(st):
            ok = False
            print("FAIL cct_2_3x2_32.pth and the safetensors weights hold different names")
        else:
            diff = max(float((sd[k].float() - torch.from_numpy(st[k])).abs().max()) for k in st)
            report("cct_2_3x2_32.pth (torch.load) vs the safetensors weights, max |Δ|", diff, 0.0)

    verify_training(fixtures, tol, report)
    print("verify: " + ("all checks passed" if ok else "SOME CHECKS FAILED"))
    return ok


def capture_activations(model, x):
    """The fixture's act.* tensors of `model` on `x`, captured with forward hooks."""
    import torch

    got = {}
    clf = model.classifier
    hooks = [
        model.tokenizer.register_forward_hook(lambda m, i, o: got.__setitem__("tokens", o)),
        clf.blocks[0].register_forward_pre_hook(lambda m, i: got.__setitem__("block_in", i[0])),
        clf.norm.register_forward_hook(lambda m, i, o: got.__setitem__("norm", o)),
    ]
    for j, blk in enumerate(clf.blocks):
        hooks.append(blk.register_forward_hook(lambda m, i, o, j=j: got.__setitem__(f"block{j}", o)))
    if clf.seq_pool:
        hooks.append(clf.attention_pool.register_forward_hook(lambda m, i, o: got.__setitem__("pool_logits", o)))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    if clf.seq_pool:
        w = torch.softmax(got["pool_logits"], dim=1)
        got["pooled"] = (w.transpose(-1, -2) @ got["norm"]).squeeze(-2)
    else:
        got["pooled"] = got["norm"][:, 0]
    return {k: v.numpy() for k, v in got.items()}


def verify_training(fixtures, tol, report):
    """Loss, gradients and two AdamW steps of cct_2_3x2_32 against the training fixture."""
    import torch
    import torch.nn.functional as F

    path = os.path.join(fixtures, "cct_2_3x2_32.train.safetensors")
    if not os.path.exists(path):
        print(f"skip training check: no {path}")
        return
    ref, _ = read_safetensors(path)
    weights, _ = read_safetensors(os.path.join(fixtures, "cct_2_3x2_32.train.weights.safetensors"))
    model = build_model(model_config("cct_2_3x2_32", attention_dropout=0.0, stochastic_depth=0.0))
    load_weights(model, weights)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.05)
    x, y = torch.from_numpy(ref["input"]), torch.from_numpy(ref["labels"]).long()
    for step, (loss_key, grad, after) in enumerate([("loss", "grad.", "adamw1."), ("loss_step2", "grad2.", "adamw2.")]):
        opt.zero_grad(set_to_none=True)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        if step == 0:
            report("train: logits", rel_err(logits.detach().numpy(), ref["logits"]), tol)
        report(f"train step {step + 1}: loss", rel_err(loss.item(), ref[loss_key]), tol)
        loss.backward()
        named = dict(model.named_parameters())
        g = max(rel_err(p.grad.numpy(), ref[grad + k]) for k, p in named.items())
        report(f"train step {step + 1}: worst gradient ({len(named)} tensors)", g, 1e-4)
        opt.step()
        a = max(rel_err(p.detach().numpy(), ref[after + k]) for k, p in named.items())
        report(f"train step {step + 1}: worst parameter after AdamW", a, tol)


# --- benchmarks ------------------------------------------------------------------------------------------------

def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def bench_model(args, name):
    return build_model(model_config(name, img_size=args.img_size, in_channels=args.channels))


def bench_train(args):
    """Images/s of a real training step: forward, smoothed cross-entropy, backward, AdamW (median of steps)."""
    import torch

    torch.manual_seed(0)
    model = bench_model(args, args.bench_train)
    c = model.config
    model.train()
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    # the paper's recipe: AdamW, weight decay 0.06 except on 1-D parameters, label smoothing 0.1
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.06}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=5.5e-4, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = torch.randn(args.batch, c["in_channels"], c["img_size"], c["img_size"])
    y = torch.randint(0, c["num_classes"], (args.batch,))

    def step():
        opt.zero_grad(set_to_none=True)
        if args.augment:
            xb, target = augment(x, y, c["num_classes"])
            loss = loss_fn(model(xb), target)
        else:
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1000)
    ms = median(times)
    return {
        "trainImagesPerSecond": round(args.batch / (ms / 1000)),
        "trainStepMs": round(ms, 1),
        "trainStepMsMinMax": [round(min(times), 1), round(max(times), 1)],
        "trainSteps": args.steps,
        "augment": "crop+flip+mixup" if args.augment else "none",
    }


def augment(x, y, num_classes):
    """A cheap stand-in for the GPU trainer's augmentation: random crop (padding side/8) and flip per image, then
    mixup (λ ~ Beta(0.8, 0.8)) with the batch reversed; returns images and soft targets."""
    import torch
    import torch.nn.functional as F

    b, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dy, dx = torch.randint(0, 2 * pad + 1, (2, b)).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    flip = torch.rand(b, 1, 1, 1) < 0.5
    out = torch.where(flip, out.flip(3), out)
    lam = float(torch.distributions.Beta(0.8, 0.8).sample())
    target = F.one_hot(y, num_classes).float()
    return lam * out + (1 - lam) * out.flip(0), lam * target + (1 - lam) * target.flip(0)


def bench_infer(args):
    """Images/s of an evaluation-mode forward at the batch size, and batch-1 latency (medians)."""
    import torch

    torch.manual_seed(0)
    model = bench_model(args, args.bench_infer)
    c = model.config
    model.eval()
    shape = (c["in_channels"], c["img_size"], c["img_size"])
    x = torch.randn(args.batch, *shape)
    one = x[:1].clone()
    out = {}
    with torch.inference_mode():
        for inp, key in ((x, "batch"), (one, "one")):
            for _ in range(args.warmup):
                model(inp)
            times = []
            for _ in range(args.steps if key == "batch" else max(args.steps, 20)):
                t0 = time.perf_counter()
                model(inp)
                times.append((time.perf_counter() - t0) * 1000)
            out[key] = times
    ms = median(out["batch"])
    return {
        "inferenceImagesPerSecond": round(args.batch / (ms / 1000)),
        "inferenceBatchMs": round(ms, 2),
        "inferenceBatchMsMinMax": [round(min(out["batch"]), 2), round(max(out["batch"]), 2)],
        "latencyBatch1Ms": round(median(out["one"]), 2),
        "latencyBatch1MsMinMax": [round(min(out["one"]), 2), round(max(out["one"]), 2)],
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--verify", action="store_true", help="check the model against the fixtures")
    mode.add_argument("--bench-train", metavar="MODEL", help="time training steps of MODEL")
    mode.add_argument("--bench-infer", metavar="MODEL", help="time inference of MODEL")
    p.add_argument("--fixtures", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                      "shared", "fixtures"))
    p.add_argument("--tol", type=float, default=1e-5, help="max |Δ| / max |ref| allowed by --verify")
    p.add_argument("--img-size", type=int, default=None, help="image side (default: the model's)")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="PyTorch (OpenMP) threads")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="OpenBLAS threads (default: --threads); 1 avoids OpenMP and OpenBLAS pools oversubscribing")
    p.add_argument("--augment", action="store_true",
                   help="--bench-train: add random crop, flip and mixup on the CPU to each step (approximates ours)")
    p.add_argument("--omp-wait", choices=("default", "passive", "active"), default="default",
                   help="OMP_WAIT_POLICY: passive stops idle OpenMP threads spinning, far faster on a loaded machine")
    p.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    p.add_argument("--steps", type=int, default=10, help="timed runs (the median is reported)")
    args = p.parse_args(argv)

    # before torch loads: OpenBLAS and OpenMP size their thread pools at load time
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(args.blas_threads or args.threads)
    if args.omp_wait != "default":
        os.environ["OMP_WAIT_POLICY"] = args.omp_wait.upper()
    import torch

    torch.set_num_threads(args.threads)
    if args.verify:
        return 0 if verify(args.fixtures, args.tol) else 1

    name = args.bench_train or args.bench_infer
    cfg = model_config(name, img_size=args.img_size, in_channels=args.channels)
    result = {
        "peer": "pytorch",
        "model": name,
        "input": f"{cfg['in_channels']}×{cfg['img_size']}×{cfg['img_size']}",
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "ompWaitPolicy": os.environ.get("OMP_WAIT_POLICY", "default"),
    }
    result.update(bench_train(args) if args.bench_train else bench_infer(args))
    result.update({
        "torch": torch.__version__,
        "blas": blas_info(),
        "load": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    print(json.dumps(result, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
