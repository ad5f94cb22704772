"""The vendor's npz datalist, --path_output and result.txt formats, in and out (numpy/pyarrow only).

- vamp's input (what the vendor's image2npz.py writes): one uncompressed `.npz` per image, key
  `input_0`, uint8 CHW RGB at full resolution, in a folder named after the image's synset; a
  datalist of their absolute paths, one a line.
- vamp's output (`--path_output`): one `.npz` per input, key `output_0`, shape (1, C), paired with
  the datalist by sorted file name only (as the vendor's vamp_npz_decode.py pairs them).
- result.txt (what eval_topk.py reads): five lines per image, ranks 0..4:
  `<path>: Relay top-<k> id: <i>, prob: <p:.8f>, class name: <name>`, the synset folder in the path.
"""

from __future__ import annotations

import os
import re
import zipfile

import numpy as np

from ..data.discover import Sample, imagenet_class_names, imagenet_synsets
from ..errors import BatchclsError, SampleError
from ..transforms.decode import decode_cv2_bgr, read_bytes

INPUT_KEY = "input_0"
OUTPUT_KEY = "output_0"
DATALIST = "datalist.txt"
EXPORT_ERRORS = "export_errors.txt"
RESULT_TOPK = 5  # eval_topk.py reads the file in chunks of exactly five lines
_LINE = re.compile(r"^(?P<path>[^:]*): (?:Relay )?top-(?P<k>\d+) id: (?P<id>-?\d+), prob: (?P<prob>[^,]+), "
                   r"class name: (?P<name>.*)$")


def export_folder(sample: Sample, root: str) -> str:
    """The synset folder an image's npz goes into: its own class folder, else the synset of its label
    (eval_topk.py takes the truth from this folder), else the dataset folder's name (as image2npz does)."""
    head, _, _ = sample.path.rpartition("/")
    if head:
        return head
    if sample.label is not None:
        return imagenet_synsets()[sample.label]
    return os.path.basename(os.path.abspath(root))


def export_name(sample: Sample, root: str) -> str:
    """`<folder>/<stem>.npz`, relative to the export folder."""
    stem = os.path.splitext(sample.path.rpartition("/")[2])[0]
    return f"{export_folder(sample, root)}/{stem}.npz"


def vendor_input(path: str) -> np.ndarray:
    """What image2npz.py stores for an image: cv2 decode (IMREAD_COLOR), BGR -> RGB, HWC -> CHW, uint8,
    no resize. A file OpenCV cannot decode, or a truncated one, raises SampleError."""
    bgr = decode_cv2_bgr(read_bytes(path), path, None)
    return np.ascontiguousarray(bgr[:, :, ::-1].transpose(2, 0, 1))


def write_input_npz(path: str, chw: np.ndarray) -> None:
    """One uncompressed npz with `input_0`, atomically (temp name with the pid, then rename)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path[:-4]}.tmp{os.getpid()}.npz"
    try:
        np.savez(tmp, **{INPUT_KEY: chw})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def export_chunk(root: str, out_dir: str, samples: list[tuple[int, str, str]]) -> list[tuple[int, str, str]]:
    """Write the npz of each (index, image path relative to root, npz name); returns (index, absolute
    npz path or '', error or ''). An npz already there (an interrupted export) is kept."""
    done = []
    for index, rel, name in samples:
        target = os.path.abspath(os.path.join(out_dir, name))
        try:
            if not os.path.exists(target):
                write_input_npz(target, vendor_input(os.path.join(root, rel)))
            done.append((index, target, ""))
        except SampleError as e:
            done.append((index, "", e.reason))
        except Exception as e:  # noqa: BLE001 - one image's failure is its line in export_errors.txt
            done.append((index, "", f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
    return done


def write_lines(path: str, lines: list[str]) -> None:
    """A text file of `lines`, atomically."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(line + "\n" for line in lines)
    os.replace(tmp, path)


def read_datalist(path: str) -> list[str]:
    """The npz paths of a vamp datalist, one a line (blank lines skipped)."""
    try:
        with open(path, encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise BatchclsError(f"--datalist: cannot read {path!r} ({e.strerror}); pass the datalist given to vamp "
                            "(batchcls vamp export writes DIR/datalist.txt)") from None


def read_outputs(out_dir: str, expected: int) -> np.ndarray:
    """float32 [expected, C] from vamp's `--path_output` folder, in sorted file-name order; one line of
    error for a count that differs from the datalist, a missing key or a wrong shape."""
    try:
        names = sorted(os.listdir(out_dir))
    except OSError as e:
        raise BatchclsError(f"--outputs: cannot list {out_dir!r} ({e.strerror}); pass vamp's --path_output folder") from None
    others = [n for n in names if not n.endswith(".npz")]
    if others:
        raise BatchclsError(f"--outputs: {out_dir!r} holds {others[0]!r}, which is not one of vamp's npz outputs; "
                            "outputs are paired with the datalist by sorted name, so the folder must hold only them")
    if len(names) != expected:
        raise BatchclsError(f"--outputs: {out_dir!r} holds {len(names)} npz files but the datalist has {expected} "
                            "lines; they pair one to one by sorted name: run vamp on this datalist into an empty folder")
    rows = []
    for name in names:
        path = os.path.join(out_dir, name)
        try:
            with np.load(path, allow_pickle=False) as z:
                if OUTPUT_KEY not in z.files:
                    raise BatchclsError(f"--outputs: {path}: no key {OUTPUT_KEY!r} (has {', '.join(z.files) or 'none'}); "
                                        "expected vamp's classification output")
                arr = z[OUTPUT_KEY]
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise BatchclsError(f"--outputs: {path}: not a readable npz ({' '.join(str(e).split())[:120]})") from None
        if arr.ndim not in (1, 2) or (arr.ndim == 2 and arr.shape[0] != 1) or (rows and arr.size != rows[0].size):
            want = f"(1, {rows[0].size})" if rows else "(1, C)"
            raise BatchclsError(f"--outputs: {path}: {OUTPUT_KEY} has shape {tuple(arr.shape)}; expected {want}, "
                                "one row of class scores")
        rows.append(arr.reshape(-1).astype(np.float32))
    if not rows:
        raise BatchclsError(f"--outputs: {out_dir!r} holds no npz files")
    return np.stack(rows)


def looks_like_probs(scores: np.ndarray, tolerance: float = 2e-2) -> bool:
    """Rows >= 0 that sum to 1 (within float16 rounding): a model compiled with a softmax at its end."""
    return bool(scores.size and scores.min() >= 0 and np.all(np.abs(scores.sum(axis=1) - 1) < tolerance))


def result_path(root: str, rel: str, label: int | None) -> str:
    """The image's path as result.txt gives it: absolute, with its synset folder (for a flat folder
    that folder is named after the label, though the file lies directly in the root)."""
    head = rel.rpartition("/")[0]
    if not head and label is not None:
        rel = f"{imagenet_synsets()[label]}/{rel}"
    return os.path.join(os.path.abspath(root), rel)


def result_lines(path: str, ids, probs) -> list[str]:
    """The five lines of one image, as the vendor's scripts write them."""
    if ":" in path:
        raise BatchclsError(f"--result-txt: {path!r} contains ':', which eval_topk.py splits lines on; "
                            "rename the folder or file")
    names = imagenet_class_names()
    return [f"{path}: Relay top-{k} id: {int(i)}, prob: {float(p):.8f}, class name: {names[int(i)]}"
            for k, (i, p) in enumerate(zip(ids[:RESULT_TOPK], probs[:RESULT_TOPK]))]


def write_result_txt(path: str, root: str, rows: list[dict]) -> tuple[int, int]:
    """result.txt for the successful `rows` (dicts with path, label, topk_ids, topk_probs, error);
    returns (images written, failed images left out: eval_topk.py has no way to count them)."""
    lines, failed = [], 0
    for r in rows:
        if r["error"] is not None:
            failed += 1
            continue
        if len(r["topk_ids"]) < RESULT_TOPK:
            raise BatchclsError(f"--result-txt: needs the top {RESULT_TOPK} of each image; set output.topk >= 5")
        lines.extend(result_lines(result_path(root, r["path"], r["label"]), r["topk_ids"], r["topk_probs"]))
    write_lines(path, lines)
    return len(lines) // RESULT_TOPK, failed


def read_result_txt(path: str) -> list[dict]:
    """The images of a result.txt: {'path', 'label' (from the synset folder; None if it is none),
    'topk_ids', 'topk_probs'}; one line of error naming the line that does not fit."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f]
    except OSError as e:
        raise BatchclsError(f"result.txt: cannot read {path!r} ({e.strerror})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    synset_index = {s: i for i, s in enumerate(imagenet_synsets())}
    images, seen = [], {}
    for start in range(0, len(lines), RESULT_TOPK):
        chunk = lines[start:start + RESULT_TOPK]
        parsed = []
        for k, line in enumerate(chunk):
            m = _LINE.match(line)
            if m is None or int(m["k"]) != k or (parsed and m["path"] != parsed[0]["path"]):
                raise BatchclsError(f"{path}: line {start + k + 1}: expected '<path>: Relay top-{k} id: <i>, prob: <p>, "
                                    f"class name: <name>' of {parsed[0]['path'] if parsed else 'a new image'}, "
                                    f"got {line[:120]!r}")
            parsed.append({"path": m["path"], "id": int(m["id"]), "prob": float(m["prob"])})
        if len(chunk) < RESULT_TOPK:
            raise BatchclsError(f"{path}: the last image has {len(chunk)} lines; every image has {RESULT_TOPK}")
        image = parsed[0]["path"]
        if image in seen:
            raise BatchclsError(f"{path}: line {start + 1}: {image} appears again (first at line {seen[image]}); "
                                "the vendor's classification.py appends to result.txt: delete it before a run")
        seen[image] = start + 1
        synset = image.replace("\\", "/").split("/")[-2] if "/" in image else ""
        images.append({"path": image, "label": synset_index.get(synset),
                       "topk_ids": [p["id"] for p in parsed], "topk_probs": [p["prob"] for p in parsed]})
    return images
