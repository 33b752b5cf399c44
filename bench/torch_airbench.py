"""airbench94 in PyTorch on the CPU: the reference run beside configs/cifar10_94.yaml.

The recipe of Keller Jordan's airbench94 (github.com/KellerJordan/cifar10-airbench,
``airbench94.py``: 94.01% mean test accuracy on the original CIFAR-10 in 9.9 epochs),
rewritten for float32 on the CPU and for the CIFAR-10 files nntrain reads (``--data``:
the official python-version folder or archive; ``../shared/data`` is a JPEG re-encode
of CIFAR-10, so its accuracy is the fair target for nntrain on the same files). The
files are read by nntrain's own safe reader (nntrain.data.cifar: no pickle code is run,
only numpy is needed), so both frameworks see the same pixels. PyTorch lives in its own
environment; nntrain never imports it::

    python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
    /tmp/torchenv/bin/python bench/torch_airbench.py --data ../shared/data --threads 2

writes ``results/torch_airbench94.json`` (``--out``; give another path for trial runs).
``--epochs`` (default 9.9; the schedules stretch to the run), ``--seed``, ``--threads``,
``--widths 32,128,128`` (configs/cifar10_fast.yaml's half width), ``--no-lookahead-buffers``
(an ablation: lookahead as nntrain does it, below).

The recipe, step by step (airbench's constants; the nntrain config translates each):

- Pixels /255, normalised by airbench's fixed CIFAR-10 channel means and stds.
- Network: a 2x2 conv 3 -> 24 with bias (the whitening stem), GELU, then three blocks
  [conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU] of widths 64/256/256
  (convs without bias), max-pool 3 (3x3 -> 1x1), a bias-free linear 256 -> 10, times 1/9.
  BN: eps 1e-12, PyTorch momentum 0.4 (airbench's "0.6" is the weight of the old
  statistics), scale fixed at 1 (not trained), bias trained.
- Init: each 3x3 conv is PyTorch's default (uniform, bound 1/sqrt(fan_in)) with its first
  C_in filters replaced by the identity (dirac): a partial identity. The stem's weight is
  computed from the 31x31 2x2 patches of the first 5000 normalised training images: with
  S = (1/n) sum p p^T (not centred) = U diag(l) U^T, rows u_j / sqrt(l_j + 5e-4) by
  decreasing l_j, and their negatives (24 filters); it is never trained. Its bias starts
  at 0 and is trained during the first 3 epochs only, then frozen (no update, no decay).
- Loss: cross-entropy with label smoothing 0.2 (targets 0.8 onehot + 0.02), SUMMED over
  the batch.
- Nesterov SGD, PyTorch's form (v <- mu v + g; w <- w - lr (g + mu v)), mu = 0.85, batch
  1024, 48 steps per epoch (the last 848 images of each shuffled epoch are dropped).
  airbench's "lr 11.5 and weight decay 0.0153 per 1024 examples" become, with
  s = 1024 (1 + 1/(1 - mu)) (the step length of constant gradients under Nesterov):
  lr = 11.5 / s = 0.0014648 and decay coefficient wd = 0.0153 * 1024 / s = 0.0019957,
  given to PyTorch as weight_decay wd / lr (so each step shrinks w by lr_t/lr * wd * w);
  BN biases take lr x 64 with weight_decay wd / (64 lr) (the same shrink per step).
- Learning rate x a triangle over the T = ceil(48 x epochs) steps: 0.2 at step 0, 1 at
  step int(0.23 T), 0.07 at step T (linear between; step i uses the value at i).
- Lookahead: from epoch 3, at every global step number divisible by 5, the first one
  copies the weights into the slow set; the later ones set slow <- slow + (1 - rho)(w -
  slow), w <- slow, with rho = 0.95^5 (t/T)^3 (t = steps done). At each epoch end w <-
  slow. airbench averages every float entry of the state dict, so the BN running
  statistics too (``--no-lookahead-buffers``: the trainable parameters only, as nntrain).
- Augmentation: each training image gets one coin for the run; it is mirrored in even
  epochs if its coin is set and in odd epochs if not (alternating flips); each epoch
  every image is shifted by (dy, dx) uniform in [-2, 2]^2, reflect padding.
- Test: the plain accuracy, and airbench's TTA: the mean of the logits of the image and
  its mirror (weight 1/2 together), and of the 1-pixel shifts up-left and down-right of
  the reflect-padded image, each with its mirror (1/4 per pair). The mean of the six
  softmaxes with the same weights (what nntrain's ``eval.tta: airbench`` averages) is
  reported beside it.

Not taken from airbench: half precision and channels-last (this is float32 on the CPU),
its warm-up run and its 25 repetitions (one run per seed here), its per-epoch test
evaluation (not needed for the result; it costs about a tenth of the run on a CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if importlib.util.find_spec("nntrain") is None:  # not installed in torch's venv: this checkout's
    sys.path.insert(0, str(REPO))
from nntrain.data.cifar import find_source, load_cifar  # noqa: E402
from nntrain.machine import machine_info  # noqa: E402

MEAN = (0.4914, 0.4822, 0.4465)  # airbench's CIFAR-10 statistics of x / 255
STD = (0.2470, 0.2435, 0.2616)
WIDTHS = (64, 256, 256)
STEM_WIDTH = 24  # 2 x 3 x 2 x 2: both signs of every whitened axis
BATCH = 1024
LR_PER_1024 = 11.5
DECAY_PER_1024 = 0.0153
MOMENTUM = 0.85
BIAS_LR_SCALE = 64.0
LABEL_SMOOTHING = 0.2
WHITEN_EPS = 5e-4
WHITEN_SAMPLES = 5000
WHITEN_BIAS_EPOCHS = 3
BN_MOMENTUM = 0.4  # PyTorch's convention (weight of the new batch)
LOOKAHEAD = {"start_epoch": 3, "every": 5, "decay": 0.95, "power": 3.0}
TRIANGLE = (0.2, 0.23, 0.07)  # start factor, peak position, end factor
TRANSLATE = 2
HEAD_SCALE = 1 / 9


# ----- data -------------------------------------------------------------------------------
def load(root: Path):
    """(train x, train y, test x, test y): uint8 (N, 3, 32, 32) images, int64 labels."""
    source = find_source(root, "cifar10") or find_source(root / "cifar10", "cifar10")
    if source is None:
        sys.exit(f"no CIFAR-10 python-version folder or archive at or in {root}")
    xtr, ytr, xte, yte, _ = load_cifar(source, "cifar10")
    return (torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte))


def normalise(x_uint8: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x_uint8.float() / 255 - mean) / std


def shifted_windows(padded: torch.Tensor, offsets: torch.Tensor, size: int) -> torch.Tensor:
    """The (size x size) window of each padded image at its own (top, left) offset."""
    span = torch.arange(size)
    rows = (offsets[:, :1] + span)[:, :, None]  # (B, size, 1)
    cols = (offsets[:, 1:] + span)[:, None, :]  # (B, 1, size)
    batch = torch.arange(len(padded))[:, None, None]
    return padded[batch, :, rows, cols].permute(0, 3, 1, 2).contiguous()  # (B, size, size, C) -> NCHW


class TrainBatches:
    """airbench's training stream: the epoch's order, its alternating flips and 2-px shifts."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator):
        self.padded = F.pad(normalise(images), (TRANSLATE,) * 4, mode="reflect")  # float32, 36 x 36
        self.labels = labels
        self.gen = gen
        self.coins = torch.rand(len(images), generator=gen) < 0.5  # mirrored in even epochs
        self.per_epoch = len(images) // BATCH  # the last partial batch is dropped

    def epoch(self, e: int):
        order = torch.randperm(len(self.labels), generator=self.gen)
        offsets = torch.randint(0, 2 * TRANSLATE + 1, (len(self.labels), 2), generator=self.gen)
        mirror = self.coins ^ bool(e % 2)
        for b in range(self.per_epoch):
            idx = order[b * BATCH:(b + 1) * BATCH]
            x = shifted_windows(self.padded[idx], offsets[idx], 32)
            x = torch.where(mirror[idx].view(-1, 1, 1, 1), x.flip(-1), x)
            yield x, self.labels[idx]


# ----- the network ------------------------------------------------------------------------
def conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)  # PyTorch's default init ...
    with torch.no_grad():
        nn.init.dirac_(conv.weight[:c_in])  # ... with an identity in its first c_in filters
    return conv


def batchnorm(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c, eps=1e-12, momentum=BN_MOMENTUM)
    bn.weight.requires_grad_(False)  # scale fixed at 1
    return bn


def block(c_in: int, c_out: int) -> list:
    return [conv3x3(c_in, c_out), nn.MaxPool2d(2), batchnorm(c_out), nn.GELU(),
            conv3x3(c_out, c_out), batchnorm(c_out), nn.GELU()]


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


def make_net(widths=WIDTHS) -> nn.Sequential:
    stem = nn.Conv2d(3, STEM_WIDTH, 2, bias=True)
    nn.init.zeros_(stem.bias)
    stem.weight.requires_grad_(False)
    w1, w2, w3 = widths
    return nn.Sequential(stem, nn.GELU(), *block(STEM_WIDTH, w1), *block(w1, w2), *block(w2, w3),
                         nn.MaxPool2d(3), nn.Flatten(), nn.Linear(w3, 10, bias=False), Scale(HEAD_SCALE))


def whiten_stem(stem: nn.Conv2d, images: torch.Tensor) -> None:
    """The stem's rows: +-u_j / sqrt(l_j + eps) from the 2x2 patches' second-moment matrix."""
    k = stem.kernel_size[0]
    patches = images.unfold(2, k, 1).unfold(3, k, 1)  # (N, C, 31, 31, k, k)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 3 * k * k).double()
    moment = patches.T @ patches / len(patches)
    values, vectors = torch.linalg.eigh(moment)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    rows = (vectors.T / torch.sqrt(values.clamp(min=0) + WHITEN_EPS)[:, None]).float()
    with torch.no_grad():
        stem.weight.copy_(torch.cat([rows, -rows]).view_as(stem.weight))


# ----- optimisation ------------------------------------------------------------------------
def make_optimizer(net: nn.Sequential) -> torch.optim.SGD:
    step_scale = 1024 * (1 + 1 / (1 - MOMENTUM))
    lr = LR_PER_1024 / step_scale
    wd = DECAY_PER_1024 * BATCH / step_scale
    bn_biases = [m.bias for m in net if isinstance(m, nn.BatchNorm2d)]
    others = [p for p in net.parameters() if p.requires_grad and all(p is not b for b in bn_biases)]
    groups = [{"params": bn_biases, "lr": lr * BIAS_LR_SCALE, "weight_decay": wd / (lr * BIAS_LR_SCALE)},
              {"params": others, "lr": lr, "weight_decay": wd / lr}]
    return torch.optim.SGD(groups, momentum=MOMENTUM, nesterov=True)


def triangle(step: int, total: int) -> float:
    start, peak, end = TRIANGLE
    return float(np.interp(step, [0, int(peak * total), total], [start, 1.0, end]))


class SlowWeights:
    """Lookahead's slow copy of ``tensors``: ``pull(rho)``: slow <- rho slow + (1 - rho) w, w <- slow."""

    def __init__(self, tensors):
        self.live = list(tensors)
        self.slow = [t.detach().clone() for t in self.live]

    @torch.no_grad()
    def pull(self, rho: float) -> None:
        for s, w in zip(self.slow, self.live):
            s.lerp_(w, 1 - rho)
            w.copy_(s)


def averaged_tensors(net: nn.Module, buffers: bool) -> list:
    if buffers:  # airbench: every float entry of the state dict (BN running statistics included)
        return [t for t in net.state_dict().values() if t.is_floating_point()]
    return [p for p in net.parameters() if p.requires_grad]


# ----- evaluation --------------------------------------------------------------------------
@torch.no_grad()
def view_logits(net, x: torch.Tensor) -> list:
    """Logits of airbench's six TTA views: the image, the shifts up-left and down-right
    of its 1-px reflect padding, each followed by its mirror."""
    padded = F.pad(x, (1,) * 4, mode="reflect")
    out = []
    for view in (x, padded[:, :, :32, :32], padded[:, :, 2:, 2:]):
        out += [net(view), net(view.flip(-1))]
    return out


@torch.no_grad()
def evaluate(net, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> dict:
    net.eval()
    weights = (0.25, 0.25, 0.125, 0.125, 0.125, 0.125)
    hits = {"plain": 0, "tta_logits": 0, "tta_softmax": 0}
    for lo in range(0, len(images), batch):
        x, y = normalise(images[lo:lo + batch]), labels[lo:lo + batch]
        logits = view_logits(net, x)
        mean_logits = sum(w * z for w, z in zip(weights, logits))
        mean_proba = sum(w * z.softmax(1) for w, z in zip(weights, logits))
        for key, scores in (("plain", logits[0]), ("tta_logits", mean_logits), ("tta_softmax", mean_proba)):
            hits[key] += int((scores.argmax(1) == y).sum())
    return {key: value / len(images) for key, value in hits.items()}


# ----- the run -----------------------------------------------------------------------------
def train(args, xtr, ytr, log) -> tuple[nn.Sequential, list]:
    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)  # the default init of the convs and the head
    net = make_net(args.widths)
    whiten_stem(net[0], normalise(xtr[:WHITEN_SAMPLES]))
    batches = TrainBatches(xtr, ytr, gen)
    total = math.ceil(batches.per_epoch * args.epochs)
    optimizer = make_optimizer(net)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING, reduction="sum")
    slow, step, epochs_log, t0 = None, 0, [], time.perf_counter()
    for epoch in range(math.ceil(total / batches.per_epoch)):
        net[0].bias.requires_grad_(epoch < WHITEN_BIAS_EPOCHS)  # then frozen: no grad, no update
        net.train()
        loss_sum = hits = seen = 0
        for x, y in batches.epoch(epoch):
            factor = triangle(step, total)
            for group, base in zip(optimizer.param_groups, base_lrs):
                group["lr"] = base * factor
            logits = net(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            loss_sum += loss.item()
            hits += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if epoch >= LOOKAHEAD["start_epoch"] and step % LOOKAHEAD["every"] == 0:
                if slow is None:
                    slow = SlowWeights(averaged_tensors(net, args.lookahead_buffers))
                else:
                    slow.pull(LOOKAHEAD["decay"] ** LOOKAHEAD["every"] * (step / total) ** LOOKAHEAD["power"])
            if step >= total:
                break
        if slow is not None:
            slow.pull(1.0)  # end the epoch on the slow weights
        row = {"epoch": epoch + 1, "steps": step, "train_loss": loss_sum / seen, "train_accuracy": hits / seen,
               "seconds": time.perf_counter() - t0}
        epochs_log.append(row)
        log(f"epoch {epoch + 1}  steps {step}/{total}  train_loss {row['train_loss']:.4f}  "
            f"train_acc {row['train_accuracy']:.4f}  {row['seconds']:.1f}s")
    return net, epochs_log


def widths_option(text: str) -> tuple:
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError:
        widths = ()
    if len(widths) != 3 or min(widths) < STEM_WIDTH:
        raise argparse.ArgumentTypeError(f"expected three widths >= {STEM_WIDTH} such as 64,256,256, received {text!r}")
    if not widths[0] <= widths[1] <= widths[2]:  # each conv's dirac needs c_out >= c_in
        raise argparse.ArgumentTypeError(f"the widths must not decrease (identity init), received {text!r}")
    return widths


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path,
                    default=Path(os.environ.get("NNTRAIN_DATA", REPO.parent / "shared" / "data")),
                    help="CIFAR-10 python-version folder or archive, or a folder holding one "
                         "(default: $NNTRAIN_DATA, else ../shared/data)")
    ap.add_argument("--epochs", type=float, default=9.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", type=widths_option, default=WIDTHS,
                    help="the three blocks' widths (default 64,256,256; cifar10_fast's half width: 32,128,128)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--out", type=Path, default=REPO / "results" / "torch_airbench94.json")
    ap.add_argument("--no-lookahead-buffers", dest="lookahead_buffers", action="store_false",
                    help="lookahead averages the trainable parameters only, not the BN running statistics")
    args = ap.parse_args(argv)
    if not args.epochs > 0:
        ap.error(f"--epochs must be > 0, received {args.epochs}")
    if args.threads:
        torch.set_num_threads(args.threads)
    start, load_start = time.perf_counter(), os.getloadavg()
    log = lambda text: print(text, flush=True)  # noqa: E731
    xtr, ytr, xte, yte = load(args.data)
    log(f"data {args.data}: {len(ytr)} train, {len(yte)} test images ({time.perf_counter() - start:.1f}s); "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    net, epochs_log = train(args, xtr, ytr, log)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    acc = evaluate(net, xte, yte)
    eval_s = time.perf_counter() - t1
    steps = epochs_log[-1]["steps"]
    summary = {
        "name": "torch_airbench94", "framework": "pytorch",
        "recipe": "airbench94 (KellerJordan/cifar10-airbench, airbench94.py), float32 on the CPU",
        "accuracy": acc["tta_logits"], "accuracy_no_tta": acc["plain"], "accuracy_tta_mean_softmax": acc["tta_softmax"],
        "tta": "airbench (mean of the 6 views' logits, weights 1/4, 1/4, 1/8 x 4)",
        "widths": list(args.widths), "epochs": args.epochs, "iterations": steps, "batch_size": BATCH, "seed": args.seed,
        "lookahead_buffers": args.lookahead_buffers,
        "train_time_s": train_s, "eval_time_s": eval_s, "wall_time_s": time.perf_counter() - start,
        "train_images_per_s": steps * BATCH / train_s, "per_epoch": epochs_log,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "machine": {**machine_info(), "loadavg_start": list(load_start), "loadavg_end": list(os.getloadavg())},
        "data": str(args.data), "command": shlex.join([Path(sys.executable).name, *sys.argv]),
    }
    log(f"test accuracy {acc['plain']:.4f}, with airbench's TTA {acc['tta_logits']:.4f} (mean of softmaxes "
        f"{acc['tta_softmax']:.4f}); training {train_s:.1f}s, evaluation {eval_s:.1f}s, "
        f"whole command {summary['wall_time_s']:.1f}s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"wrote {args.out}")
    return summary


if __name__ == "__main__":
    main()
