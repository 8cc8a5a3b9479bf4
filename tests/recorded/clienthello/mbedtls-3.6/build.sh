#!/usr/bin/env bash
# Build upstream Mbed TLS 3.6.x (library + programs/ssl/ssl_client2) with the
# ESP-IDF v5.5 / arduino-esp32 3.3.x equivalent config (esp_idf55_config.h).
# Usage: ./build.sh [tag ...]   (default: v3.6.3 v3.6.4 v3.6.5 v3.6.6)
# Sources: git clones named by MBED_MIRROR and FW_MIRROR (read only).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
MBED_MIRROR="${MBED_MIRROR:?a git clone of Mbed-TLS/mbedtls with its tags}"
FW_MIRROR="${FW_MIRROR:?a git clone of Mbed-TLS/mbedtls-framework}"
CONFIG="${CONFIG:-$HERE/esp_idf55_config.h}"
TAGS=("$@"); [ ${#TAGS[@]} -eq 0 ] && TAGS=(v3.6.3 v3.6.4 v3.6.5 v3.6.6)
JOBS="${JOBS:-$(nproc)}"
for TAG in "${TAGS[@]}"; do
  SRC="$HERE/src/mbedtls-$TAG"; BLD="$HERE/build/$TAG"
  if [ ! -f "$SRC/CMakeLists.txt" ]; then
    rm -rf "$SRC"; mkdir -p "$SRC"
    # tests/suites holds a blob missing from the mirror; not needed (ENABLE_TESTING=OFF)
    git -C "$MBED_MIRROR" archive "$TAG" -- . ':(exclude)tests/suites' | tar -x -C "$SRC"
    FWTYPE=$(git -C "$MBED_MIRROR" ls-tree "$TAG" framework | awk '{print $2}')
    if [ "$FWTYPE" = commit ]; then
      FWC=$(git -C "$MBED_MIRROR" ls-tree "$TAG" framework | awk '{print $3}')
      echo "$TAG: framework submodule commit $FWC"
      rm -rf "$SRC/framework"; mkdir -p "$SRC/framework"
      git -C "$FW_MIRROR" archive "$FWC" | tar -x -C "$SRC/framework"
      echo "$FWC" > "$SRC/framework/.submodule_commit"
    else
      echo "$TAG: framework is a plain tree inside the tag"
    fi
    git -C "$MBED_MIRROR" rev-parse "$TAG^{commit}" > "$SRC/.tag_commit"
  fi
  rm -rf "$BLD"; mkdir -p "$BLD"
  cmake -S "$SRC" -B "$BLD" -DCMAKE_BUILD_TYPE=Release -DENABLE_TESTING=OFF \
        -DGEN_FILES=OFF -DMBEDTLS_FATAL_WARNINGS=OFF \
        -DMBEDTLS_CONFIG_FILE="$CONFIG" >"$BLD.cmake.log" 2>&1 || { tail -30 "$BLD.cmake.log"; exit 1; }
  cmake --build "$BLD" --target ssl_client2 -j"$JOBS" >"$BLD.build.log" 2>&1 || { tail -40 "$BLD.build.log"; exit 1; }
  ls -l "$BLD/programs/ssl/ssl_client2"
done
