#!/usr/bin/env bash
# Regenerate protos/trivault/v1/*_pb2*.py from the .proto files (grpcio-tools==1.85.1).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m grpc_tools.protoc -I protos --python_out=protos --pyi_out=protos --grpc_python_out=protos \
  protos/trivault/v1/*.proto
# Generated stubs import "trivault.v1..."; make them package-relative to protos.
sed -i 's/^from trivault\.v1 import/from protos.trivault.v1 import/' protos/trivault/v1/*_pb2_grpc.py
touch protos/trivault/__init__.py protos/trivault/v1/__init__.py
