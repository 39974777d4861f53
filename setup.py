"""Build hook: generate the protobuf/gRPC stubs from proto/ at install time.

The stubs are never committed; `pip install .` and `pip install -e .` both
produce them in `spartan/v1/` before the package is collected. The generator is
loaded by path so building needs only grpcio-tools, not the package's runtime
dependencies.
"""
import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CODEGEN = Path(__file__).resolve().parent / "spartan" / "v1" / "codegen.py"


class BuildWithProtos(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("spartan_codegen", CODEGEN)
        assert spec and spec.loader
        codegen = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(codegen)
        codegen.generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
