#!/usr/bin/env bash
# Runtime benchmark: berth vs runc vs an unshare+chroot floor, side by side.
#   bench/runtime.sh BERTH_BINARY
#   BENCH_BASELINE=OLD_BERTH bench/runtime.sh BERTH_BINARY   (adds OLD_BERTH's
#     `run` as one more row of the same interleaved runs, for before/after)
# Measures /bin/true in the busybox bundle (runc's default spec: pid, net,
# ipc, uts, mount, cgroup namespaces; masked paths; caps; cgroup with device
# rules) three ways:
#   run      one `run` invocation: create + start + wait + delete
#   steps    `create`, `start`, `delete --force` as separate invocations
#   floor    unshare -pfnimuC --mount-proc + chroot (no runtime at all)
# and prints medians and ratios (runs interleaved: see below).
set -euo pipefail
berth=$(realpath "$1")
runc=$(command -v runc)
here=$(cd "$(dirname "$0")/.." && pwd)
runs=${BENCH_RUNS:-200}
work=$(mktemp -d /tmp/berth-bench.XXXXXX)
# State roots live on tmpfs under /run, as runc's and berth's defaults do
# (on this VM's disk every file create in the state dir costs ~1 ms).
state=$(mktemp -d /run/berth-bench.XXXXXX)
mount -t tmpfs -o size=64m tmpfs "$state"
cleanup() {
  "$berth" --root "$state/berth-root" delete --force bench >/dev/null 2>&1 || true
  "$runc" --root "$state/runc-root" delete --force bench >/dev/null 2>&1 || true
  umount "$work/berth-ro" 2>/dev/null || true
  umount "$state" 2>/dev/null || true
  rm -rf "$work" "$state"
}
trap cleanup EXIT

[ -d "$here/fixtures/busybox/rootfs" ] || bash "$here/scripts/busybox-bundle.sh" "$berth" "$here/fixtures/busybox" >/dev/null
cp -a "$here/fixtures/busybox" "$work/bundle"
python3 - "$work/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["terminal"] = False
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(p, "w"), indent=1)
PY
rootfs="$work/bundle/rootfs"
# berth installed on a read-only mount need not switch its executable to a
# read-only view (the mount already makes /proc/self/exe unwritable):
# measured as a separate row.
cp "$berth" "$work/berth-ro"
mount --bind -o ro "$work/berth-ro" "$work/berth-ro"
B="$berth --root $state/berth-root"
baseline=()
if [ -n "${BENCH_BASELINE:-}" ]; then
  baseline=("berth run (baseline)=$(realpath "$BENCH_BASELINE") --root $state/baseline-root run bench")
fi
R="$runc --root $state/runc-root"
cd "$work/bundle"

# Runs are interleaved round-robin (bench/interleave.py) rather than one
# command after another: this 2-core VM's speed drifts over seconds, and the
# kernel tears down every run's namespaces and cgroups in the background;
# interleaving makes all commands see the same conditions.
unshare=$(command -v unshare)
python3 "$here/bench/interleave.py" "$runs" 10 \
  "berth run=$B run bench" \
  "berth run (ro binary)=$work/berth-ro --root $state/berth-root run bench" \
  "runc run=$R run bench" \
  "floor (unshare+chroot)=$unshare -pfnimuC --mount-proc=$rootfs/proc chroot $rootfs /bin/true" \
  "${baseline[@]}" \
  > "$work/run.json"
python3 "$here/bench/interleave.py" "$((runs / 2))" 5 \
  "berth create/start/delete=$B create bench && $B start bench && $B delete --force bench" \
  "runc create/start/delete=$R create bench && $R start bench && $R delete --force bench" \
  > "$work/steps.json"

python3 - "$work/run.json" "$work/steps.json" <<'PY'
import json, sys
def load(p):
    return {r["command"]: r for r in json.load(open(p))["results"]}
run, steps = load(sys.argv[1]), load(sys.argv[2])
ms = lambda r: r["median"] * 1000
print(f"{'benchmark':34} {'median ms':>10} {'mean ms':>9} {'stddev':>7}")
for d in (run, steps):
    for name, r in d.items():
        print(f"{name:34} {ms(r):10.2f} {r['mean']*1000:9.2f} {r['stddev']*1000:7.2f}")
b, rc, fl = ms(run["berth run"]), ms(run["runc run"]), ms(run["floor (unshare+chroot)"])
bs, rs = ms(steps["berth create/start/delete"]), ms(steps["runc create/start/delete"])
print()
bro = ms(run["berth run (ro binary)"])
print(f"run:   runc/berth = {rc / b:.2f}x faster (target >= 3x); berth/floor = {b / fl:.2f}x (target <= 2x)")
print(f"run, berth on a read-only mount: runc/berth = {rc / bro:.2f}x; berth/floor = {bro / fl:.2f}x")
print(f"steps: runc/berth = {rs / bs:.2f}x faster")
if "berth run (baseline)" in run:
    old = ms(run["berth run (baseline)"])
    print(f"run vs baseline: {old:.2f} -> {b:.2f} ms ({(b - old) / old * 100:+.1f}%); baseline runc/berth = {rc / old:.2f}x, berth/floor = {old / fl:.2f}x")
PY
