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
# clang runs binaryen's wasm-opt after linking whenever one is on PATH, and under `npm test` the
# assemblyscript devDependency puts one there (node_modules/.bin): the output would then depend
# on how the script was started. Leave node_modules/.bin off PATH.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v 'node_modules/\.bin' | paste -sd: -)"
export PATH

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/examples/wasi"
cc="${CC:-clang}"

flags=(--target=wasm32-wasi -O2 -std=c11 -Wall -Wextra -Werror -Wl,--strip-all)
if [[ -n "${WASI_SYSROOT:-}" ]]; then flags+=("--sysroot=$WASI_SYSROOT"); fi

check=0
case "${1:-}" in
  --check) check=1 ;;
  "") ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

out="$dir"
if (( check )); then
  out="$(mktemp -d)"
  trap 'rm -rf "$out"' EXIT
fi

status=0
shopt -s nullglob
for src in "$dir"/*.c; do
  name="$(basename "$src" .c)"
  # Compile from inside the folder with a relative path, so no absolute path reaches the output.
  (cd "$dir" && "$cc" "${flags[@]}" "$name.c" -o "$out/$name.wasm")
  if (( check )); then
    if ! cmp -s "$out/$name.wasm" "$dir/$name.wasm"; then
      echo "examples/wasi/$name.wasm differs from a fresh build of $name.c" >&2
      status=1
    fi
  else
    echo "examples/wasi/$name.wasm $(wc -c < "$out/$name.wasm") bytes"
  fi
done
exit "$status"
