"""Regenerate tests/fixtures/dla_parity/: timm's logits for our seeded random DLA weights (needs torch + timm).

The parity test (tests/test_models_parity.py) runs without torch: it builds our ONNX graph from the
same `random:SEED` weights, runs onnxruntime on inputs regenerated from a seed, and compares with the
logits timm computed here. This script is run by hand when the builder, the random weights or the
fixture format change:

    python -m venv /tmp/tv && /tmp/tv/bin/pip install torch timm onnx onnxruntime safetensors thop
    PYTHONPATH=. /tmp/tv/bin/python tools/timm_parity.py            # writes the fixture, prints figures
    PYTHONPATH=. /tmp/tv/bin/python tools/timm_parity.py --check    # compares only, writes nothing

For each of the 12 architectures it: creates timm's model (pretrained=False, eval mode), loads our
`random_weights(arch, SEED)` with strict key checking (only `num_batches_tracked` may be missing),
checks `count_params` against timm's sum(p.numel()), `count_macs` against forward hooks on every
Conv2d (thop's rule) and, when thop is installed, `count_thop_ops` against `thop.profile`; runs
BATCH seeded N(0, 1) images of 3x224x224 (`np.random.default_rng(INPUT_SEED).standard_normal(...,
dtype=float32)`), and, when onnxruntime is installed, prints our ONNX graph's difference from timm.
The fixture (`logits.npz`, ~100 KB) holds timm's logits computed in float64 (stored as float32), timm's
counts and a weights checksum per arch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

import timm
from batchcls.models import build_onnx, count_macs, count_params, count_thop_ops, list_archs, random_weights

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "dla_parity", "logits.npz")
SEED, INPUT_SEED, BATCH, INPUT_SIZE = 0, 1, 2, 224


def parity_inputs(seed: int = INPUT_SEED, batch: int = BATCH) -> np.ndarray:
    """The images both sides run: seeded N(0, 1), float32 NCHW."""
    return np.random.default_rng(seed).standard_normal((batch, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)


def weights_checksum(weights: dict[str, np.ndarray]) -> float:
    """Sum of |w| over all tensors, float64: tells a drifted random generator from a wrong graph."""
    return float(sum(np.abs(w.astype(np.float64)).sum() for w in weights.values()))


def load_into_timm(arch: str, weights: dict[str, np.ndarray]) -> torch.nn.Module:
    model = timm.create_model(arch, pretrained=False).eval()
    state = {k: torch.from_numpy(v.copy()) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        sys.exit(f"{arch}: key mismatch with timm: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model


def hook_macs(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Conv MACs of one image, as thop's count_convNd: output elements x cin / groups x kh x kw."""
    total = 0

    def hook(m, inputs, out):
        nonlocal total
        total += out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(x[:1])
    for h in handles:
        h.remove()
    return total


def thop_ops(model: torch.nn.Module, x: torch.Tensor) -> int:
    try:
        import thop
    except ImportError:
        return -1
    ops, _ = thop.profile(model, inputs=(x[:1],), verbose=False)
    return int(round(float(ops)))


def onnx_logits(arch: str, weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    session = ort.InferenceSession(build_onnx(arch, weights).SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def check_arch(arch: str, x: np.ndarray, out: dict) -> bool:
    t = time.perf_counter()
    weights = random_weights(arch, SEED)
    model = load_into_timm(arch, weights)
    xt = torch.from_numpy(x)
    with torch.no_grad():
        logits32 = model(xt).numpy()
        # The reference is timm's math in float64: float32 rounding alone moves deep random nets' logits
        # by ~1e-4 of their scale (timm's own float32 output does), which would hide the graph's error.
        logits = model.double()(xt.double()).numpy()
    model.float()
    timm_params = sum(p.numel() for p in model.parameters())
    macs, ops = hook_macs(model, xt), thop_ops(model, xt)
    ok = timm_params == count_params(arch) and macs == count_macs(arch) and ops in (-1, count_thop_ops(arch))
    ours = onnx_logits(arch, weights, x)
    line = f"{arch:15s} params {timm_params} {'==' if timm_params == count_params(arch) else '!='} ours"
    line += f" | conv MACs {macs} {'==' if macs == count_macs(arch) else '!='} ours"
    line += f" | thop {ops} {'==' if ops == count_thop_ops(arch) else '!='} ours"
    scale = np.abs(logits).max()
    line += f" | |logit|max {scale:.3g} | timm f32 rel {np.abs(logits32 - logits).max() / scale:.3g}"
    if ours is not None:
        diff = np.abs(ours - logits).max()
        same_top5 = (np.argsort(-ours)[:, :5] == np.argsort(-logits)[:, :5]).all()
        line += f" | onnx max|diff| {diff:.3g} rel {diff / scale:.3g} top5 {'same' if same_top5 else 'DIFF'}"
        ok = ok and bool(same_top5)
    print(f"{line} | {time.perf_counter() - t:.1f}s", flush=True)
    out.update({
        f"{arch}__logits": logits.astype(np.float32), f"{arch}__timm_params": np.int64(timm_params),
        f"{arch}__conv_macs": np.int64(macs), f"{arch}__thop_ops": np.int64(ops),
        f"{arch}__weights_checksum": np.float64(weights_checksum(weights)),
    })
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="compare and print only; do not write the fixture")
    p.add_argument("--archs", nargs="*", default=list(list_archs()))
    p.add_argument("-o", "--output", default=FIXTURE)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    x = parity_inputs()
    out = {
        "seed": np.int64(SEED), "input_seed": np.int64(INPUT_SEED), "batch": np.int64(BATCH),
        "input_size": np.int64(INPUT_SIZE), "versions": np.array(f"torch {torch.__version__}, timm {timm.__version__}"),
    }
    ok = all([check_arch(arch, x, out) for arch in args.archs])
    if not args.check:
        tmp = f"{args.output}.tmp.{os.getpid()}.npz"
        np.savez_compressed(tmp, **out)
        os.replace(tmp, args.output)
        print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
