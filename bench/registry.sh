#!/usr/bin/env bash
# Registry benchmark: pull and push of a ~200 MB image with 10 layers
# from/to a local docker-registry (127.0.0.1, plain http), side by side:
#   push: berth-build push  vs  skopeo copy (docker-archive -> registry)
#   pull: berth-build pull  vs  skopeo copy (registry -> oci layout)
#                           vs  ctr images pull (own containerd; it also unpacks)
# each cold (empty registry / empty store) and with all layers present.
# Prints the median of RUNS runs (default 3) per tool and berth's ratio to
# the fastest other tool (< 1.00 means berth is faster).
# usage: bench/registry.sh PATH/TO/berth   (berth-build is expected next to it)
set -euo pipefail
berth=${1:?usage: registry.sh PATH/TO/berth}
berth="$(cd "$(dirname "$berth")" && pwd)/$(basename "$berth")"
build="$(dirname "$berth")/berth-build"
runs=${RUNS:-3}
for t in docker-registry skopeo python3 "$build"; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench: $t is missing (scripts/deps.sh)" >&2; exit 1; }
done
have_ctr=1
command -v ctr >/dev/null && command -v containerd >/dev/null || { have_ctr=0; echo "bench: containerd/ctr not installed: no ctr column" >&2; }

work=$(mktemp -d /tmp/berth-bench-registry.XXXXXX)
reg_pid=""
ctrd_pid=""
cleanup() {
  [ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null || true
  [ -n "$ctrd_pid" ] && kill "$ctrd_pid" 2>/dev/null && wait "$ctrd_pid" 2>/dev/null || true
  umount -R "$work/ctrd" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
host="127.0.0.1:$port"

# A fresh, empty registry (storage wiped) on $host.
start_registry() {
  [ -n "$reg_pid" ] && { kill "$reg_pid" 2>/dev/null; wait "$reg_pid" 2>/dev/null || true; }
  rm -rf "$work/reg"
  mkdir -p "$work/reg"
  cat > "$work/reg/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/reg/data
http:
  addr: $host
EOF
  docker-registry serve "$work/reg/config.yml" >"$work/reg/log" 2>&1 &
  reg_pid=$!
  for _ in $(seq 200); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench: docker-registry did not start" >&2; cat "$work/reg/log" >&2; exit 1
}

# A fresh containerd with its own root, state and socket.
start_containerd() {
  [ -n "$ctrd_pid" ] && { kill "$ctrd_pid" 2>/dev/null; wait "$ctrd_pid" 2>/dev/null || true; }
  umount -R "$work/ctrd" 2>/dev/null || true
  rm -rf "$work/ctrd"
  mkdir -p "$work/ctrd"
  cat > "$work/ctrd/config.toml" <<EOF
version = 2
root = "$work/ctrd/root"
state = "$work/ctrd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$work/ctrd/sock"
EOF
  containerd --config "$work/ctrd/config.toml" >"$work/ctrd/log" 2>&1 &
  ctrd_pid=$!
  for _ in $(seq 200); do
    [ -S "$work/ctrd/sock" ] && ctr --address "$work/ctrd/sock" version >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "bench: containerd did not start" >&2; cat "$work/ctrd/log" >&2; exit 1
}

# The image: a docker archive with 10 layers of 20 MiB (incompressible).
python3 - "$work" <<'PY'
import hashlib, io, json, os, sys, tarfile
work = sys.argv[1]
d = os.path.join(work, "archive")
os.makedirs(d)
diff_ids, names = [], []
for i in range(10):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        data = os.urandom(20 << 20)
        info = tarfile.TarInfo(f"layer{i}/data")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    name = f"layer{i}.tar"
    open(os.path.join(d, name), "wb").write(raw)
    diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    names.append(name)
cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
       "rootfs": {"type": "layers", "diff_ids": diff_ids}}
open(os.path.join(d, "config.json"), "w").write(json.dumps(cfg))
open(os.path.join(d, "manifest.json"), "w").write(json.dumps(
    [{"Config": "config.json", "RepoTags": ["bench:v1"], "Layers": names}]))
with tarfile.open(os.path.join(work, "image.tar"), "w") as t:
    for n in ["manifest.json", "config.json"] + names:
        t.add(os.path.join(d, n), arcname=n)
PY
rm -rf "$work/archive"
store="$work/store"
"$build" --root "$store" load -i "$work/image.tar" >/dev/null 2>&1
ref="$host/bench/app:v1"
bb() { "$build" --root "$1" --config "$work/docker" "${@:2}"; }

# time_ms CMD...: runs CMD, prints milliseconds.
time_ms() {
  local s e
  s=$(date +%s%N)
  "$@" >/dev/null 2>&1 || { echo "bench: failed: $*" >&2; exit 1; }
  e=$(date +%s%N)
  echo $(( (e - s) / 1000000 ))
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A result
measure() { # measure NAME SETUP-FN CMD...
  local name=$1 setup=$2; shift 2
  local times=()
  for _ in $(seq "$runs"); do
    $setup
    times+=("$(time_ms "$@")")
  done
  result[$name]=$(printf '%s\n' "${times[@]}" | median)
}

# Push ------------------------------------------------------------------------
fresh_push() { start_registry; rm -rf "$store/sources"; mkdir -p "$store/sources"; }
noop() { :; }
measure "push cold berth" fresh_push bb "$store" push bench:v1 "$ref"
measure "push cold skopeo" fresh_push skopeo copy -q --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://$ref"
start_registry
bb "$store" push bench:v1 "$ref" >/dev/null 2>&1
measure "push present berth" noop bb "$store" push bench:v1 "$ref"
measure "push present skopeo" noop skopeo copy -q --dest-tls-verify=false "docker-archive:$work/image.tar" "docker://$ref"

# Pull ------------------------------------------------------------------------
fresh_store() { rm -rf "$work/pull-store" "$work/layout"; }
measure "pull cold berth" fresh_store bb "$work/pull-store" pull "$ref"
measure "pull cold skopeo" fresh_store skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/layout:v1"
bb "$work/pull-store" pull "$ref" >/dev/null 2>&1
skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/layout:v1" >/dev/null 2>&1
measure "pull present berth" noop bb "$work/pull-store" pull "$ref"
measure "pull present skopeo" noop skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$work/layout:v1"
if [ $have_ctr = 1 ]; then
  measure "pull cold ctr" start_containerd ctr --address "$work/ctrd/sock" images pull --plain-http "$ref"
  measure "pull present ctr" noop ctr --address "$work/ctrd/sock" images pull --plain-http "$ref"
fi

echo "registry benchmark: 10 x 20 MiB layers, local docker-registry, median of $runs runs (ms)"
printf '%-14s %10s %10s %10s %14s\n' "" berth skopeo ctr "berth/fastest"
for op in "push cold" "push present" "pull cold" "pull present"; do
  b=${result["$op berth"]}
  s=${result["$op skopeo"]:-}
  c=${result["$op ctr"]:--}
  best=$s
  [ "$c" != "-" ] && [ "$c" -lt "$best" ] && best=$c
  ratio=$(awk -v b="$b" -v f="$best" 'BEGIN { printf "%.2f", (f > 0 ? b / f : 0) }')
  printf '%-14s %10s %10s %10s %14s\n' "$op" "$b" "$s" "$c" "$ratio"
done
echo "(ctr images pull also unpacks the layers into its snapshotter; berth and skopeo only fetch)"
