#!/bin/sh
# Run last in the embedder's dependency stages: torch's wheel ships C++ test executables (gtest
# binaries, the distributed-store tests) and protoc, about 130 MB that nothing runs. Kept:
# torch_shm_manager, which torch.multiprocessing starts.
set -eu
TORCH=/opt/venv/lib/python3.11/site-packages/torch
rm -rf "$TORCH/test"
find "$TORCH/bin" -mindepth 1 -maxdepth 1 ! -name torch_shm_manager -exec rm -rf {} +
