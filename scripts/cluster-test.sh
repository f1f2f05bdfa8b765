#!/usr/bin/env bash
# Multi-host runs over TCP on this one machine (`make cluster-test`), as root.
#
#   scripts/cluster-test.sh [BUILD_DIR]
#
# Builds a small test cluster out of Linux network namespaces: hosts dpt-h1 and dpt-h2, each with
# a veth into the bridge dpt-br0 in the root namespace (10.211.0.1/24; hosts .11 and .12), and
# launches dptrain on it with mpirun, whose remote-shell agent is scripts/netns-agent.sh (an
# ssh stand-in: it runs Open MPI's daemon inside the host's namespace, under the host's own
# hostname, with the cluster's private hosts file bind-mounted over /etc/hosts in a private mount
# namespace; /etc is never written). MPI traffic is TCP over the veths only (pml ob1, btl
# tcp,self, btl/oob_tcp_if_include the subnet). The hosts share this machine's file system, as
# cluster nodes share a network file system.
#
# Checks: (a) 2 hosts x 2 ranks train the same loss trajectory (metrics.jsonl, log_every 1) as
# 4 ranks on one machine, within 1e-5 relative; (b) dptrain's start-up line says "4 ranks on 2
# nodes" and the BLAS threads per rank (cores / ranks per node), and 2 hosts x 1 rank say "2 ranks
# on 2 nodes" with all the cores' threads; (c) a checkpoint written by the 2-host run resumes on
# one host and ends with the uninterrupted run's final loss within 1e-5; (d) SIGKILL to one host's
# ranks in a long run ends the whole job non-zero within 10 s, leaving no rank behind; (e) 2 hosts x
# 2 ranks with [train] comm = node (one slice per local rank, allreduced across the hosts) train the
# loss trajectory of comm = flat within 1e-6 relative, and the start-up line says so; on 2 + 1 ranks
# comm = auto runs flat and says why, comm = node stops with one line.
#
# Without root, ip, unshare or kernel support for netns/veth/bridge it prints
# "cluster-test: SKIPPED: <reason>" and exits 0. Everything it creates (namespaces, veths, bridge,
# processes, temporary files) is removed on exit, failure, Ctrl-C or SIGTERM.
# Environment: DPT_CLUSTER_NET (default 10.211.0) picks the /24; DPT_CLUSTER_KEEP=1 keeps the
# run directories and logs (printed at the end).
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
agent=$here/netns-agent.sh
net=${DPT_CLUSTER_NET:-10.211.0}
hosts_list=(dpt-h1 dpt-h2)
bridge=dpt-br0
lockfile=/run/lock/dptrain-cluster-test.lock
start_s=$(date +%s.%N)

skip() { echo "cluster-test: SKIPPED: $*"; exit 0; }
die() { echo "cluster-test: FAIL: $*"; exit 1; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---- can this machine do it at all? (nothing is created before these pass)
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces, veth, bridge)"
for tool in ip unshare mount hostname; do
  command -v $tool > /dev/null 2>&1 || skip "'$tool' not found"
done
[ -e /proc/self/ns/net ] && [ -e /proc/self/ns/uts ] && [ -e /proc/self/ns/mnt ] ||
  skip "kernel without network/UTS/mount namespaces"
command -v mpirun > /dev/null 2>&1 || die "mpirun not found"
bin=$(realpath "$build/dptrain" 2> /dev/null)
[ -x "$bin" ] || die "$build/dptrain missing (make all)"
[ -x "$build/tests/make_synth" ] || die "$build/tests/make_synth missing (make tests)"
[ -x "$agent" ] || die "$agent missing or not executable"

# One test cluster at a time: the names and the subnet are fixed.
mkdir -p /run/lock
exec 9> "$lockfile" || skip "cannot open $lockfile"
flock -n 9 || die "another cluster-test is running (lock $lockfile)"

tmp=$(mktemp -d /tmp/dpt-cluster-XXXXXX)
chmod 755 "$tmp"
bgpid=
created=0
# The running job: timeout (its own process group, which mpirun shares) and mpirun. mpirun may sit
# out a SIGTERM for a while when its daemons are gone, hence the SIGKILL after 3 s.
stop_bg() {
  local _
  kill -TERM -- -"$bgpid" 2> /dev/null
  for _ in $(seq 30); do
    kill -0 -- -"$bgpid" 2> /dev/null || break
    sleep 0.1
  done
  kill -KILL -- -"$bgpid" 2> /dev/null
  for _ in $(seq 30); do
    kill -0 -- -"$bgpid" 2> /dev/null || break
    sleep 0.1
  done
  wait "$bgpid" 2> /dev/null
  bgpid=
}
cleanup() {
  local rc=$? h p strays=
  trap - EXIT INT TERM
  [ -n "$bgpid" ] && stop_bg
  if [ $created = 1 ]; then
    for h in "${hosts_list[@]}"; do
      if [ -e "/run/netns/$h" ]; then
        # every process still inside (daemons, ranks, shells): nothing may outlive the test
        for p in $(ip netns pids "$h" 2> /dev/null); do
          strays="$strays $(cat "/proc/$p/comm" 2> /dev/null)($p@$h)"
          kill -KILL "$p" 2> /dev/null
        done
      fi
    done
    [ -n "$strays" ] && echo "cluster-test: cleanup killed processes left in the namespaces:$strays"
    for h in "${hosts_list[@]}"; do
      ip link del "$h-v" 2> /dev/null # removes both ends now; netns deletion would do it lazily
      [ -e "/run/netns/$h" ] && ip netns del "$h" 2> /dev/null
    done
    ip link del "$bridge" 2> /dev/null
  fi
  if [ -n "${DPT_CLUSTER_KEEP:-}" ]; then echo "cluster-test: logs kept in $tmp"; else rm -rf "$tmp"; fi
  exit $rc
}
trap cleanup EXIT
trap 'echo "cluster-test: interrupted"; exit 130' INT
trap 'echo "cluster-test: terminated"; exit 143' TERM

# Leftovers of a run that was killed with SIGKILL (we hold the lock, so nobody uses them).
stale() {
  local h p
  for h in "${hosts_list[@]}"; do
    if [ -e "/run/netns/$h" ]; then
      for p in $(ip netns pids "$h" 2> /dev/null); do kill -KILL "$p" 2> /dev/null; done
      ip link del "$h-v" 2> /dev/null
      ip netns del "$h" 2> /dev/null
    fi
  done
  ip link del "$bridge" 2> /dev/null
}
stale
if ip -4 route show table all | grep -q "^\(local \|broadcast \)\?$net\.[0-9/]* " ||
  ip -4 -o addr show | grep -q " inet $net\."; then
  skip "$net.0/24 is already in use here (set DPT_CLUSTER_NET to a free /24)"
fi

# ---- the cluster
created=1
ip link add "$bridge" type bridge 2> "$tmp/err" || skip "cannot create a bridge: $(cat "$tmp/err")"
ip addr add "$net.1/24" dev "$bridge" && ip link set "$bridge" up || die "cannot configure $bridge"
printf '127.0.0.1\tlocalhost\n%s.1\tdpt-head\n' "$net" > "$tmp/hosts"
i=0
for h in "${hosts_list[@]}"; do
  i=$((i + 1))
  ip netns add "$h" 2> "$tmp/err" || skip "cannot create network namespace $h: $(cat "$tmp/err")"
  ip link add "$h-v" type veth peer name eth0 netns "$h" 2> "$tmp/err" ||
    skip "cannot create a veth pair: $(cat "$tmp/err")"
  ip link set "$h-v" master "$bridge" && ip link set "$h-v" up &&
    ip -n "$h" addr add "$net.1$i/24" dev eth0 && ip -n "$h" link set eth0 up &&
    ip -n "$h" link set lo up || die "cannot configure $h"
  printf '%s.1%d\t%s\n' "$net" $i "$h" >> "$tmp/hosts"
done
export DPT_CLUSTER_HOSTS=$tmp/hosts
# The agent must work before mpirun is worth starting: own hostname, private hosts file, and a
# route to the head (mpirun) over the veth.
for h in "${hosts_list[@]}"; do
  ip netns exec "$h" unshare --uts --mount sh -c 'hostname dpt-probe && [ "$(hostname)" = dpt-probe ]' 2> "$tmp/err" ||
    skip "cannot give a netns host its own hostname (unshare --uts --mount): $(head -2 "$tmp/err")"
  got=$("$agent" "$h" 'echo $(hostname) $(getent hosts '"$h"' | cut -d" " -f1) $(ip -4 route get '"$net"'.1 | grep -o "dev [a-z0-9]*")' 2> "$tmp/err")
  case $got in
    "$h $net."*" dev eth0") ;;
    *) die "$agent $h: want '$h $net.1x dev eth0' (hostname, address, route), got '$got' $(head -3 "$tmp/err")" ;;
  esac
done
echo "cluster: ${hosts_list[*]} on $bridge $net.1/24 (hosts $(sed -n "s/^\($net\.1[0-9]*\)\t\(.*\)/\2=\1/p" "$tmp/hosts" | tr '\n' ' '| sed 's/ $//')), set up in $(elapsed "$start_s") s"

fails=0
ok() { echo "ok   - $1"; }
bad() { echo "FAIL - $1"; fails=$((fails + 1)); }

# Runs in the background and waits, so that Ctrl-C and SIGTERM reach the traps at once.
run() { # LOG TIMEOUT command...
  local log=$1 t=$2 rc
  shift 2
  timeout -k 5 "$t" "$@" > "$log" 2>&1 9>&- &
  bgpid=$!
  wait $bgpid
  rc=$?
  bgpid=
  return $rc
}

hostfile() { # FILE SLOTS HOST...
  local f=$1 s=$2 h
  shift 2
  {
    echo "# test cluster of scripts/cluster-test.sh"
    for h in "$@"; do echo "$h slots=$s"; done
  } > "$f"
}
hostfile "$tmp/hosts2x2" 2 "${hosts_list[@]}"
hostfile "$tmp/hosts2x1" 1 "${hosts_list[@]}"
hostfile "$tmp/hosts1x2" 2 "${hosts_list[0]}"
{ echo "${hosts_list[0]} slots=2"; echo "${hosts_list[1]} slots=1"; } > "$tmp/hosts2+1"

# shellcheck disable=SC2054 # "tcp,self" is one word
cluster_mpirun=(mpirun --allow-run-as-root --nolocal
  --mca plm_rsh_agent "$agent" --mca plm_rsh_no_tree_spawn 1
  --mca pml ob1 --mca btl tcp,self
  --mca btl_tcp_if_include "$net.0/24" --mca oob_tcp_if_include "$net.0/24")

"$build/tests/make_synth" "$tmp/syn.h5" 2000 200 20 5 1 > "$tmp/synth.txt" 2>&1 ||
  die "make_synth failed: $(tail -2 "$tmp/synth.txt")"
cat > "$tmp/train.ini" << EOC
[data]
path = $tmp/syn.h5
[model]
loss = softmax_cross_entropy
[layer]
units = 32
activation = relu
[layer]
units = 5
activation = identity
[optimizer]
name = sgd
lr = 0.05
momentum = 0.9
[train]
batch_size = 64
epochs = 100
max_steps = 30
log_every = 1
out_dir = $tmp/unused
[checkpoint]
every_steps = 0
at_end = true
keep_last = 0
EOC

losses() { grep '"loss"' "$1" | sed 's/.*"step":\([0-9]*\).*"loss":\([^,}]*\).*/\1 \2/'; }
last_loss() { losses "$1" | tail -1 | cut -d' ' -f2; }
close_to() { # a, b: |a-b| <= 1e-5 |a|
  awk -v a="$1" -v b="$2" 'BEGIN { d = a - b; if (d < 0) d = -d; m = a < 0 ? -a : a; exit !(a != "" && b != "" && d <= 1e-5 * m) }'
}
# Largest relative difference of two "step loss" files, or "steps differ".
max_rel() {
  paste -d' ' "$1" "$2" | awk '$1 != $3 { bad = 1 } { d = $2 - $4; if (d < 0) d = -d; m = $2 < 0 ? -$2 : $2; r = m > 0 ? d / m : d; if (r > x) x = r }
    END { if (bad || NR == 0) print "steps differ"; else printf "%.3g\n", x }'
}
startup() { grep -m1 '^dptrain: .* rank.* on .* node' "$1"; }

cores=$(nproc)
want_threads() { # ranks per node -> "N BLAS thread(s)"
  local n=$((cores / $1))
  [ $n -lt 1 ] && n=1
  [ $n -gt 1 ] && echo "$n BLAS threads" || echo "1 BLAS thread"
}

# ---- smoke test: can mpirun start daemons on the hosts at all? Each rank's hostname and address,
# as the ranks see them; nothing else is worth running if this fails.
t0=$(date +%s.%N)
run "$tmp/where.txt" 30 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2x2" -np 4 sh -c 'echo "rank $OMPI_COMM_WORLD_RANK on $(hostname) $(ip -4 -br addr show eth0 | tr -s " " | cut -d" " -f3)"'
where=$(grep '^rank ' "$tmp/where.txt" | sort | tr '\n' ';')
if [ "$where" = "rank 0 on dpt-h1 $net.11/24;rank 1 on dpt-h1 $net.11/24;rank 2 on dpt-h2 $net.12/24;rank 3 on dpt-h2 $net.12/24;" ]; then
  ok "(b) ranks 0,1 on dpt-h1 ($net.11), 2,3 on dpt-h2 ($net.12); none on $(hostname) [$(elapsed "$t0") s]"
else
  bad "(b) rank placement: '$where'"
  echo "#   mpirun output: $(tail -8 "$tmp/where.txt" | tr -s ' \n' '  ')"
  echo "cluster-test: FAIL (mpirun cannot run on the test hosts; nothing else attempted, $(elapsed "$start_s") s)"
  exit 1
fi
# ---- (a) reference: 4 ranks on this machine, then 2 hosts x 2 ranks
t0=$(date +%s.%N)
run "$tmp/local.txt" 60 mpirun --allow-run-as-root -np 4 --oversubscribe "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/local" || bad "local 4-rank reference run failed: $(tail -3 "$tmp/local.txt")"
echo "#   local reference (4 ranks, this machine): $(startup "$tmp/local.txt") [$(elapsed "$t0") s]"
t0=$(date +%s.%N)
if run "$tmp/c22.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2x2" -np 4 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/c22"; then
  ok "2 hosts x 2 ranks over TCP: 30 steps in $(elapsed "$t0") s"
else
  bad "2 hosts x 2 ranks: exit $?: $(tail -5 "$tmp/c22.txt" | tr '\n' ' ')"
fi
losses "$tmp/local/metrics.jsonl" > "$tmp/local.loss" 2> /dev/null
losses "$tmp/c22/metrics.jsonl" > "$tmp/c22.loss" 2> /dev/null
n=$(wc -l < "$tmp/c22.loss")
r=$(max_rel "$tmp/local.loss" "$tmp/c22.loss")
if [ "$n" -eq 30 ] && [ "$(wc -l < "$tmp/local.loss")" -eq 30 ] && [ "$r" != "steps differ" ] &&
  awk -v r="$r" 'BEGIN { exit !(r <= 1e-5) }'; then
  ok "(a) loss trajectory of 2 hosts x 2 = 1 machine x 4 (30 steps, max relative difference $r)"
else
  bad "(a) loss trajectories: $n vs $(wc -l < "$tmp/local.loss") lines, max relative difference $r: $(diff "$tmp/local.loss" "$tmp/c22.loss" | head -4 | tr '\n' ' ')"
fi

# ---- (b) topology as dptrain reports it
line=$(startup "$tmp/c22.txt")
echo "#   2-host run: $line"
want="4 ranks on 2 nodes, $(want_threads 2) per rank"
case $line in
  "dptrain: $want "*) ok "(b) start-up line: $want" ;;
  *) bad "(b) start-up line '$line', want '$want'" ;;
esac
# One rank per host: node detection must give each rank all its node's cores (unbound: Open MPI
# binds 2 ranks to a core each by default, and a rank's threads follow its affinity mask).
run "$tmp/c21.txt" 60 "${cluster_mpirun[@]}" --bind-to none --hostfile "$tmp/hosts2x1" -np 2 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/c21" --set train.max_steps=3 || bad "2 hosts x 1 rank: $(tail -3 "$tmp/c21.txt" | tr '\n' ' ')"
line=$(startup "$tmp/c21.txt")
echo "#   2 hosts x 1 rank: $line"
want="2 ranks on 2 nodes, $(want_threads 1) per rank"
case $line in
  "dptrain: $want "*) ok "(b) start-up line: $want" ;;
  *) bad "(b) 2 hosts x 1 rank: start-up line '$line', want '$want'" ;;
esac

# ---- (c) checkpoint written on 2 hosts, resumed on one
t0=$(date +%s.%N)
run "$tmp/half.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2x2" -np 4 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/split" --set train.max_steps=15 ||
  bad "(c) 2-host first half: $(tail -3 "$tmp/half.txt" | tr '\n' ' ')"
run "$tmp/resume.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts1x2" -np 2 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/split" --resume auto ||
  bad "(c) resume on dpt-h1: $(tail -3 "$tmp/resume.txt" | tr '\n' ' ')"
ref=$(last_loss "$tmp/c22/metrics.jsonl" 2> /dev/null)
got=$(last_loss "$tmp/split/metrics.jsonl" 2> /dev/null)
if grep -qF "resumed from $tmp/split/checkpoints/ckpt-15.h5 at step 15" "$tmp/resume.txt" &&
  grep -q '^dptrain: 2 ranks on 1 node' "$tmp/resume.txt" && grep -q '^done: 30 steps' "$tmp/resume.txt" &&
  close_to "$ref" "$got"; then
  ok "(c) ckpt-15 of 4 ranks on 2 hosts resumed by 2 ranks on dpt-h1: final loss $got ~ $ref [$(elapsed "$t0") s]"
else
  bad "(c) resume on one host: final loss '$got', uninterrupted '$ref': $(grep -e resumed -e ' on .* node' -e '^done' "$tmp/resume.txt" | tr '\n' ' ')"
fi

# ---- (e) comm = node across hosts: local rank l's slice allreduced with local rank l of the other host
t0=$(date +%s.%N)
for comm in node flat; do
  run "$tmp/c22-$comm.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2x2" -np 4 "$bin" train "$tmp/train.ini" \
    --set train.out_dir="$tmp/c22-$comm" --set train.comm=$comm ||
    bad "(e) 2 hosts x 2 ranks, comm = $comm: $(tail -3 "$tmp/c22-$comm.txt" | tr '\n' ' ')"
  losses "$tmp/c22-$comm/metrics.jsonl" > "$tmp/c22-$comm.loss" 2> /dev/null
done
line=$(grep -m1 '^training:' "$tmp/c22-node.txt")
echo "#   2 hosts x 2 ranks, comm = node: ${line#*steps, }"
want="gradients summed in the node's shared memory in 2 slices, each allreduced across the 2 nodes;"
case $line in
  *"$want"*) ok "(e) comm = node start-up line: '$want'" ;;
  *) bad "(e) comm = node start-up line '$line', want '$want'" ;;
esac
grep -q '^training: .*gradients in 1 allreduce bucket$' "$tmp/c22-flat.txt" && ok "(e) comm = flat start-up line: 1 allreduce bucket" ||
  bad "(e) comm = flat start-up line: $(grep -m1 '^training:' "$tmp/c22-flat.txt")"
r=$(max_rel "$tmp/c22-flat.loss" "$tmp/c22-node.loss")
if [ "$(wc -l < "$tmp/c22-node.loss")" -eq 30 ] && [ "$r" != "steps differ" ] && awk -v r="$r" 'BEGIN { exit !(r <= 1e-6) }'; then
  ok "(e) loss trajectory of comm = node = comm = flat on 2 hosts x 2 (30 steps, max relative difference $r) [$(elapsed "$t0") s]"
else
  bad "(e) comm = node vs flat on 2 hosts: max relative difference $r: $(diff "$tmp/c22-flat.loss" "$tmp/c22-node.loss" | head -4 | tr '\n' ' ')"
fi
# Unequal nodes (2 ranks + 1): auto falls back to flat and says why; node is refused with one line.
run "$tmp/c21-auto.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2+1" -np 3 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/c21-auto" --set train.max_steps=3 &&
  grep -q '^training: .*(comm = flat: the nodes run different numbers of ranks)$' "$tmp/c21-auto.txt" &&
  ok "(e) 2 + 1 ranks, comm = auto: flat, the start-up line says why" ||
  bad "(e) 2 + 1 ranks, comm = auto: $(grep -e '^training:' -e 'dptrain:' "$tmp/c21-auto.txt" | tr '\n' ' ')"
run "$tmp/c21-node.txt" 60 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2+1" -np 3 "$bin" train "$tmp/train.ini" \
  --set train.out_dir="$tmp/c21-node" --set train.comm=node
rc=$?
if [ $rc = 2 ] && [ "$(grep -c 'dptrain: error:' "$tmp/c21-node.txt")" = 1 ] &&
  grep -q 'dptrain: error: .*comm = node needs as many ranks on every node (here 1 to 2)' "$tmp/c21-node.txt"; then
  ok "(e) 2 + 1 ranks, comm = node: exit 2, one line naming the uneven nodes"
else
  bad "(e) 2 + 1 ranks, comm = node: exit $rc: $(grep 'dptrain:' "$tmp/c21-node.txt" | tr '\n' ' ')"
fi

# ---- (d) one host's ranks killed mid-run: the whole job ends, non-zero, within 10 s
sed -e 's/^max_steps = .*/max_steps = 0/' -e 's/^epochs = .*/epochs = 1000000/' -e 's/^log_every = .*/log_every = 10/' \
  -e 's/^at_end = .*/at_end = false/' "$tmp/train.ini" > "$tmp/long.ini"
timeout -k 5 120 "${cluster_mpirun[@]}" --hostfile "$tmp/hosts2x2" -np 4 "$bin" train "$tmp/long.ini" \
  --set train.out_dir="$tmp/long" > "$tmp/long.txt" 2>&1 9>&- &
bgpid=$!
for _ in $(seq 300); do
  [ -f "$tmp/long/metrics.jsonl" ] && [ "$(wc -l < "$tmp/long/metrics.jsonl")" -ge 2 ] && break
  kill -0 $bgpid 2> /dev/null || break
  sleep 0.1
done
ranks_in() { # HOST: pids of dptrain ranks in that host's namespace
  local p r
  for p in $(ip netns pids "$1" 2> /dev/null); do
    r=$(tr '\0' '\n' < "/proc/$p/environ" 2> /dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
    [ -n "$r" ] && [ "$(readlink "/proc/$p/exe" 2> /dev/null)" = "$bin" ] && echo "$p"
  done
}
victims=$(ranks_in dpt-h2 | tr '\n' ' ')
others=$(ranks_in dpt-h1 | tr '\n' ' ')
if [ "$(echo $victims | wc -w)" != 2 ] || [ "$(echo $others | wc -w)" != 2 ]; then
  bad "(d) want 2 ranks in each namespace, found dpt-h1: '$others', dpt-h2: '$victims': $(tail -3 "$tmp/long.txt" | tr '\n' ' ')"
  stop_bg
else
  # The ranks' traffic: TCP between the veth addresses (the btl's connections, rank to rank).
  if command -v ss > /dev/null 2>&1; then
    conns=$(ip netns exec dpt-h2 ss -tnpH state established 2> /dev/null |
      grep -E "pid=($(echo $victims | tr ' ' '|'))," | awk '{ print $3 " -> " $4 }' | sort -u)
    cross=$(echo "$conns" | grep -c "^$net\.12:[0-9]* -> $net\.11:")
    if [ "$cross" -ge 1 ]; then
      ok "(d) dpt-h2's ranks talk TCP to dpt-h1 over the veths ($cross connections $net.12 <-> $net.11, $(echo "$conns" | grep -c "^$net\.12:[0-9]* -> $net\.12:") within dpt-h2)"
    else
      bad "(d) no TCP connection from dpt-h2's ranks to $net.11: $(echo "$conns" | head -4 | tr '\n' ' ')"
    fi
  fi
  step=$(tail -1 "$tmp/long/metrics.jsonl" | sed -n 's/.*"step":\([0-9]*\).*/\1/p')
  t0=$(date +%s.%N)
  # shellcheck disable=SC2086
  kill -KILL $victims
  for _ in $(seq 300); do # 15 s
    kill -0 $bgpid 2> /dev/null || break
    sleep 0.05
  done
  dt=$(elapsed "$t0")
  if kill -0 $bgpid 2> /dev/null; then
    bad "(d) job still running 15 s after SIGKILL to dpt-h2's ranks (pids $victims)"
    stop_bg
    rc=124
  else
    wait $bgpid
    rc=$?
    bgpid=
  fi
  sleep 0.3
  left=$(for h in "${hosts_list[@]}"; do ranks_in "$h"; done | tr '\n' ' ')
  if [ $rc -ne 0 ] && [ $rc -ne 124 ] && awk -v t="$dt" 'BEGIN { exit !(t <= 10) }' && [ -z "$left" ]; then
    ok "(d) SIGKILL to dpt-h2's ranks (pids ${victims% }) near step $step: mpirun exited $rc after $dt s, no rank left on either host"
  else
    bad "(d) after SIGKILL to dpt-h2's ranks: exit $rc after $dt s, ranks left: '$left'"
  fi
  echo "#   mpirun said: $(grep -v '^ *$' "$tmp/long.txt" | grep -iv -e '^epoch' -e '^step' | grep -m3 -i -e 'exited\|signal\|abort\|error' | tr -s ' ' | tr '\n' ' ')"
fi

total=$(elapsed "$start_s")
if [ $fails -eq 0 ]; then
  echo "cluster-test: PASS (${#hosts_list[@]} netns hosts over TCP, $total s)"
else
  echo "cluster-test: FAIL ($fails check(s) failed, $total s)"
  exit 1
fi
