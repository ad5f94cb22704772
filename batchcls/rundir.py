"""The output folder: an exclusive lock, the run manifest, and which shards are already finished (resume)."""

from __future__ import annotations

import fcntl
import glob
import json
import os
import shutil

from .errors import BatchclsError
from .schema import PART_GLOB, part_path, read_part_rows

MANIFEST = "manifest.json"


class RunDir:
    """`output.dir` held by one run at a time (an flock on `.lock`, released even if the process dies)."""

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> "RunDir":
        try:
            os.makedirs(os.path.join(self.path, "predictions"), exist_ok=True)
            fd = os.open(os.path.join(self.path, ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise BatchclsError(f"output.dir: cannot write to {self.path!r} ({e.strerror}); choose a writable "
                                "folder with --set output.dir=PATH") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise BatchclsError(f"output.dir: {self.path!r} is in use by another run (pid {holder}); wait for it "
                                "to finish or choose another folder with --set output.dir=PATH") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def prepare(self, fingerprint: str, overwrite: bool, job: dict) -> None:
        """Keep the parts of an earlier run of the same job (resume); refuse to mix with a different one."""
        manifest = self.read_manifest()
        parts = glob.glob(os.path.join(self.path, "predictions", PART_GLOB))
        same = manifest is not None and manifest.get("fingerprint") == fingerprint
        if parts and not same:
            if not overwrite:
                raise BatchclsError(
                    f"output.dir: {self.path!r} holds predictions of a different run (other model, data or "
                    "preprocessing); choose another folder with --set output.dir=PATH, or replace them with "
                    "--set output.overwrite=true")
            shutil.rmtree(os.path.join(self.path, "predictions"))
            os.makedirs(os.path.join(self.path, "predictions"))
        for stale in ("metrics.json", "report.html"):
            if not same and os.path.exists(os.path.join(self.path, stale)):
                os.unlink(os.path.join(self.path, stale))
        self.write_json(MANIFEST, {"fingerprint": fingerprint, "job": job})

    def finished(self, shards) -> set[int]:
        """Ids of shards whose part exists, is readable and has one row per sample."""
        done = set()
        for shard in shards:
            path = part_path(self.path, shard.id)
            if os.path.exists(path) and read_part_rows(path) == len(shard):
                done.add(shard.id)
        return done

    def read_manifest(self) -> dict | None:
        try:
            with open(os.path.join(self.path, MANIFEST), encoding="utf-8") as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def write_json(self, name: str, data: dict) -> str:
        """Atomic JSON write (temp name with the pid, then rename)."""
        path = os.path.join(self.path, name)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
        return path
