#!/usr/bin/env bash
# Rebuilds the WASI example programs: every examples/wasi/*.c to the .wasm beside it
# (wasm32-wasi, preview1 "command": imports wasi_snapshot_preview1, exports _start).
#
#   scripts/build-wasi.sh           rebuild and overwrite examples/wasi/*.wasm
#   scripts/build-wasi.sh --check   build into a temporary folder, write nothing; exit 1 if any
#                                   committed .wasm differs from a fresh build
#
# The toolchain is not on CI, so the .wasm files are committed. Needs these Debian (bookworm)
# packages, the versions the committed files were built with:
#   apt-get install -y clang lld wasi-libc libclang-rt-14-dev-wasm32
#   (clang 1:14.0-55.7~deb12u1 = clang 14.0.6, lld 14.0.6, wasi-libc 0.0~git20220510.9886d3d-2,
#   libclang-rt-14-dev-wasm32 1:14.0.6-12: the compiler-rt builtins must match clang's version.)
# Debian installs the wasi-libc sysroot as a multiarch layout (/usr/include/wasm32-wasi,
# /usr/lib/wasm32-wasi) that its clang finds without --sysroot; set WASI_SYSROOT to use another
# (e.g. a wasi-sdk's share/wasi-sysroot). CC overrides the compiler.
#
# Output is deterministic: the same toolchain gives byte-identical files on every run and in any
# folder (no timestamps; --strip-all drops the debug info, names and producers sections that
# would hold paths and version strings).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/c-build.sh"
c_build_init "$@"

flags=(--target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -Werror -Wl,--strip-all)
if [[ -n "${WASI_SYSROOT:-}" ]]; then flags+=("--sysroot=$WASI_SYSROOT"); fi

c_build_dir "$c_build_root/examples/wasi" "${flags[@]}"
exit "$status"
