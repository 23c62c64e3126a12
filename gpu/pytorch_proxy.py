"""PyTorch eager baseline of sieve's GPU proxy: the same ResNet-20, recipe and
scores on the same GPU, for `gpu/run.sh` (`make gpu-bench`).

Training follows `sieve train --proxy resnet20 --epochs 10` (pipeline/src/train.rs):
batch 128, SGD with Nesterov momentum 0.9 and weight decay 5e-4, a one-cycle
linear learning rate (peak 0.2, 20% warm-up), random crop with 4 pixels of
black padding and horizontal flips, and each step's loss, correct count and
logits read back to the host as sieve's training-dynamics record needs. The
images are decoded once up front and kept on the GPU as u8: the best case for
PyTorch (sieve re-reads and re-decodes its Parquet input every epoch).
Scoring runs the trained model in eval mode under `torch.no_grad()` over the
50,000 training images in batches of 2,048 and computes the same scores as
sieve (softmax, entropy, margin, EL2N, loss), copied back to the host.

Prints one JSON object: train_seconds, test_accuracy, score_images_per_s,
score_bf16_images_per_s (autocast), decode_seconds.
"""

import argparse
import io
import json
import os
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from PIL import Image

# The network of benches/pytorch_resnet.py: beside this file in the directory
# `make gpu-bench` prepares, in ../benches in the repository.
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "benches")]
from pytorch_resnet import CROP_PADDING, MEAN, SGD, STD, ResNet  # noqa: E402

BATCH = 128
PEAK_LR = 0.2
WARMUP = 0.2
SCORE_BATCH = 2048


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def load(path, limit):
    """u8 images [n, 32, 32, 3] and int64 labels of a CIFAR-10 Parquet file."""
    table = pq.read_table(path, columns=["img", "label"]).slice(0, limit).to_pydict()
    images = np.stack([np.asarray(Image.open(io.BytesIO(v["bytes"])).convert("RGB")) for v in table["img"]])
    return torch.from_numpy(images), torch.tensor(table["label"])


def normalise(images):
    """u8 NHWC on the GPU -> normalised f32 NCHW."""
    mean = torch.tensor(MEAN, device=images.device) * 255
    scale = 1.0 / (255.0 * torch.tensor(STD, device=images.device))
    return ((images.float() - mean) * scale).permute(0, 3, 1, 2).contiguous()


def augment(images, gen):
    """He et al.'s random crop (black padding) and flip, for a u8 batch on the GPU."""
    n, s, p = images.shape[0], images.shape[1], CROP_PADDING
    padded = F.pad(images, (0, 0, p, p, p, p))
    dev = images.device
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=gen, device=dev)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=gen, device=dev)
    flip = torch.rand((n, 1), generator=gen, device=dev) < 0.5
    ar = torch.arange(s, device=dev)
    rows = ar + dy
    cols = torch.where(flip, s - 1 - ar, ar) + dx
    return padded[torch.arange(n, device=dev)[:, None, None], rows[:, :, None], cols[:, None, :]]


def one_cycle(step, total):
    t = step / total
    return PEAK_LR * t / WARMUP if t < WARMUP else PEAK_LR * max(0.0, 1.0 - t) / (1.0 - WARMUP)


def train(images, labels, epochs, dev):
    torch.manual_seed(0)
    gen = torch.Generator(device=dev).manual_seed(0)
    model = ResNet(20).to(dev)
    opt = torch.optim.SGD(model.parameters(), **SGD)
    n = images.shape[0]
    steps = epochs * ((n + BATCH - 1) // BATCH)
    step = 0
    sync(dev)
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen, device=dev)
        for start in range(0, n, BATCH):
            idx = order[start : start + BATCH]
            x, y = normalise(augment(images[idx], gen)), labels[idx]
            for group in opt.param_groups:
                group["lr"] = one_cycle(step, steps)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            # sieve's step returns the loss, the correct count and the logits.
            loss.item(), (logits.argmax(1) == y).sum().item(), logits.detach().cpu()
            step += 1
    sync(dev)
    return model, time.perf_counter() - started


@torch.no_grad()
def accuracy(model, images, labels):
    model.eval()
    correct = 0
    for start in range(0, images.shape[0], SCORE_BATCH):
        logits = model(normalise(images[start : start + SCORE_BATCH]))
        correct += (logits.argmax(1) == labels[start : start + SCORE_BATCH]).sum().item()
    return correct / images.shape[0]


@torch.no_grad()
def score_rate(model, images_host, labels_host, dev, dtype):
    """Images/s of scoring from host u8 images to host scores, as sieve does it."""
    model.eval()
    sync(dev)
    started = time.perf_counter()
    for start in range(0, images_host.shape[0], SCORE_BATCH):
        x = images_host[start : start + SCORE_BATCH].to(dev, non_blocking=True)
        y = labels_host[start : start + SCORE_BATCH].to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(normalise(x)).float()
        p = logits.softmax(1)
        entropy = -(p * p.clamp_min(1e-12).log()).sum(1)
        top2 = p.topk(2, 1).values
        el2n = (p - F.one_hot(y, p.shape[1])).norm(dim=1)
        loss = F.cross_entropy(logits, y, reduction="none")
        torch.stack([entropy, 1 - top2[:, 0], top2[:, 0] - top2[:, 1], el2n, loss], 1).cpu()
    sync(dev)
    return images_host.shape[0] / (time.perf_counter() - started)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory with train.parquet and test.parquet")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test")
    ap.add_argument("--limit", type=int, default=None, help="rows of each split (smoke tests)")
    args = ap.parse_args()
    dev = torch.device(args.device)
    torch.backends.cudnn.benchmark = True
    started = time.perf_counter()
    train_x, train_y = load(os.path.join(args.data, "train.parquet"), args.limit)
    test_x, test_y = load(os.path.join(args.data, "test.parquet"), args.limit)
    decode_s = time.perf_counter() - started
    model, train_s = train(train_x.to(dev), train_y.to(dev), args.epochs, dev)
    acc = accuracy(model, test_x.to(dev), test_y.to(dev))
    pinned_x, pinned_y = (train_x.pin_memory(), train_y.pin_memory()) if dev.type == "cuda" else (train_x, train_y)
    score_rate(model, pinned_x, pinned_y, dev, torch.float32)  # warm-up (cuDNN autotuning)
    f32 = score_rate(model, pinned_x, pinned_y, dev, torch.float32)
    bf16 = score_rate(model, pinned_x, pinned_y, dev, torch.bfloat16)
    print(json.dumps(dict(torch=torch.__version__, gpu=torch.cuda.get_device_name() if dev.type == "cuda" else "cpu", train_seconds=train_s,
                          test_accuracy=acc, score_images_per_s=f32, score_bf16_images_per_s=bf16,
                          decode_seconds=decode_s)))


if __name__ == "__main__":
    main()
