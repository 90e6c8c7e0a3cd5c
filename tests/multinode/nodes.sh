#!/usr/bin/env bash
# Namespace "nodes" on this machine, for tests of afd across machines (tests/multinode/README.md).
#
#   nodes.sh probe [--ssh] [--slurm]      exit 0 when nodes can be made here, else 77 and the reason
#   nodes.sh up RUN [--nodes N] [--names a,b] [--ifnames eth0,ens5] [--ssh] [--slurm] [--owner PID]
#   nodes.sh down RUN                     stops and removes everything `up RUN` made, RUN included
#   nodes.sh exec RUN NODE -- CMD...      runs CMD inside NODE (its network and host name)
#   nodes.sh reap                         tears down runs whose owner process has exited
#
# A node is a network namespace plus a UTS namespace (its own host name), joined to the others by
# a bridge that exists only on this machine; nodes have no route off it. `up` writes RUN/env
# (KEY=value lines) naming every address, file and namespace; `down` leaves no process, namespace,
# interface or file behind. Exit status: 0 done, 77 cannot be done here (the reason on stderr,
# "SKIP: ..."), 1 failed (with the log that says why).
set -euo pipefail

readonly registry=/run/afd-multinode      # one claim per run: which /24 it uses, where its RUN is
readonly net_prefix=${AFD_MN_NET:-10.231} # first two octets of the test subnets
# Waits: each has a budget, polled at a short interval (2 cores: never spin).
readonly sshd_ready_budget_s=10   # sshd forks, loads one host key and listens: well under a second
readonly slurm_ready_budget_s=40  # slurmd registers with slurmctld at start (observed: 1-2 s)
readonly stop_budget_s=10         # daemons exit on SIGTERM within a second; then SIGKILL
readonly client_grace_s=1         # srun waits for its step (up to KillWait + 2 s) after SIGTERM

die() { echo "nodes.sh: $*" >&2; exit 1; }
skip() { echo "SKIP: $*" >&2; exit 77; }

# Polls `cmd` every `interval` seconds until it succeeds or `budget` seconds have passed.
wait_for() {
  local budget=$1 interval=$2; shift 2
  local deadline=$((SECONDS + budget))
  while ! "$@" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep "$interval"
  done
}

# ------------------------------------------------------------------------------------------------
# probe: can namespaces (and the daemons asked for) be made here?

probe() {
  local want_ssh=0 want_slurm=0
  while (($#)); do
    case $1 in
      --ssh) want_ssh=1 ;;
      --slurm) want_slurm=1 ;;
      *) die "probe: unknown option '$1'" ;;
    esac
    shift
  done
  [ "$(id -u)" -eq 0 ] || skip "namespace nodes need root (network namespaces, a bridge, sshd, slurmd)"
  for tool in ip nsenter unshare; do
    command -v "$tool" >/dev/null || skip "'$tool' is not installed (iproute2, util-linux)"
  done
  local probe_ns="afdmn-probe-$$" out
  if ! out=$(ip netns add "$probe_ns" 2>&1); then
    skip "cannot create a network namespace here: ${out:-ip netns add failed}"
  fi
  ip netns del "$probe_ns" 2>/dev/null || true
  if ! out=$(ip link add "afdmnprobe$$" type bridge 2>&1); then
    skip "cannot create a bridge here: ${out:-ip link add failed}"
  fi
  ip link del "afdmnprobe$$" 2>/dev/null || true
  if ((want_ssh)); then
    for tool in /usr/sbin/sshd ssh ssh-keygen; do
      command -v "$tool" >/dev/null || skip "'$tool' is not installed (openssh-server, openssh-client; scripts/setup.sh installs them)"
    done
  fi
  if ((want_slurm)); then
    for tool in munged mungekey slurmctld slurmd srun sinfo; do
      command -v "$tool" >/dev/null || skip "'$tool' is not installed (munge, slurmctld, slurmd, slurm-client; scripts/setup.sh installs them)"
    done
  fi
}

# ------------------------------------------------------------------------------------------------
# Registry of runs: a run claims a /24 under $net_prefix by creating $registry/net-K atomically.

# "pid:starttime" of a process, so that a reused pid is not mistaken for the owner.
process_identity() {
  local pid=$1 stat
  stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # fields after the command name, which may contain spaces
  echo "$pid:$(echo "$stat" | cut -d' ' -f20)"
}

# True while `pid` runs; a zombie has finished (pid 1 of a container may reap it late).
running() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [ "${stat%% *}" != Z ]
}

owner_alive() {
  local identity=$1
  [ "$identity" = none ] && return 0
  [ "$(process_identity "${identity%%:*}" 2>/dev/null)" = "$identity" ]
}

subnet_in_use() {
  local pattern=${1//./\\.}
  ip -4 -o addr show | grep -q " ${pattern}\\." && return 0
  ip -4 route show | grep -q "^${pattern}\\." && return 0
  return 1
}

claim_subnet() {
  local run=$1 k
  mkdir -p "$registry"
  for k in $(seq 0 255); do
    subnet_in_use "$net_prefix.$k" && continue
    if mkdir "$registry/net-$k" 2>/dev/null; then
      echo "$run" >"$registry/net-$k/run"
      echo "$k"
      return 0
    fi
  done
  return 1
}

# ------------------------------------------------------------------------------------------------
# State of a run: RUN/state holds KEY=value lines; `down` reads them to undo what `up` did.

state_set() { echo "$1=$2" >>"$run/state"; }
read_state() {  # read_state RUN KEY -> last value
  sed -n "s/^$2=//p" "$1/state" 2>/dev/null | tail -n1
}
read_all() { sed -n "s/^$2=//p" "$1/state" 2>/dev/null; }  # read_all RUN KEY -> every value
env_set() { echo "$1=$2" >>"$run/env"; }

ns_of() { echo "afdmn-$id-$1"; }

in_node() {  # in_node NODE CMD... : inside NODE's network and UTS namespaces
  local node=$1; shift
  nsenter --net="/run/netns/$(ns_of "$node")" --uts="$run/ns/$node.uts" -- "$@"
}

make_node_namespace() {  # NODE ADDRESS IFNAME INDEX
  local node=$1 address=$2 ifname=$3 index=$4 ns host_end
  ns=$(ns_of "$node")
  host_end="mn${id}h$index"
  ip netns add "$ns"
  state_set netns "$ns"
  mkdir -p "$run/ns"
  touch "$run/ns/$node.uts"
  unshare --uts="$run/ns/$node.uts" hostname "$node"
  state_set uts "$run/ns/$node.uts"
  ip link add "$host_end" type veth peer name "$ifname" netns "$ns"
  state_set veth "$host_end"
  ip link set "$host_end" master "$bridge" up
  ip -n "$ns" addr add "$address/24" dev "$ifname"
  ip -n "$ns" link set "$ifname" up
  ip -n "$ns" link set lo up
}

# ------------------------------------------------------------------------------------------------
# sshd in every node: key-only root login, keys made for this run.

setup_ssh() {
  local node address
  mkdir -p "$run/ssh" "$run/bin"
  chmod 700 "$run/ssh"
  ssh-keygen -q -t ed25519 -N '' -C "afd-multinode-$id" -f "$run/ssh/id_ed25519"
  cp "$run/ssh/id_ed25519.pub" "$run/ssh/authorized_keys"
  : >"$run/ssh/known_hosts"
  # sshd insists on its privilege-separation directory; Debian creates it only when it starts sshd.
  if [ ! -d /run/sshd ]; then
    mkdir -m 0755 /run/sshd
    touch "$registry/made-run-sshd"
  fi
  for node in "${nodes[@]}"; do
    address=${address_of[$node]}
    mkdir -p "$run/ssh/$node"
    ssh-keygen -q -t ed25519 -N '' -C "$node" -f "$run/ssh/$node/ssh_host_ed25519_key"
    echo "$node,$address $(cut -d' ' -f1,2 "$run/ssh/$node/ssh_host_ed25519_key.pub")" >>"$run/ssh/known_hosts"
    cat >"$run/ssh/$node/sshd_config" <<EOF
ListenAddress $address
Port 22
HostKey $run/ssh/$node/ssh_host_ed25519_key
PidFile $run/ssh/$node/sshd.pid
AuthorizedKeysFile $run/ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The run directory belongs to root but is not a home directory: skip sshd's ownership checks.
StrictModes no
PrintMotd no
X11Forwarding no
MaxStartups 64:30:128
LogLevel VERBOSE
EOF
    in_node "$node" /usr/sbin/sshd -f "$run/ssh/$node/sshd_config" -E "$run/ssh/$node/sshd.log"
    state_set pidfile "$run/ssh/$node/sshd.pid"
  done
  cat >"$run/ssh/config" <<EOF
Host *
  User root
  IdentityFile $run/ssh/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $run/ssh/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
  # `ssh` first on PATH: what the launcher runs finds this run's keys and known hosts, as it
  # would find ~/.ssh on a real machine.
  cat >"$run/bin/ssh" <<EOF
#!/bin/sh
exec /usr/bin/ssh -F $run/ssh/config "\$@"
EOF
  chmod 755 "$run/bin/ssh"
  for node in "${nodes[@]}"; do
    if ! wait_for "$sshd_ready_budget_s" 0.05 in_node "$node" bash -c "exec 3<>/dev/tcp/${address_of[$node]}/22"; then
      cat "$run/ssh/$node/sshd.log" >&2 || true
      die "sshd in node $node does not listen on ${address_of[$node]}:22 after ${sshd_ready_budget_s} s"
    fi
  done
  env_set AFD_MN_SSH_KEY "$run/ssh/id_ed25519"
  env_set AFD_MN_SSH_CONFIG "$run/ssh/config"
  env_set AFD_MN_SSH_KNOWN_HOSTS "$run/ssh/known_hosts"
  env_set AFD_MN_BIN "$run/bin"
}

# ------------------------------------------------------------------------------------------------
# Slurm: one munged, slurmctld in its own namespace, one slurmd per node inside the node.

setup_slurm() {
  local node ctl_ns=$(ns_of ctl) ctl_address=$net_prefix.$k.2 cpus
  cpus=$(nproc)
  # The socket's directory must be reachable by everyone (munged checks), the key's private.
  chmod 711 "$run"
  mkdir -p "$run/munge" "$run/munge-socket" "$run/slurm/state" "$run/slurm/log"
  chmod 700 "$run/munge"
  chmod 755 "$run/munge-socket"
  mungekey -c -k "$run/munge/munge.key"
  munged --socket="$run/munge-socket/munge.socket" --key-file="$run/munge/munge.key" \
         --pid-file="$run/munge/munged.pid" --log-file="$run/munge/munged.log" \
         --seed-file="$run/munge/munged.seed"
  state_set pidfile "$run/munge/munged.pid"

  # slurmctld gets a node of its own (host name "ctl"), so that its fixed port never meets
  # another run's.
  ip netns add "$ctl_ns"
  state_set netns "$ctl_ns"
  touch "$run/ns/ctl.uts"
  unshare --uts="$run/ns/ctl.uts" hostname ctl
  state_set uts "$run/ns/ctl.uts"
  ip link add "mn${id}hc" type veth peer name eth0 netns "$ctl_ns"
  state_set veth "mn${id}hc"
  ip link set "mn${id}hc" master "$bridge" up
  ip -n "$ctl_ns" addr add "$ctl_address/24" dev eth0
  ip -n "$ctl_ns" link set eth0 up
  ip -n "$ctl_ns" link set lo up

  local conf=$run/slurm/slurm.conf
  cat >"$conf" <<EOF
# A Slurm cluster of namespace nodes on one machine (tests/multinode/nodes.sh).
ClusterName=afdmn$id
SlurmctldHost=ctl($ctl_address)
SlurmctldPort=6817
SlurmdPort=6818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$run/munge-socket/munge.socket
StateSaveLocation=$run/slurm/state
SlurmdSpoolDir=$run/slurm/spool/%n
SlurmctldPidFile=$run/slurm/slurmctld.pid
SlurmdPidFile=$run/slurm/slurmd-%n.pid
SlurmctldLogFile=$run/slurm/log/slurmctld.log
SlurmdLogFile=$run/slurm/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: processes are tracked by parent pid, tasks are not bound.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/linear
SchedulerType=sched/builtin
# Two slurmd share this machine's CPUs and memory: the node lines below are the truth.
SlurmdParameters=config_overrides
ReturnToService=2
SlurmdTimeout=30
MessageTimeout=10
KillWait=2
MinJobAge=2
InactiveLimit=0
WaitTime=0
MailProg=/bin/true
EOF
  for node in "${nodes[@]}"; do
    echo "NodeName=$node NodeHostname=$node NodeAddr=${address_of[$node]} CPUs=$cpus RealMemory=1000 State=UNKNOWN" >>"$conf"
    mkdir -p "$run/slurm/spool/$node"
  done
  echo "PartitionName=nodes Nodes=ALL Default=YES MaxTime=INFINITE State=UP" >>"$conf"

  in_node_ctl() { nsenter --net="/run/netns/$ctl_ns" --uts="$run/ns/ctl.uts" -- "$@"; }
  in_node_ctl slurmctld -f "$conf" -c
  state_set pidfile "$run/slurm/slurmctld.pid"
  for node in "${nodes[@]}"; do
    in_node "$node" slurmd -f "$conf" -N "$node"
    state_set pidfile "$run/slurm/slurmd-$node.pid"
  done
  all_idle() {
    local states
    states=$(SLURM_CONF=$conf timeout 5 sinfo -h -N -o '%T' 2>/dev/null) || return 1
    [ "$(echo "$states" | grep -c '^idle$')" -eq "${#nodes[@]}" ]
  }
  if ! wait_for "$slurm_ready_budget_s" 0.2 all_idle; then
    SLURM_CONF=$conf sinfo -N -l >&2 || true
    tail -n 20 "$run/slurm/log/"*.log >&2 || true
    die "Slurm nodes not idle after ${slurm_ready_budget_s} s"
  fi
  env_set SLURM_CONF "$conf"
  env_set AFD_MN_SLURMCTLD "$ctl_address:6817"
}

# ------------------------------------------------------------------------------------------------

up() {
  local count=2 names="" ifnames="" want_ssh=0 want_slurm=0 owner=none
  run=$1; shift
  while (($#)); do
    case $1 in
      --nodes) count=$2; shift 2 ;;
      --names) names=$2; shift 2 ;;
      --ifnames) ifnames=$2; shift 2 ;;
      --ssh) want_ssh=1; shift ;;
      --slurm) want_slurm=1; shift ;;
      --owner) owner=$(process_identity "$2") || die "--owner $2: no such process"; shift 2 ;;
      *) die "up: unknown option '$1'" ;;
    esac
  done
  local -a probe_args=()
  ((want_ssh)) && probe_args+=(--ssh)
  ((want_slurm)) && probe_args+=(--slurm)
  probe "${probe_args[@]}"
  reap
  if [ -n "$names" ]; then
    IFS=, read -r -a nodes <<<"$names"
  else
    [[ $count =~ ^[0-9]+$ ]] && ((count >= 1 && count <= 26)) || die "--nodes wants 1..26, got '$count'"
    nodes=()
    local letters=abcdefghijklmnopqrstuvwxyz
    for ((i = 0; i < count; ++i)); do nodes+=("${letters:i:1}"); done
  fi
  local node
  for node in "${nodes[@]}"; do
    [[ $node =~ ^[a-z][a-z0-9-]{0,14}$ && $node != ctl ]] || die "node name '$node': expected 1-15 of [a-z0-9-], starting with a letter, not 'ctl'"
  done
  local -a ifs=()
  if [ -n "$ifnames" ]; then IFS=, read -r -a ifs <<<"$ifnames"; fi

  mkdir -p "$run"
  run=$(cd "$run" && pwd)
  [ ! -e "$run/state" ] || die "$run already holds a run; 'nodes.sh down $run' first"
  id=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
  : >"$run/state"
  : >"$run/env"
  state_set id "$id"
  echo "$owner" >"$run/owner"
  # From here on, a failure undoes everything made so far.
  trap 'status=$?; if ((status != 0)); then echo "nodes.sh: up failed; tearing down" >&2; down_run "$run" keep_dir; fi' EXIT

  k=$(claim_subnet "$run") ||
    die "no free /24 under $net_prefix.0.0/16 (set AFD_MN_NET to another prefix)"
  state_set subnet "$k"
  bridge="mn${id}br"
  ip link add "$bridge" type bridge
  state_set bridge "$bridge"
  ip addr add "$net_prefix.$k.1/24" dev "$bridge"
  ip link set "$bridge" up

  declare -gA address_of=()
  local i=0
  for node in "${nodes[@]}"; do
    address_of[$node]=$net_prefix.$k.$((11 + i))
    make_node_namespace "$node" "${address_of[$node]}" "${ifs[$i]:-eth0}" "$i"
    i=$((i + 1))
  done
  env_set AFD_MN_RUN "$run"
  env_set AFD_MN_ID "$id"
  env_set AFD_MN_HOST_ADDR "$net_prefix.$k.1"
  env_set AFD_MN_SUBNET "$net_prefix.$k.0/24"
  env_set AFD_MN_NODES "$(IFS=,; echo "${nodes[*]}")"
  i=0
  for node in "${nodes[@]}"; do
    env_set "AFD_MN_ADDR_$node" "${address_of[$node]}"
    env_set "AFD_MN_NETNS_$node" "$(ns_of "$node")"
    env_set "AFD_MN_IFNAME_$node" "${ifs[$i]:-eth0}"
    i=$((i + 1))
  done
  ((want_ssh)) && setup_ssh
  ((want_slurm)) && setup_slurm
  trap - EXIT
  echo "$run"
}

# Stops every process of the run and removes what it made. Safe to run twice, and on a run that
# failed halfway.
down_run() {
  local run=$1 keep=${2:-} pidfile pid ns uts deadline
  [ -f "$run/state" ] || { [ "$keep" = keep_dir ] || rm -rf "$run"; return 0; }
  # Clients of the run outside its nodes first (srun, salloc, ssh started by a test): a
  # connection they hold into a node would keep that node's namespace alive after it is deleted.
  stop_pids "$client_grace_s" $(clients_of "$run")
  # Then the daemons, politely (slurmd ends its steps, sshd its sessions), then everything still
  # inside the run's namespaces, forcibly.
  local -a daemons=()
  while read -r pidfile; do
    pid=$(cat "$pidfile" 2>/dev/null) || continue
    [[ $pid =~ ^[0-9]+$ ]] && daemons+=("$pid")
  done < <(read_all "$run" pidfile)
  stop_pids "$stop_budget_s" "${daemons[@]}"
  while read -r ns; do
    local round left
    for round in 1 2 3 4 5; do  # processes may fork while being killed: sweep until none is left
      left=""
      for pid in $(ip netns pids "$ns" 2>/dev/null); do running "$pid" && left+=" $pid"; done
      [ -z "$left" ] && break
      kill -KILL $left 2>/dev/null || true
      sleep 0.05
    done
    ip netns del "$ns" 2>/dev/null || true
  done < <(read_all "$run" netns)
  # A socket still closing keeps a deleted namespace, and its end of a veth pair, alive for up to
  # tcp_fin_timeout: deleting our end removes both at once.
  while read -r veth; do
    ip link del "$veth" 2>/dev/null || true
  done < <(read_all "$run" veth)
  while read -r uts; do
    umount "$uts" 2>/dev/null || true
  done < <(read_all "$run" uts)
  local bridge k
  bridge=$(read_state "$run" bridge)
  [ -n "$bridge" ] && ip link del "$bridge" 2>/dev/null || true
  k=$(read_state "$run" subnet)
  if [ -n "$k" ] && [ "$(cat "$registry/net-$k/run" 2>/dev/null)" = "$run" ]; then
    rm -rf "$registry/net-$k"
  fi
  # The privilege-separation directory this tool made goes with the last run.
  if [ -f "$registry/made-run-sshd" ] && ! ls -d "$registry"/net-* >/dev/null 2>&1; then
    rmdir /run/sshd 2>/dev/null || true
    rm -f "$registry/made-run-sshd"
  fi
  rmdir "$registry" 2>/dev/null || true
  if [ "$keep" = keep_dir ]; then rm -f "$run/state"; else rm -rf "$run"; fi
}

# SIGTERM, a grace period, then SIGKILL for whatever still runs (AFD_MN_DEBUG=1 names those).
stop_pids() {  # stop_pids BUDGET PID...
  local budget=$1; shift
  (($#)) || return 0
  local pid deadline=$((SECONDS + budget))
  kill -TERM "$@" 2>/dev/null || true
  for pid in "$@"; do
    while running "$pid" && ((SECONDS < deadline)); do sleep 0.05; done
    if running "$pid"; then
      [ -z "${AFD_MN_DEBUG:-}" ] || echo "nodes.sh: $pid ($(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)) ignored SIGTERM for ${budget} s" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

# Processes outside the nodes that use the run: SLURM_CONF in their environment, or the run's
# directory on their command line, in this script's network namespace. Never this script, its
# callers or its own children.
clients_of() {
  local run=$1 pid here
  here=$(readlink /proc/$$/ns/net)
  { grep -lszF "SLURM_CONF=$run/" /proc/[0-9]*/environ; grep -lszF "$run/" /proc/[0-9]*/cmdline; } |
    sed -n 's|^/proc/\([0-9]*\)/.*|\1|p' | sort -u | while read -r pid; do
      [ "$(readlink "/proc/$pid/ns/net" 2>/dev/null)" = "$here" ] || continue  # in a node: swept later
      related_to_self "$pid" || { running "$pid" && echo "$pid"; }
    done
  return 0
}

# True when `pid` is this script, one of its ancestors or one of its descendants.
related_to_self() {
  local p=$$
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do  # ancestors
    [ "$p" = "$1" ] && return 0
    p=$(parent_of "$p")
  done
  p=$1
  while [ -n "$p" ] && [ "$p" -gt 1 ]; do  # descendants
    [ "$p" = $$ ] && return 0
    p=$(parent_of "$p")
  done
  return 1
}

parent_of() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
  stat=${stat##*) }
  echo "$stat" | cut -d' ' -f2
}

# Runs whose owner process is gone (a test killed by a timeout) are torn down by the next `up`.
reap() {
  local claim run owner
  for claim in "$registry"/net-*; do
    [ -d "$claim" ] || continue
    run=$(cat "$claim/run" 2>/dev/null) || run=""
    if [ -z "$run" ] || [ ! -f "$run/state" ]; then
      # Claimed by an `up` that is still starting, or left by one that died before writing state:
      # only the latter is stale, and it is older than a minute.
      if [ -n "$(find "$claim" -maxdepth 0 -mmin +1 2>/dev/null)" ]; then rm -rf "$claim"; fi
      continue
    fi
    owner=$(cat "$run/owner" 2>/dev/null || echo none)
    if ! owner_alive "$owner"; then
      echo "nodes.sh: tearing down $run (its owner $owner has exited)" >&2
      down_run "$run"
    fi
  done
}

node_exec() {
  run=$(cd "$1" && pwd) || die "no run at $1"; local node=$2; shift 2
  [ "${1:-}" = "--" ] && shift
  id=$(read_state "$run" id)
  [ -n "$id" ] || die "no run at $run"
  [ -e "/run/netns/$(ns_of "$node")" ] || die "no node '$node' in $run (nodes: $(sed -n 's/^AFD_MN_NODES=//p' "$run/env"))"
  local path=$PATH
  [ -d "$run/bin" ] && path=$run/bin:$PATH
  local slurm_conf
  slurm_conf=$(sed -n 's/^SLURM_CONF=//p' "$run/env")
  exec env PATH="$path" ${slurm_conf:+SLURM_CONF=$slurm_conf} \
    nsenter --net="/run/netns/$(ns_of "$node")" --uts="$run/ns/$node.uts" -- "$@"
}

command=${1:-}
shift || true
case $command in
  probe) probe "$@" ;;
  up) (($#)) || die "usage: nodes.sh up RUN [options]"; up "$@" ;;
  down) (($#)) || die "usage: nodes.sh down RUN"; down_run "$(cd "$1" 2>/dev/null && pwd || echo "$1")" ;;
  exec) (($# >= 3)) || die "usage: nodes.sh exec RUN NODE -- CMD..."; node_exec "$@" ;;
  reap) reap ;;
  *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
