"""Every label source (files, built-in ground truth, class folders, ReaL, class subsets), one resolver."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from ..constants import NUM_CLASSES
from ..errors import JobError

SYNSET_RE = re.compile(r"^n\d{8}$")
VAL_NAME_RE = re.compile(r"^ILSVRC2012_val_(\d{8})(\.[A-Za-z0-9]+)?$")
NUMERIC_RE = re.compile(r"^[0-9]+$")
VAL_IMAGES = 50_000
BUILTIN_SOURCE = "built-in ILSVRC2012 validation ground truth"
BUILTIN_REAL_SOURCE = "built-in ImageNet-ReaL labels (Beyer et al. 2020, Apache-2.0)"
KAGGLE_HEADER = "ImageId,PredictionString"
LABEL_FORMS = ("expected '<filename> <class index>' (0-999), '<filename> <synset>' (n01440764), "
               "or a Kaggle LOC_val_solution.csv ('ImageId,PredictionString' header)")
OFF = "none"
SORTED_FOLDERS_SOURCE = "sorted folder names (not ImageNet synsets)"


def _resource_text(name: str) -> str:
    return resources.files("batchcls").joinpath(f"resources/{name}").read_text(encoding="utf-8")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 synsets in class-index order (sorted wnids)."""
    return tuple(line.split()[0] for line in _resource_text("imagenet_synsets.txt").splitlines() if line.strip())


@lru_cache(maxsize=1)
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 class names in class-index order."""
    return tuple(line.strip() for line in _resource_text("imagenet.txt").splitlines() if line.strip())


@lru_cache(maxsize=1)
def synset_index() -> dict[str, int]:
    return {s: i for i, s in enumerate(imagenet_synsets())}


@lru_cache(maxsize=1)
def builtin_val_labels() -> tuple[int, ...]:
    """Class index (sorted-synset order) of `ILSVRC2012_val_%08d.JPEG % k` at position k - 1; 50,000 entries."""
    index = synset_index()
    return tuple(index[line.strip()] for line in _resource_text("labels/ILSVRC2012_val_synsets.txt").splitlines()
                 if line.strip())


def val_number(path: str) -> int | None:
    """k of a file named `ILSVRC2012_val_<k as 8 digits>[.ext]` (any folder), 1 <= k <= 50,000; else None."""
    m = VAL_NAME_RE.match(path.replace("\\", "/").rsplit("/", 1)[-1])
    if m is None:
        return None
    k = int(m.group(1))
    return k if 1 <= k <= VAL_IMAGES else None


# ---------------------------------------------------------------- ReaL and class subsets

def load_real_labels(path: str | None = None) -> tuple[tuple[int, ...], ...]:
    """ReaL label sets: entry k - 1 is the set of class indices of val image k (may be empty).
    `path` None reads the shipped file; another file must have the same JSON form (a list of lists)."""
    where = path or "resources/labels/imagenet_real.json"
    try:
        text = _resource_text("labels/imagenet_real.json") if path is None else open(path, encoding="utf-8").read()
        data = json.loads(text)
    except (OSError, ValueError) as e:
        raise JobError("dataset.real_labels", f"{where}: cannot be read as JSON ({' '.join(str(e).split())}); "
                       "expected a list of class-index lists, one per ILSVRC2012 val image") from None
    if not isinstance(data, list):
        raise JobError("dataset.real_labels", f"{where}: expected a JSON list of class-index lists, got "
                       f"{type(data).__name__}")
    out = []
    for k, entry in enumerate(data, 1):
        if not isinstance(entry, list) or not all(isinstance(c, int) and 0 <= c < NUM_CLASSES for c in entry):
            raise JobError("dataset.real_labels", f"{where}: entry {k} (ILSVRC2012_val_{k:08d}) must be a list of "
                           f"class indices 0-{NUM_CLASSES - 1}, got {str(entry)[:60]}")
        out.append(tuple(entry))
    return tuple(out)


def resolve_real_labels(field: str | None, paths) -> tuple[tuple | None, str]:
    """(ReaL sets or None, source) for `dataset.real_labels`: None = the shipped file when any image is an
    ILSVRC2012 val image by name; 'none' = off; anything else = a file of the same form."""
    if field == OFF:
        return None, "off (dataset.real_labels: none)"
    if field is not None:
        return load_real_labels(field), f"ReaL label file {field}"
    if not any(val_number(p) for p in paths):
        return None, "off (no ILSVRC2012 val image names)"
    return load_real_labels(None), BUILTIN_REAL_SOURCE


def _lines(path: str, field: str):
    """(line number, stripped text) of the lines that carry data: a UTF-8 BOM, CRLF, blank lines and
    `#` comments are skipped."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8-sig")
    except OSError as e:
        raise JobError(field, f"{path}: cannot be read ({e.strerror})") from None
    except UnicodeDecodeError as e:
        raise JobError(field, f"{path}: is not UTF-8 text ({e.reason} at byte {e.start})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield lineno, line


def load_class_subset(path: str) -> tuple[int, ...]:
    """Class indices of a subset file (one synset or class index per line), sorted. Raises JobError naming
    the line of an unknown synset, an index outside 0-999 or a class given twice."""
    field, index = "dataset.class_subset", synset_index()
    seen: dict[int, int] = {}
    for lineno, line in _lines(path, field):
        token = line.split()[0]
        if NUMERIC_RE.match(token) and int(token) < NUM_CLASSES:
            cls = int(token)
        elif token in index:
            cls = index[token]
        else:
            raise JobError(field, f"{path}:{lineno}: {token!r} is neither an ImageNet synset (n01440764) nor a "
                           f"class index 0-{NUM_CLASSES - 1}")
        if cls in seen:
            raise JobError(field, f"{path}:{lineno}: class {cls} is listed twice (lines {seen[cls]} and {lineno})")
        seen[cls] = lineno
    if not seen:
        raise JobError(field, f"{path}: lists no classes; expected one synset or class index per line")
    return tuple(sorted(seen))


# ---------------------------------------------------------------- label files

@dataclass(frozen=True)
class LabelEntry:
    lineno: int
    name: str  # as written in the file
    label: int


def _class_of(token: str) -> int | None:
    if NUMERIC_RE.match(token):
        return int(token)
    return synset_index().get(token) if SYNSET_RE.match(token) else None


def read_label_file(path: str) -> list[LabelEntry]:
    """The entries of a label file in any of its forms (see LABEL_FORMS); JobError names the line otherwise."""
    field = "dataset.labels"
    entries, kaggle = [], None
    for lineno, line in _lines(path, field):
        if kaggle is None:
            kaggle = line.replace(" ", "") == KAGGLE_HEADER
            if kaggle:
                continue
        if kaggle:
            name, _, pred = line.partition(",")
            token = pred.split()[0] if pred.split() else ""
        else:
            parts = line.rsplit(None, 1)
            name, token = (parts[0], parts[1]) if len(parts) == 2 else ("", "")
        cls = _class_of(token)
        if not name.strip() or cls is None:
            raise JobError(field, f"{path}:{lineno}: {LABEL_FORMS}, got {line[:120]!r}")
        if cls >= NUM_CLASSES:
            raise JobError(field, f"{path}:{lineno}: class index {cls} is outside 0-{NUM_CLASSES - 1}")
        entries.append(LabelEntry(lineno, name.strip(), cls))
    return entries


def _inside(root_abs: str, candidate: str) -> str | None:
    """`candidate` (absolute) as a '/'-path relative to the root, or None when it lies outside."""
    rel = os.path.relpath(candidate, root_abs)
    if rel == os.curdir or rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
        return None
    return rel.replace(os.sep, "/")


def _basename_index(paths) -> dict[str, list[str]]:
    """Basename and stem (for extension-less ids such as Kaggle's) -> the discovered paths bearing it."""
    out: dict[str, list[str]] = {}
    for p in paths:
        base = p.rsplit("/", 1)[-1]
        out.setdefault(base, []).append(p)
        stem = os.path.splitext(base)[0]
        if stem != base:
            out.setdefault(stem, []).append(p)
    return out


def resolve_entry_path(entry: LabelEntry, label_file: str, root: str, on_disk: set, by_base: dict) -> str:
    """The sample path (relative to `root`) a label-file line names, by one rule: the path as written under
    the root; else relative to the label file's folder; else the unique discovered file of that basename;
    a file that exists nowhere is kept (its row fails in prep). A path outside the root is refused."""
    name = entry.name.replace("\\", "/")
    root_abs = os.path.abspath(root)
    where = f"{label_file}:{entry.lineno}"
    bases = [root_abs] if os.path.isabs(name) else [root_abs, os.path.dirname(os.path.abspath(label_file))]
    candidates = [_inside(root_abs, os.path.normpath(os.path.join(b, name))) for b in bases]
    inside = [c for c in candidates if c is not None]
    if not inside:
        raise JobError("dataset.labels", f"{where}: {entry.name!r} lies outside dataset.root {root!r}; a label "
                       "file may only name images under the root")
    for c in inside:
        if c in on_disk or os.path.lexists(os.path.join(root_abs, c)):
            return c
    matches = by_base.get(name.rsplit("/", 1)[-1], [])
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise JobError("dataset.labels", f"{where}: {entry.name!r} matches {len(matches)} files under the root "
                       f"({', '.join(matches[:3])}); write the path relative to dataset.root")
    existing_dir = [c for c in inside if os.path.isdir(os.path.join(root_abs, os.path.dirname(c) or "."))]
    return (existing_dir or inside)[0]


def resolve_label_file(path: str, root: str, paths) -> dict[str, tuple[int, int]]:
    """{sample path: (class index, line number)} of a label file; an image listed twice is refused."""
    on_disk = set(paths)
    by_base = _basename_index(paths)
    out: dict[str, tuple[int, int]] = {}
    for entry in read_label_file(path):
        rel = resolve_entry_path(entry, path, root, on_disk, by_base)
        if rel in out:
            raise JobError("dataset.labels", f"{path}:{entry.lineno}: {rel!r} is listed twice (lines "
                           f"{out[rel][1]} and {entry.lineno}); each image must appear once")
        out[rel] = (entry.label, entry.lineno)
    return out


# ---------------------------------------------------------------- class folders and the resolver

def check_label_range(samples, num_outputs: int, source: str, lines: dict | None) -> None:
    """JobError naming the first sample (and its label-file line) whose class the model cannot output."""
    bad = next((s for s in samples if s.label is not None and s.label >= num_outputs), None)
    if bad is None:
        return
    where = f"{source.removeprefix('label file ')}:{lines[bad.path]}: " if lines and bad.path in lines else \
        f"{bad.path} ({source}): "
    raise JobError("dataset.labels", f"{where}class {bad.label} is outside the model's {num_outputs} outputs "
                   f"(0-{num_outputs - 1}); use labels of the model's classes")


def folder_classes(root: str, folders: list[str],
                   subset: tuple | None = None) -> tuple[dict[str, int], str, list[str]]:
    """({folder: class index}, source, notes) for class folders: decimal names are class indices
    (ImageNet-V2), ImageNet synsets their sorted-synset index, anything else its sorted position, or,
    with a class subset, the subset's class at that position (timm's --valid-labels convention)."""
    if folders and all(NUMERIC_RE.match(f) for f in folders):
        bad = [f for f in folders if int(f) >= NUM_CLASSES]
        if bad:
            raise JobError("dataset.root", f"{os.path.join(root, bad[0])}: numeric class folder {bad[0]!r} is "
                           f"outside 0-{NUM_CLASSES - 1}; numeric folder names are class indices")
        return {f: int(f) for f in folders}, "numeric class folders (folder name = class index)", []
    index = synset_index()
    if all(f in index for f in folders):
        return {f: index[f] for f in folders}, "ImageNet synset folders", []
    names = sorted(folders)
    if subset is None:
        note = (f"class folders are neither ImageNet synsets nor class indices: class = position in the sorted "
                f"list of {len(folders)} folder names, which may not match the model's classes")
        return {f: i for i, f in enumerate(names)}, SORTED_FOLDERS_SOURCE, [note]
    if len(subset) != len(names):
        raise JobError("dataset.class_subset", f"lists {len(subset)} classes but dataset.root has {len(names)} class "
                       "folders that are neither synsets nor class indices; those are mapped in sorted order onto "
                       "the subset's classes, so the counts must match (or name the folders by synset)")
    note = (f"class folders are neither ImageNet synsets nor class indices: the {len(names)} folders, sorted by "
            "name, are the subset's classes in class-index order")
    return {f: subset[i] for i, f in enumerate(names)}, SORTED_FOLDERS_SOURCE + " onto dataset.class_subset", [note]


@dataclass(frozen=True)
class Labels:
    """The resolved labels of a dataset, for discover and the report."""

    source: str
    by_path: dict  # sample path -> class index, for the labelled samples (may name listed, missing files)
    disagree: tuple[str, ...] = ()  # paths whose class folder differs from the built-in ground truth
    notes: tuple[str, ...] = ()
    lines: dict | None = None  # sample path -> line of the label file that labels it


# The start of the warning below (a job whose images are generated, `dataset.generate`, drops it).
NOT_GROUND_TRUTH = "WARNING: images named like ILSVRC2012 val images"


def _against_ground_truth(listed: dict) -> tuple[str, ...]:
    """A warning when a label file gives files named like ILSVRC2012 val images other classes than the built-in
    ground truth: then the file, or the images, are not ILSVRC2012 val's (and ReaL figures mean nothing)."""
    gt = builtin_val_labels()
    named = [(p, c) for p, c in listed.items() if (k := val_number(p)) and k <= len(gt)]
    differ = [p for p, c in named if gt[val_number(p) - 1] != c]
    if not differ:
        return ()
    return (f"{NOT_GROUND_TRUTH}: {len(differ)} of {len(named)} have another class in the label file than in the built-in ground truth (first: {differ[0]}): if they are ILSVRC2012 val "
            "images, the label file is wrong (another class order?) and so is the accuracy; if they are other "
            "images named that way, set dataset.real_labels: none",)


def resolve_labels(root: str, paths: list[str], folder_class: dict[str, int] | None, folder_source: str,
                   labels: str | None) -> Labels:
    """One precedence: `labels: none` = unlabelled; a label file; class folders (checked against the
    built-in ground truth); the built-in ILSVRC2012 val ground truth for files named like val images."""
    if labels == OFF:
        return Labels("none (dataset.labels: none)", {})
    if labels:
        entries = resolve_label_file(labels, root, paths)
        listed = {p: c for p, (c, _) in entries.items()}
        missing = sum(1 for p in paths if p not in listed)
        notes = (f"{missing} images are not in the label file: unlabelled",) if missing else ()
        notes += _against_ground_truth(listed)
        return Labels(f"label file {labels}", listed, (), notes, {p: n for p, (_, n) in entries.items()})
    gt = builtin_val_labels()
    if folder_class is not None:
        by_path = {p: folder_class[p.split("/", 1)[0]] for p in paths}
        checked = not folder_source.startswith(SORTED_FOLDERS_SOURCE)  # positions are not ImageNet classes
        disagree = tuple(p for p, c in by_path.items() if checked and (k := val_number(p)) and gt[k - 1] != c)
        return Labels(folder_source, by_path, disagree)
    by_path = {p: gt[k - 1] for p in paths if (k := val_number(p))}
    if not by_path:
        return Labels("none", {})
    unnamed = len(paths) - len(by_path)
    notes = (f"{unnamed} images are not named ILSVRC2012_val_NNNNNNNN: unlabelled",) if unnamed else ()
    return Labels(BUILTIN_SOURCE, by_path, (), notes)
