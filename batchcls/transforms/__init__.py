"""Image preprocessing profiles (pure numpy/PIL/OpenCV): create_transform(profile), normalize, load_vdsp_params."""

from __future__ import annotations

from batchcls.transforms.base import Transform
from batchcls.transforms.fullres import FullResTransform
from batchcls.transforms.normalize import normalize
from batchcls.transforms.ppcls import PpclsTransform
from batchcls.transforms.timm import TimmTransform
from batchcls.transforms.vdsp import VdspTransform, load_vdsp_params, shipped_vdsp_params

__all__ = ["PROFILES", "Transform", "create_transform", "normalize", "load_vdsp_params", "shipped_vdsp_params",
           "TimmTransform", "VdspTransform", "PpclsTransform"]

# timm: the reference the published accuracies were measured with; vdsp: the VastAI DSP;
# ppcls: PaddleClas's own eval pipeline for its checkpoints.
PROFILES = ("timm", "vdsp", "ppcls")


def create_transform(profile: str, *, input_size: int | None = None, resize_size: int | None = None,
                     crop_pct: float | None = None, interpolation: str | None = None,
                     mean: tuple[float, float, float] | None = None, std: tuple[float, float, float] | None = None,
                     vdsp_params: str | None = None, max_pixels: int | None = None) -> Transform:
    """The Transform of a profile; every None is that profile's default.

    Defaults: timm and ppcls crop 224 after resizing the shorter side to 256 (resize_size, or
    floor(input_size / crop_pct); an explicit resize_size wins), bilinear, ImageNet mean/std.
    vdsp takes its geometry, mean and std from vdsp_params (a JSON path or a shipped name such as
    'timm-dla34'); sizes given anyway must agree with it. max_pixels defaults to PIL's
    Image.MAX_IMAGE_PIXELS. Bad values raise ValueError saying what is allowed.
    """
    common = dict(input_size=input_size, resize_size=resize_size, crop_pct=crop_pct,
                  interpolation=interpolation, mean=mean, std=std, max_pixels=max_pixels)
    if profile == "vdsp":
        if vdsp_params is None:
            raise ValueError("the vdsp profile needs vdsp_params: a vdsp_params JSON path or a shipped name "
                             "such as 'timm-dla34' (see shipped_vdsp_params())")
        return VdspTransform(vdsp_params, **common)
    if vdsp_params is not None:
        raise ValueError(f"vdsp_params is only used by the vdsp profile, not {profile!r}; "
                         "drop it or use profile 'vdsp'")
    if profile == "timm":
        return TimmTransform(**common)
    if profile == "ppcls":
        return PpclsTransform(**common)
    if profile == "fullres":  # not a job profile: what a vacc run with preprocess.on_device sends the card
        return FullResTransform(max_pixels=max_pixels, mean=mean, std=std)
    raise ValueError(f"unknown preprocessing profile {profile!r}; allowed: {', '.join(PROFILES)}")
