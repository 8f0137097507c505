#!/usr/bin/env bash
# Rebuilds the C guest examples (ABI v1, docs/abi.md) with include/wasm-sandbox.h:
#   examples/guests/c/*.c       no C library:  --target=wasm32, imports only sandbox.emit/fail
#   examples/guests/c-wasi/*.c  wasi-libc, as a WASI reactor (-mexec-model=reactor): exports
#                               _initialize beside the ABI, imports a few wasi_snapshot_preview1
#                               functions the host provides
# each to the .wasm beside it.
#
#   scripts/build-c-guests.sh           rebuild and overwrite the committed .wasm files
#   scripts/build-c-guests.sh --check   build into a temporary folder, write nothing; exit 1 if any
#                                       committed .wasm differs from a fresh build
#
# `npm ci` does not bring clang, so the .wasm files are committed and the tests use them. Same
# toolchain as scripts/build-wasi.sh (Debian bookworm: clang 14.0.6, lld 14.0.6, wasi-libc
# 0.0~git20220510.9886d3d-2, libclang-rt-14-dev-wasm32; see there). WASI_SYSROOT and CC as there.
#
# Output is deterministic (relative paths, --strip-all: no debug info, names or producers).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/c-build.sh"
c_build_init "$@"

common=(-O2 -std=c11 -Wall -Wextra -Werror -Wl,--strip-all -I../../../include)
# -ffreestanding: clang's own stdint.h/stddef.h; -mbulk-memory: copies and fills become
# memory.copy/memory.fill, not calls to a memcpy/memset that is not there.
nolibc=(--target=wasm32 -ffreestanding -nostdlib -mbulk-memory -Wl,--no-entry)
reactor=(--target=wasm32-wasi -mexec-model=reactor)
if [[ -n "${WASI_SYSROOT:-}" ]]; then reactor+=("--sysroot=$WASI_SYSROOT"); fi

c_build_dir "$c_build_root/examples/guests/c" "${nolibc[@]}" "${common[@]}"
c_build_dir "$c_build_root/examples/guests/c-wasi" "${reactor[@]}" "${common[@]}"
exit "$status"
