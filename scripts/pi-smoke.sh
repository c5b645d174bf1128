#!/usr/bin/env bash
# make pi-smoke: install the edge runtime in an emulated Raspberry Pi userland
# (Debian bookworm arm64 under qemu-user through binfmt_misc) and run
# `tinygru-edge check` on a bundle there. A smoke test of the aarch64 install
# and of correctness; emulation is ~250x slower, so never a benchmark.
#
#   scripts/pi-smoke.sh [BUNDLE]        (default build/har, made by `make demo`)
#
# Environment: PI_ROOT (default build/pi-root, kept between runs),
# PI_MIRROR (default: the Debian mirror the host's apt uses),
# PI_CHECK_ARGS (extra arguments for `tinygru-edge check`).
# Needs root and debian-packages-pi-smoke.txt (debootstrap qemu-user-static
# binfmt-support). Everything mounted here is unmounted on exit, and the
# qemu-aarch64 binfmt entry is left as it was found (disabled on a fresh machine).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

bundle=${1:-build/har}
root=${PI_ROOT:-build/pi-root}
mkdir -p "$(dirname "$root")"
root=$(cd "$(dirname "$root")" && pwd)/$(basename "$root")
suite=bookworm
stamp="$root/.tinygru-pi-root"       # written once the root is complete, holds $include
# gcc + libc6-dev: `tinygru-edge --backend engine` builds the bundle's C engine on first use.
include=python3,python3-venv,python3-pip,ca-certificates,gcc,libc6-dev
app=/opt/tinygru                      # inside the root

die() { echo "pi-smoke: $*" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || die "needs root (debootstrap, chroot, mount, binfmt_misc)"
[ -f "$bundle/manifest.json" ] && [ -f "$bundle/step_int8.tflite" ] ||
  die "no bundle at $bundle (manifest.json, step_int8.tflite): run \`make demo\` or pass one"
[ "$(uname -m)" = x86_64 ] || echo "pi-smoke: note: host is $(uname -m), not x86_64"

# ---------------------------------------------------------------- timing
phases=()
t_all=$(date +%s.%N)
t0=
phase() { # phase NAME: close the previous phase, open the next one
  local now; now=$(date +%s.%N)
  [ -n "$t0" ] && phases+=("$(printf '%-28s %7.1f s' "$cur" "$(awk "BEGIN{print $now - $t0}")")")
  cur=$1; t0=$now
  [ "$1" = "-" ] || echo "== pi-smoke: $1"
}

# ---------------------------------------------------------------- cleanup
we_mounted_binfmt=0
we_enabled_binfmt=0
mounts_under_root() { # deepest first
  awk -v r="$root" '{ gsub(/\\040/, " ", $2); if ($2 == r || index($2, r "/") == 1) print $2 }' \
    /proc/self/mounts | sort -r
}
cleanup() {
  local rc=$?
  set +e
  phase -
  local m
  for m in $(mounts_under_root); do
    umount "$m" 2>/dev/null || umount -l "$m" || echo "pi-smoke: could not unmount $m" >&2
  done
  if [ $we_enabled_binfmt = 1 ]; then update-binfmts --disable qemu-aarch64 >/dev/null 2>&1 ||
    echo "pi-smoke: could not disable binfmt qemu-aarch64" >&2; fi
  if [ $we_mounted_binfmt = 1 ]; then umount /proc/sys/fs/binfmt_misc 2>/dev/null; fi
  [ -n "$(mounts_under_root)" ] && echo "pi-smoke: still mounted under $root:" $(mounts_under_root) >&2
  echo "== pi-smoke: wall time per phase"
  printf '  %s\n' "${phases[@]}"
  printf '  %-28s %7.1f s\n' total "$(awk "BEGIN{print $(date +%s.%N) - $t_all}")"
  [ $rc = 0 ] && echo "pi-smoke: PASSED" || echo "pi-smoke: FAILED (exit $rc)" >&2
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One run at a time per root.
exec 9>"$root.lock"
flock -n 9 || die "another pi-smoke is using $root"

# ---------------------------------------------------------------- host side
phase "host packages"
scripts/ensure-debian.sh "$here/debian-packages-pi-smoke.txt"

phase "binfmt qemu-aarch64"
if ! mountpoint -q /proc/sys/fs/binfmt_misc; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  we_mounted_binfmt=1
fi
if ! grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null; then
  update-binfmts --enable qemu-aarch64
  we_enabled_binfmt=1
fi
grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 not enabled"

# The Debian mirror the host's apt already uses (deb822 .sources or one-line lists).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN{RS=""} /(^|\n)Suites:[^\n]*bookworm([ \n]|$)/ && !/Enabled: *no/ {
           if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH);
             sub(/URIs:[ \t]*/, "", s); print s; exit } }' "$f"
  done
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
    awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { if ($(i+1) == "bookworm") print $i; break } }'
}
mirror=${PI_MIRROR:-$( (host_mirror || true) | grep -v security | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}

# ---------------------------------------------------------------- the root
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$include" ]; then
  phase "debootstrap arm64 $suite"
  [ -z "$(mounts_under_root)" ] || die "mounts left under $root; unmount them first"
  rm -rf --one-file-system "$root"
  echo "pi-smoke: mirror $mirror"
  debootstrap --arch=arm64 --variant=minbase \
    --include="$include" \
    "$suite" "$root" "$mirror" > "$root.debootstrap.log" 2>&1 || {
      tail -n 30 "$root.debootstrap.log" >&2; die "debootstrap failed (log: $root.debootstrap.log)"; }
  echo "$include" > "$stamp"
else
  phase "reuse root (cached)"
fi

phase "mounts, DNS, CA certificates"
mount -t proc proc "$root/proc"   # not /sys: LiteRT's CPU probe segfaults on the host's
mount --bind /dev "$root/dev"     # x86 cpuinfo there (XNNPACK stays off without it)
mount --bind /dev/pts "$root/dev/pts"
cp -L /etc/resolv.conf "$root/etc/resolv.conf"

# PyPI as the host reaches it: the host's index-url if it sets one, never its
# find-links / extra-index-url (local x86 wheel dirs), nor its constraints.
pip_index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
case $pip_index in http://* | https://*) ;; *) pip_index= ;; esac

in_root() { # a clean environment: none of the host's pip settings (x86 wheel dirs)
  chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH=$app/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180 PIP_NO_INPUT=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    ${pip_index:+PIP_INDEX_URL=$pip_index} "$@"
}

# The host reaches PyPI through extra CA certificates (e.g. an egress proxy's):
# the root trusts the same ones. Refreshed only when they change.
cadir=$root/usr/local/share/ca-certificates/tinygru-host
if ! diff -rq /usr/local/share/ca-certificates "$cadir" >/dev/null 2>&1 ||
   [ ! -f "$root/etc/ssl/certs/ca-certificates.crt" ]; then
  rm -rf "$cadir"; mkdir -p "$cadir"
  cp -rL /usr/local/share/ca-certificates/. "$cadir/"
  out=$(in_root update-ca-certificates --fresh 2>&1) || { echo "$out" >&2; die "update-ca-certificates failed"; }
  echo "$out" | grep -iE 'error|fail' >&2 || true
fi

phase "copy edge_runtime + bundle"
rm -rf "$root$app/src" "$root$app/bundle"
mkdir -p "$root$app/src" "$root$app/bundle"
tar -C "$here" --exclude=__pycache__ --exclude='*.pyc' --exclude=build --exclude='*.egg-info' \
  -cf - edge_runtime | tar -C "$root$app/src" -xf -
cp -rL "$bundle/." "$root$app/bundle/"
du -sh "$root$app/bundle" | awk '{print "pi-smoke: bundle " $1}'

phase "venv + pip install"
[ -x "$root$app/venv/bin/python" ] || in_root /usr/bin/python3 -m venv $app/venv
in_root sh -c "cd $app/src && pip install -q ./edge_runtime"

phase "verify aarch64, no tensorflow"
in_root python - <<'EOF'
import importlib.metadata as md, importlib.util, platform, sys
m = platform.machine()
print(f"pi-smoke: platform.machine() = {m}, Python {platform.python_version()}")
tags = [l.split(":", 1)[1].strip() for l in md.distribution("ai-edge-litert").read_text("WHEEL").splitlines() if l.startswith("Tag:")]
print(f"pi-smoke: ai-edge-litert {md.version('ai-edge-litert')} wheel {', '.join(tags)}; numpy {md.version('numpy')}")
bad = []
if m != "aarch64":
    bad.append(f"machine is {m}, not aarch64")
if not any("aarch64" in t for t in tags):
    bad.append("ai-edge-litert wheel is not an aarch64 one")
if importlib.util.find_spec("tensorflow") is not None:
    bad.append("tensorflow is importable")
try:
    import tensorflow  # noqa: F401
    bad.append("import tensorflow succeeded")
except ImportError:
    print("pi-smoke: tensorflow not importable (as intended)")
sys.exit("pi-smoke: " + "; ".join(bad) if bad else 0)
EOF

phase "tinygru-edge check (emulated)"
# shellcheck disable=SC2086
in_root tinygru-edge check --bundle $app/bundle ${PI_CHECK_ARGS:-}

phase "C engine: build with the Pi's gcc, check, compare"
if [ -f "$bundle/engine_outputs.npz" ] && [ -f "$bundle/firmware/files.json" ]; then
  # shellcheck disable=SC2086
  in_root env TINYGRU_CACHE=$app/cache tinygru-edge check --bundle $app/bundle --backend engine \
    ${PI_CHECK_ARGS:-}
  # The engine built here against the engine the export stage ran (engine_outputs.npz,
  # equal to TFLM and to every Cortex-M board): tolerance 0 on the windows compared.
  in_root env TINYGRU_CACHE=$app/cache PI_WINDOWS="${PI_ENGINE_WINDOWS:-500}" \
    python - "$app/bundle" <<'EOF'
import os, sys, numpy as np
from edge_runtime.backends import engine
from edge_runtime.bundle import Bundle
b = Bundle.open(sys.argv[1])
fw, prefix = engine.export_of(b.root)
eng = engine.load(fw, prefix)
ref, want = b.load_npz("reference.npz"), b.load_npz("engine_outputs.npz")
if "x_counts" in ref:
    n = min(int(os.environ["PI_WINDOWS"]), len(ref["x_counts"]))
    got, _ = eng.windows(ref["x_counts"][:n])
    exp = want["y"][:n]
    what = f"{n} windows"
else:
    eng.reset()
    steps = [eng.push(s) for s in ref["series_counts"]]
    got = np.stack([y for y in steps if y is not None])
    exp = want["y"]
    what = f"{len(got)} steps of the series"
bad = int(np.count_nonzero(got != exp))
print(f"pi-smoke: C engine built on aarch64 vs engine_outputs.npz: {what}, {bad} of {exp.size} values differ")
sys.exit(1 if bad else 0)
EOF
else
  echo "pi-smoke: the bundle has no export (firmware/, engine_outputs.npz): engine backend not checked"
fi
