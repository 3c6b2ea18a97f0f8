#!/usr/bin/env bash
# Builder benchmark: berth-build (engine in-process) vs buildah bud on
#  1. a small busybox Dockerfile (ADD rootfs tar, ENV, RUN, WORKDIR, COPY, CMD)
#  2. a Dockerfile that COPYs a 10k-file context
# each measured cold (empty store / --no-cache), fully cached, and after a
# one-file change. Prints hyperfine's tables and berth's speed-up ratios.
# usage: bench/builder.sh PATH/TO/berth   (berth-build is expected next to it;
# RUN steps use that berth as their OCI runtime)
set -euo pipefail
berth=${1:?usage: builder.sh PATH/TO/berth}
berth="$(cd "$(dirname "$berth")" && pwd)/$(basename "$berth")"
build="$(dirname "$berth")/berth-build"
runs=${RUNS:-10}
for t in hyperfine "$build"; do
  command -v "$t" >/dev/null || [ -x "$t" ] || { echo "bench: $t is missing" >&2; exit 1; }
done
have_buildah=1
command -v buildah >/dev/null || { have_buildah=0; echo "bench: buildah not installed: berth only" >&2; }

work=$(mktemp -d /tmp/berth-bench.XXXXXX)
# buildah's runs leave tagged and dangling images: remove the ones that
# did not exist before the benchmark.
[ $have_buildah = 1 ] && buildah images -q --no-trunc 2>/dev/null | sort -u > "$work/images-before"
cleanup() {
  if [ $have_buildah = 1 ]; then
    buildah images -q --no-trunc 2>/dev/null | sort -u | comm -13 "$work/images-before" - |
      xargs -r buildah rmi -f >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Contexts ------------------------------------------------------------------
mkdir -p "$work/rootfs"/{bin,etc,tmp} "$work/small/src" "$work/big/files"
cp /bin/busybox "$work/rootfs/bin/busybox"
for a in sh echo cat ls mkdir true; do ln -s busybox "$work/rootfs/bin/$a"; done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$work/rootfs/etc/passwd"
tar -C "$work/rootfs" -cf "$work/small/busybox.tar" .
cp "$work/small/busybox.tar" "$work/big/busybox.tar"
echo 'int main(void) { return 0; }' > "$work/small/src/main.c"
cat > "$work/small/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD busybox.tar /
ENV GREETING=hello
RUN echo "$GREETING" > /greeting
WORKDIR /app
COPY src/ /app/src/
CMD ["cat", "/greeting"]
DOCKERFILE
for d in $(seq 0 99); do
  mkdir -p "$work/big/files/d$d"
  for f in $(seq 0 99); do echo "file $d/$f" > "$work/big/files/d$d/f$f.txt"; done
done
cat > "$work/big/Dockerfile" <<'DOCKERFILE'
FROM scratch
ADD busybox.tar /
COPY files/ /data/
CMD ["ls", "/data"]
DOCKERFILE

csv_mean() { awk -F, 'NR==2 {print $2}' "$1"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a > 0) printf "%.1fx", b / a; else print "n/a" }'; }

bench_one() { # name ctx change-file
  local name=$1 ctx=$2 change=$3
  local store="$work/store-$name"
  local bb="$build --root $store --runtime $berth build --progress plain -t berth-bench-$name $ctx"
  echo
  echo "=== $name: berth-build"
  # Cold: a brand-new store each run. Old stores are moved aside, not
  # deleted, and dirty data is flushed first, so that neither tool pays for
  # the previous run's writeback.
  local fresh="sh -c 'mv $store $store.old.\$(date +%s%N) 2>/dev/null; sync'"
  hyperfine -N --runs "$runs" --export-csv "$work/$name-cold.csv" --prepare "$fresh" "$bb" 2>/dev/null || \
    hyperfine --runs "$runs" --export-csv "$work/$name-cold.csv" --prepare "$fresh" "$bb"
  hyperfine --warmup 2 --runs "$runs" --export-csv "$work/$name-cached.csv" "$bb"
  hyperfine --warmup 1 --runs "$runs" --export-csv "$work/$name-change.csv" \
    --prepare "sh -c 'date +%s%N > $ctx/$change'" "$bb"
  if [ $have_buildah = 1 ]; then
    local bh="buildah bud --runtime $berth --layers -t berth-bench-$name $ctx"
    echo "=== $name: buildah bud"
    hyperfine --runs "$runs" --export-csv "$work/$name-bh-cold.csv" --prepare sync \
      "buildah bud --runtime $berth --no-cache -t berth-bench-$name $ctx"
    hyperfine --warmup 2 --runs "$runs" --export-csv "$work/$name-bh-cached.csv" "$bh"
    hyperfine --warmup 1 --runs "$runs" --export-csv "$work/$name-bh-change.csv" \
      --prepare "sh -c 'date +%s%N > $ctx/$change'" "$bh"
  fi
}

bench_one small "$work/small" src/main.c
bench_one 10k "$work/big" files/d0/f0.txt

echo
echo "=== summary (mean seconds; ratio = buildah / berth)"
printf '%-14s %-10s %-10s %-10s\n' case berth buildah ratio
for name in small 10k; do
  for kind in cold cached change; do
    b=$(csv_mean "$work/$name-$kind.csv")
    if [ $have_buildah = 1 ]; then
      h=$(awk -v v="$(csv_mean "$work/$name-bh-$kind.csv")" 'BEGIN { printf "%.4f", v }'); r=$(ratio "$b" "$h")
    else h=-; r=-; fi
    printf '%-14s %-10.4f %-10s %-10s\n' "$name-$kind" "$b" "$h" "$r"
  done
done
small_cold=$(csv_mean "$work/small-cold.csv"); small_cached=$(csv_mean "$work/small-cached.csv")
echo
echo "targets: small cold vs BuildKit's 0.223 s: $(ratio "$small_cold" 0.223) faster (want >= 2x);" \
  "small cached: $(awk -v c="$small_cached" 'BEGIN{printf "%.1f ms", c*1000}') (want <= 30 ms)"
