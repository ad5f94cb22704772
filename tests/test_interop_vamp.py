"""The vendor's files in and out: vamp export (image2npz's npz + datalist) through Ray, vamp import of
--path_output folders, result.txt both ways, the one-line errors, and the vendor evaluator's quirks."""

from __future__ import annotations

import json
import os

import cv2
import numpy as np
import pytest

from batchcls.config import load_job
from batchcls.data.discover import imagenet_synsets
from batchcls.errors import BatchclsError
from batchcls.importresult import import_result
from batchcls.interop.dump import write_run_result_txt
from batchcls.interop.vamp import read_result_txt, write_result_txt
from batchcls.schema import read_predictions
from batchcls.synthetic import generate_imagenet_folder
from batchcls.vampcli import export, import_outputs, main as vamp_main

from conftest import write_job

pytestmark = pytest.mark.usefixtures("ray_local")


def vendor_eval_topk(result_txt: str) -> tuple[float, float]:
    """eval_topk.py's logic, line for line: truth = the synset folder's name in `imagenet_info` (the
    WordNet names of imagenet_synsets.txt), prediction = the text after the fourth ':'; equal strings hit."""
    from importlib import resources

    text = resources.files("batchcls").joinpath("resources/imagenet_synsets.txt").read_text()
    label_info = dict(line.split(" ", 1) for line in text.splitlines() if line.strip())

    def is_match_class(line):
        line = line.rstrip("\n")
        if len(line) == 0:
            return False
        return label_info[line.split("/")[-2]] == line.split(":")[4].strip()

    lines = open(result_txt).readlines()
    total = top1 = top5 = 0
    for i in range(0, len(lines), 5):
        total += 1
        matches = [is_match_class(line) for line in lines[i:i + 5]]
        if matches[0]:
            top1 += 1
            top5 += 1
        elif True in matches:
            top5 += 1
    return top1 / total * 100, top5 / total * 100


@pytest.fixture(scope="module")
def folders(tmp_path_factory, tiny_onnx):
    tmp = tmp_path_factory.mktemp("vamp")
    root = str(tmp / "val")
    generate_imagenet_folder(root, 12, classes=3, seed=4, layout="folders", small=True)
    synset = sorted(os.listdir(root))[0]
    open(os.path.join(root, synset, "ILSVRC2012_val_90000001.JPEG"), "wb").write(b"not a jpeg\n" * 4)
    job = load_job(write_job(tmp, model={"name": "dla34", "source": "timm", "onnx": tiny_onnx},
                             dataset={"root": root}, runtime={"progress": False},
                             output={"dir": str(tmp / "out")}))
    return tmp, job


@pytest.fixture(scope="module")
def exported(folders):
    tmp, job = folders
    out = str(tmp / "npz")
    counts = export(job, out, progress=False)
    return out, counts


def test_export_writes_what_image2npz_writes(folders, exported):
    tmp, job = folders
    out, counts = exported
    assert counts == {"images": 13, "written": 12, "failed": 1}
    lines = open(os.path.join(out, "datalist.txt")).read().splitlines()
    images = sorted(os.path.join(d, f) for d in os.listdir(job.dataset.root)
                    for f in os.listdir(os.path.join(job.dataset.root, d)) if "9000" not in f)
    assert lines == [os.path.abspath(os.path.join(out, p[:-5] + ".npz")) for p in images]  # sample order, absolute
    for line, rel in zip(lines, images):
        with np.load(line) as z:
            assert z.files == ["input_0"]
            arr = z["input_0"]
        bgr = cv2.imread(os.path.join(job.dataset.root, rel))
        assert np.array_equal(arr, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))
        assert line.split("/")[-2] == rel.split("/")[0]  # the synset folder, which eval_topk.py reads
    assert "ILSVRC2012_val_90000001.JPEG" in open(os.path.join(out, "export_errors.txt")).read()


def test_export_cli_prints_the_vamp_command(folders, exported, capsys):
    tmp, job = folders
    assert vamp_main(["export", job.path, "-o", exported[0], "--no-progress"]) == 0  # a rerun keeps the files
    out = capsys.readouterr().out
    assert "12 of 13 images written" in out
    assert "vamp -m PATH/TO/COMPILED/mod --vdsp_params " in out and "timm-dla34-vdsp_params.json" in out
    assert f"--datalist {os.path.abspath(exported[0])}/datalist.txt" in out and "batchcls vamp import" in out


def _fake_vamp(out: str, lines: list[str], labels: list[int], seed: int = 0, probs: bool = False) -> str:
    """What vamp --path_output leaves: one npz per input, zero-padded index names, output_0 (1, 1000) float16;
    every other image's top-1 is its label."""
    folder = os.path.join(out, "output")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, label in enumerate(labels):
        x = rng.standard_normal(1000).astype(np.float32)
        if i % 2 == 0:
            x[label] = x.max() + 1
        if probs:
            x = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        np.savez(os.path.join(folder, f"{i:06d}.npz"), output_0=x[None].astype(np.float16))
    return folder


def test_import_pairs_by_sorted_name_and_reports(folders, exported, tmp_path, capsys):
    tmp, job = folders
    out, _ = exported
    lines = open(os.path.join(out, "datalist.txt")).read().splitlines()
    synsets = imagenet_synsets()
    labels = [synsets.index(line.split("/")[-2]) for line in lines]
    outputs = _fake_vamp(str(tmp_path), lines, labels, probs=True)
    logs = []
    txt = str(tmp_path / "result.txt")
    datalist = os.path.join(out, "datalist.txt")
    assert vamp_main(["import", job.path, "--outputs", outputs, "--result-txt", txt]) == 2  # no datalist beside it
    assert f"--datalist: cannot read '{tmp_path}/datalist.txt'" in capsys.readouterr().err
    assert vamp_main(["import", job.path, "--outputs", outputs, "--datalist", datalist, "--result-txt", txt]) == 0
    assert "assumed probs" in capsys.readouterr().out
    metrics = json.load(open(os.path.join(job.output.dir, "metrics.json")))
    rows = read_predictions(job.output.dir).to_pylist()
    assert len(rows) == 13 and metrics["failed"] == 1 and metrics["labelled"] == 12
    ok = [r for r in rows if r["error"] is None]
    scores = [np.load(os.path.join(outputs, f"{i:06d}.npz"))["output_0"][0].astype(np.float32) for i in range(12)]
    for r, s in zip(ok, scores):  # rows in sample order = datalist order = sorted output names
        assert r["topk_ids"] == np.argsort(-s, kind="stable")[:5].tolist()
        assert np.allclose(r["topk_probs"], s[r["topk_ids"]], atol=1e-6)  # probabilities kept, not softmaxed
    hits = [r["topk_ids"][0] == r["label"] for r in ok]
    assert metrics["top1"] == pytest.approx(100 * np.mean(hits)) and 0 < metrics["top1"] < 100
    assert len(open(txt).read().splitlines()) == 60
    write_run_result_txt(job.output.dir, job.dataset.root, txt, log=logs.append)  # the same file again
    assert logs == ["result.txt: 12 images written to " + txt + "; 1 failed images left out (eval_topk.py cannot count them)"]
    assert vendor_eval_topk(txt)[0] == pytest.approx(metrics["top1"])  # no ATM or crane among these classes
    assert [r["topk_ids"] for r in read_result_txt(txt)] == [r["topk_ids"] for r in ok]


def test_import_errors_are_one_line(folders, exported, tmp_path):
    tmp, job = folders
    out, _ = exported
    datalist = os.path.join(out, "datalist.txt")
    lines = open(datalist).read().splitlines()
    folder = _fake_vamp(str(tmp_path / "a"), lines, [0] * 12)
    os.unlink(os.path.join(folder, "000011.npz"))
    with pytest.raises(BatchclsError, match="holds 11 npz files but the datalist has 12 lines"):
        import_outputs(job, folder, datalist)
    np.savez(os.path.join(folder, "000011.npz"), logits=np.zeros((1, 1000), np.float16))
    with pytest.raises(BatchclsError, match=r"000011.npz: no key 'output_0' \(has logits\)"):
        import_outputs(job, folder, datalist)
    np.savez(os.path.join(folder, "000011.npz"), output_0=np.zeros((2, 1000), np.float16))
    with pytest.raises(BatchclsError, match=r"000011.npz: output_0 has shape \(2, 1000\); expected \(1, 1000\)"):
        import_outputs(job, folder, datalist)
    open(os.path.join(folder, "notes.txt"), "w").write("x")
    with pytest.raises(BatchclsError, match="'notes.txt', which is not one of vamp's npz outputs"):
        import_outputs(job, folder, datalist)


def _result_txt(path, images):
    rows = [{"path": rel, "label": label, "topk_ids": ids, "topk_probs": [0.5, 0.2, 0.1, 0.1, 0.1], "error": None}
            for rel, label, ids in images]
    write_result_txt(path, "/data/val", rows)


def test_vendor_evaluator_quirks_against_batchcls_top1(tmp_path):
    """Index 480's name differs between imagenet.txt and imagenet_info: a right ATM never counts for
    eval_topk.py. The two 'crane' classes are one string: the wrong crane counts as right."""
    synsets = imagenet_synsets()
    atm, crane_bird, crane_machine = 480, synsets.index("n02012849"), synsets.index("n03126707")
    assert synsets[atm] == "n02977058" and (crane_bird, crane_machine) == (134, 517)
    txt = str(tmp_path / "result.txt")
    _result_txt(txt, [(f"{synsets[atm]}/a.JPEG", atm, [atm, 1, 2, 3, 4]),                       # right
                      (f"{synsets[crane_machine]}/b.JPEG", crane_machine, [crane_bird, 1, 2, 3, 4]),  # wrong
                      (f"{synsets[7]}/c.JPEG", 7, [7, 1, 2, 3, 4])])                              # right
    vendor_top1, vendor_top5 = vendor_eval_topk(txt)
    assert vendor_top1 == pytest.approx(200 / 3) and vendor_top5 == pytest.approx(200 / 3)  # ATM miss, crane hit
    metrics = import_result(txt, str(tmp_path / "dump"), "dla34", "timm", False, log=lambda m: None)
    assert metrics["top1"] == pytest.approx(200 / 3) and metrics["labelled"] == 3
    rows = read_predictions(str(tmp_path / "dump")).to_pylist()
    assert [r["topk_ids"][0] == r["label"] for r in rows] == [True, False, True]  # ATM hit, crane miss


def test_result_txt_reader_errors(tmp_path):
    txt = tmp_path / "result.txt"
    _result_txt(str(txt), [("n01440764/a.JPEG", 0, [0, 1, 2, 3, 4])])
    text = txt.read_text()
    txt.write_text(text + text)  # the vendor script appends to an old result.txt
    with pytest.raises(BatchclsError, match="line 6: .*a.JPEG appears again .*appends to result.txt"):
        read_result_txt(str(txt))
    txt.write_text(text.replace("top-3", "top-7"))
    with pytest.raises(BatchclsError, match="line 4: expected '<path>: Relay top-3"):
        read_result_txt(str(txt))
    txt.write_text("\n".join(text.splitlines()[:3]) + "\n")
    with pytest.raises(BatchclsError, match="the last image has 3 lines"):
        read_result_txt(str(txt))
