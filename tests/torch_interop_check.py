"""Test helper (TorchInterop.* in test_apps): loads a to-torch file into its PyTorch module (the CAC
authors' classifier32 layout, or the ResNet-18) with a strict load_state_dict, runs it in eval mode on the inputs this engine saved, and
compares logits and distances with this engine's.

  python3 tests/torch_interop_check.py MODEL.pth IO.safetensors
  python3 tests/torch_interop_check.py --train cac|ce|cac-learnt LR MOMENTUM WEIGHT_DECAY LAMBDA INIT.pth IO.safetensors AFTER.safetensors

--train: the same SGD steps in PyTorch (train mode, the authors' CAC loss, cross-entropy on the
logits, or both with trainable centres; torch.optim.SGD) from the
weights in INIT.pth on the batches in IO.safetensors (x, y; one step per batch), compared with this
engine's losses (IO's `losses`) and its weights and batch-norm statistics after the steps.

Exit 0 when both agree within the tolerance, 1 (with the largest errors) otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts"))
import torch  # noqa: E402

import torch_interop as ti  # noqa: E402


def forward_bound(net):
    """How far two float32 forward passes of `net` may drift apart (or one from the exact result),
    relative to a tensor's largest value. Here OpenBLAS im2col GEMMs compute each layer, in PyTorch
    its own kernels: a sum of n float32 terms differs by at most n * 2^-24 (relative) between two
    summation orders, and the differences of the layers on the longest path add up. classifier32: ten layers of at most
    n = 128 * 9 = 1152 terms (the 2048-input linear layer is less deep than it is wide in error),
    10 * 1152 * 2^-24 = 6.9e-4 -> 1e-3. ResNet-18: 18 layers of at most 512 * 9 = 4608 terms,
    18 * 4608 * 2^-24 = 4.9e-3 -> 5e-3. A wrong name, layout, flatten order, batch-norm statistic
    or loss term is off by O(1)."""
    return 5e-3 if isinstance(net, ti.CifarResNet18) else 1e-3


def main(model_path, io_path):
    state = torch.load(model_path, map_location="cpu")["net"]
    net, _ = ti.model_for(state, model_path)
    net.load_state_dict(state, strict=True)  # raises on any missing or unexpected name
    net.eval()
    io, _ = ti.read_safetensors(io_path)
    with torch.no_grad():
        logits, distances = net(io["x"])
    bound = forward_bound(net)
    worst = 0.0
    pairs = [("logits", logits.float(), io["logits"])]
    if distances is not None:  # a closed-set classifier has no anchors
        pairs.append(("distances", distances.float(), io["distances"]))
    for name, got, ref in pairs:
        if got.shape != ref.shape:
            print(f"{name}: shape {list(got.shape)} vs {list(ref.shape)}")
            return 1
        err = (got - ref).abs().max().item() / max(ref.abs().max().item(), 1e-30)
        print(f"{name}: largest difference {err:.3g} of the largest value")
        worst = max(worst, err)
    return 0 if worst <= bound else 1


def relative(got, ref):
    return (got.double() - ref.double()).abs().max().item() / max(ref.double().abs().max().item(), 1e-30)


def train(method, lr, momentum, weight_decay, lam, init_path, io_path, after_path):
    state = torch.load(init_path, map_location="cpu")["net"]
    net, _ = ti.model_for(state, init_path)
    net.load_state_dict(state, strict=True)
    classes = state["classify.weight"].shape[0]
    # PyTorch computes in float64 from the same (float32) weights: the reference is then the exact
    # result of PyTorch's rules, and the tolerances cover this engine's float32 error alone.
    # (Measured on the ResNet-18's first step: PyTorch's own float32 gradient of
    # layer4.1.conv2.weight was 7.8% of its largest value away from float64, this engine's 2.9e-6;
    # presumably a ReLU input within rounding of 0 that float32 PyTorch puts on the other side.)
    net = net.double()
    if method == "cac-learnt":  # the centres train too (supplementary section 5)
        net.anchors.requires_grad_(True)
    init = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    io, _ = ti.read_safetensors(io_path)
    losses = []
    steps = io["x"].shape[0]
    for step in range(steps):
        x, y = io["x"][step].double(), io["y"][step]
        opt.zero_grad()
        z, d = net(x)
        if method == "ce":
            loss = torch.nn.functional.cross_entropy(z, y)
        else:
            # The authors' CAC loss: tuplet log(1 + sum_{j != y} exp(d_y - d_j)), anchor d_y, both means.
            dy = d.gather(1, y[:, None])
            others = d.masked_fill(torch.nn.functional.one_hot(y, classes).bool(), float("inf"))
            tuplet = torch.log(1 + torch.exp(dy - others).sum(1)).mean()
            loss = tuplet + lam * dy.mean()
            if method == "cac-learnt":  # L_CAC + L_CE
                loss = loss + torch.nn.functional.cross_entropy(z.double(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ok = True
    # Losses and running statistics come from the forward passes: within forward_bound. The
    # updates come from the gradients, a backward pass as deep again: within twice that.
    bound = forward_bound(net)
    for step, (mine, theirs) in enumerate(zip(io["losses"].tolist(), losses)):
        err = abs(mine - theirs) / abs(theirs)
        print(f"step {step + 1} loss: {mine:.6f} here, {theirs:.6f} in PyTorch ({err:.2g})")
        ok &= err <= bound
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
        if "running_" in name:
            err = relative(mine, theirs)
            worst_stat = max(worst_stat, (name, err), key=lambda t: t[1])
            ok &= err <= bound
        elif name != "anchors" or method == "cac-learnt":
            # The SGD updates (after - before): a different rule (decay, momentum) is off by O(1).
            # Allowed: the gradients' error (2 * bound) plus this engine's float32 weights, rounded
            # after each step by up to half an ulp, 2^-24 * |w|, which the update's size scales.
            ref = theirs - init[name]
            err = relative(mine.double() - init[name], ref)
            rounding = steps * 2.0**-24 * init[name].abs().max().item() / max(ref.abs().max().item(), 1e-30)
            worst_update = max(worst_update, (name, err), key=lambda t: t[1])
            ok &= err <= 2 * bound + rounding
    print(f"largest update difference: {worst_update[1]:.3g} of the largest update ({worst_update[0]})")
    print(f"largest running-statistics difference: {worst_stat[1]:.3g} ({worst_stat[0]})")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--train":
        a = sys.argv[2:]
        sys.exit(train(a[0], float(a[1]), float(a[2]), float(a[3]), float(a[4]), a[5], a[6], a[7]))
    sys.exit(main(sys.argv[1], sys.argv[2]))
