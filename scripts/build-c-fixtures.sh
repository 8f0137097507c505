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
# clang runs binaryen's wasm-opt after linking whenever one is on PATH, and under `npm test` the
# assemblyscript devDependency puts one there (node_modules/.bin): the output would then depend
# on how the script was started. Leave node_modules/.bin off PATH.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v 'node_modules/\.bin' | paste -sd: -)"
export PATH

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="$root/spec/fixtures/c"
cc="${CC:-clang}"

# As scripts/build-c-guests.sh builds the kits, but with -g and without --strip-all.
flags=(--target=wasm32 -ffreestanding -nostdlib -mbulk-memory -O2 -g -std=c11 -Wall -Wextra -Werror
  -I../../../include "-fdebug-prefix-map=$dir=." -Wl,--no-entry)

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
  (cd "$dir" && "$cc" "${flags[@]}" "$name.c" -o "$out/$name.wasm")
  if (( check )); then
    if ! cmp -s "$out/$name.wasm" "$dir/$name.wasm"; then
      echo "spec/fixtures/c/$name.wasm differs from a fresh build of $name.c" >&2
      status=1
    fi
  else
    echo "spec/fixtures/c/$name.wasm $(wc -c < "$out/$name.wasm") bytes"
  fi
done
exit "$status"
