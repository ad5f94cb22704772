"""Our ONNX DLA graphs against timm's logits (tests/fixtures/dla_parity, made by tools/timm_parity.py), no torch."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from batchcls.models import build_onnx, list_archs, random_weights

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "dla_parity", "logits.npz")
# The reference is timm in float64. Float32 rounding alone moves deep random nets by up to ~1.4e-4 of
# the logit scale (timm's own float32 output on dla169); ours measured <= 7.2e-5 with onnxruntime 1.32
# on AVX2. A graph error (a missing add, a wrong pool or fold) moves logits by O(1).
REL_TOL = 3e-4


@pytest.fixture(scope="module")
def fixture():
    with np.load(FIXTURE) as f:
        data = {k: f[k] for k in f.files}
    shape = (int(data["batch"]), 3, int(data["input_size"]), int(data["input_size"]))
    data["inputs"] = np.random.default_rng(int(data["input_seed"])).standard_normal(shape, dtype=np.float32)
    return data


def _top5_agree(ours: np.ndarray, ref: np.ndarray, tol: float) -> bool:
    """Our top-5 are the reference's top-5, except for reference near-ties closer than `tol`."""
    for o, r in zip(ours, ref):
        fifth = np.sort(r)[-5]
        if any(r[i] < fifth - tol for i in np.argsort(-o)[:5]):
            return False
    return True


@pytest.mark.parametrize("arch", list_archs())
def test_onnx_matches_timm(arch, fixture):
    weights = random_weights(arch, int(fixture["seed"]))
    checksum = sum(np.abs(w.astype(np.float64)).sum() for w in weights.values())
    # A different checksum means numpy's generator drew other weights, not that the graph is wrong.
    assert checksum == pytest.approx(float(fixture[f"{arch}__weights_checksum"]), rel=1e-9)
    model = build_onnx(arch, weights)
    onnx.checker.check_model(model)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ours = session.run(None, {"input": fixture["inputs"]})[0]
    ref = fixture[f"{arch}__logits"].astype(np.float64)
    scale = np.abs(ref).max()
    rel = np.abs(ours - ref).max() / scale
    print(f"{arch}: max|diff| {rel * scale:.3g}, relative to max|logit| {scale:.3g}: {rel:.3g}")
    assert np.isfinite(ours).all() and 0.5 < scale < 100  # calibrated random weights: moderate logits
    assert rel < REL_TOL
    assert _top5_agree(ours, ref, REL_TOL * scale)
