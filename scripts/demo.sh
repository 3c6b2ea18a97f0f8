#!/usr/bin/env bash
# Builds examples/hello with berth-build (engine in-process), turns the image
# into an OCI bundle with `berth-build bundle`, and runs it with berth.
# usage: demo.sh PATH/TO/berth   (berth-build is expected next to it)
set -euo pipefail
berth=${1:?usage: demo.sh PATH/TO/berth}
berth="$(cd "$(dirname "$berth")" && pwd)/$(basename "$berth")"
bindir=$(dirname "$berth")
build="$bindir/berth-build"
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$build" ] || { echo "demo: $build not found (run cargo build --release --workspace --bins)" >&2; exit 1; }
[ -x /bin/busybox ] || { echo "demo: /bin/busybox (busybox-static) is missing" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "demo: must run as root (overlay mounts, containers)" >&2; exit 1; }

work=$(mktemp -d /tmp/berth-demo.XXXXXX)
id="berth-demo-$$"
cleanup() {
  "$berth" delete --force "$id" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Build context: the example plus a busybox root filesystem tarball.
mkdir -p "$work/ctx"
cp -a "$repo/examples/hello/." "$work/ctx/"
mkdir -p "$work/rootfs"/{bin,etc,tmp,root}
cp /bin/busybox "$work/rootfs/bin/busybox"
for applet in $(/bin/busybox --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$work/rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$work/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$work/rootfs/etc/group"
chmod 1777 "$work/rootfs/tmp"
tar -C "$work/rootfs" -cf "$work/ctx/rootfs.tar" .

store="$work/store"
echo "== berth-build build (store: $store, RUN steps via $berth)"
"$build" --root "$store" --runtime "$berth" build --progress plain -t hello-berth "$work/ctx"
echo "== image history"
"$build" --root "$store" history hello-berth
echo "== berth-build bundle"
"$build" --root "$store" bundle hello-berth "$work/bundle"
echo "== $berth run"
cd "$work/bundle"
"$berth" run --bundle "$work/bundle" "$id"
