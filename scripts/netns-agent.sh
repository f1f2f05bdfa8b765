#!/bin/sh
# Open MPI's remote-shell agent for scripts/cluster-test.sh: stands in for ssh.
#
#   mpirun --mca plm_rsh_agent scripts/netns-agent.sh ...   # Open MPI calls: netns-agent.sh HOST COMMAND...
#
# Runs COMMAND (the words joined by spaces and given to sh -c, as ssh does) inside the network
# namespace named HOST, in a UTS namespace of its own whose hostname is HOST (Open MPI tells nodes
# apart by hostname), in a mount namespace where /etc/hosts is $DPT_CLUSTER_HOSTS (the test
# cluster's private hosts file; /etc itself is never touched), and with a fresh environment such
# as an ssh login gives: whatever the ranks need must come from mpirun (-x VAR) as on a real cluster.
set -u
if [ $# -lt 2 ]; then
  echo "usage: netns-agent.sh HOST COMMAND..." >&2
  exit 255
fi
host=$1
shift
case $host in
  *[!A-Za-z0-9._-]* | '') echo "netns-agent.sh: bad host name '$host'" >&2; exit 255 ;;
esac
if [ ! -e "/run/netns/$host" ]; then
  echo "netns-agent.sh: no network namespace '$host' (ip netns list)" >&2
  exit 255
fi
hosts=${DPT_CLUSTER_HOSTS:-}
# Positional parameters of the inner shell: $1 host, $2 hosts file, $3... the command words.
# shellcheck disable=SC2016
exec ip netns exec "$host" unshare --uts --mount sh -c '
  hostname "$1" || exit 255
  if [ -n "$2" ]; then mount --bind "$2" /etc/hosts || exit 255; fi
  shift 2
  exec env -i PATH="$PATH" HOME="${HOME:-/root}" USER="${USER:-root}" LOGNAME="${LOGNAME:-root}" \
    SHELL=/bin/sh LANG=C.UTF-8 ${LD_LIBRARY_PATH:+LD_LIBRARY_PATH="$LD_LIBRARY_PATH"} sh -c "$*"
' netns-agent "$host" "$hosts" "$@"
