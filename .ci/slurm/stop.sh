#!/usr/bin/env bash
# Stop the daemons started by .ci/slurm/start.sh, by the PIDs in their pid files (never by name).
# Jobs still queued or running are kept in /var/spool/slurmctld and come back on the next start
# (running ones are lost: their processes end with slurmd's job steps or are left orphaned).
#   bash .ci/slurm/stop.sh          # slurmd, slurmctld, slurmdbd, munged (and the MariaDB it started)
#   bash .ci/slurm/stop.sh --purge  # also delete the state (queued jobs, job ids) and the logs
set -uo pipefail
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 1; }

stop() {  # name pidfile
    local name=$1 pidfile=$2 pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; echo "$name ($pid) killed"; else echo "$name ($pid) stopped"; fi
    fi
    rm -f "$pidfile"
}

stop slurmd /run/slurm/slurmd.pid
stop slurmctld /run/slurm/slurmctld.pid
stop slurmdbd /run/slurm/slurmdbd.pid
if [ -s /run/mysqld/mysqld.pid ]; then stop mariadbd /run/mysqld/mysqld.pid; fi
stop munged /run/munge/munged.pid

if [ "${1:-}" = --purge ]; then
    rm -rf /var/spool/slurmctld/* /var/spool/slurmd/* /var/log/slurm/*
    echo "state and logs removed"
fi
