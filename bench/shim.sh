#!/usr/bin/env bash
# containerd shim benchmark: containerd-shim-berth-v2 + berth vs containerd-shim-runc-v2 + runc.
#   bench/shim.sh [BIN_DIR]        (default: target/release; needs berth and
#                                   containerd-shim-berth-v2 there, run as root)
# Starts a private containerd (own root/state/sockets under a temp dir) and measures:
#   memory   per running container, with N containers up: each shim's VmRSS, and its PSS
#            (shared pages such as the shim's own text split among the N shims: what one
#            more container really costs)
#   latency  `ctr run --rm` of /bin/true in the busybox rootfs (hyperfine)
# and prints both side by side with ratios. Targets: RSS <= 3 MiB, latency <= runc's / 2.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bins=$(realpath "${1:-$here/target/release}")
runs=${BENCH_RUNS:-30}
ncont=${BENCH_CONTAINERS:-5}
rootfs=$here/fixtures/busybox/rootfs
for f in "$bins/berth" "$bins/containerd-shim-berth-v2"; do
  [ -x "$f" ] || { echo "missing $f (make release)" >&2; exit 1; }
done
[ -x "$rootfs/bin/busybox" ] || bash "$here/scripts/busybox-bundle.sh" "$bins/berth" "$here/fixtures/busybox" >/dev/null
command -v containerd-shim-runc-v2 >/dev/null || { echo "containerd-shim-runc-v2 not installed" >&2; exit 1; }

work=$(mktemp -d /tmp/berth-shim-bench.XXXXXX)
mkdir -p "$work/bin"
ln -s "$bins/berth" "$work/bin/berth"
ln -s "$bins/containerd-shim-berth-v2" "$work/bin/containerd-shim-berth-v2"
export PATH="$work/bin:$PATH"
ns=bench$$
sock=$work/c.sock
ctr=(ctr --address "$sock" --namespace "$ns")
cat >"$work/config.toml" <<EOF
version = 2
root = "$work/root"
state = "$work/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$work/opt"
EOF
containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
ctrd=$!

cleanup() {
  for id in $("${ctr[@]}" containers list --quiet 2>/dev/null); do
    "${ctr[@]}" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      "${ctr[@]}" tasks delete "$id" >/dev/null 2>&1 && break
      sleep 0.1
    done
    "${ctr[@]}" containers delete "$id" >/dev/null 2>&1 || true
  done
  kill "$ctrd" 2>/dev/null || true
  wait "$ctrd" 2>/dev/null || true
  rmdir "/run/containerd/berth/$ns" "/run/containerd/runc/$ns" 2>/dev/null || true
  # ctr's cgroups are /<namespace>/<id>: the runtimes leave the namespace level behind.
  rmdir /sys/fs/cgroup/*/"$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 100); do "${ctr[@]}" version >/dev/null 2>&1 && break; sleep 0.1; done

runtime_of() { [ "$1" = berth ] && echo io.containerd.berth.v2 || echo io.containerd.runc.v2; }
shim_of() { [ "$1" = berth ] && echo containerd-shim-berth-v2 || echo containerd-shim-runc-v2; }

# Average VmRSS and PSS (KiB) and thread count of this namespace's shims of one kind while
# N containers sleep.
rss_kib() {
  local kind=$1 total=0 pss=0 threads=0 count=0 pid
  for i in $(seq "$ncont"); do
    "${ctr[@]}" run -d --rootfs --runtime "$(runtime_of "$kind")" "$rootfs" "rss-$kind-$i" /bin/sleep 1000 >/dev/null
  done
  sleep 1
  for pid in $(pgrep -f "$(shim_of "$kind") -namespace $ns "); do
    total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")))
    pss=$((pss + $(awk '/^Pss:/ {print $2}' "/proc/$pid/smaps_rollup")))
    threads=$((threads + $(awk '/^Threads/ {print $2}' "/proc/$pid/status")))
    count=$((count + 1))
  done
  # BENCH_DETAIL=1: one shim's threads (names from /proc) and resident KiB per mapping.
  if [ -n "${BENCH_DETAIL:-}" ] && [ -n "${pid:-}" ]; then
    echo "$kind shim threads: $(cat /proc/"$pid"/task/*/comm | sort | uniq -c | tr -s ' \n' ' ')" >&2
    awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)}
         /^Rss:/ {rss[name] += $2}
         END {for (n in rss) if (rss[n] > 0) printf "  %6d KiB %s\n", rss[n], n}' \
      "/proc/$pid/smaps" | sort -rn >&2
  fi
  for i in $(seq "$ncont"); do
    "${ctr[@]}" tasks kill --signal SIGKILL "rss-$kind-$i" >/dev/null
  done
  sleep 0.5
  for i in $(seq "$ncont"); do
    "${ctr[@]}" tasks delete "rss-$kind-$i" >/dev/null 2>&1 || true
    "${ctr[@]}" containers delete "rss-$kind-$i" >/dev/null
  done
  [ "$count" -gt 0 ] || { echo "no $kind shims found" >&2; exit 1; }
  echo "$((total / count)) $((pss / count)) $((threads / count))"
}

latency_ms() {
  local kind=$1
  hyperfine --warmup 3 --runs "$runs" --export-json "$work/$kind.json" --style none \
    "${ctr[*]} run --rm --rootfs --runtime $(runtime_of "$kind") $rootfs lat-$kind-\$(date +%s%N) /bin/true" >/dev/null
  python3 -c 'import json,sys; print("%.1f" % (json.load(open(sys.argv[1]))["results"][0]["median"]*1000))' "$work/$kind.json"
}

read -r berth_rss berth_pss berth_threads < <(rss_kib berth)
read -r runc_rss runc_pss runc_threads < <(rss_kib runc)
berth_lat=$(latency_ms berth)
runc_lat=$(latency_ms runc)

python3 - "$berth_rss" "$runc_rss" "$berth_lat" "$runc_lat" "$ncont" "$runs" "$berth_pss" "$runc_pss" \
  "$berth_threads" "$runc_threads" <<'PY'
import sys
brss, rrss, blat, rlat = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
n, runs = sys.argv[5], sys.argv[6]
bpss, rpss = int(sys.argv[7]), int(sys.argv[8])
bthr, rthr = int(sys.argv[9]), int(sys.argv[10])
print(f"shim memory per running container (avg of {n}) and `ctr run --rm /bin/true` median ({runs} runs)")
print(f"{'':28}{'berth shim':>14}{'runc shim':>14}{'ratio':>10}")
print(f"{'VmRSS (MiB)':28}{brss/1024:>14.2f}{rrss/1024:>14.2f}{brss/rrss:>10.2f}")
print(f"{'PSS (MiB)':28}{bpss/1024:>14.2f}{rpss/1024:>14.2f}{bpss/rpss:>10.2f}")
print(f"{'threads per shim':28}{bthr:>14}{rthr:>14}{bthr/rthr:>10.2f}")
print(f"{'ctr run --rm latency (ms)':28}{blat:>14.1f}{rlat:>14.1f}{blat/rlat:>10.2f}")
print(f"targets: VmRSS <= 3 MiB: {'met' if brss <= 3072 else 'NOT met'}; "
      f"PSS <= 3 MiB: {'met' if bpss <= 3072 else 'NOT met'}; "
      f"latency <= half of runc's: {'met' if blat <= rlat/2 else 'NOT met'}")
PY
