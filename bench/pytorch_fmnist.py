#!/usr/bin/python3
"""Time to accuracy on Fashion-MNIST with the PyTorch peer (`pytorch_cct.py`), using the recipe of `cli.ts train`.

Used to choose a recipe for a fixed wall-clock budget: PyTorch trains this model 2.2-2.7x faster than the WebGPU
implementation on these machines, and one training step of both matches to 1e-6 (tests/train/step_parity_test.ts),
so a recipe's accuracy per epoch carries over. Prints one JSON line per epoch.

  /usr/bin/python3 bench/pytorch_fmnist.py --model cct_2_3x2_32 --epochs 6 --lr 1e-3 --batch 128 --threads 1

The schedule is the module's (`lib/train/schedule.ts`, timm's cosine evaluated per step); augmentation is a
random crop with zero padding (`--crop-padding`), a horizontal flip and optional random erasing (`--reprob`,
timm's pixel mode, as `shaders/augment.ts`); label smoothing, AdamW with no decay on
1-D parameters, attention dropout 0.1 and stochastic depth 0.1 as the model zoo's defaults.
"""

import argparse
import gzip
import json
import math
import os
import struct
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

FMNIST = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    dims = [struct.unpack(">I", data[4 + 4 * i:8 + 4 * i])[0] for i in range(magic & 0xFF)]
    return dims, data[4 + 4 * len(dims):]


def load(split, root):
    import torch

    prefix = "train" if split == "train" else "t10k"
    dims, images = read_idx(os.path.join(root, f"{prefix}-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(root, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.frombuffer(bytearray(images), dtype=torch.uint8).reshape(dims[0], 1, dims[1], dims[2])
    y = torch.frombuffer(bytearray(labels), dtype=torch.uint8).long()
    return x, y


def random_erase(x, prob):
    """timm's RandomErasing(mode="pixel", max_count=1) on a normalised batch, as `shaders/augment.ts` does it."""
    import torch

    _, c, hgt, wid = x.shape
    area = hgt * wid
    for i in range(len(x)):
        if torch.rand(()).item() >= prob:
            continue
        for _ in range(10):
            target = (0.02 + (1 / 3 - 0.02) * torch.rand(()).item()) * area
            aspect = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * torch.rand(()).item())
            h = int(round(math.sqrt(target * aspect)))
            w = int(round(math.sqrt(target / aspect)))
            if w < wid and h < hgt:
                top = torch.randint(0, hgt - h + 1, ()).item()
                left = torch.randint(0, wid - w + 1, ()).item()
                x[i, :, top:top + h, left:left + w] = torch.randn(c, h, w)
                break
    return x


def learning_rate(a, t):
    if t < a.warmup_epochs:
        return a.warmup_lr + (a.lr - a.warmup_lr) * t / a.warmup_epochs
    if t >= a.epochs:
        return a.min_lr
    return a.min_lr + 0.5 * (a.lr - a.min_lr) * (1 + math.cos(math.pi * t / a.epochs))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cct_2_3x2_32")
    p.add_argument("--kernel", type=int, help="override the CCT tokenizer's kernel size")
    p.add_argument("--conv-layers", type=int, help="override the CCT tokenizer's conv-layer count")
    p.add_argument("--epochs", type=float, default=6)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr", type=float, default=1e-5)
    p.add_argument("--warmup-epochs", type=float, default=1)
    p.add_argument("--warmup-lr", type=float, default=1e-5)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--smoothing", type=float, default=0.1)
    p.add_argument("--crop-padding", type=int, default=2)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--reprob", type=float, default=0, help="random-erasing probability (timm, pixel mode)")
    p.add_argument("--drop-path", type=float, default=0.1)
    p.add_argument("--attn-drop", type=float, default=0.1)
    p.add_argument("--ema", type=float, default=0, help="also evaluate an EMA of the weights with this decay")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data", default=FMNIST)
    a = p.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    import torch
    import torch.nn.functional as F
    from pytorch_cct import build_model, model_config

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = model_config(a.model, img_size=28, in_channels=1, attention_dropout=a.attn_drop,
                       stochastic_depth=a.drop_path)
    if a.kernel:
        cfg["kernel"] = a.kernel
    if a.conv_layers:
        cfg["n_conv"] = a.conv_layers
    model = build_model(cfg)
    decay = [q for q in model.parameters() if q.ndim > 1]
    no_decay = [q for q in model.parameters() if q.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.999), eps=1e-8)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=a.smoothing)
    ema = build_model(cfg) if a.ema else None
    if ema:
        ema.load_state_dict(model.state_dict())
    xtr, ytr = load("train", a.data)
    xte, yte = load("test", a.data)
    norm = lambda x: (x.float() / 255 - MEAN) / STD  # noqa: E731
    steps = len(xtr) // a.batch  # drop the last partial batch, as the module's trainer does
    total = math.ceil(a.epochs)
    start = time.time()
    pad = a.crop_padding
    for epoch in range(total):
        model.train()
        order = torch.randperm(len(xtr))
        seen = correct = 0
        loss_sum = 0.0
        for s in range(steps):
            t = epoch + s / steps
            if t >= a.epochs:
                break
            for g in opt.param_groups:
                g["lr"] = learning_rate(a, t)
            idx = order[s * a.batch:(s + 1) * a.batch]
            x = norm(xtr[idx])
            if pad:
                x = F.pad(x, (pad, pad, pad, pad), value=(0 - MEAN) / STD)
                oy, ox = torch.randint(0, 2 * pad + 1, (2, len(idx))).tolist()
                x = torch.stack([x[i, :, oy[i]:oy[i] + 28, ox[i]:ox[i] + 28] for i in range(len(idx))])
            if not a.no_flip:
                x = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, x.flip(3), x)
            if a.reprob:
                x = random_erase(x, a.reprob)
            y = ytr[idx]
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y)
            loss.backward()
            opt.step()
            if ema:
                with torch.no_grad():
                    for e, q in zip(ema.state_dict().values(), model.state_dict().values()):
                        if e.dtype.is_floating_point:
                            e.mul_(a.ema).add_(q, alpha=1 - a.ema)
                        else:
                            e.copy_(q)
            loss_sum += loss.item() * len(idx)
            correct += (out.argmax(1) == y).sum().item()
            seen += len(idx)
        def test_top1(m):
            m.eval()
            hits = 0
            with torch.inference_mode():
                for i in range(0, len(xte), 500):
                    hits += (m(norm(xte[i:i + 500])).argmax(1) == yte[i:i + 500]).sum().item()
            return hits / len(xte)

        top1 = test_top1(model)
        extra = {"emaTestTop1": test_top1(ema)} if ema else {}
        print(json.dumps({"epoch": epoch + 1, "trainLoss": round(loss_sum / max(seen, 1), 4),
                          "trainTop1": round(correct / max(seen, 1), 4), "testTop1": top1, **extra,
                          "minutes": round((time.time() - start) / 60, 2),
                          "recipe": {k: v for k, v in vars(a).items() if k not in ("data", "threads")}}),
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
