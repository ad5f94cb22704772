"""The DLA topology, walked once for every consumer: ONNX emission, shapes, counts and weight calibration."""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from batchcls.models.arch import DlaArch, get_arch


class Visitor(Protocol):
    """The operations a DLA is made of; each returns the value of its output.

    Values are opaque to the walk (an ONNX value name, a spatial size, a numpy map, ...): each consumer
    implements this protocol, so the topology itself exists only in this module.
    """

    def input(self) -> Any: ...

    def conv_bn(
        self, x: Any, conv: str, bn: str, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1
    ) -> Any:
        """Bias-free `conv`.weight (cout, cin/groups, k, k), padding k//2, then BatchNorm2d `bn`."""

    def relu(self, x: Any) -> Any: ...

    def add(self, a: Any, b: Any) -> Any: ...

    def concat(self, xs: Sequence[Any], channels: Sequence[int]) -> Any: ...

    def split(self, x: Any, parts: int, width: int) -> list[Any]: ...

    def max_pool(self, x: Any, k: int) -> Any:
        """Kernel k, stride k, no padding (timm's `DlaTree.downsample`)."""

    def avg_pool(self, x: Any, stride: int, channels: int) -> Any:
        """Kernel 3, padding 1, padded zeros counted (timm's Res2Net `pool`)."""

    def head(self, x: Any, fc: str, cin: int, classes: int) -> Any:
        """Global average pool, 1x1 conv `fc` with bias, flatten to (N, classes)."""


def walk(arch: DlaArch | str, v: Visitor) -> Any:
    """Call `v` along the whole network and return the value of the logits.

    Mirrors timm's `DLA.forward` (base_layer, level0/level1 conv stems, `DlaTree`s of blocks and
    `DlaRoot`s, head) in its order, naming each tensor as timm's `state_dict` does.
    """
    arch = get_arch(arch)
    c = arch.channels
    x = v.relu(v.conv_bn(v.input(), "base_layer.0", "base_layer.1", 3, c[0], 7))
    x = _conv_level(v, x, "level0", c[0], c[0], arch.levels[0], 1)
    x = _conv_level(v, x, "level1", c[0], c[1], arch.levels[1], 2)
    for i in range(2, 6):
        # level2 has no level_root in timm: its input is not an aggregation child.
        x = _tree(v, arch, x, f"level{i}", arch.levels[i], c[i - 1], c[i], 2, i > 2, 0, None)
    return v.head(x, "fc", c[5], arch.num_classes)


def _conv_level(v: Visitor, x: Any, name: str, cin: int, cout: int, convs: int, stride: int) -> Any:
    for i in range(convs):
        # nn.Sequential of (conv, bn, relu) triples: the conv of step i sits at index 3 * i.
        x = v.relu(v.conv_bn(x, f"{name}.{3 * i}", f"{name}.{3 * i + 1}", cin, cout, 3, stride if i == 0 else 1))
        cin = cout
    return x


def _tree(
    v: Visitor, arch: DlaArch, x: Any, name: str, levels: int, cin: int, cout: int,
    stride: int, level_root: bool, root_dim: int, children: list[tuple[Any, int]] | None,
) -> Any:
    children = [] if children is None else children
    root_dim = root_dim or 2 * cout
    if level_root:
        root_dim += cin
    bottom = x
    if stride > 1 and (levels == 1 or level_root):
        # timm computes the pooled input for every tree; only the leaf's shortcut and a level root use it.
        bottom = v.max_pool(x, stride)
    if level_root:
        children.append((bottom, cin))
    if levels > 1:
        x1 = _tree(v, arch, x, f"{name}.tree1", levels - 1, cin, cout, stride, False, 0, None)
        children.append((x1, cout))
        return _tree(v, arch, x1, f"{name}.tree2", levels - 1, cout, cout, 1, False, root_dim + cout, children)
    shortcut = bottom
    if cin != cout:
        shortcut = v.conv_bn(bottom, f"{name}.project.0", f"{name}.project.1", cin, cout, 1)
    x1 = _block(v, arch, x, f"{name}.tree1", cin, cout, stride, shortcut)
    x2 = _block(v, arch, x1, f"{name}.tree2", cout, cout, 1, x1)
    return _root(v, arch, [(x2, cout), (x1, cout), *children], f"{name}.root", root_dim, cout)


def _root(v: Visitor, arch: DlaArch, children: list[tuple[Any, int]], name: str, root_dim: int, cout: int) -> Any:
    values = [c for c, _ in children]
    widths = [w for _, w in children]
    assert sum(widths) == root_dim, (name, widths, root_dim)
    y = v.conv_bn(v.concat(values, widths), f"{name}.conv", f"{name}.bn", root_dim, cout, 1)
    if arch.residual_root:
        y = v.add(y, values[0])
    return v.relu(y)


def _block(v: Visitor, arch: DlaArch, x: Any, name: str, cin: int, cout: int, stride: int, shortcut: Any) -> Any:
    if arch.block == "basic":
        y = v.relu(v.conv_bn(x, f"{name}.conv1", f"{name}.bn1", cin, cout, 3, stride))
        y = v.conv_bn(y, f"{name}.conv2", f"{name}.bn2", cout, cout, 3)
    elif arch.block == "bottleneck":
        mid, g = arch.mid_channels(cout), arch.cardinality
        y = v.relu(v.conv_bn(x, f"{name}.conv1", f"{name}.bn1", cin, mid, 1))
        y = v.relu(v.conv_bn(y, f"{name}.conv2", f"{name}.bn2", mid, mid, 3, stride, g))
        y = v.conv_bn(y, f"{name}.conv3", f"{name}.bn3", mid, cout, 1)
    else:
        y = _bottle2neck(v, arch, x, name, cin, cout, stride)
    return v.relu(v.add(y, shortcut))


def _bottle2neck(v: Visitor, arch: DlaArch, x: Any, name: str, cin: int, cout: int, stride: int) -> Any:
    width, scale, g = arch.mid_channels(cout), arch.scale, arch.cardinality
    y = v.relu(v.conv_bn(x, f"{name}.conv1", f"{name}.bn1", cin, width * scale, 1))
    parts = v.split(y, scale, width) if scale > 1 else [y]
    # A strided block cannot add its previous branch (different resolution): each split goes alone,
    # and the last one is pooled instead of convolved (Res2Net's 'stage' type).
    is_first = stride > 1
    outs = []
    sp = parts[0]
    for i in range(max(1, scale - 1)):
        sp = parts[i] if i == 0 or is_first else v.add(sp, parts[i])
        sp = v.relu(v.conv_bn(sp, f"{name}.convs.{i}", f"{name}.bns.{i}", width, width, 3, stride, g))
        outs.append(sp)
    if scale > 1:
        outs.append(v.avg_pool(parts[-1], stride, width) if is_first else parts[-1])
    y = v.concat(outs, [width] * len(outs)) if len(outs) > 1 else outs[0]
    return v.conv_bn(y, f"{name}.conv3", f"{name}.bn3", width * scale, cout, 1)


def ucbdrive_unused_projections(arch: DlaArch | str) -> dict[str, tuple[int, ...]]:
    """Tensors that ucbdrive's original `Tree` creates but never uses, with their shapes.

    ucbdrive builds a 1x1 projection in every tree whose channels change, also in trees of depth > 1
    whose children recompute their own shortcut; timm keeps it only at depth 1. Their checkpoints (and
    the seed table's ucbdrive parameter counts) include these tensors.
    """
    arch = get_arch(arch)
    extra: dict[str, tuple[int, ...]] = {}
    for i in range(2, 6):
        name, levels, cin, cout = f"level{i}", arch.levels[i], arch.channels[i - 1], arch.channels[i]
        # Only the tree1 chain of a level sees cin != cout; every tree2 maps cout to cout.
        while levels > 1 and cin != cout:
            extra[f"{name}.project.0.weight"] = (cout, cin, 1, 1)
            for field in ("weight", "bias", "running_mean", "running_var"):
                extra[f"{name}.project.1.{field}"] = (cout,)
            name, levels = f"{name}.tree1", levels - 1
    return extra
