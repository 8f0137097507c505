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
# clang runs binaryen's wasm-opt after linking whenever one is on PATH, and under `npm test` the
# assemblyscript devDependency puts one there (node_modules/.bin): the output would then depend
# on how the script was started. Leave node_modules/.bin off PATH.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v 'node_modules/\.bin' | paste -sd: -)"
export PATH

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cc="${CC:-clang}"

common=(-O2 -std=c11 -Wall -Wextra -Werror -Wl,--strip-all -I../../../include)
# -ffreestanding: clang's own stdint.h/stddef.h; -mbulk-memory: copies and fills become
# memory.copy/memory.fill, not calls to a memcpy/memset that is not there.
nolibc=(--target=wasm32 -ffreestanding -nostdlib -mbulk-memory -Wl,--no-entry)
reactor=(--target=wasm32-wasi -mexec-model=reactor)
if [[ -n "${WASI_SYSROOT:-}" ]]; then reactor+=("--sysroot=$WASI_SYSROOT"); fi

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

tmp=""
if (( check )); then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
fi

status=0
shopt -s nullglob
build() { # folder, flags...
  local sub="$1"; shift
  local dir="$root/examples/guests/$sub"
  for src in "$dir"/*.c; do
    local name out
    name="$(basename "$src" .c)"
    out="$dir/$name.wasm"
    if (( check )); then mkdir -p "$tmp/$sub"; out="$tmp/$sub/$name.wasm"; fi
    # From inside the folder with relative paths, so no absolute path reaches the output.
    (cd "$dir" && "$cc" "$@" "${common[@]}" "$name.c" -o "$out")
    if (( check )); then
      if ! cmp -s "$out" "$dir/$name.wasm"; then
        echo "examples/guests/$sub/$name.wasm differs from a fresh build of $name.c ($(wc -c < "$out") bytes built, $(wc -c < "$dir/$name.wasm") committed; $(cmp "$out" "$dir/$name.wasm" 2>&1 | head -1))" >&2
        status=1
      fi
    else
      echo "examples/guests/$sub/$name.wasm $(wc -c < "$out") bytes"
    fi
  done
}
build c "${nolibc[@]}"
build c-wasi "${reactor[@]}"
exit "$status"
