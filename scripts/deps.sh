#!/usr/bin/env bash
# Installs the Debian packages berth's build, tests, demo and benchmarks need,
# but only the ones that are missing, so repeated runs cost nothing.
set -euo pipefail
want=(busybox-static runc python3 python3-venv golang-github-containers-common skopeo umoci buildah podman protobuf-compiler hyperfine pkg-config containerd iproute2 util-linux containernetworking-plugins docker-registry apache2-utils openssl curl docker.io "$@")
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  # Tests start their own private containerd and dockerd; the packages must
  # not start system-wide daemons on install (policy-rc.d 101 = "don't").
  policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
fi
