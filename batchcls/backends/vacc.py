"""VastAI vacc backend: a vaststreamx stream (the vdsp op, then the compiled model) on one die of one card."""

from __future__ import annotations

import fcntl
import importlib
import os
import socket
import tempfile
import time

import numpy as np

from ..config import vacc_files
from ..errors import BackendUnavailable, BatchclsError, DeviceError

SDK_HELP = ("install VastAI's vaststreamx wheel for this Python (vaststreamx-<version>-cp3XX-...-linux_x86_64.whl; "
            "it is not on PyPI: it comes with VastAI's SDK release and the VastStreamX-Samples docker image) and "
            "the VastStream runtime (the ai-<version>-sdk2 installer), then add /opt/vastai/vaststreamx/vaststreamx/lib "
            "and /opt/vastai/vaststream/lib to LD_LIBRARY_PATH (the runtime's activate.sh does it)")
# One exclusive lock file per die and host: a worker holds its die for its whole life; the kernel
# releases the lock when the process ends, however it ends.
DIE_LOCK_DIR = os.path.join(tempfile.gettempdir(), "batchcls-vacc-dies")
# A replaced worker's process may hold its die for a moment after it was killed.
CLAIM_TIMEOUT_S = 20.0
# Probabilities in float16: 1000 values summing to 1 are off by ~1e-3 at most; logits do not sum to 1.
PROBS_SUM_TOLERANCE = 2e-2


def import_sdk():
    """The vaststreamx module, or BackendUnavailable saying where it comes from."""
    try:
        return importlib.import_module("vaststreamx")
    except ImportError as e:
        if isinstance(e, ModuleNotFoundError) and e.name == "vaststreamx":
            raise BackendUnavailable(f"inference.backend vacc: vaststreamx is not installed on host "
                                     f"{socket.gethostname()}; {SDK_HELP}") from None
        raise BackendUnavailable(f"inference.backend vacc: vaststreamx is installed on host {socket.gethostname()} "
                                 f"but does not load ({' '.join(str(e).split())[:200]}); {SDK_HELP}") from None


def claim_die(candidates: list[int], lock_dir: str | None = None, timeout_s: float | None = None):
    """(die id, lock fd): the first of `candidates` no other process of this host holds, waiting up to
    `timeout_s` (CLAIM_TIMEOUT_S) for one to be freed. Locks live in `lock_dir` (DIE_LOCK_DIR)."""
    lock_dir = lock_dir or DIE_LOCK_DIR
    try:
        os.makedirs(lock_dir, exist_ok=True)
    except OSError as e:
        raise BackendUnavailable(f"vacc: cannot create the die locks folder {lock_dir!r} on host "
                                 f"{socket.gethostname()} ({e.strerror}); make it writable for every user") from None
    try:  # the dies are the host's, whoever runs: every user's workers must see the same locks
        os.chmod(lock_dir, 0o1777)
    except OSError:
        pass
    deadline = time.monotonic() + (CLAIM_TIMEOUT_S if timeout_s is None else timeout_s)
    while True:
        holders = []
        for die in candidates:
            fd = os.open(os.path.join(lock_dir, f"die-{die}.lock"), os.O_RDWR | os.O_CREAT, 0o666)
            try:
                os.fchmod(fd, 0o666)
            except OSError:
                pass
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holders.append(os.pread(fd, 32, 0).decode(errors="replace").strip() or "?")
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return die, fd
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"inference.devices: every die this worker may use on host {socket.gethostname()} "
                f"({', '.join(map(str, candidates))}) is held by another worker (pids {', '.join(holders)}); "
                "run one worker per die: give each host its die count as its vacc resource "
                "(runtime.resources or ray start --resources), or list more dies in inference.devices")
        time.sleep(0.2)


class VaccBackend:
    """One vaststreamx stream on one die, built as the vendor's classification samples build it:
    `set_device(die) == 0`, `Model(prefix, batch)`, the vdsp op from its JSON, `Graph` + `ModelOperator`,
    `Stream`, `register_operator_output`, `build`; then `create_image(RGB_PLANAR)` and `run_sync` per batch.

    `on_device`: images arrive at full resolution (even sizes) and the vdsp JSON's resize, crop and
    normalisation run on the card; otherwise they are the host's crops, passed through an identity
    `crop_resize_ext` so the card only normalises. `devices`: the dies this worker may take (default
    0..die_count-1); it takes the first one free on its host. `outputs`: logits, probs, or auto (decided
    on the first batch). Outputs come back as float16 (1, C) per image and leave `run` as float32 [N, C].
    """

    name = "vacc"
    input_dtype = "uint8"

    def __init__(self, model: str, vdsp_params: str, on_device: bool = True, outputs: str = "auto",
                 batch_size: int = 1, devices: list[int] | None = None, die_count: int | None = None,
                 source: str | None = None, sdk=None):
        self.sdk = sdk or import_sdk()
        self.host = socket.gethostname()
        missing = [f for f in vacc_files(model) if not os.path.isfile(f)]
        if missing:
            raise BatchclsError(f"model.vacc: {missing[0]!r} does not exist on host {self.host}: every vacc host "
                                "needs the compiled model (PREFIX.so, .json, .params) at the same path")
        self.prefix, self.vdsp_params, self.on_device = model, vdsp_params, on_device
        self.outputs, self.outputs_note = outputs, f"model.outputs: {outputs}"
        self.die, self._lock = claim_die(list(devices) if devices else list(range(max(1, die_count or 1))))
        try:
            self._open(batch_size)
        except BaseException:
            self.close()
            raise

    def _open(self, batch_size: int) -> None:
        vsx = self.sdk
        rc = vsx.set_device(self.die)
        if rc != 0:
            raise BackendUnavailable(
                f"inference.devices: no die {self.die} on host {self.host} (vaststreamx set_device returned {rc}): "
                "is the vacc driver loaded and the card visible (the card_info sample lists its dies)? give the "
                "host its die count as its vacc resource, or list dies that exist in inference.devices")
        try:
            self.model = vsx.Model(self.prefix, batch_size)
        except Exception as e:  # noqa: BLE001 - the native layer's own error type is not documented
            raise BatchclsError(f"model.vacc: vaststreamx cannot load {self.prefix!r} on die {self.die} of host "
                                f"{self.host}: {' '.join(str(e).split())[:200]}; compile it with vamc for this "
                                "card and runtime") from None
        try:
            ops = vsx.Operator.load_ops_from_json_file(self.vdsp_params)
        except Exception:  # noqa: BLE001 - the samples show [] for a bad file; a raise means the same
            ops = []
        if not ops:
            raise BatchclsError(f"preprocess.vdsp_params: {self.vdsp_params!r} gives no vdsp operator "
                                "(vaststreamx load_ops_from_json_file returned none); use the model's vendor "
                                "*-vdsp_params.json, e.g. a shipped one such as timm-dla34")
        self.graph = vsx.Graph()
        self.model_op = vsx.ModelOperator(self.model)
        self.graph.add_operators(*ops, self.model_op)
        self.stream = vsx.Stream(self.graph, vsx.StreamBalanceMode.ONCE)
        self.stream.register_operator_output(self.model_op)
        self.stream.build()
        self.batch_size = int(self.model.batch_size)
        _, c, h, w = self.model.input_shape[0]
        self.model_shape = (int(c), int(h), int(w))
        self.input_shape = (3, None, None) if self.on_device else self.model_shape

    def run(self, batch) -> np.ndarray:
        """uint8 [N, 3, H, W] crops, or a list of N uint8 (3, H, W) full-resolution images -> float32 [N, C]."""
        vsx = self.sdk
        # The vendor's profiler sets the device in every thread that drives a stream.
        if vsx.set_device(self.die) != 0:
            raise DeviceError(f"vacc die {self.die} on host {self.host}: set_device failed during the run")
        images = [vsx.create_image(np.ascontiguousarray(x), vsx.ImageFormat.RGB_PLANAR, int(x.shape[2]),
                                   int(x.shape[1]), self.die) for x in batch]
        try:
            if self.on_device:
                out = self.stream.run_sync(images)
            else:
                out = self.stream.run_sync(images, {"crop_resize_ext": [(0, 0, int(x.shape[2]), int(x.shape[1]))
                                                                         for x in batch]})
            scores = np.stack([np.asarray(vsx.as_numpy(o[0]), dtype=np.float32).reshape(-1) for o in out])
        except Exception as e:  # noqa: BLE001 - whatever the card raised, the worker is replaced
            raise DeviceError(f"vacc die {self.die} on host {self.host}: run_sync failed: "
                              f"{type(e).__name__}: {' '.join(str(e).split())[:200]}") from None
        if scores.shape[0] != len(images):
            raise DeviceError(f"vacc die {self.die} on host {self.host}: {scores.shape[0]} outputs for "
                              f"{len(images)} images")
        if self.outputs == "auto":
            self._detect_outputs(scores)
        return scores

    def _detect_outputs(self, scores: np.ndarray) -> None:
        probs = bool(scores.min() >= 0 and np.all(np.abs(scores.sum(axis=1) - 1) < PROBS_SUM_TOLERANCE))
        self.outputs = "probs" if probs else "logits"
        why = "rows are >= 0 and sum to 1" if probs else "rows do not sum to 1"
        self.outputs_note = (f"model.outputs: assumed {self.outputs} ({why} on the first batch, die {self.die}); "
                             "set model.outputs to say so")

    def close(self) -> None:
        """Drop the stream, graph, operators and model (in that order), then free the die."""
        for attr in ("stream", "graph", "model_op", "model"):
            self.__dict__.pop(attr, None)
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def describe(self) -> dict:
        return {"backend": self.name, "version": getattr(self.sdk, "__version__", None), "die": self.die,
                "model": self.prefix, "vdsp_params": self.vdsp_params, "on_device": self.on_device,
                "fixed_batch": self.batch_size, "input_shape": list(self.model_shape), "outputs": self.outputs}
