"""Find samples and labels: ILSVRC2012 val flat folder + label file, or one folder per synset."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..constants import IMAGE_EXTENSIONS
from ..errors import BatchclsError, JobError

SYNSET_RE = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Sample:
    """One input: `index` is its position in the sorted listing of the whole folder, stable across runs."""

    index: int
    path: str  # relative to the dataset root, '/'-separated
    label: int | None


@dataclass(frozen=True)
class Dataset:
    root: str
    layout: str  # 'flat' or 'folders'
    samples: tuple[Sample, ...]  # every sample of the folder, in index order
    class_source: str  # how labels were assigned, for the report

    @property
    def labelled(self) -> bool:
        return any(s.label is not None for s in self.samples)


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 synsets in class-index order (sorted wnids)."""
    text = resources.files("batchcls").joinpath("resources/imagenet_synsets.txt").read_text()
    return tuple(line.split()[0] for line in text.splitlines() if line.strip())


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 class names in class-index order."""
    text = resources.files("batchcls").joinpath("resources/imagenet.txt").read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def discover(root: str, labels: str | None = None, layout: str = "auto") -> Dataset:
    """All samples under `root`, sorted by relative path; labels from `labels` or the synset folders.

    A directory or unreadable entry named like an image is still a sample: it fails in prep
    with its reason and is counted, never dropped.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise BatchclsError(f"dataset.root: cannot list {root!r}: {e.strerror}") from None
    folders = [e.name for e in entries if e.is_dir() and not _is_image_name(e.name)]
    flat_files = [e.name for e in entries if _is_image_name(e.name)]
    if layout == "auto":
        layout = "folders" if folders and not flat_files else "flat"
    if layout == "flat":
        paths = flat_files
        class_of: dict[str, int] = {}
        source = "none"
    else:
        paths, class_of, source = _folder_listing(root, folders)
    by_name = read_label_file(labels, paths) if labels else {}
    if labels:
        source = f"label file {labels}"
        paths = sorted(set(paths) | set(by_name))
    samples = tuple(Sample(i, p, by_name[p] if p in by_name else class_of.get(p.split("/", 1)[0]))
                    for i, p in enumerate(paths))
    return Dataset(root=root, layout=layout, samples=samples, class_source=source)


def _folder_listing(root: str, folders: list[str]) -> tuple[list[str], dict[str, int], str]:
    synsets = imagenet_synsets()
    if all(SYNSET_RE.match(f) and f in synsets for f in folders):
        position = {s: i for i, s in enumerate(synsets)}
        class_of = {f: position[f] for f in folders}
        source = "ImageNet synset folders"
    else:
        class_of = {f: i for i, f in enumerate(sorted(folders))}
        source = "sorted folder names (not ImageNet synsets)"
    paths = []
    for f in sorted(folders):
        names = sorted(n for n in os.listdir(os.path.join(root, f)) if _is_image_name(n))
        paths.extend(f"{f}/{n}" for n in names)
    return sorted(paths), class_of, source


def read_label_file(path: str, paths: list[str]) -> dict[str, int]:
    """`<filename> <class index>` lines -> {relative path: index}. Bare file names also match files in synset folders."""
    by_base = {p.rsplit("/", 1)[-1]: p for p in paths}
    out: dict[str, int] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            name, _, idx = line.strip().rpartition(" ")
            if not name or not idx.lstrip("-").isdigit() or not 0 <= int(idx) < 1_000_000:
                raise JobError("dataset.labels", f"{path}:{lineno}: expected '<filename> <class index>', got {line.strip()!r}")
            name = name.strip().replace(os.sep, "/")
            out[by_base.get(name, name) if "/" not in name else name] = int(idx)
    return out


def select(samples: tuple[Sample, ...], limit: int | None) -> tuple[Sample, ...]:
    """A subset of `limit` samples covering the classes evenly (round robin over classes, sorted within
    each), or evenly spaced when unlabelled; returned in index order. The same input gives the same subset."""
    if limit is None or limit >= len(samples):
        return samples
    by_class: dict[int | None, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    if list(by_class) == [None]:
        step = len(samples) / limit
        return tuple(samples[int(i * step)] for i in range(limit))
    chosen: list[Sample] = []
    queues = [by_class[k] for k in sorted(by_class, key=lambda k: (k is None, k or 0))]
    depth = 0
    while len(chosen) < limit:
        for q in queues:
            if depth < len(q) and len(chosen) < limit:
                chosen.append(q[depth])
        depth += 1
    return tuple(sorted(chosen, key=lambda s: s.index))
