"""The zoo table CLI (`python -m batchcls.models`): our counts beside the published references."""

from __future__ import annotations

import numpy as np

from batchcls.models import list_archs
from batchcls.models import table


def test_table_prints_all_archs(capsys):
    assert table.main([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["arch", "params(M)", "MACs(G)", "FLOPs(G)"]
    assert [line.split()[0] for line in lines[1:]] == list(list_archs())
    dla34 = lines[1].split()
    assert dla34[1:4] == ["15.742", "3.060", "6.845"]


def test_table_rows_leave_missing_sources_blank():
    rows = {r["arch"]: r for r in table.zoo_table()}
    assert rows["dla60_res2net"]["ucbdrive_top1"] is None and rows["dla46x_c"]["ppcls_top1"] is None
    assert rows["dla34"]["ppcls_top1"] == 76.03
    assert np.isclose(rows["dla169"]["params_m"], 53.38972)
