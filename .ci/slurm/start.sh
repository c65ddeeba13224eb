#!/usr/bin/env bash
# A one-machine SLURM cluster for the `slurm` tests (tests/test_slurm.py), started by .ci/run:
#   bash .ci/slurm/start.sh      # as root: installs the Debian packages when missing, writes the
#                                # configs, starts munged, MariaDB + slurmdbd (sacct, which
#                                # submitit polls), slurmctld and slurmd; waits for the node
#   bash .ci/slurm/stop.sh       # stops what it started
# Adapted from ../shared/slurm/start-slurm.sh (Debian 12, slurm-wlm 22.05, no systemd). What the
# tests need from it: a requeued job may restart 10 s after it ends (AuthInfo=cred_expire=10,
# default 120 s); a signalled job is killed 5 s after SIGTERM (KillWait=5, default 30 s); a job
# of partition "urgent" preempts (requeues) jobs of "debug".
# Environment: SLURM_NODE_CPUS / SLURM_NODE_MEM_MB / SLURM_NODE_GPUS declare a larger node than
# the hardware (fake count-only GPUs); SLURM_GRACE_TIME gives preempted debug jobs a grace time.
set -euo pipefail

[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }
T0=$(date +%s)
say() { printf '[slurm %3ds] %s\n' "$(( $(date +%s) - T0 ))" "$*"; }
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
ACCOUNTING=${SLURM_ACCOUNTING:-1}

# 1. Packages -------------------------------------------------------------------------------
pkgs=(munge slurmctld slurmd slurm-client)
[ "$ACCOUNTING" = 1 ] && pkgs+=(slurmdbd mariadb-server)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
say "packages present: $(dpkg-query -W -f='${Package} ${Version}\n' slurmctld munge | tr '\n' ' ')"

# 2. Host name: slurmctld and slurmd must resolve the short host name ---------------------------
HOST=$(hostname -s)
if ! getent hosts "$HOST" >/dev/null; then
    echo "127.0.0.1 $HOST" >> /etc/hosts
    say "added $HOST to /etc/hosts"
fi

# 3. munge --------------------------------------------------------------------------------------
install -d -o munge -g munge -m 0700 /etc/munge /var/log/munge
install -d -o munge -g munge -m 0711 /var/lib/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    runuser -u munge -- mungekey --create --keyfile=/etc/munge/munge.key
    say "created /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! alive /run/munge/munged.pid; then
    rm -f /run/munge/munge.socket.2.lock
    runuser -u munge -- /usr/sbin/munged
    say "munged started (pid $(cat /run/munge/munged.pid))"
fi
for _ in $(seq 50); do munge -n </dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
munge -n </dev/null | unmunge >/dev/null || { echo "munge does not work" >&2; exit 1; }

# 4. slurm.conf -----------------------------------------------------------------------------------
install -d -o slurm -g slurm -m 0755 /var/spool/slurmctld /var/log/slurm
install -d -m 0755 /var/spool/slurmd /run/slurm /etc/slurm
HW=$(/usr/sbin/slurmd -C | head -1)           # NodeName=vm CPUs=2 ... RealMemory=24105
hw() { sed -n "s/.*\b$1=\([0-9]*\).*/\1/p" <<<"$HW"; }
CPUS=${SLURM_NODE_CPUS:-$(hw CPUs)}
MEM=${SLURM_NODE_MEM_MB:-$(hw RealMemory)}
GPUS=${SLURM_NODE_GPUS:-0}
if [ -n "${SLURM_NODE_CPUS:-}${SLURM_NODE_MEM_MB:-}" ]; then
    NODE="NodeName=$HOST CPUs=$CPUS RealMemory=$MEM"     # declared, not detected
    OVERRIDES="SlurmdParameters=config_overrides"
else
    NODE="NodeName=$HOST CPUs=$CPUS Boards=1 SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore) RealMemory=$MEM"
    OVERRIDES=""
fi
GRES=""
if [ "$GPUS" -gt 0 ]; then
    NODE="$NODE Gres=gpu:$GPUS"
    GRES="GresTypes=gpu"
    # Slurm 22.05 counts a GPU only with a File= that is a character device (Count= alone is
    # registered as 0): one symlink to /dev/null per fake GPU.
    install -d /var/lib/slurm-fakegpu
    for ((i = 0; i < GPUS; i++)); do ln -sfn /dev/null /var/lib/slurm-fakegpu/nvidia$i; done
    echo "NodeName=$HOST Name=gpu File=/var/lib/slurm-fakegpu/nvidia[0-$((GPUS - 1))]" > /etc/slurm/gres.conf
else
    rm -f /etc/slurm/gres.conf
fi
if [ "$ACCOUNTING" = 1 ]; then
    ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
JobAcctGatherType=jobacct_gather/linux"
else
    ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
# SchedulerParameters=preempt_send_user_signal (22.05's spelling; PreemptParameters=send_user_signal
# is unknown to 22.05 and makes every Slurm command fail): meant to send a preempted job its
# --signal (submitit: USR2) instead of SIGTERM. In our test with GraceTime=60 the job still got
# SIGTERM, so treat it as untested.
PREEMPT_PARAMS=""
[ "${SLURM_PREEMPT_USER_SIGNAL:-0}" = 1 ] && PREEMPT_PARAMS="SchedulerParameters=preempt_send_user_signal"
NEWCONF=$(cat <<EOF
# written by start-slurm.sh
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# A requeued job may start again only after the job credential expires (default 120 s).
AuthInfo=cred_expire=10
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
MailProg=/bin/true
# No cgroups in a container: plain process tracking, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
$GRES
$OVERRIDES
ReturnToService=2
SlurmctldTimeout=60
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
Waittime=0
# Real preemption: a job in "urgent" requeues the "debug" jobs it needs room from (SIGCONT +
# SIGTERM at once, SIGKILL after GraceTime + KillWait), e.g. sbatch -p urgent -c 2 --wrap 'sleep 5'
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
$PREEMPT_PARAMS
$NODE State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=${SLURM_GRACE_TIME:-0}
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
)
CHANGED=0
if [ ! -f /etc/slurm/slurm.conf ] || [ "$NEWCONF" != "$(cat /etc/slurm/slurm.conf)" ]; then
    printf '%s\n' "$NEWCONF" > /etc/slurm/slurm.conf
    CHANGED=1
    say "wrote /etc/slurm/slurm.conf ($NODE)"
fi
cat > /etc/slurm/cgroup.conf <<'EOF'
# unused (no cgroup plugins configured); present so that nothing looks for it in vain
CgroupPlugin=autodetect
EOF

# 5. Accounting (optional): MariaDB + slurmdbd -----------------------------------------------------
if [ "$ACCOUNTING" = 1 ]; then
    install -d -o mysql -g mysql -m 0755 /run/mysqld
    if ! mysqladmin ping >/dev/null 2>&1; then
        [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
        setsid /usr/sbin/mariadbd --user=mysql --skip-networking=0 --bind-address=127.0.0.1 \
            >/var/log/slurm/mariadb.log 2>&1 < /dev/null &
        for _ in $(seq 60); do mysqladmin ping >/dev/null 2>&1 && break; sleep 0.5; done
        say "mariadb started"
    fi
    mysql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmdbpass';
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
    cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=$HOST
SlurmUser=slurm
PidFile=/run/slurm/slurmdbd.pid
LogFile=/var/log/slurm/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmdbpass
StorageLoc=slurm_acct_db
EOF
    chown slurm:slurm /etc/slurm/slurmdbd.conf && chmod 0600 /etc/slurm/slurmdbd.conf
    if ! alive /run/slurm/slurmdbd.pid; then
        rm -f /run/slurm/slurmdbd.pid
        /usr/sbin/slurmdbd
        for _ in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
        say "slurmdbd started (pid $(cat /run/slurm/slurmdbd.pid))"
    fi
    sacctmgr -n list cluster format=cluster | grep -qw local || sacctmgr -i add cluster local >/dev/null
fi

# 6. slurmctld and slurmd --------------------------------------------------------------------------
if [ "$CHANGED" = 1 ]; then         # a new config: restart what runs
    for d in slurmd slurmctld; do
        if alive /run/slurm/$d.pid; then
            pid=$(cat /run/slurm/$d.pid); kill "$pid"
            for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            say "stopped $d (config changed)"
        fi
    done
fi
waitpid() { for _ in $(seq 100); do alive "$1" && return 0; sleep 0.1; done; return 1; }
if ! alive /run/slurm/slurmctld.pid; then
    rm -f /run/slurm/slurmctld.pid
    /usr/sbin/slurmctld
    waitpid /run/slurm/slurmctld.pid
    say "slurmctld started (pid $(cat /run/slurm/slurmctld.pid))"
fi
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
if ! alive /run/slurm/slurmd.pid; then
    rm -f /run/slurm/slurmd.pid
    /usr/sbin/slurmd
    waitpid /run/slurm/slurmd.pid
    say "slurmd started (pid $(cat /run/slurm/slurmd.pid))"
fi

# 7. Wait for the node ------------------------------------------------------------------------------
state=""
for i in $(seq 120); do
    state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
    case "$state" in
        idle|mixed|allocated|completing) break ;;
        drain*|down*) [ $((i % 10)) = 1 ] && scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    sleep 0.5
done
case "$state" in
    idle|mixed|allocated|completing) ;;
    *) echo "node $HOST is '$state', not idle; see /var/log/slurm/*.log" >&2; sinfo -R >&2; exit 1 ;;
esac
if [ "$state" = idle ]; then      # the saved state may say idle before slurmd has registered
    timeout 60 srun -N1 -n1 --immediate=50 -J start-slurm-check true \
        || { echo "test job failed; see /var/log/slurm/*.log" >&2; exit 1; }
fi
say "ready: node $HOST $state"
sinfo
