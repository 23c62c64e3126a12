"""The whole CIFAR-10 pruning job of `sieve prune --keep 0.5 --balance class` as a
plain PyTorch CPU script, for benches/e2e_cifar10.py to time against sieve.

It trains the proxy with sieve's shipped recipe (proxy/src/recipe.rs, defaults
of schemas/datasets/cifar10.toml; e2e_cifar10.py checks them against the
proxy.json of the sieve run it compares with):
  ResNet-8, width 16 (benches/pytorch_resnet.py's network), convolutions
  initialised Kaiming-normal (std sqrt(2 / fan_in)), batch norm gamma 1 and
  beta 0, the head as nn.Linear; 4 epochs of batch 128 (the last, partial
  batch too when it has 2 rows or more); SGD with Nesterov momentum 0.9 and
  weight decay 5e-4 on every parameter; a one-cycle learning rate, linear
  warm-up over the first 20% of steps to 0.2, then linear decay to 0; random
  crop with 4 pixels of black padding and horizontal flip; CIFAR-10's channel
  normalisation. Eager PyTorch in channels_last, the faster eager layout for
  training in benches/compare.py (torch.compile is not used here).

Phases, each timed (the interpreter's start, imports and exit are outside them,
inside e2e_cifar10.py's whole-process clock):
  read      pyarrow reads the train and test files
  decode    Pillow decodes every image once, to u8 HWC, kept in memory
  train     as above; each epoch reshuffles all rows
  heldout   accuracy on the test file: eval mode, batch norm folded, no_grad
  score     EL2N, ||softmax(logits) - onehot(label)||_2, of every training row
            (no augmentation), as sieve's `el2n` column
  select    per class, the round(keep x rows) highest EL2N (ties: earlier row)
  write     the kept rows in input order, every input column plus `el2n`,
            one Parquet file under OUT/data/

Usage:
  python3 benches/pytorch_job.py --train TRAIN.parquet --test TEST.parquet --out DIR [--keep 0.5] [--threads N]
prints one JSON object: seconds per phase, heldout_accuracy, rows, kept, recipe.
"""

import argparse
import io
import json
import math
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from benchlib import cores
from pytorch_resnet import CROP_PADDING, INFER_BATCH, MEAN, STD, ResNet, fold_batch_norm, random_crop_flip, to_input

# =============================================================================
# Recipe: sieve's defaults (proxy/src/recipe.rs)
# =============================================================================

DEPTH, WIDTH = 8, 16
EPOCHS = 4
BATCH = 128
PEAK_LR = 0.2  # for batch 128
WARMUP = 0.2  # fraction of the steps
SGD = dict(momentum=0.9, nesterov=True, weight_decay=5e-4)
LAYOUT = torch.channels_last

RECIPE = dict(depth=DEPTH, width=WIDTH, epochs=EPOCHS, batch_size=BATCH, peak_lr=PEAK_LR, warmup=WARMUP, **SGD,
              crop_padding=CROP_PADDING, mean=list(MEAN), std=list(STD))


def one_cycle(step, total):
    """Linear warm-up to PEAK_LR over WARMUP of the steps, then linear decay to 0."""
    t = step / max(total, 1)
    return PEAK_LR * t / WARMUP if t < WARMUP else PEAK_LR * max(0.0, 1.0 - t) / (1.0 - WARMUP)


def he_init(model):
    """Kaiming-normal convolutions (fan_in, ReLU gain), as sieve initialises
    them; batch norm and the head keep PyTorch's defaults, which are sieve's."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
    return model


# =============================================================================
# Phases
# =============================================================================


def decode(table):
    """u8 images [n, 32, 32, 3] and int64 labels of an (img, label) table."""
    images = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB"))
                       for b in table.column("img").combine_chunks().field("bytes").to_pylist()])
    return torch.from_numpy(images), torch.tensor(table.column("label").to_pylist())


def train(images, labels, seed):
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = he_init(ResNet(DEPTH, WIDTH)).to(memory_format=LAYOUT)
    opt = torch.optim.SGD(model.parameters(), lr=PEAK_LR, **SGD)
    n = images.shape[0]
    total, step = EPOCHS * math.ceil(n / BATCH), 0
    model.train()
    for _ in range(EPOCHS):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, BATCH):
            idx = order[start:start + BATCH]
            if len(idx) < 2:  # batch norm needs two rows for a variance
                continue
            x, y = to_input(random_crop_flip(images[idx], gen), LAYOUT), labels[idx]
            for group in opt.param_groups:
                group["lr"] = one_cycle(step, total)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return model


@torch.no_grad()
def logits_of(net, images):
    return torch.cat([net(to_input(images[i:i + INFER_BATCH], LAYOUT)) for i in range(0, images.shape[0], INFER_BATCH)])


def select(labels, el2n, keep):
    """Row indices kept, in input order: per class the round(keep x n) highest
    EL2N (round half up, as sieve rounds), earlier rows first among equals."""
    kept = []
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        quota = math.floor(keep * len(rows) + 0.5)
        kept.append(rows[np.lexsort((rows, -el2n[rows]))[:quota]])
    return np.sort(np.concatenate(kept))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", required=True, help="training rows: Parquet with img (struct of bytes) and label")
    ap.add_argument("--test", required=True, help="held-out rows, same columns")
    ap.add_argument("--out", required=True, help="output directory (data/part-00000.parquet)")
    ap.add_argument("--keep", type=float, default=0.5, help="fraction of each class kept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=cores(), help="torch.set_num_threads")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    seconds = {}

    def phase(name, t):
        seconds[name] = time.perf_counter() - t
        return time.perf_counter()

    t = time.perf_counter()
    train_table = pq.read_table(args.train)
    test_table = pq.read_table(args.test, columns=["img", "label"])
    t = phase("read", t)
    images, labels = decode(train_table)
    test_images, test_labels = decode(test_table)
    t = phase("decode", t)
    model = train(images, labels, args.seed)
    t = phase("train", t)
    model.eval()
    net = fold_batch_norm(model, LAYOUT)
    accuracy = (logits_of(net, test_images).argmax(1) == test_labels).float().mean().item()
    t = phase("heldout", t)
    p = logits_of(net, images).softmax(1)
    el2n = (p - F.one_hot(labels, p.shape[1])).norm(dim=1).numpy()
    t = phase("score", t)
    kept = select(labels.numpy(), el2n, args.keep)
    t = phase("select", t)
    out = Path(args.out) / "data"
    out.mkdir(parents=True, exist_ok=True)
    table = train_table.take(kept).append_column("el2n", pa.array(el2n[kept], pa.float32()))
    pq.write_table(table, out / "part-00000.parquet")
    phase("write", t)
    print(json.dumps(dict(torch=torch.__version__, threads=torch.get_num_threads(), seconds=seconds,
                          heldout_accuracy=accuracy, rows=len(labels), kept=len(kept), recipe=RECIPE)))


if __name__ == "__main__":
    main()
