"""Test helper (TorchInterop.* in test_apps): loads a to-torch file into the CAC authors' classifier32
layout with a strict load_state_dict, runs it in eval mode on the inputs this engine saved, and
compares logits and distances with this engine's.

  python3 tests/torch_interop_check.py MODEL.pth IO.safetensors
  python3 tests/torch_interop_check.py --train LR MOMENTUM WEIGHT_DECAY LAMBDA INIT.pth IO.safetensors AFTER.safetensors

--train: the same SGD steps in PyTorch (train mode, the authors' CAC loss, torch.optim.SGD) from the
weights in INIT.pth on the batches in IO.safetensors (x, y; one step per batch), compared with this
engine's losses (IO's `losses`) and its weights and batch-norm statistics after the steps.

Exit 0 when both agree within the tolerance, 1 (with the largest errors) otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402

import torch_interop as ti  # noqa: E402


def main(model_path, io_path):
    ck = torch.load(model_path, map_location="cpu")
    state = ck["net"]
    classes, channels, side = ti.classifier32_shape(state, model_path)
    net = ti.AuthorsLayoutClassifier32(classes, channels, side)
    net.load_state_dict(state, strict=True)  # raises on any missing or unexpected name
    net.eval()
    io, _ = ti.read_safetensors(io_path)
    with torch.no_grad():
        logits, distances = net(io["x"])
    # Float32 through nine conv layers (reductions of at most 128 * 9 = 1152 terms) and the
    # 2048-input linear layer, computed by OpenBLAS im2col GEMMs here and PyTorch's own kernels
    # there: a sum of n float32 terms differs by at most n * 2^-24 relative between two orders,
    # 1152 * 6e-8 = 7e-5 per layer, about 7e-4 over ten layers in the worst case. So 1e-3 of each
    # tensor's largest magnitude; a wrong name, layout, flatten order or batch-norm statistic is
    # off by O(1).
    worst = 0.0
    for name, got, ref in (("logits", logits.float(), io["logits"]), ("distances", distances.float(), io["distances"])):
        if got.shape != ref.shape:
            print(f"{name}: shape {list(got.shape)} vs {list(ref.shape)}")
            return 1
        err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        print(f"{name}: largest difference {err:.3g} of the largest value")
        worst = max(worst, err)
    return 0 if worst <= 1e-3 else 1


def relative(got, ref):
    return (got.double() - ref.double()).abs().max().item() / max(ref.double().abs().max().item(), 1e-30)


def train(lr, momentum, weight_decay, lam, init_path, io_path, after_path):
    state = torch.load(init_path, map_location="cpu")["net"]
    classes, channels, side = ti.classifier32_shape(state, init_path)
    net = ti.AuthorsLayoutClassifier32(classes, channels, side)
    net.load_state_dict(state, strict=True)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    io, _ = ti.read_safetensors(io_path)
    losses = []
    for step in range(io["x"].shape[0]):
        x, y = io["x"][step], io["y"][step]
        opt.zero_grad()
        _, d = net(x)
        # The authors' CAC loss: tuplet log(1 + sum_{j != y} exp(d_y - d_j)), anchor d_y, both means.
        dy = d.gather(1, y[:, None])
        others = d.masked_fill(torch.nn.functional.one_hot(y, classes).bool(), float("inf"))
        tuplet = torch.log(1 + torch.exp(dy - others).sum(1)).mean()
        loss = tuplet + lam * dy.mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ok = True
    # Losses: float32 forward passes (see main) -> 1e-4 relative, well above their ~1e-6 agreement.
    for step, (mine, theirs) in enumerate(zip(io["losses"].tolist(), losses)):
        err = abs(mine - theirs) / abs(theirs)
        print(f"step {step + 1} loss: {mine:.6f} here, {theirs:.6f} in PyTorch ({err:.2g})")
        ok &= err <= 1e-4
    after, _ = ti.read_safetensors(after_path)
    final = net.state_dict()
    worst_update, worst_stat = ("", 0.0), ("", 0.0)
    for name, mine in after.items():
        theirs = final[name]
        if name.endswith("num_batches_tracked"):
            if int(mine) != int(theirs):
                print(f"{name}: {int(mine)} here, {int(theirs)} in PyTorch")
                ok = False
            continue
        if "running_" in name:  # batch statistics of float32 activations: 1e-4 of the largest
            err = relative(mine, theirs)
            worst_stat = max(worst_stat, (name, err), key=lambda t: t[1])
            ok &= err <= 1e-4
        elif name != "anchors":
            # The SGD updates (after - before), which float32 gradients set to ~1e-6 relative;
            # 1e-3 of the largest update catches any difference in the rule (decay, momentum).
            err = relative(mine - init[name].float(), theirs - init[name])
            worst_update = max(worst_update, (name, err), key=lambda t: t[1])
            ok &= err <= 1e-3
    print(f"largest update difference: {worst_update[1]:.3g} of the largest update ({worst_update[0]})")
    print(f"largest running-statistics difference: {worst_stat[1]:.3g} ({worst_stat[0]})")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--train":
        a = sys.argv[2:]
        sys.exit(train(float(a[0]), float(a[1]), float(a[2]), float(a[3]), a[4], a[5], a[6]))
    sys.exit(main(sys.argv[1], sys.argv[2]))
