"""Compiles every ext/*.pyx into the fastdyn._<name> extension module.

FASTDYN_ONLY=_logstore,_ring limits a development rebuild to those modules.
"""
import os
from glob import glob

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

only = {n for n in os.environ.get("FASTDYN_ONLY", "").split(",") if n}
extensions = []
for source in sorted(glob("ext/*.pyx")):
    name = os.path.splitext(os.path.basename(source))[0]
    if only and name not in only:
        continue
    extensions.append(
        Extension(
            f"fastdyn.{name}",
            [source],
            include_dirs=["ext", numpy.get_include()],
            define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            extra_compile_args=["-O3"],
        )
    )

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": "3"},
        include_path=["ext"],
    )
)
