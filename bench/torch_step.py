"""The same CAC training step in PyTorch, for comparison with `cac_bench step`.

Usage: python3 bench/torch_step.py [--arch classifier32|resnet18] [--batch 128] [--channels 3] [--iters 50]
           [--no-tf32] [--device cuda|cpu] [--amp bf16] [--channels-last] [--mode eager|graph|compile]
cudnn.benchmark is on (like cac's per-shape algorithm search); TF32 convolutions follow PyTorch's
default (on), matching cac_bench's default. --amp bf16 --channels-last is what a PyTorch user who
wants speed runs (autocast to bfloat16, NHWC activations and weights); --mode graph captures the
whole step (forward, loss, backward, SGD) in a CUDA graph and replays it, --mode compile runs
torch.compile's model (PyTorch 2). A mode this PyTorch or device cannot run is refused, saying why
(exit 2). The last line is `result: {json}` with the figures.
"""
import argparse
import contextlib
import json
import os
import sys
import time

import torch
import torch.nn as nn

# The residual block is the one the checkpoint converter's ResNet-18 uses (same layers, same forward).
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
from torch_interop import BasicBlock  # noqa: E402


class Classifier32(nn.Module):
    def __init__(self, channels=3, classes=6, dropout=0.2):
        super().__init__()
        spec = [(channels, 64, 1), (64, 64, 1), (64, 128, 2), (128, 128, 1), (128, 128, 1),
                (128, 128, 2), (128, 128, 1), (128, 128, 1), (128, 128, 2)]
        layers = []
        for i, (cin, cout, stride) in enumerate(spec):
            layers += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2)]
            if i % 3 == 2:
                layers.append(nn.Dropout2d(dropout))
        self.encoder = nn.Sequential(*layers, nn.Flatten())
        self.classify = nn.Linear(128 * 4 * 4, classes)
        self.register_buffer("anchors", torch.diag(torch.full((classes,), 10.0)))

    def forward(self, x):
        z = self.classify(self.encoder(x))
        d = torch.cdist(z, self.anchors)
        return z, d


class ResNet18(nn.Module):
    """CIFAR ResNet-18 (3x3 stem, no max-pool) with the same open-set head as cac's models/resnet18."""

    def __init__(self, channels=3, classes=10):
        super().__init__()
        layers = [nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
        cin = 64
        for i, w in enumerate([64, 128, 256, 512]):
            layers += [BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)]
            cin = w
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classify = nn.Linear(512, classes)
        self.register_buffer("anchors", torch.diag(torch.full((classes,), 10.0)))

    forward = Classifier32.forward


def cac_loss(d, y, lam=0.1):
    dy = d.gather(1, y[:, None]).squeeze(1)
    tuplet = dy + torch.logsumexp(-d, dim=1)
    return (tuplet + lam * dy).mean()


def refuse(why):
    print(f"torch_step: {why}", file=sys.stderr)
    sys.exit(2)


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--arch", choices=["classifier32", "resnet18"], default="classifier32")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--no-tf32", action="store_true")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--amp", choices=["none", "bf16"], default="none", help="autocast the forward and loss")
    p.add_argument("--channels-last", action="store_true", help="NHWC model and input (torch.channels_last)")
    p.add_argument("--mode", choices=["eager", "graph", "compile"], default="eager")
    a = p.parse_args()
    if a.mode == "graph" and a.device != "cuda":
        refuse("--mode graph records CUDA work: add --device cuda")
    if a.mode == "compile" and not hasattr(torch, "compile"):
        refuse(f"--mode compile needs torch.compile (PyTorch 2); this is PyTorch {torch.__version__}")
    if a.amp == "bf16" and a.device == "cuda" and not torch.cuda.is_bf16_supported():
        refuse("--amp bf16: this GPU has no bfloat16 support")
    return a


def build(a, dev):
    classes = 10 if a.arch == "resnet18" else 6  # cac_bench's defaults for each network
    net = (ResNet18(a.channels, classes) if a.arch == "resnet18" else Classifier32(a.channels, classes)).to(dev)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    x = torch.randn(a.batch, a.channels, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, classes, (a.batch,), device=dev)
    return net, x, y


def make_step(a, net, x, y):
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model = torch.compile(net) if a.mode == "compile" else net
    cast = (lambda: torch.autocast(device_type=a.device, dtype=torch.bfloat16)) if a.amp == "bf16" \
        else contextlib.nullcontext

    def step():
        opt.zero_grad(set_to_none=a.mode != "graph")  # a graph keeps its gradient buffers
        with cast():
            _, d = model(x)
            loss = cac_loss(d.float(), y)
        loss.backward()
        opt.step()
        return loss

    if a.mode != "graph":
        return step
    # PyTorch's recipe: warm up on a side stream, capture one step, replay it.
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = step()

    def replay():
        graph.replay()
        return static_loss
    return replay


def time_steps(a, step, dev):
    for _ in range(a.warmup):
        step()
    if dev.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(a.iters):
            loss = step()
        stop.record()
        torch.cuda.synchronize()
        return start.elapsed_time(stop) / a.iters, loss
    begin = time.perf_counter()
    for _ in range(a.iters):
        loss = step()
    return (time.perf_counter() - begin) * 1e3 / a.iters, loss


def main():
    a = parse_args()
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = not a.no_tf32
    dev = torch.device(a.device)
    if dev.type == "cpu":
        # Debian's build starts with one intra-op thread here; use every core, as cac_bench does.
        torch.set_num_threads(os.cpu_count())
    net, x, y = build(a, dev)
    ms, loss = time_steps(a, make_step(a, net, x, y), dev)
    precision = "bf16 autocast" if a.amp == "bf16" else ("tf32" if dev.type == "cuda" and not a.no_tf32 else "fp32") + " convs"
    layout = "channels-last" if a.channels_last else "NCHW"
    print(f"pytorch {torch.__version__} {a.arch} training step  batch={a.batch}  input=32x32x{a.channels}"
          f"  {a.device}{f' ({torch.get_num_threads()} threads)' if dev.type == 'cpu' else ''} {precision}, {layout}, {a.mode}"
          f"  {ms:.2f} ms/step  {1e3 * a.batch / ms:.1f} images/s"
          f"  (loss {loss.item():.4f}, {a.iters} timed steps after {a.warmup} warm-up)")
    print("result: " + json.dumps({"pytorch": torch.__version__, "arch": a.arch, "device": a.device, "batch": a.batch,
                                   "amp": a.amp, "channels_last": a.channels_last, "mode": a.mode,
                                   "tf32": dev.type == "cuda" and not a.no_tf32, "ms_per_step": round(ms, 4),
                                   "images_per_s": round(1e3 * a.batch / ms, 1), "loss": round(loss.item(), 6)}))


if __name__ == "__main__":
    main()
