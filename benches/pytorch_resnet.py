"""PyTorch CPU baseline for sieve's proxy throughput (`proxy/examples/bench_conv.rs`).

Same network, batches, synthetic data and timing as bench_conv, in PyTorch on
the CPU, so `benches/compare.py` can put the two side by side in one run. One
run measures one variant, for ResNet-8 and ResNet-20; compare.py runs every
variant and keeps the fastest per cell, so the baseline is the fastest PyTorch
a performance-minded user would run:

  eager          NCHW, training as written; inference with batch norm folded
                 into the convolutions (torch.fx.experimental.optimization.fuse),
                 as sieve folds it
  eager-cl       the same with channels_last activations and weights
                 (`--channels-last`: oneDNN's NHWC kernels)
  compile        torch.compile (inductor) of the training step's model and, for
  compile-cl     inference, of the folded model with inductor's freezing on
                 (constant weights: folds and prepacks them for oneDNN);
                 `--compile [--channels-last]`

The network is the CIFAR ResNet of He et al. 2016, "Deep Residual Learning for
Image Recognition" (arXiv:1512.03385), section 4.2, as sieve builds it
(`proxy/src/resnet.rs`): 3x3 stem, three stages of n basic blocks of widths
w, 2w, 4w (stride 2 at the start of stages 2 and 3), 1x1 conv + BN shortcut where
the shape changes (option B), global average pool, linear head; depth 6n + 2.

What is timed, as in bench_conv:
  train  one full step on 128 images: u8 HWC batch -> random crop (4 px black
         padding) + flip -> normalise -> forward -> cross-entropy -> backward ->
         SGD (momentum 0.9, nesterov, weight decay 5e-4), then the loss and
         logits are read back, as sieve's `ImageTrainer::step` returns them.
         Batch norm uses batch statistics here, so it cannot be folded.
  infer  256 images: u8 HWC -> normalise -> forward, in eval mode under
         torch.no_grad(), batch norm folded.
Each figure is the fastest of 20 timed calls after one untimed warm-up (which,
compiled, is where inductor compiles: its seconds are reported as compile_s).

Usage:
  python3 benches/pytorch_resnet.py --threads 2 [--channels-last] [--compile]
prints one JSON object a line: {"torch": ...}, then {"model", "mode", "impl",
"threads", "batch", "images_per_s"[, "compile_s"]} for each model and mode.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.experimental.optimization import fuse

# =============================================================================
# Setup (the constants of bench_conv.rs)
# =============================================================================

TRAIN_BATCH = 128  # images per training step, the usual CIFAR batch
INFER_BATCH = 256  # images per inference call
REPEATS = 20  # timed calls per figure, fastest kept (bench_conv's REPEATS.1)
IMAGE_SIZE = 32
NUM_CLASSES = 10
CROP_PADDING = 4  # pixels of black padding each side before the random crop
MEAN = (0.4914, 0.4822, 0.4465)  # CIFAR-10 channel statistics, RGB
STD = (0.2470, 0.2435, 0.2616)
SGD = dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)

# =============================================================================
# Data: synthetic u8 images, augmented and normalised per call
# =============================================================================


def synthetic(n, gen):
    """Random u8 HWC images [n, 32, 32, 3] and labels, like bench_conv's."""
    images = torch.randint(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, NUM_CLASSES, (n,), generator=gen)
    return images, labels


def random_crop_flip(images, gen):
    """He et al.'s augmentation on a whole u8 batch: pad 4 black pixels each
    side, take a random 32x32 crop, mirror half the images. One gather for the
    batch; torchvision's per-image transforms in a DataLoader would be slower and
    would measure Python, not the network."""
    n, s = images.shape[0], IMAGE_SIZE
    p = CROP_PADDING
    padded = F.pad(images, (0, 0, p, p, p, p))  # [n, s + 2p, s + 2p, 3], zeros
    dy = torch.randint(0, 2 * p + 1, (n, 1), generator=gen)
    dx = torch.randint(0, 2 * p + 1, (n, 1), generator=gen)
    flip = torch.rand((n, 1), generator=gen) < 0.5
    ar = torch.arange(s)
    rows = ar + dy  # [n, s]
    cols = torch.where(flip, s - 1 - ar, ar) + dx  # [n, s]
    return padded[torch.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def to_input(images, memory_format):
    """u8 HWC -> normalised f32 NCHW in `memory_format` ((v/255 - mean) / std)."""
    mean = torch.tensor(MEAN).mul_(255)
    scale = 1.0 / (255.0 * torch.tensor(STD))
    x = (images.float() - mean) * scale  # broadcasts over the trailing channel dim
    return x.permute(0, 3, 1, 2).contiguous(memory_format=memory_format)


# =============================================================================
# Network (one function or class per block of the paper, names as in sieve)
# =============================================================================


def conv_bn(c_in, c_out, ksize, stride):
    """A convolution without bias followed by batch norm."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, ksize, stride, padding=ksize // 2, bias=False),
        nn.BatchNorm2d(c_out),
    )


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers and a shortcut: identity, or 1x1 conv + BN where
    the shape changes (option B)."""

    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = conv_bn(c_in, c_out, 3, stride)
        self.conv2 = conv_bn(c_out, c_out, 3, 1)
        self.shortcut = conv_bn(c_in, c_out, 1, stride) if stride != 1 or c_in != c_out else nn.Identity()

    def forward(self, x):
        h = F.relu(self.conv1(x))
        return F.relu(self.conv2(h) + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet of depth 6n + 2 and width w (stages w, 2w, 4w)."""

    def __init__(self, depth, width=16, num_classes=NUM_CLASSES):
        super().__init__()
        assert depth >= 8 and (depth - 2) % 6 == 0, "depth must be 6n + 2"
        n = (depth - 2) // 6
        self.stem = conv_bn(3, width, 3, 1)
        blocks, c_in = [], width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.stages = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x):
        h = self.stages(F.relu(self.stem(x)))
        return self.head(h.mean((2, 3)))


# =============================================================================
# Timing
# =============================================================================


def best_of(repeats, f):
    """(fastest of `repeats` calls of `f`, seconds of the first, untimed call)."""
    t = time.perf_counter()
    f()
    first = time.perf_counter() - t
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t)
    return best, first


def fold_batch_norm(model, memory_format):
    """An inference copy of `model` (in eval mode) with every batch norm folded
    into the convolution before it, weights in `memory_format`."""
    return fuse(model).to(memory_format=memory_format)


def throughput(depth, memory_format, compile_):
    """{mode: (batch, images/s, seconds of the compiling first call or None)} of ResNet-`depth`."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = ResNet(depth).to(memory_format=memory_format)
    opt = torch.optim.SGD(model.parameters(), **SGD)
    net = torch.compile(model) if compile_ else model
    images, labels = synthetic(TRAIN_BATCH, gen)

    def train_step():
        x = to_input(random_crop_flip(images, gen), memory_format)
        logits = net(x)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        # sieve's step returns the loss, the correct count and the logits.
        loss.item(), (logits.argmax(1) == labels).sum().item(), logits.detach().numpy()

    model.train()
    train_s, train_first = best_of(REPEATS, train_step)

    model.eval()
    net = fold_batch_norm(model, memory_format)
    if compile_:
        from torch._inductor import config as inductor

        inductor.freezing = True  # inference graphs only: weights become constants
        net = torch.compile(net)
    images, _ = synthetic(INFER_BATCH, gen)

    def infer():
        with torch.no_grad():
            net(to_input(images, memory_format))

    infer_s, infer_first = best_of(REPEATS, infer)
    return {
        "train": (TRAIN_BATCH, TRAIN_BATCH / train_s, train_first if compile_ else None),
        "infer": (INFER_BATCH, INFER_BATCH / infer_s, infer_first if compile_ else None),
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--channels-last", action="store_true", help="NHWC activations and weights instead of NCHW")
    ap.add_argument("--compile", action="store_true", help="torch.compile (inductor) instead of eager")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    impl = ("compile" if args.compile else "eager") + ("-cl" if args.channels_last else "")
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for name, depth in (("ResNet-8", 8), ("ResNet-20", 20)):
        for mode, (batch, ips, compile_s) in throughput(depth, fmt, args.compile).items():
            row = dict(model=name, mode=mode, impl=impl, threads=args.threads, batch=batch, images_per_s=round(ips, 1))
            if compile_s is not None:
                row["compile_s"] = round(compile_s, 1)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
