"""IOBinding: the input and the logits bound once per batch shape, at fixed addresses on the device.

Each batch is copied into the bound input (`update_inplace`), the session runs on the bindings and
the logits come back from the bound output. Fixed addresses are what CUDA graphs need (captured on
the first run, replayed afterwards); without graphs it saves an allocation per batch.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort


class BoundRunner:
    """Runs `session` through IOBinding on `device` ('cuda' or 'cpu') number `device_id`."""

    def __init__(self, session: ort.InferenceSession, input_name: str, output_name: str, device: str = "cuda",
                 device_id: int = 0):
        self.session, self.input_name, self.output_name = session, input_name, output_name
        self.device, self.device_id = device, device_id
        out = session.get_outputs()[0]
        self._out_tail = [d if isinstance(d, int) else None for d in out.shape[1:]]
        self._out_dtype = np.float16 if out.type == "tensor(float16)" else np.float32
        self._bound: dict = {}  # (shape, dtype) -> (binding, input OrtValue, output OrtValue or None)

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch)
        key = (batch.shape, batch.dtype.str)
        entry = self._bound.get(key)
        if entry is None:
            entry = self._bound[key] = self._bind(batch)
        else:
            entry[1].update_inplace(batch)
        binding = entry[0]
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def _bind(self, batch: np.ndarray):
        binding = self.session.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(batch.copy(), self.device, self.device_id)
        binding.bind_ortvalue_input(self.input_name, x)
        out = None
        if all(d is not None for d in self._out_tail):
            # A pre-allocated output keeps its address from run to run (what a CUDA graph replays into).
            out = ort.OrtValue.ortvalue_from_shape_and_type([batch.shape[0], *self._out_tail], self._out_dtype,
                                                            self.device, self.device_id)
            binding.bind_ortvalue_output(self.output_name, out)
        else:
            binding.bind_output(self.output_name, self.device, self.device_id)
        return binding, x, out
