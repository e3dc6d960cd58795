#!/bin/sh
# Put onnxruntime's C/C++ API headers (onnxruntime_c_api.h, onnxruntime_cxx_api.h, ...) into DEST.
#
# Debian 12 packages no onnxruntime, and the onnxruntime wheel on PyPI ships the library
# (onnxruntime/capi/libonnxruntime.so.*) but no headers. The npm package named below bundles
# ONNX Runtime's own headers (MIT) inside its Apple framework; the C API is ABI-stable, so
# headers of an older release work with the newer library from the wheel. The download (about
# 150 MB, of which we keep 1 MB) is cached under ${XDG_CACHE_HOME:-~/.cache}/edgernn/.
#
#   ./fetch_ort_headers.sh build/ort/include
#   ORT_HEADERS_NPM=other-package@1.2.3 ORT_HEADERS_DIR='path/inside/package' ./fetch_ort_headers.sh DEST
set -eu

PKG=${ORT_HEADERS_NPM:-com.github.asus4.onnxruntime@0.4.9}
INNER=${ORT_HEADERS_DIR:-package/Plugins/iOS~/onnxruntime.xcframework/ios-arm64/onnxruntime.framework/Headers}
DEST=${1:-build/ort/include}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/edgernn/ort-headers/$(printf '%s' "$PKG" | tr '/@' '__')

if [ ! -f "$CACHE/onnxruntime_cxx_api.h" ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "error: npm not found; it fetches the onnxruntime headers ($PKG). Install npm, or pass" \
         "ORT_INCLUDE=DIR holding onnxruntime_cxx_api.h (from an onnxruntime release archive) to make" >&2
    exit 1
  fi
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching onnxruntime headers from npm package $PKG (once; cached in $CACHE)" >&2
  (cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" --wildcards "$INNER/*.h"
  if [ ! -f "$tmp/$INNER/onnxruntime_cxx_api.h" ]; then
    echo "error: $PKG has no $INNER/onnxruntime_cxx_api.h; set ORT_HEADERS_DIR to where its headers are" >&2
    exit 1
  fi
  mkdir -p "$(dirname "$CACHE")"
  rm -rf "$CACHE.partial"
  mkdir "$CACHE.partial"
  cp "$tmp/$INNER"/*.h "$CACHE.partial"/
  rm -rf "$CACHE"
  mv "$CACHE.partial" "$CACHE"
fi
mkdir -p "$DEST"
cp "$CACHE"/*.h "$DEST"/
grep -h '^#define ORT_API_VERSION' "$DEST/onnxruntime_c_api.h" >&2
