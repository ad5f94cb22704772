"""Find samples: a flat folder or one folder per class; their labels come from `labels.resolve_labels`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..constants import IMAGE_EXTENSIONS
from ..errors import BatchclsError
from .labels import folder_classes, resolve_labels
from .labels import imagenet_class_names, imagenet_synsets  # noqa: F401 - re-exported, as before


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
    disagree: frozenset = frozenset()  # paths whose class folder differs from the built-in ground truth
    notes: tuple[str, ...] = ()  # what the report must say about the labels
    label_lines: dict | None = None  # sample path -> label-file line, when a label file gave the labels

    @property
    def labelled(self) -> bool:
        return any(s.label is not None for s in self.samples)


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def discover(root: str, labels: str | None = None, layout: str = "auto",
             class_subset: tuple | None = None) -> Dataset:
    """All samples under `root`, sorted by relative path, labelled by `labels.resolve_labels`'s precedence
    (`labels`: a label file, 'none', or None for class folders / built-in ground truth; `class_subset`
    maps folders that are not ImageNet classes onto the subset's classes).

    A directory or unreadable entry named like an image is still a sample: it fails in prep
    with its reason and is counted, never dropped; so is a file a label file lists but the root lacks.
    """
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as e:
        raise BatchclsError(f"dataset.root: cannot list {root!r}: {e.strerror}") from None
    folders = [e.name for e in entries if e.is_dir() and not _is_image_name(e.name)]
    flat_files = [e.name for e in entries if _is_image_name(e.name)]
    if layout == "auto":
        layout = "folders" if folders and not flat_files else "flat"
    folder_class, folder_source, notes = None, "", []
    paths = flat_files
    if layout == "folders":
        folder_class, folder_source, notes = folder_classes(root, folders, class_subset)
        paths = _folder_listing(root, folders)
    resolved = resolve_labels(root, paths, folder_class, folder_source, labels)
    paths = sorted(set(paths) | set(resolved.by_path))
    samples = tuple(Sample(i, p, resolved.by_path.get(p)) for i, p in enumerate(paths))
    return Dataset(root=root, layout=layout, samples=samples, class_source=resolved.source,
                   disagree=frozenset(resolved.disagree),
                   notes=(tuple(notes) if resolved.source == folder_source else ()) + resolved.notes,
                   label_lines=resolved.lines)


def _folder_listing(root: str, folders: list[str]) -> list[str]:
    paths = []
    for f in sorted(folders):
        names = sorted(n for n in os.listdir(os.path.join(root, f)) if _is_image_name(n))
        paths.extend(f"{f}/{n}" for n in names)
    return sorted(paths)


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
