#!/usr/bin/env bash
# Starts a one-node Slurm cluster on 127.0.0.1 (munged, slurmctld, slurmd; no systemd, no
# accounting) for the tests marked `slurm_cluster`, and prints the export lines they need
# (SLURM_CONF, CTXSIM_TEST_SLURM). Idempotent: a cluster already answering in the same folder is
# reused. `.ci/start-slurm.sh stop` stops it. Needs root and `apt-get install slurm-wlm munge`.
#
#   eval "$(bash .ci/start-slurm.sh)"        # then: pytest -k slurm
#
# Settings chosen for tests: KillWait=5 (scancel reaches SIGKILL quickly), MinJobAge=600 (ended jobs
# stay visible to `squeue -t all` while accounting is off), ReturnToService=2 (a node set down comes
# back with `scontrol update state=resume`), AuthInfo=cred_expire=10 (a requeued job may start again
# after 10 s instead of 120 s), and a node with two GPUs that exist in name only (gres.conf with
# empty files for devices: a 2-GPU job is scheduled and runs its ranks on the CPU with gloo).
set -euo pipefail
DIR=${CTXSIM_SLURM_DIR:-/tmp/ctxsim-slurm}
CONF="$DIR/slurm.conf"
export SLURM_CONF="$CONF"

stop() {
  for name in slurmd slurmctld; do
    if [ -f "$DIR/$name.pid" ]; then kill "$(cat "$DIR/$name.pid")" 2>/dev/null || true; fi
  done
  for _ in $(seq 1 20); do
    pgrep -f "slurm(ctld|d) .*-f $CONF" >/dev/null || break
    sleep 0.5
  done
  pkill -9 -f "slurm(ctld|d) .*-f $CONF" 2>/dev/null || true
  rm -f "$DIR"/*.pid
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

for bin in munged slurmctld slurmd sinfo sbatch; do
  command -v "$bin" >/dev/null || { echo "$bin not found: apt-get install slurm-wlm munge" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "start-slurm.sh runs the daemons as root: run it as root" >&2; exit 1; }

answers() { timeout 10 sinfo -h -o '%T' 2>/dev/null | grep -Eq '^(idle|mixed|allocated)'; }
if [ -f "$CONF" ] && answers; then
  echo "export SLURM_CONF=$CONF"
  echo "export CTXSIM_TEST_SLURM=1"
  exit 0
fi
stop

# munge: the key the package made, or a new one; the daemon as the munge user
if [ ! -s /etc/munge/munge.key ]; then mungekey -c -k /etc/munge/munge.key; fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge && chown munge:munge /run/munge /var/log/munge /var/lib/munge
if ! munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- munged --force
  for _ in $(seq 1 20); do munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
fi
munge -n </dev/null | unmunge >/dev/null || { echo "munged does not answer" >&2; exit 1; }

HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
rm -rf "$DIR/state" "$DIR/spool"  # a fresh cluster: no jobs or node states of an earlier one
mkdir -p "$DIR/state" "$DIR/spool"
cat >"$CONF" <<EOF
ClusterName=ctxsim-ci
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
SlurmctldPort=${CTXSIM_SLURMCTLD_PORT:-6817}
SlurmdPort=${CTXSIM_SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
MpiDefault=none
ReturnToService=2
KillWait=5
MinJobAge=600
AuthInfo=cred_expire=10
JobRequeue=1
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM Gres=gpu:2 State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
# two GPUs that are only names (empty files stand in for /dev/nvidia0-1): a job asking for
# --gpus-per-node=2 is scheduled and runs its two ranks under torchrun on the CPU (gloo)
touch "$DIR/fake-gpu0" "$DIR/fake-gpu1"
cat >"$DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=$DIR/fake-gpu[0-1]
EOF

slurmctld -i -f "$CONF" >"$DIR/slurmctld.out" 2>&1 &
for _ in $(seq 1 30); do timeout 5 scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
slurmd -f "$CONF" >"$DIR/slurmd.out" 2>&1 &
for _ in $(seq 1 60); do answers && break; sleep 0.5; done
if ! answers; then
  echo "slurm did not come up; see $DIR/slurmctld.log and $DIR/slurmd.log" >&2
  tail -n 5 "$DIR/slurmctld.log" "$DIR/slurmd.log" >&2 || true
  exit 1
fi
echo "export SLURM_CONF=$CONF"
echo "export CTXSIM_TEST_SLURM=1"
