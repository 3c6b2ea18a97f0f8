#!/usr/bin/env bash
# Makes an OCI bundle whose rootfs is Debian's static busybox, with one
# symlink per applet, and a config.json from `berth spec`.
# usage: busybox-bundle.sh BERTH_BINARY DEST_DIR
set -euo pipefail
berth=$(realpath "$1")
dest=$2
bb=/bin/busybox
[ -x "$bb" ] || { echo "busybox-static is not installed ($bb missing)" >&2; exit 1; }
rm -rf "$dest.tmp"
mkdir -p "$dest.tmp/rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,var,run}
cp "$bb" "$dest.tmp/rootfs/bin/busybox"
for applet in $("$bb" --list-full); do
  [ -e "$dest.tmp/rootfs/$applet" ] || ln -s /bin/busybox "$dest.tmp/rootfs/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' > "$dest.tmp/rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$dest.tmp/rootfs/etc/group"
chmod 1777 "$dest.tmp/rootfs/tmp"
(cd "$dest.tmp" && "$berth" spec)
rm -rf "$dest"
mv "$dest.tmp" "$dest"
echo "busybox bundle ready in $dest"
