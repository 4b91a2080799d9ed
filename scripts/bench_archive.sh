#!/usr/bin/env bash
# WAL archiving figures on a posix repository: archive-push of real 16 MiB
# segments, one call per segment (sync, and async with the push-ahead
# worker), and archive-get latency (one segment, and a run of consecutive
# segments with async prefetch). Side by side with pgBackRest when it is
# installed (Debian's `pgbackrest`: compress-type zst level 3, process-max 2,
# archive-async with spool). Run as root on a machine prepared by
# scripts/setup.sh, after `cargo build --release -p pgpilot`.
#
#   scripts/bench_archive.sh [segments] [gets]      (defaults: 200 20)
#
# Everything lives in a temporary directory that is removed at the end; the
# PostgreSQL and the push-ahead worker it starts are stopped by pid. The
# calls run as `postgres`, from the data directory, as PostgreSQL runs them.
# Page cache warm; `sync` before each timed step.
set -euo pipefail

SEGMENTS=${1:-200}
GETS=${2:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGPILOT=${PGPILOT_BIN:-$ROOT/target/release/pgpilot}
PG_BIN=/usr/lib/postgresql/15/bin

[ -x "$PGPILOT" ] || { echo "build first: cargo build --release -p pgpilot" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (PostgreSQL runs as postgres)" >&2; exit 2; }

WORK=$(mktemp -d /tmp/pgpilot-archive-bench.XXXXXX)
chmod 755 "$WORK"
PORT=$((20000 + RANDOM % 20000))
WORKER_PID=
cleanup() {
    [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null || true
    if [ -f "$WORK/data/postmaster.pid" ]; then
        kill -QUIT "$(head -1 "$WORK/data/postmaster.pid")" 2>/dev/null || true
    fi
    sleep 1
    if [ -n "${PGPILOT_BENCH_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

as_pg() { su postgres -s /bin/bash -c "$*"; }
mkdir -p "$WORK/run" "$WORK/repo-sync" "$WORK/repo-async" "$WORK/get" "$WORK/pgbr-sync" \
    "$WORK/pgbr-async" "$WORK/pgbr-spool" "$WORK/pgbr-lock"
chown postgres:postgres "$WORK" "$WORK"/*
as_pg "$PG_BIN/initdb -D $WORK/data -U postgres --auth=trust --no-sync -E UTF8 --locale=C" >/dev/null

member_config() { # file repo extra-backup-keys
    cat >"$1" <<EOF
[cluster]
scope = "bench"
name = "bench"
[dcs]
endpoints = ["http://127.0.0.1:2379"]
[postgresql]
data_dir = "$WORK/data"
port = $PORT
socket_dir = "$WORK/run"
connect_address = "127.0.0.1:$PORT"
[postgresql.authentication.superuser]
username = "postgres"
password = "unused"
[postgresql.authentication.replication]
username = "replicator"
password = "unused"
[api]
listen = "127.0.0.1:8008"
[log]
level = "warn"
[backup]
repository = "posix"
parallelism = 2
$3
[backup.posix]
path = "$2"
EOF
    chmod 644 "$1"
}
member_config "$WORK/sync.toml" "$WORK/repo-sync" ""
member_config "$WORK/async.toml" "$WORK/repo-async" "archive_async = true
spool_path = \"$WORK/spool\""

PGBR=
if command -v pgbackrest >/dev/null 2>&1; then
    PGBR=pgbackrest
    for mode in sync async; do
        cat >"$WORK/pgbr-$mode.conf" <<EOF
[global]
repo1-path=$WORK/pgbr-$mode
compress-type=zst
compress-level=3
process-max=2
archive-async=$([ $mode = async ] && echo y || echo n)
spool-path=$WORK/pgbr-spool
log-level-console=warn
log-level-file=off
lock-path=$WORK/pgbr-lock
[bench]
pg1-path=$WORK/data
pg1-socket-path=$WORK/run
pg1-port=$PORT
EOF
        chmod 644 "$WORK/pgbr-$mode.conf"
    done
fi

# No archive_command: PostgreSQL keeps every completed segment as .ready.
cat >>"$WORK/data/postgresql.conf" <<EOF
archive_mode = on
archive_command = ''
max_wal_size = '64GB'
checkpoint_timeout = '1h'
EOF
as_pg "$PG_BIN/pg_ctl -D $WORK/data -l $WORK/pg.log -o '-p $PORT -k $WORK/run -c listen_addresses=' -w start" >/dev/null
if [ -n "$PGBR" ]; then
    for mode in sync async; do
        as_pg "pgbackrest --config=$WORK/pgbr-$mode.conf --stanza=bench stanza-create" >/dev/null
    done
fi

# Real WAL: pgbench's load and transactions, with checkpoints (full-page images).
PSQL="$PG_BIN/psql -h $WORK/run -p $PORT -U postgres -qAt postgres"
as_pg "$PG_BIN/pgbench -h $WORK/run -p $PORT -U postgres -i -s 20 -q postgres" >/dev/null 2>&1
ready() { find "$WORK/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
for _ in $(seq 1 200); do
    [ "$(ready)" -gt "$SEGMENTS" ] && break
    as_pg "$PG_BIN/pgbench -h $WORK/run -p $PORT -U postgres -n -c 2 -j 2 -t 4000 postgres" >/dev/null 2>&1
    as_pg "$PSQL -c CHECKPOINT"
done
[ "$(ready)" -gt "$SEGMENTS" ] || { echo "could not generate $SEGMENTS segments" >&2; exit 1; }
ls "$WORK/data/pg_wal/archive_status" | sed -n 's/^\([0-9A-F]\{24\}\)\.ready$/\1/p' | sort | head -n "$SEGMENTS" >"$WORK/segments"
WAL_MIB=$((SEGMENTS * 16))

# One call per segment, as postgres from the data directory; prints seconds.
push_loop() { # command...
    cat >"$WORK/loop.sh" <<EOF
cd $WORK/data
start=\$(date +%s%N)
while read -r seg; do
    $* pg_wal/\$seg || { echo "failed on \$seg" >&2; exit 1; }
done <$WORK/segments
end=\$(date +%s%N)
echo "scale=3; (\$end - \$start) / 1000000000" | bc
EOF
    sync
    as_pg "bash $WORK/loop.sh"
}

# Latency of archive-get calls (ms, one per line): the same segment GETS
# times, or GETS consecutive segments.
get_loop() { # consecutive(0|1) command...
    local consecutive=$1
    shift
    cat >"$WORK/get.sh" <<EOF
cd $WORK/data
i=0
while read -r seg; do
    i=\$((i + 1))
    [ \$i -le $GETS ] || break
    [ $consecutive = 1 ] || seg=\$(sed -n 10p $WORK/segments)
    start=\$(date +%s%N)
    $* \$seg $WORK/get/RECOVERYXLOG || { echo "failed on \$seg" >&2; exit 1; }
    end=\$(date +%s%N)
    echo "scale=1; (\$end - \$start) / 1000000" | bc
done <$WORK/segments
EOF
    sync
    as_pg "bash $WORK/get.sh"
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { echo "scale=1; $SEGMENTS / $1" | bc; }

SYNC=$(push_loop "$PGPILOT archive-push --config $WORK/sync.toml")
# Async: the worker starts with the calls, as after a burst of WAL.
"$PGPILOT" archive-ahead --config "$WORK/async.toml" 2>"$WORK/ahead.log" &
WORKER_PID=$!
ASYNC=$(push_loop "$PGPILOT archive-push --config $WORK/async.toml")
kill "$WORKER_PID"
wait "$WORKER_PID" 2>/dev/null || true
WORKER_PID=
GET_ONE=$(get_loop 0 "$PGPILOT archive-get --config $WORK/sync.toml" | median)
GET_RUN=$(get_loop 1 "$PGPILOT archive-get --config $WORK/async.toml" | median)

if [ -n "$PGBR" ]; then
    PB_SYNC=$(push_loop "pgbackrest --config=$WORK/pgbr-sync.conf --stanza=bench archive-push")
    PB_ASYNC=$(push_loop "pgbackrest --config=$WORK/pgbr-async.conf --stanza=bench archive-push")
    PB_GET_ONE=$(get_loop 0 "pgbackrest --config=$WORK/pgbr-sync.conf --stanza=bench archive-get" | median)
    PB_GET_RUN=$(get_loop 1 "pgbackrest --config=$WORK/pgbr-async.conf --stanza=bench archive-get" | median)
fi

echo
echo "pgpilot $("$PGPILOT" version | cut -d' ' -f2), posix repository, $SEGMENTS real 16 MiB segments ($WAL_MIB MiB), zstd 3, parallelism 2"
printf '%-34s %12s %12s\n' step pgpilot "${PGBR:+pgBackRest}"
printf '%-34s %12s %12s\n' 'archive-push sync (seg/s)' "$(rate "$SYNC")" "${PGBR:+$(rate "$PB_SYNC")}"
printf '%-34s %12s %12s\n' 'archive-push async (seg/s)' "$(rate "$ASYNC")" "${PGBR:+$(rate "$PB_ASYNC")}"
printf '%-34s %12s %12s\n' 'archive-get one segment (ms)' "$GET_ONE" "${PGBR:+$PB_GET_ONE}"
printf '%-34s %12s %12s\n' "archive-get async, $GETS in a row (ms)" "$GET_RUN" "${PGBR:+$PB_GET_RUN}"
