#!/usr/bin/env python3
"""Move CAC weights between this engine and PyTorch.

  python3 scripts/torch_interop.py to-torch RUN/best.safetensors model.pth [--plain]
  python3 scripts/torch_interop.py from-torch model.pth weights.safetensors

to-torch writes what the CAC authors' training script saves, {'net': state_dict}. For classifier32
that is the layout of their `openSetClassifier`: its encoder registers every conv and batch norm
twice, as `encoder.convN` / `encoder.bnN` and again inside `encoder.encoder1..3` (Sequential
indices 0, 1, 3, 4, 6, 7), so a strict load_state_dict needs both names; its anchors are float64.
The authors' code has no ResNet-18: its checkpoint keeps this engine's names, which are
torchvision's ResNet-18 names under `encoder.` (CIFAR stem: 3x3 conv1, no max-pool; the head is
`classify`), and loads into CifarResNet18 below. --plain writes this engine's names only, as a
bare state_dict.

from-torch reads such a file (or a bare state_dict, or {'state_dict': ...}; a 'module.' prefix
from DataParallel is dropped), checks that every alias holds the same values as its canonical
name, and writes this engine's safetensors (float32, num_batches_tracked int64). Train from it or
evaluate it with `cac_train --init FILE` (docs/reproduce.md). A checkpoint of the cross-entropy
baseline (a run with --method ce, or the authors' closedSetClassifier) has no anchors: to-torch
leaves them out, from-torch writes none, and cac_train --method ce --init accepts that.

Needs Python 3 and PyTorch (Debian: python3-torch; `scripts/install-deps.sh --with-torch`). The
safetensors container is read and written here with the standard library, so the `safetensors`
package is not needed.
"""
import argparse
import collections
import json
import os
import re
import struct
import sys

import torch
import torch.nn as nn

_DTYPES = {"F32": torch.float32, "F64": torch.float64, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
_NAMES = {v: k for k, v in _DTYPES.items()}


class InteropError(Exception):
    pass


def read_safetensors(path):
    """Returns ({name: tensor}, metadata) of a safetensors file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise InteropError(f"{path}: not a safetensors file ({len(blob)} bytes)")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise InteropError(f"{path}: header of {n} bytes runs past the end of the file ({len(blob)} bytes)")
    try:
        header = json.loads(blob[8:8 + n])
    except ValueError as e:
        raise InteropError(f"{path}: header is not JSON ({e})")
    if not isinstance(header, dict):
        raise InteropError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    data = blob[8 + n:]
    tensors = collections.OrderedDict()
    for name, info in header.items():
        try:
            dtype = _DTYPES.get(info.get("dtype"))
            shape = [int(s) for s in info["shape"]]
            start, end = (int(o) for o in info["data_offsets"])
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            raise InteropError(f"{path}: tensor {name} has a malformed entry ({e!r})")
        if dtype is None:
            raise InteropError(f"{path}: tensor {name} has unsupported dtype {info.get('dtype')}")
        if not 0 <= start <= end <= len(data):
            raise InteropError(f"{path}: tensor {name} lies outside the file")
        numel = 1
        for s in shape:
            numel *= s
        chunk = bytearray(data[start:end])
        if numel == 0:
            t = torch.empty(shape, dtype=dtype)
        else:
            t = torch.frombuffer(chunk, dtype=dtype)
            if t.numel() != numel:
                raise InteropError(f"{path}: tensor {name} holds {t.numel()} values for shape {shape}")
            t = t.reshape(shape)
        tensors[name] = t
    return tensors, meta


def write_safetensors(path, tensors, meta):
    """Writes {name: tensor} (little-endian, contiguous) and string metadata; temp file + rename."""
    header, chunks, offset = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().cpu().numpy().tobytes()
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header["__metadata__"] = {str(k): str(v) for k, v in meta.items()}
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for c in chunks:
            f.write(c)
    os.replace(tmp, path)


# The authors' classifier32 layout: block b (1..3) of the encoder is a Sequential of
# conv, bn, LeakyReLU three times, then Dropout2d; the convs sit at indices 0, 3, 6, the batch
# norms at 1, 4, 7.
def _aliases():
    out = {}
    for b in range(3):
        for j in range(3):
            layer = 3 * b + j + 1
            out[f"encoder.encoder{b + 1}.{3 * j}"] = f"encoder.conv{layer}"
            out[f"encoder.encoder{b + 1}.{3 * j + 1}"] = f"encoder.bn{layer}"
    return out


_ALIAS_RE = re.compile(r"^(encoder\.encoder[123]\.\d+)\.(.+)$")


def is_classifier32(names):
    return all(k in names for k in ("encoder.conv1.weight", "encoder.conv9.weight", "classify.weight"))


def _add_anchors(net, num_classes, anchors):
    # The open-set head's anchors (float64, as in the authors' openSetClassifier); none for a
    # closed-set (cross-entropy) classifier, like their closedSetClassifier.
    net.anchors = None
    if anchors:
        net.anchors = nn.Parameter(torch.zeros(num_classes, num_classes, dtype=torch.float64), requires_grad=False)


def _head(net, z):
    """(logits, distances to the anchors in float64), distances None without anchors."""
    if net.anchors is None:
        return z, None
    return z, torch.norm(z.double()[:, None, :] - net.anchors[None, :, :], 2, 2)


class AuthorsLayoutClassifier32(nn.Module):
    """classifier32 with the authors' parameter names (each conv and batch norm reachable under two
    names) and their head: float64 anchors, distances computed in float64 (anchors=False: their
    closedSetClassifier, the cross-entropy baseline)."""

    def __init__(self, num_classes, channels, image_size, dropout=0.0, anchors=True):
        super().__init__()
        self.encoder = nn.Module()
        enc = self.encoder
        enc.dropout = nn.Dropout2d(dropout)
        enc.relu = nn.LeakyReLU(0.2)
        widths = [64, 64, 128, 128, 128, 128, 128, 128, 128]
        for i, w in enumerate(widths):
            setattr(enc, f"bn{i + 1}", nn.BatchNorm2d(w))
        cin = channels
        for i, w in enumerate(widths):
            setattr(enc, f"conv{i + 1}", nn.Conv2d(cin, w, 3, 2 if i % 3 == 2 else 1, 1, bias=False))
            cin = w
        for b in range(3):
            parts = []
            for j in range(3):
                layer = 3 * b + j + 1
                parts += [getattr(enc, f"conv{layer}"), getattr(enc, f"bn{layer}"), enc.relu]
            setattr(enc, f"encoder{b + 1}", nn.Sequential(*parts, enc.dropout))
        side = image_size // 8
        self.classify = nn.Linear(128 * side * side, num_classes)
        _add_anchors(self, num_classes, anchors)

    def forward(self, x):
        e = self.encoder
        h = e.encoder3(e.encoder2(e.encoder1(x)))
        return _head(self, self.classify(h.reshape(len(x), -1)))


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        h = self.bn2(self.conv2(h))
        return torch.relu(h + (x if self.downsample is None else self.downsample(x)))


class CifarResNet18(nn.Module):
    """This engine's ResNet-18 (models/resnet18): torchvision's names under `encoder.`, a 3x3 stride-1
    stem without max-pool, global average pooling, `classify`, and the same float64 anchor head as
    the authors' classifier32."""

    def __init__(self, num_classes, channels, anchors=True):
        super().__init__()
        self.encoder = nn.Module()
        e = self.encoder
        e.conv1, e.bn1 = nn.Conv2d(channels, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64)
        cin = 64
        for i, w in enumerate([64, 128, 256, 512]):
            setattr(e, f"layer{i + 1}", nn.Sequential(BasicBlock(cin, w, 1 if i == 0 else 2), BasicBlock(w, w, 1)))
            cin = w
        self.classify = nn.Linear(512, num_classes)
        _add_anchors(self, num_classes, anchors)

    def forward(self, x):
        e = self.encoder
        h = torch.relu(e.bn1(e.conv1(x)))
        h = e.layer4(e.layer3(e.layer2(e.layer1(h))))
        return _head(self, self.classify(h.mean(dim=(2, 3))))


def is_resnet18(names):
    return "encoder.layer4.1.bn2.weight" in names and "classify.weight" in names


def model_for(tensors, path):
    """An untrained PyTorch module of the network these tensors belong to, and a description."""
    anchors = "anchors" in tensors
    head = "" if anchors else ", closed-set (no anchors)"
    if is_classifier32(tensors):
        classes, channels, side = classifier32_shape(tensors, path)
        return (AuthorsLayoutClassifier32(classes, channels, side, anchors=anchors),
                f"classifier32, {classes} classes, {channels} channel(s), {side}x{side} inputs{head}")
    if is_resnet18(tensors):
        classes, channels = tensors["classify.weight"].shape[0], tensors["encoder.conv1.weight"].shape[1]
        return CifarResNet18(classes, channels, anchors=anchors), f"resnet18, {classes} classes, {channels} channel(s){head}"
    raise InteropError(f"{path}: neither a classifier32 nor a ResNet-18 checkpoint (no encoder.conv1/conv9 or "
                       "encoder.layer4 tensors)")


def classifier32_shape(tensors, path):
    """(classes, channels, image size) from the tensors' shapes."""
    w = tensors["classify.weight"]
    classes, features = w.shape
    channels = tensors["encoder.conv1.weight"].shape[1]
    side = {128 * 4 * 4: 32, 128 * 8 * 8: 64}.get(features)
    if side is None:
        raise InteropError(f"{path}: classify.weight has {features} inputs; classifier32 takes 2048 (32x32) or 8192 (64x64)")
    return classes, channels, side


def to_torch(src, dst, plain):
    tensors, meta = read_safetensors(src)
    # Only the model's tensors: a last.safetensors also holds the optimiser's momentum buffers.
    model = collections.OrderedDict((k, v) for k, v in tensors.items() if not k.startswith("optimizer."))
    if meta.get("method") == "ce" and not plain:
        # The cross-entropy baseline never uses its anchors; without them the file has the layout
        # of the authors' closedSetClassifier.
        model.pop("anchors", None)
    if plain:
        torch.save(model, dst)
        print(f"wrote {dst}: a state_dict of {len(model)} tensors")
        return
    net, what = model_for(model, src)
    state = collections.OrderedDict()
    for k, v in model.items():
        state[k] = v.double() if k == "anchors" else v
    if is_classifier32(model):
        for alias, canonical in _aliases().items():
            for k in list(model):
                if k.startswith(canonical + "."):
                    state[alias + k[len(canonical):]] = state[k]
    # The same keys as the PyTorch module of that network (for classifier32: the authors' layout).
    expected = set(net.state_dict())
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise InteropError(f"{src}: does not map onto {what.split(',')[0]} (missing {missing[:5]}, unexpected {extra[:5]})")
    torch.save({"net": state, "source": f"cac-engine {src}", "metadata": meta}, dst)
    authors = "openSetClassifier" if "anchors" in model else "closedSetClassifier"
    how = f"{authors}(num_classes, num_channels, im_size)" if is_classifier32(model) else \
        "CifarResNet18(num_classes, channels) from scripts/torch_interop.py"
    print(f"wrote {dst}: {what}; load with {how}.load_state_dict(torch.load('{dst}')['net'])")


def _state_dict_of(obj, path):
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    if isinstance(obj, dict):
        for key in ("net", "state_dict", "model"):
            if key in obj and isinstance(obj[key], dict):
                return obj[key]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise InteropError(f"{path}: holds no state_dict (expected a dict of tensors, or one under 'net' or 'state_dict')")


def from_torch(src, dst):
    try:
        obj = torch.load(src, map_location="cpu")
    except Exception as e:  # torch raises many types for a bad file
        raise InteropError(f"{src}: torch.load failed: {e}")
    sd = _state_dict_of(obj, src)
    sd = collections.OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in sd.items())
    aliases = _aliases()
    out = collections.OrderedDict()
    seen_alias = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise InteropError(f"{src}: entry {k} is not a tensor")
        m = _ALIAS_RE.match(k)
        if m and m.group(1) in aliases:
            seen_alias[f"{aliases[m.group(1)]}.{m.group(2)}"] = (k, v)
            continue
        out[k] = v
    for canonical, (alias, v) in seen_alias.items():
        if canonical not in out:
            out[canonical] = v
        elif not torch.equal(out[canonical].to(v.dtype), v):
            raise InteropError(f"{src}: {alias} and {canonical} should be one tensor but hold different values")
    if "anchors" not in out and "means" in out:  # older checkpoints of the authors' code name them so
        out["anchors"] = out.pop("means")
    for k, v in out.items():
        out[k] = v.to(torch.int64) if k.endswith("num_batches_tracked") else v.to(torch.float32)
    write_safetensors(dst, collections.OrderedDict(sorted(out.items())), {"source": f"torch_interop from-torch {src}"})
    note = "" if "anchors" in out else "; no anchors: a closed-set classifier, for cac_train --method ce"
    print(f"wrote {dst}: {len(out)} tensors" + (" (classifier32)" if is_classifier32(out) else "") + note)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("to-torch", help="this engine's safetensors -> a PyTorch file in the authors' layout")
    a.add_argument("src")
    a.add_argument("dst")
    a.add_argument("--plain", action="store_true", help="a bare state_dict with this engine's names")
    b = sub.add_parser("from-torch", help="a PyTorch state_dict file -> this engine's safetensors")
    b.add_argument("src")
    b.add_argument("dst")
    args = p.parse_args(argv)
    try:
        if args.cmd == "to-torch":
            to_torch(args.src, args.dst, args.plain)
        else:
            from_torch(args.src, args.dst)
    except (InteropError, OSError) as e:
        print(f"torch_interop: {e}", file=sys.stderr)
        return 1
    except (KeyError, ValueError, TypeError, RuntimeError) as e:  # tensors of unexpected shapes or types
        print(f"torch_interop: {args.src}: cannot convert ({e!r})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
