"""The CAC protocol on MNIST-style data (Fashion-MNIST, MNIST) trained in plain PyTorch, as a user
would write it: the PyTorch peer of `cac_train` for the end-to-end comparison (issue 23).

  python3 bench/torch_train.py --data-dir /usr/share/datasets/fashion-mnist [--trial 0] [--epochs 35,35]
      [--lr 0.01,0.001] [--workers 2] [--device cuda|cpu] [--method cac|ce] [--transforms auto|torchvision|torch]
      [--train-limit N] [--compile]

What it does, per the protocol (docs/reproduce.md): the trial's six known classes, 20% of their
training images held out for validation (seeded), classifier32 (bench/torch_step.py's), SGD momentum
0.9 and weight decay 5e-6 at the staged learning rates, batch 128, training images resized 28 -> 32,
RandomResizedCrop(32, scale=(0.7, 1), ratio=(3/4, 4/3)), ToTensor, Normalize with the training
images' mean and std; a DataLoader with `--workers` processes (2: as the CAC authors' release), shuffled;
validation every epoch. cudnn.benchmark on, TF32 PyTorch's default. The transforms are torchvision's
on PIL images where torchvision imports (--transforms auto), else the same steps written with torch
ops; the output says which ran. Not replicated: stage 2's reload of the best checkpoint and the
best-checkpoint choice (the last epoch's weights are evaluated): this is a timing peer.

Prints one line per epoch (train and validation seconds, images/s, loss, validation accuracy) and at
the end the known test accuracy and AUROC (CAC: min over classes of d (1 - softmin d), d the
distances to the class means of the correctly classified training logits; CE: 1 - max softmax), and
a JSON line (`result: {...}`) for scripts.
"""
import argparse
import gzip
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_step import Classifier32, cac_loss  # noqa: E402

SPLITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "configs", "splits.json")


def read_idx(path):
    """An IDX file (gzip or raw) as a uint8 tensor: images N x 28 x 28, labels N."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return torch.frombuffer(bytearray(data[4 + 4 * dims:]), dtype=torch.uint8).reshape(shape)


def load_part(data_dir, part):
    for suffix in (".gz", ""):
        img = os.path.join(data_dir, f"{part}-images-idx3-ubyte{suffix}")
        if os.path.exists(img):
            return read_idx(img), read_idx(os.path.join(data_dir, f"{part}-labels-idx1-ubyte{suffix}")).long()
    sys.exit(f"torch_train: no {part}-images-idx3-ubyte[.gz] in {data_dir}")


def resized_crop_box(h, w, scale_min):
    """torchvision's RandomResizedCrop.get_params: area in [scale_min, 1], log-uniform ratio in
    [3/4, 4/3], drawn from torch's generator (seeded per DataLoader worker)."""
    area = h * w
    for _ in range(10):
        target = area * torch.empty(1).uniform_(scale_min, 1.0).item()
        ratio = math.exp(torch.empty(1).uniform_(math.log(3 / 4), math.log(4 / 3)).item())
        cw, ch = int(round(math.sqrt(target * ratio))), int(round(math.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            return int(torch.randint(0, h - ch + 1, (1,))), int(torch.randint(0, w - cw + 1, (1,))), ch, cw
    return 0, 0, h, w


class MnistStyle(torch.utils.data.Dataset):
    """Known-class images with the protocol's training or evaluation transform."""

    def __init__(self, images, labels, mean, std, train, backend, crop_scale_min=0.7, size=32):
        self.images, self.labels, self.mean, self.std = images, labels, mean, std
        self.train, self.backend, self.scale, self.size = train, backend, crop_scale_min, size
        if backend == "torchvision":
            import torchvision.transforms as T
            steps = [T.Resize(size)]
            if train:
                steps.append(T.RandomResizedCrop(size, scale=(crop_scale_min, 1.0)))
            self.tv = T.Compose(steps + [T.ToTensor(), T.Normalize([mean], [std])])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        if self.backend == "torchvision":
            from PIL import Image
            return self.tv(Image.fromarray(self.images[i].numpy(), mode="L")), self.labels[i]
        x = self.images[i][None, None].float() / 255.0
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if self.train:  # (both resizes enlarge: torchvision's antialiasing would not change them)
            top, left, h, w = resized_crop_box(self.size, self.size, self.scale)
            x = F.interpolate(x[:, :, top:top + h, left:left + w], size=(self.size, self.size), mode="bilinear",
                              align_corners=False)
        return (x[0] - self.mean) / self.std, self.labels[i]


def parse_list(text, kind):
    return [kind(v) for v in text.split(",")]


def make_split(args):
    trials = json.load(open(SPLITS))["MNIST"]  # Fashion-MNIST uses the MNIST trials
    known = trials[args.trial]["known"]
    xi, yi = load_part(args.data_dir, "train")
    xt, yt = load_part(args.data_dir, "t10k")
    remap = torch.full((10,), -1, dtype=torch.long)
    remap[torch.tensor(known)] = torch.arange(len(known))
    keep = remap[yi] >= 0
    xi, yi = xi[keep], remap[yi[keep]]
    g = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(yi), generator=g)
    if args.train_limit:
        order = order[:args.train_limit]
    n_val = int(round(0.2 * len(order)))
    val, train = order[:n_val], order[n_val:]
    known_test = remap[yt] >= 0
    return (xi[train], yi[train]), (xi[val], yi[val]), (xt[known_test], remap[yt[known_test]]), xt[~known_test], len(known)


def loader(ds, args, shuffle):
    return torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=shuffle, num_workers=args.workers,
                                       pin_memory=args.device == "cuda", persistent_workers=args.workers > 0)


def outputs(net, dl, dev):
    net.eval()
    zs, ds = [], []
    with torch.no_grad():
        for x, _ in dl:
            z, d = net(x.to(dev, non_blocking=True))
            zs.append(z.float().cpu())
            ds.append(d.float().cpu())
    return torch.cat(zs), torch.cat(ds)


def auroc(known, unknown):
    """P(an unknown scores above a known) + ties / 2, by ranks."""
    s = torch.cat([known, unknown]).double()
    ranks = torch.empty_like(s)
    order = torch.argsort(s)
    sorted_s = s[order]
    r = torch.arange(1, len(s) + 1, dtype=torch.double)
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        r[i:j + 1] = (i + j + 2) / 2
        i = j + 1
    ranks[order] = r
    n_k, n_u = len(known), len(unknown)
    return float((ranks[n_k:].sum() - n_u * (n_u + 1) / 2) / (n_k * n_u))


def scores(z, anchors, method):
    if method == "ce":
        p = F.softmax(z, dim=1)
        return 1 - p.max(dim=1).values, p.argmax(dim=1)
    d = torch.cdist(z, anchors)
    gamma = d * (1 - F.softmin(d, dim=1))
    return gamma.min(dim=1).values, gamma.argmin(dim=1)


def evaluate(net, args, dev, train_eval, test_known, test_unknown_dl, K):
    z_tr, _ = outputs(net, train_eval, dev)
    y_tr = train_eval.dataset.labels
    anchors = torch.stack([z_tr[(z_tr.argmax(1) == y_tr) & (y_tr == k)].mean(0) if
                           ((z_tr.argmax(1) == y_tr) & (y_tr == k)).any() else 10 * torch.eye(K)[k] for k in range(K)])
    z_k, _ = outputs(net, test_known, dev)
    z_u, _ = outputs(net, test_unknown_dl, dev)
    s_k, pred = scores(z_k, anchors, args.method)
    s_u, _ = scores(z_u, anchors, args.method)
    return float((pred == test_known.dataset.labels).double().mean()), auroc(s_k, s_u)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--trial", type=int, default=0, choices=range(5))
    p.add_argument("--epochs", default="35,35")
    p.add_argument("--lr", default="0.01,0.001")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--method", choices=["cac", "ce"], default="cac")
    p.add_argument("--transforms", choices=["auto", "torchvision", "torch"], default="auto")
    p.add_argument("--train-limit", type=int, default=0, help="known training images to use (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true", help="torch.compile the network (where this PyTorch has it)")
    args = p.parse_args()
    epochs, lrs = parse_list(args.epochs, int), parse_list(args.lr, float)
    if len(epochs) != len(lrs):
        sys.exit("torch_train: --epochs and --lr need the same number of stages")
    try:
        import torchvision  # noqa: F401
        have_tv = True
    except ImportError:
        have_tv = False
    if args.transforms == "torchvision" and not have_tv:
        sys.exit("torch_train: --transforms torchvision, but torchvision does not import here (Debian: "
                 "python3-torchvision); --transforms torch runs the same steps written with torch ops")
    backend = args.transforms if args.transforms != "auto" else "torchvision" if have_tv else "torch"
    torch.manual_seed(args.seed)
    if args.compile and not hasattr(torch, "compile"):
        sys.exit(f"torch_train: --compile needs PyTorch 2 (this is {torch.__version__})")
    torch.backends.cudnn.benchmark = True
    dev = torch.device(args.device)
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count())
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te), x_un, K = make_split(args)
    mean, std = float(x_tr.float().mean() / 255), float(x_tr.float().std() / 255)
    ds = lambda x, y, train: MnistStyle(x, y, mean, std, train, backend)  # noqa: E731
    train_dl = loader(ds(x_tr, y_tr, True), args, True)
    val_dl = loader(ds(x_va, y_va, False), args, False)
    net = Classifier32(1, K).to(dev)
    step_net = torch.compile(net) if args.compile else net
    opt = torch.optim.SGD(net.parameters(), lr=lrs[0], momentum=0.9, weight_decay=5e-6)
    print(f"torch_train: pytorch {torch.__version__}, {args.device}, transforms: {backend}, {args.workers} loader "
          f"workers, {len(y_tr)} train / {len(y_va)} val images, {K} known classes, method {args.method}"
          f"{', torch.compile' if args.compile else ''}", flush=True)
    history, total = [], 0.0
    for stage, (n, lr) in enumerate(zip(epochs, lrs)):
        for group in opt.param_groups:
            group["lr"] = lr
        for _ in range(n):
            t0 = time.perf_counter()
            net.train()
            loss_sum, steps = torch.zeros((), device=dev), 0
            for x, y in train_dl:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                z, d = step_net(x)
                loss = F.cross_entropy(z, y) if args.method == "ce" else cac_loss(d, y)
                loss.backward()
                opt.step()
                loss_sum += loss.detach()
                steps += 1
            if dev.type == "cuda":
                torch.cuda.synchronize()
            t1 = time.perf_counter()
            z_va, _ = outputs(net, val_dl, dev)
            acc = float((z_va.argmax(1) == y_va).double().mean()) if args.method == "ce" else \
                float((torch.cdist(z_va, net.anchors.cpu()).argmin(1) == y_va).double().mean())
            t2 = time.perf_counter()
            total += t2 - t0
            history.append({"train_s": t1 - t0, "val_s": t2 - t1})
            print(f"epoch {len(history):3d} lr {lr:g}  train {t1 - t0:6.2f} s ({len(y_tr) / (t1 - t0):8.0f} img/s)  "
                  f"val {t2 - t1:5.2f} s  loss {float(loss_sum) / max(steps, 1):.4f}  val acc {100 * acc:5.1f}%", flush=True)
    evl = lambda x, y: loader(ds(x, y, False), args, False)  # noqa: E731
    acc, au = evaluate(net, args, dev, evl(x_tr, y_tr), evl(x_te, y_te), evl(x_un, torch.zeros(len(x_un), dtype=torch.long)), K)
    steady = [h["train_s"] + h["val_s"] for h in history[1:]] or [history[0]["train_s"] + history[0]["val_s"]]
    result = {"pytorch": torch.__version__, "device": args.device, "transforms": backend, "workers": args.workers,
              "compile": args.compile, "method": args.method, "epochs": len(history), "seconds": round(total, 3),
              "seconds_per_epoch_after_first": round(sum(steady) / len(steady), 3), "accuracy": round(acc, 4),
              "auroc": round(au, 4)}
    print(f"torch_train: {len(history)} epochs in {total:.1f} s ({result['seconds_per_epoch_after_first']:.2f} s per "
          f"epoch after the first); test accuracy {100 * acc:.2f}%, AUROC {au:.4f}")
    print("result: " + json.dumps(result))


if __name__ == "__main__":
    main()
