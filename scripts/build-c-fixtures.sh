#!/usr/bin/env bash
# Rebuilds the C test guests: every spec/fixtures/c/*.c to the .wasm beside it (wasm32, no libc,
# include/wasm-sandbox.h, ABI v1.1 imports). Kept with function names and DWARF (-g), as a guest
# author's debug build is, so the trap backtrace tests see names from a real toolchain.
#
#   scripts/build-c-fixtures.sh           rebuild and overwrite spec/fixtures/c/*.wasm
#   scripts/build-c-fixtures.sh --check   build into a temporary folder, write nothing; exit 1 if
#                                         any committed .wasm differs from a fresh build
#
# npm ci does not bring clang, so the .wasm files are committed. Needs Debian's clang and lld
# (built with clang 14.0.6 and lld 14.0.6: apt-get install -y clang lld). CC overrides the compiler.
#
# Output is deterministic: compiled from inside the folder with a relative path and
# -fdebug-prefix-map, so no absolute path reaches the DWARF; no timestamps.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/c-build.sh"
c_build_init "$@"

dir="$c_build_root/spec/fixtures/c"
# As scripts/build-c-guests.sh builds the kits, but with -g and without --strip-all.
flags=(--target=wasm32 -ffreestanding -nostdlib -mbulk-memory -O2 -g -std=c11 -Wall -Wextra -Werror
  -I../../../include "-fdebug-prefix-map=$dir=." -Wl,--no-entry)

c_build_dir "$dir" "${flags[@]}"
exit "$status"
