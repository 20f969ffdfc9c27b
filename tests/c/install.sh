#!/usr/bin/env bash
# Install the omk C library under PREFIX:
#
#   cargo build --release -p omk-ffi
#   bash tests/c/install.sh PREFIX
#
# copies target/release/libomk.so and libomk.a to PREFIX/lib, include/omk.h
# to PREFIX/include, and omk-ffi/omk.pc.in, filled in, to
# PREFIX/lib/pkgconfig/omk.pc. Then:
#
#   PKG_CONFIG_PATH=PREFIX/lib/pkgconfig cc main.c $(pkg-config --cflags --libs omk)
set -euo pipefail

if [[ $# -ne 1 || -z "$1" ]]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RELEASE="$ROOT/target/release"
for f in "$RELEASE/libomk.so" "$RELEASE/libomk.a"; do
  if [[ ! -f "$f" ]]; then
    echo "install.sh: $f is missing: run \`cargo build --release -p omk-ffi\` first" >&2
    exit 1
  fi
done

mkdir -p "$1"
PREFIX="$(cd "$1" && pwd)"
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)"
case "$PREFIX$VERSION" in
  *'|'* | *'&'* | *'\'*) echo "install.sh: PREFIX must not contain | & or \\" >&2; exit 2 ;;
esac

install -d "$PREFIX/lib/pkgconfig" "$PREFIX/include"
install -m 0755 "$RELEASE/libomk.so" "$PREFIX/lib/libomk.so"
install -m 0644 "$RELEASE/libomk.a" "$PREFIX/lib/libomk.a"
install -m 0644 "$ROOT/include/omk.h" "$PREFIX/include/omk.h"
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$VERSION|g" \
  "$ROOT/omk-ffi/omk.pc.in" >"$PREFIX/lib/pkgconfig/omk.pc"
chmod 0644 "$PREFIX/lib/pkgconfig/omk.pc"

echo "installed omk $VERSION under $PREFIX"
echo "  $PREFIX/lib/libomk.so, $PREFIX/lib/libomk.a"
echo "  $PREFIX/include/omk.h"
echo "  $PREFIX/lib/pkgconfig/omk.pc"
