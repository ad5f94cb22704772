"""Architecture registry and counts: params, MACs and FLOPs against the published table and timm's own counts."""

from __future__ import annotations

import os

import numpy as np
import pytest

from batchcls.errors import BatchclsError
from batchcls.models import (
    count_macs,
    count_params,
    count_thop_ops,
    get_arch,
    list_archs,
    param_shapes,
    table_flops_g,
)
from batchcls.models.shapes import check_input_size, is_trainable
from batchcls.models.walk import ucbdrive_unused_projections
from batchcls.zoo import find_zoo_row, zoo_models

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "dla_parity", "logits.npz")


@pytest.fixture(scope="module")
def timm_counts():
    with np.load(FIXTURE) as f:
        return {k: f[k].item() for k in f.files if k.endswith(("__timm_params", "__conv_macs", "__thop_ops"))}


def test_registry_is_the_table():
    assert list_archs() == zoo_models()
    assert len(list_archs()) == 12


def test_get_arch_unknown_name_lists_allowed_and_suggests():
    with pytest.raises(BatchclsError, match=r"'dla35' is not a known.*allowed: dla34, dla46_c.*did you mean 'dla34'"):
        get_arch("dla35")


def test_get_arch_passes_cfg_through():
    cfg = get_arch("dla102x2")
    assert get_arch(cfg) is cfg
    assert (cfg.cardinality, cfg.base_width, cfg.residual_root, cfg.block) == (64, 4, True, "bottleneck")


@pytest.mark.parametrize("arch", list_archs())
def test_params_equal_timm_row(arch):
    assert round(count_params(arch) / 1e6, 3) == find_zoo_row(arch, "timm").params_m


@pytest.mark.parametrize("arch", list_archs())
def test_counts_equal_timms_measured_counts(arch, timm_counts):
    # Measured with torch by tools/timm_parity.py: sum(p.numel()), Conv2d hooks and thop.profile.
    assert count_params(arch) == timm_counts[f"{arch}__timm_params"]
    assert count_macs(arch) == timm_counts[f"{arch}__conv_macs"]
    assert count_thop_ops(arch) == timm_counts[f"{arch}__thop_ops"]


@pytest.mark.parametrize("arch", list_archs())
def test_table_flops_are_thop_ops_times_2_over_0_9e9(arch):
    flops_g = find_zoo_row(arch, "timm").flops_g
    assert round(table_flops_g(arch), 3) == flops_g
    # True FLOPs are ~2 x MACs; the column is higher by thop's BatchNorm/pool ops (0.7-4 %) and the 1/0.9 (11 %).
    assert 1.10 < flops_g * 1e9 / (2 * count_macs(arch)) < 1.17


@pytest.mark.parametrize("arch", [a for a in list_archs() if find_zoo_row(a, "ucbdrive")])
def test_ucbdrive_params_are_timms_plus_unused_projections(arch):
    extra = sum(int(np.prod(s)) for k, s in ucbdrive_unused_projections(arch).items() if is_trainable(k))
    assert extra > 0
    assert round((count_params(arch) + extra) / 1e6, 3) == find_zoo_row(arch, "ucbdrive").params_m


def test_param_shapes_use_timm_names():
    shapes = param_shapes("dla34")
    assert shapes["base_layer.0.weight"] == (16, 3, 7, 7)
    assert shapes["level1.0.weight"] == (32, 16, 3, 3)
    assert shapes["level2.project.0.weight"] == (64, 32, 1, 1)
    assert shapes["level3.tree1.tree1.conv1.weight"] == (128, 64, 3, 3)
    assert shapes["level3.tree2.root.conv.weight"] == (128, 448, 1, 1)
    assert shapes["fc.weight"] == (1000, 512, 1, 1)
    r2 = param_shapes("dla60_res2next")
    assert r2["level2.tree1.convs.2.weight"] == (32, 4, 3, 3)
    assert "level2.tree1.convs.3.weight" not in r2


def test_macs_scale_with_input_area():
    assert count_macs("dla34", 448) == pytest.approx(4 * count_macs("dla34", 224), rel=0.01)
    assert count_macs("dla34", (224, 448)) == count_macs("dla34", (448, 224))


@pytest.mark.parametrize("size", [100, 0, (224, 200), (224,)])
def test_input_size_must_be_multiple_of_32(size):
    with pytest.raises(BatchclsError, match="multiples of 32"):
        check_input_size(size)


@pytest.mark.parametrize("arch", [a for a in list_archs() if find_zoo_row(a, "ucbdrive")])
def test_ucbdrive_flops_count_its_unused_projections_too(arch):
    # ucbdrive's Tree computes (then drops) its depth > 1 projections, so thop counts them; its head is
    # AvgPool2d(7) (1 op per output) where timm's adaptive pool costs 49 + 1 per channel.
    extra = -49 * get_arch(arch).channels[-1]
    for key, shape in ucbdrive_unused_projections(arch).items():
        if key.endswith("project.0.weight"):
            cout, cin = shape[:2]
            side = 224 >> int(key[len("level")])  # the tree's pooled input: level i is at 224 / 2**i
            extra += side * side * cout * (cin + 4)
    assert round((count_thop_ops(arch) + extra) * 2 / 0.9e9, 3) == find_zoo_row(arch, "ucbdrive").flops_g
