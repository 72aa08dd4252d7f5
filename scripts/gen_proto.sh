#!/usr/bin/env bash
# Generates the Python code and mypy stubs for proto/*.proto into OUT (default: the package folder).
# The generator is pinned in pyproject.toml (grpcio-tools, mypy-protobuf) so the output is reproducible;
# tests/unit/serialization/test_generated_code.py fails when the committed code is stale.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/app/serialization/generated}
python=${PYTHON:-$root/.venv/bin/python}
mkdir -p "$out"
"$python" -m grpc_tools.protoc \
  --proto_path="$root/proto" \
  --python_out="$out" \
  --mypy_out="$out" \
  --plugin=protoc-gen-mypy="$(dirname "$python")/protoc-gen-mypy" \
  "$root"/proto/*.proto
