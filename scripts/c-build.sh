# Sourced by the scripts that build committed C guests (build-wasi.sh, build-c-guests.sh,
# build-c-fixtures.sh): what they share, so `--check` means the same in all of them.
#   c_build_init "$@"            parses [--check]; sets `check`, `status`
#   c_build_dir DIR FLAGS...     builds every DIR/*.c to the .wasm beside it, or with --check
#                                into a temporary folder, comparing with the committed one
# CC overrides the compiler.

# clang runs binaryen's wasm-opt after linking whenever one is on PATH, and under `npm test` the
# assemblyscript devDependency puts one there (node_modules/.bin): the output would then depend
# on how the script was started. Leave node_modules/.bin off PATH.
PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -v 'node_modules/\.bin' | paste -sd: -)"
export PATH

c_build_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cc="${CC:-clang}"

c_build_init() {
  check=0
  status=0
  case "${1:-}" in
    --check) check=1 ;;
    "") ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
  esac
  c_build_tmp=""
  if (( check )); then
    c_build_tmp="$(mktemp -d)"
    trap 'rm -rf "$c_build_tmp"' EXIT
  fi
  shopt -s nullglob
}

c_build_dir() { # dir, flags...
  local dir="$1"; shift
  local rel="${dir#"$c_build_root"/}"
  local src name out
  for src in "$dir"/*.c; do
    name="$(basename "$src" .c)"
    out="$dir/$name.wasm"
    if (( check )); then mkdir -p "$c_build_tmp/$rel"; out="$c_build_tmp/$rel/$name.wasm"; fi
    # From inside the folder with a relative path, so no absolute path reaches the output.
    (cd "$dir" && "$cc" "$@" "$name.c" -o "$out")
    if (( check )); then
      if ! cmp -s "$out" "$dir/$name.wasm"; then
        echo "$rel/$name.wasm differs from a fresh build of $name.c ($(wc -c < "$out") bytes built, $(wc -c < "$dir/$name.wasm") committed; $(cmp "$out" "$dir/$name.wasm" 2>&1 | head -1))" >&2
        status=1
      fi
    else
      echo "$rel/$name.wasm $(wc -c < "$out") bytes"
    fi
  done
}
