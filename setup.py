"""The one compiled part: Pillow's resampling restricted to the pixels a centre crop keeps.

Optional: without a C compiler the install goes on and the transforms use Pillow itself
(same bytes, slower). Everything else is declared in pyproject.toml.
"""

import numpy as np
from setuptools import Extension, setup

setup(ext_modules=[Extension(
    "batchcls.transforms._resample",
    ["batchcls/transforms/_resample.c"],
    include_dirs=[np.get_include()],
    # Pillow's weights are plain IEEE double arithmetic: no fast-math, no fused multiply-add.
    extra_compile_args=["-O3", "-std=c99", "-ffp-contract=off", "-fno-fast-math"],
    optional=True,
)])
