#!/usr/bin/env bash
# `make bench`, data larger than memory: streaming (in_memory = false, order = blocks, the reader
# thread) against the same config held in memory, interleaved, 2 ranks of 1 BLAS thread each.
#   1. configs/fashion_mlp.ini from the page cache: samples/s ratio (target >= 0.95)
#   2. a synthetic file (4 GB) 4x larger than the run's memory cgroup (target >= 0.8 of in memory;
#      SKIPPED where no memory cgroup can be made or caches cannot be dropped)
#   3. test accuracy of the whole fashion_mlp run, order = blocks against random (within 0.3 points)
# Writes $BENCH_DIR/stream.json and prints the table on stderr.
# Usage: scripts/bench_stream.sh [BUILD_DIR] [--synthetic-mb 4096]
set -u
build=build
syn_mb=4096
while [ $# -gt 0 ]; do
  case $1 in
    --synthetic-mb) syn_mb=$2; shift 2 ;;
    -*) echo "bench: unknown option $1" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
bin=$build/dptrain
out=${BENCH_DIR:-bench}
mkdir -p "$out"
read -ra extra <<< "${MPIRUN_FLAGS:-}"
case " ${MPIRUN_FLAGS:-} " in
  *" --bind-to "*) mpi=(mpirun "${extra[@]}") ;;
  *) mpi=(mpirun --bind-to core "${extra[@]}") ;;
esac
[ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
export OPENBLAS_NUM_THREADS=1

# train NAME CONFIG [--set ...]: one 2-rank run; its metrics.jsonl's last line has train_s and the
# test accuracy, the line before it the samples done.
train() {
  local name=$1 config=$2
  shift 2
  echo "bench: $name" >&2
  "${mpi[@]}" -np 2 "$bin" train "$config" --quiet --overwrite --set train.out_dir="$out/$name" \
    --set train.threads=1 "$@" > "$out/$name.log" 2>&1 ||
    { echo "bench: $name failed (see $out/$name.log)" >&2; exit 1; }
}

# 1 and 3: fashion_mlp, from the page cache (the file was just read) and in memory, interleaved.
fm=configs/fashion_mlp.ini
for r in 1 2 3; do
  train fm-mem-$r $fm --set data.in_memory=true --set data.order=random --set train.epochs=2
  train fm-stream-$r $fm --set data.in_memory=false --set data.order=blocks --set train.epochs=2
done
train fm-acc-random $fm --set data.in_memory=true --set data.order=random
train fm-acc-blocks $fm --set data.in_memory=false --set data.order=blocks

# 2: a synthetic set 4x the memory the run may use. cgroup v1 charges the page cache to the group,
# so with caches dropped first every block really comes from the disk.
cg=/sys/fs/cgroup/memory/dptrain-bench
syn=$out/synthetic.h5
rows=$((syn_mb * 1024 * 1024 / (256 * 4)))
limit=$((syn_mb * 1024 * 1024 / 4))
cgroup_note=""
if [ "$(id -u)" != 0 ] || ! mkdir -p "$cg" 2> /dev/null || ! echo "$limit" > "$cg/memory.limit_in_bytes" 2> /dev/null; then
  cgroup_note="SKIPPED: no memory cgroup (needs root and cgroup v1 at /sys/fs/cgroup/memory)"
elif ! sync || ! echo 3 > /proc/sys/vm/drop_caches 2> /dev/null; then
  cgroup_note="SKIPPED: cannot drop the page cache (/proc/sys/vm/drop_caches)"
fi
syn_cfg=configs/synthetic_5m.ini
steps=4000
if [ -z "$cgroup_note" ]; then
  [ -f "$syn" ] || "$bin" convert synthetic -o "$syn" --rows "$rows" --features 256 --classes 10 --test-rows 10000 > /dev/null ||
    { echo "bench: synthetic data failed" >&2; exit 1; }
  for r in 1 2; do
    train syn-mem-$r $syn_cfg --set data.path="$syn" --set data.in_memory=true --set data.order=random \
      --set train.max_steps=$steps
    sync
    echo 3 > /proc/sys/vm/drop_caches
    echo "bench: syn-cgroup-$r (limit $((limit >> 20)) MiB, file $syn_mb MiB)" >&2
    (echo $BASHPID > "$cg/cgroup.procs" &&
      train syn-cgroup-$r $syn_cfg --set data.path="$syn" --set data.in_memory=false --set data.order=blocks \
        --set train.max_steps=$steps --set data.prefetch_mb=128) || exit 1
  done
  rmdir "$cg" 2> /dev/null
  rm -f "$syn"
fi

python3 - "$out" "$cgroup_note" "$syn_mb" "$limit" << 'EOF' > "$out/stream.json"
import json, os, sys
d, note, syn_mb, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

def run(name):
    lines = [json.loads(l) for l in open(os.path.join(d, name, "metrics.jsonl"))]
    done = [r for r in lines if "train_s" in r][-1]
    samples = [r for r in lines if "samples" in r][-1]["samples"]
    return samples / done["train_s"], done.get("test_acc")

def best(prefix, n):
    return max(run("%s-%d" % (prefix, r))[0] for r in range(1, n + 1))

rows = []
mem, stream = best("fm-mem", 3), best("fm-stream", 3)
rows.append(("fashion_mlp streamed from the page cache vs in memory", stream / mem, ">= 0.95",
             stream / mem >= 0.95, "%.0f vs %.0f samples/s" % (stream, mem)))
if note:
    rows.append(("synthetic file 4x the cgroup's memory vs in memory", None, ">= 0.8", None, note))
else:
    m, c = best("syn-mem", 2), best("syn-cgroup", 2)
    rows.append(("synthetic %d MiB file, cgroup limit %d MiB, vs in memory" % (syn_mb, limit >> 20),
                 c / m, ">= 0.8", c / m >= 0.8, "%.0f vs %.0f samples/s" % (c, m)))
ar, ab = run("fm-acc-random")[1], run("fm-acc-blocks")[1]
diff = (ab - ar) * 100
rows.append(("fashion_mlp test accuracy, blocks - random (points)", diff, "within 0.3",
             abs(diff) <= 0.3, "%.2f%% vs %.2f%%" % (ab * 100, ar * 100)))
out = []
for name, value, goal, ok, detail in rows:
    result = "SKIPPED" if ok is None else ("PASS" if ok else "MISS")
    shown = "-" if value is None else "%.3f" % value
    print("%-62s %8s  %-10s %-7s %s" % (name, shown, goal, result, detail), file=sys.stderr)
    out.append({"name": name, "value": value, "goal": goal, "result": result, "detail": detail})
print(json.dumps({"threads_per_rank": 1, "ranks": 2, "rows": out}, indent=1))
EOF
