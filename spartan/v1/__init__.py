"""The `spartan.v1` wire protocol: generated message classes and service stubs.

Import `pb` (messages) and `rpc` (stubs and servicers) from here. In a source
checkout that was never installed the stubs are generated on first import.
"""

from spartan.v1 import codegen

if codegen.stubs_stale():
    codegen.generate()

from spartan.v1 import spartan_pb2 as pb  # noqa: E402
from spartan.v1 import spartan_pb2_grpc as rpc  # noqa: E402

__all__ = ["pb", "rpc"]
