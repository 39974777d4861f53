"""Generates `spartan_pb2.py` / `spartan_pb2_grpc.py` from `proto/spartan/v1/spartan.proto`.

Called by the install hook in `setup.py`, and on first import from a source
checkout that was never installed, so the generated code never lives in git.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ROOT = PACKAGE_DIR.parent.parent
PROTO_ROOT = ROOT / "proto"
PROTO_FILE = PROTO_ROOT / "spartan" / "v1" / "spartan.proto"


def stubs_present() -> bool:
    return (PACKAGE_DIR / "spartan_pb2.py").exists() and (PACKAGE_DIR / "spartan_pb2_grpc.py").exists()


def stubs_stale() -> bool:
    if not stubs_present():
        return True
    if not PROTO_FILE.exists():
        return False
    return PROTO_FILE.stat().st_mtime > (PACKAGE_DIR / "spartan_pb2.py").stat().st_mtime


def built_with() -> tuple[str, str]:
    """The grpcio-tools release and the protobuf gencode version that made the stubs.

    Generated code refuses a grpcio or protobuf runtime older than these, so the
    install declares them as its minimums (setup.py): a minimum that is not true
    would fail at import, far from the install that caused it.
    """
    from importlib.metadata import version

    header = (PACKAGE_DIR / "spartan_pb2.py").read_text(encoding="utf-8").splitlines()[:10]
    marker = "# Protobuf Python Version: "
    protobuf = next((line[len(marker) :].strip() for line in header if line.startswith(marker)), "")
    if not protobuf:
        raise RuntimeError("spartan_pb2.py does not name the protobuf version that generated it")
    return version("grpcio-tools"), protobuf


def generate() -> None:
    """Run protoc (from grpcio-tools) over the project's proto file."""
    import grpc_tools
    from grpc_tools import protoc  # imported late: only needed when building

    include = Path(grpc_tools.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--pyi_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        str(PROTO_FILE),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed for {PROTO_FILE}")
