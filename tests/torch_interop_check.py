"""Test helper (TorchInterop.* in test_apps): loads a to-torch file into the CAC authors' classifier32
layout with a strict load_state_dict, runs it in eval mode on the inputs this engine saved, and
compares logits and distances with this engine's.

  python3 tests/torch_interop_check.py MODEL.pth IO.safetensors

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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
