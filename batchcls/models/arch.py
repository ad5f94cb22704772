"""The 12 timm DLA architectures as data: a registry of `DlaArch` cfgs, looked up by timm's model name."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from batchcls.errors import BatchclsError

BLOCKS = ("basic", "bottleneck", "bottle2neck")

# timm's DlaBottleneck / DlaBottle2neck halve the grouped width (their class attribute `expansion = 2`).
BOTTLENECK_EXPANSION = 2
# torch.nn.BatchNorm2d's default, which every timm DLA BatchNorm uses.
BN_EPS = 1e-5


@dataclass(frozen=True)
class DlaArch:
    """One DLA variant, with the numbers timm's `@register_model` functions pass to `DLA(...)`.

    levels: convs in level0/level1, then tree depth of level2..level5.
    channels: output channels of base_layer+level0, level1, ..., level5.
    block: 'basic' (DlaBasic), 'bottleneck' (DlaBottleneck, an X block when cardinality > 1)
        or 'bottle2neck' (DlaBottle2neck, Res2Net/Res2NeXt).
    cardinality, base_width: grouped-conv settings of the bottleneck blocks (64 = plain ResNet width).
    scale: Res2Net splits; only used by 'bottle2neck' (timm's default, never overridden for DLA).
    residual_root: timm's `shortcut_root`; the aggregation node adds its first child before the ReLU.
    """

    name: str
    levels: tuple[int, int, int, int, int, int]
    channels: tuple[int, int, int, int, int, int]
    block: str
    cardinality: int = 1
    base_width: int = 64
    scale: int = 4
    residual_root: bool = False
    num_classes: int = 1000

    def __post_init__(self) -> None:
        # A malformed registry entry is a programming error, not user input.
        assert self.block in BLOCKS, self.block
        assert len(self.levels) == 6 and len(self.channels) == 6, self.name

    def mid_channels(self, out_channels: int) -> int:
        """Grouped 3x3 width of a bottleneck block with `out_channels` outputs (timm's `mid_planes`).

        timm computes int(floor(out * (base_width / 64)) * cardinality) // 2 in floats; every
        base_width used here (4, 28, 64) makes base_width / 64 exact, so integer division agrees.
        """
        return (out_channels * self.base_width // 64) * self.cardinality // BOTTLENECK_EXPANSION


_WIDE = (16, 32, 128, 256, 512, 1024)
_SLIM = (16, 32, 64, 64, 128, 256)

ARCHS: dict[str, DlaArch] = {
    a.name: a
    for a in (
        DlaArch("dla34", (1, 1, 1, 2, 2, 1), (16, 32, 64, 128, 256, 512), "basic"),
        DlaArch("dla46_c", (1, 1, 1, 2, 2, 1), _SLIM, "bottleneck"),
        DlaArch("dla46x_c", (1, 1, 1, 2, 2, 1), _SLIM, "bottleneck", cardinality=32, base_width=4),
        DlaArch("dla60", (1, 1, 1, 2, 3, 1), _WIDE, "bottleneck"),
        DlaArch("dla60x", (1, 1, 1, 2, 3, 1), _WIDE, "bottleneck", cardinality=32, base_width=4),
        DlaArch("dla60x_c", (1, 1, 1, 2, 3, 1), _SLIM, "bottleneck", cardinality=32, base_width=4),
        DlaArch("dla102", (1, 1, 1, 3, 4, 1), _WIDE, "bottleneck", residual_root=True),
        DlaArch(
            "dla102x", (1, 1, 1, 3, 4, 1), _WIDE, "bottleneck",
            cardinality=32, base_width=4, residual_root=True,
        ),
        DlaArch(
            "dla102x2", (1, 1, 1, 3, 4, 1), _WIDE, "bottleneck",
            cardinality=64, base_width=4, residual_root=True,
        ),
        DlaArch("dla169", (1, 1, 2, 3, 5, 1), _WIDE, "bottleneck", residual_root=True),
        DlaArch("dla60_res2net", (1, 1, 1, 2, 3, 1), _WIDE, "bottle2neck", cardinality=1, base_width=28),
        DlaArch("dla60_res2next", (1, 1, 1, 2, 3, 1), _WIDE, "bottle2neck", cardinality=8, base_width=4),
    )
}


def list_archs() -> tuple[str, ...]:
    """Names of all registered architectures, in the order of the published table."""
    return tuple(ARCHS)


def get_arch(name: str | DlaArch) -> DlaArch:
    """The cfg registered under `name` (e.g. 'dla34'); a `DlaArch` is returned as is."""
    if isinstance(name, DlaArch):
        return name
    if name in ARCHS:
        return ARCHS[name]
    close = difflib.get_close_matches(str(name), ARCHS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise BatchclsError(
        f"'{name}' is not a known DLA architecture; allowed: {', '.join(ARCHS)}{hint}"
    )
