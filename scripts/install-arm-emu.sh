#!/usr/bin/env bash
# `make arm-emu`: the emulated ARM device. Installs into DEST (default .arm-emu/) an aarch64 sysroot with
# Debian's arm64 Python 3.11, the aarch64 wheels of numpy and ai-edge-litert, the instruction-clock plugin
# (scripts/qemu-insn-clock.c, built with gcc) and a `python` wrapper that runs that Python under Debian's qemu-user
# (loading the plugin when JCW_INSN_FILE names where it writes its count); and gdb-multiarch, with which
# profiler/observe_xnnpack.py counts what XNNPACK executes. XNNPACK's ARM kernels and decisions then
# run for real on this x86 machine; wall times are emulated (about 100x slower than a phone) and move with the
# machine's load, instruction counts do not. Idempotent: a finished install is kept.
# Needs root for apt-get (CI and these machines run as root).
set -euo pipefail
DEST=$(realpath -m "${1:-.arm-emu}")
LITERT=${LITERT_VERSION:-1.4.0}  # the newest ai-edge-litert with aarch64 Linux wheels
STAMP="$DEST/.installed-litert-$LITERT-clock1-gdb1"
[ -f "$STAMP" ] && exit 0

fail() { echo "make arm-emu: $*" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive
if ! command -v qemu-aarch64 >/dev/null || ! command -v gcc >/dev/null || ! command -v gdb-multiarch >/dev/null; then
    apt-get update -qq || fail "apt-get update failed"
    apt-get install -y -qq --no-install-recommends qemu-user gcc libc6-dev gdb-multiarch >/dev/null \
        || fail "cannot install qemu-user, gcc and gdb-multiarch"
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    apt-get update -qq || fail "apt-get update (arm64) failed"
fi
PACKAGES="libc6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib zlib1g libexpat1 libffi8 libssl3
libstdc++6 libgcc-s1 libbz2-1.0 liblzma5 libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libdb5.3
libgdbm6 libnsl2 libtirpc3 libcrypt1"
rm -rf "$DEST.tmp" && mkdir -p "$DEST.tmp/debs" "$DEST.tmp/sysroot" "$DEST.tmp/site" "$DEST.tmp/wheels"
chmod 777 "$DEST.tmp/debs"  # apt-get download runs as the _apt user where it can
for pkg in $PACKAGES; do
    (cd "$DEST.tmp/debs" && apt-get download -qq "$pkg:arm64" 2>/dev/null) || fail "cannot download the Debian package $pkg:arm64"
done
for deb in "$DEST.tmp"/debs/*.deb; do
    dpkg -x "$deb" "$DEST.tmp/sysroot" || fail "cannot extract $(basename "$deb")"
done
PIP=(python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --platform manylinux_2_17_aarch64
     --python-version 3.11 --dest "$DEST.tmp/wheels")
"${PIP[@]}" "ai-edge-litert==$LITERT" "numpy==${NUMPY_VERSION:-2.2.6}" || fail "cannot download the aarch64 wheel of ai-edge-litert==$LITERT (or numpy)"
for whl in "$DEST.tmp"/wheels/*.whl; do
    python3 -m zipfile -e "$whl" "$DEST.tmp/site" || fail "cannot unpack $(basename "$whl")"
done
gcc -shared -fPIC -O2 -Wall -o "$DEST.tmp/insn-clock.so" "$(dirname "$0")/qemu-insn-clock.c" \
    || fail "cannot build the instruction-clock plugin (scripts/qemu-insn-clock.c)"
cat > "$DEST.tmp/python" <<'WRAP'
#!/bin/sh
# aarch64 Python 3.11 under qemu-user, with the aarch64 numpy and ai-edge-litert (see scripts/install-arm-emu.sh);
# with JCW_INSN_FILE set, the instruction-clock plugin counts executed instructions into that file
ROOT=$(dirname "$(readlink -f "$0")")
PLUGIN=${JCW_INSN_FILE:+-plugin $ROOT/insn-clock.so,out=$JCW_INSN_FILE}
PYTHONPATH="$ROOT/site" PYTHONHOME="$ROOT/sysroot/usr" exec qemu-aarch64 $PLUGIN -L "$ROOT/sysroot" \
    "$ROOT/sysroot/usr/bin/python3.11" "$@"
WRAP
chmod +x "$DEST.tmp/python"
rm -rf "$DEST.tmp/debs" "$DEST.tmp/wheels"
"$DEST.tmp/python" -c "import numpy, ai_edge_litert.interpreter" || fail "the emulated Python cannot import numpy and ai_edge_litert"
rm -rf "$DEST" && mv "$DEST.tmp" "$DEST" && touch "$STAMP"
echo "arm-emu installed in $DEST: $("$DEST/python" -c 'import platform, numpy; print(platform.machine(), platform.python_version(), "numpy", numpy.__version__)') ai-edge-litert $LITERT"
