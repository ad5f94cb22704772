"""Helpers around the vaststreamx test double in tests/fakes: its path, and fake compiled models."""

from __future__ import annotations

import os
import sys

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fakes")


def use_fake_sdk() -> None:
    """Make `import vaststreamx` find the double, here and in Ray workers started after this call."""
    if FAKES not in sys.path:
        sys.path.insert(0, FAKES)
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if FAKES not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join(parts + [FAKES])


def compiled_models(folder: str, onnx_path: str) -> dict[str, str]:
    """{'logits': prefix, 'probs': prefix} of two fake compiled models of the same ONNX."""
    use_fake_sdk()
    import vaststreamx

    return {kind: vaststreamx.write_compiled_model(os.path.join(folder, kind, "mod"), onnx_path, kind == "probs")
            for kind in ("logits", "probs")}
