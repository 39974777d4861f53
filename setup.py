"""Build hook: generate the protobuf/gRPC stubs from proto/ at install time.

The stubs are never committed; `pip install .` and `pip install -e .` both
produce them in `spartan/v1/` before the package is collected.
"""
from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        from spartan.v1.codegen import generate

        generate()
        super().run()


setup(cmdclass={"build_py": BuildWithProtos})
