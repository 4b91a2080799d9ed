#!/usr/bin/env bash
# pgpilot against pgBackRest on the same pgbench database, same machine, same
# posix directory and same S3 server (moto on loopback, behind a stunnel4 TLS
# front because pgBackRest only speaks TLS to S3). Prints one table: full
# backup and restore (seconds, MiB/s), archive-push of real 16 MiB segments
# one call each and in async mode (segments/s), archive-get latency (ms,
# median) one segment and a run of consecutive segments with prefetch, and
# the peak RSS of each command. Run as root after
# `cargo build --release -p pgpilot`; missing Debian packages (pgbackrest,
# stunnel4, openssl, time, bc) are installed with apt.
#
#   scripts/bench_backup.sh [posix|s3|both] [scale] [runs] [segments] [gets]
#                                        (defaults: both 50 3 30 20)
#
# Both tools: zstd level 3, parallelism (process-max) 2, start-fast. Calls run
# as `postgres` from the data directory, as PostgreSQL runs them. Page cache
# warm, `sync` before each timed step. Async push: the segments are left
# `.ready` in pg_wal (archive_command empty), so each tool's async machinery
# sees the whole burst (pgBackRest: archive-async=y, spool; pgpilot:
# archive_async = true with its push-ahead worker, `pgpilot archive-ahead`, the
# loop that `pgpilot run` runs) while archive-push is called once per segment
# in order. PGPILOT_BENCH_STEPS="backup archive" (the default) picks the
# groups of rows (scripts/bench_archive.sh runs "archive" only). Everything
# lives in a temporary directory removed at the end; the processes started
# here are stopped by pid.
set -euo pipefail

KINDS=${1:-both}
SCALE=${2:-50}
RUNS=${3:-3}
SEGMENTS=${4:-30}
GETS=${5:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PGPILOT=${PGPILOT_BIN:-$ROOT/target/release/pgpilot}
PG_BIN=/usr/lib/postgresql/15/bin
MOTO=${PGPILOT_MOTO_SERVER:-/opt/pgpilot-moto/bin/moto_server}
STEPS=" ${PGPILOT_BENCH_STEPS:-backup archive} "
case $KINDS in
    both) KINDS="posix s3" ;;
    posix | s3) ;;
    *) echo "usage: $0 [posix|s3|both] [scale] [runs] [segments] [gets]" >&2; exit 2 ;;
esac

[ -x "$PGPILOT" ] || { echo "build first: cargo build --release -p pgpilot" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "run as root (PostgreSQL runs as postgres)" >&2; exit 2; }

# shellcheck source=scripts/setup-lib.sh
. "$ROOT/scripts/setup-lib.sh"
# What only this benchmark runs; pgpilot's own packages come from scripts/setup.sh.
install_missing pgbackrest stunnel4 openssl bc time || {
    echo "could not install the benchmark's packages: install them and run again" >&2
    exit 2
}

WORK=$(mktemp -d /tmp/pgpilot-backup-bench.XXXXXX)
chmod 755 "$WORK"
PORT=$((20000 + RANDOM % 20000))
MOTO_PORT=$((PORT + 1))
TLS_PORT=$((PORT + 2))
MOTO_PID=
STUNNEL_PID=
WORKER_PID=
cleanup() {
    [ -n "$WORKER_PID" ] && kill "$WORKER_PID" 2>/dev/null || true
    if [ -f "$WORK/data/postmaster.pid" ]; then
        kill -QUIT "$(head -1 "$WORK/data/postmaster.pid")" 2>/dev/null || true
    fi
    [ -n "$STUNNEL_PID" ] && kill "$STUNNEL_PID" 2>/dev/null || true
    [ -n "$MOTO_PID" ] && kill "$MOTO_PID" 2>/dev/null || true
    sleep 1
    if [ -n "${PGPILOT_BENCH_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

as_pg() { su postgres -s /bin/bash -c "$*"; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { sort -n | tail -1; }
mib() { echo "scale=0; $1 / 1024" | bc; }
per_s() { echo "scale=1; $1 / $2" | bc; } # amount seconds

mkdir -p "$WORK/run"
chown postgres:postgres "$WORK" "$WORK/run"
as_pg "$PG_BIN/initdb -D $WORK/data -U postgres --auth=trust --no-sync -E UTF8 --locale=C" >/dev/null

if [[ " $KINDS " == *" s3 "* ]]; then
    "$MOTO" -H 127.0.0.1 -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
    MOTO_PID=$!
    for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$MOTO_PORT" >/dev/null && break; sleep 0.2; done
    curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/bench" >/dev/null
    # moto's own TLS mode fails with pgBackRest; a stunnel front works.
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
        -keyout "$WORK/s3.key" -out "$WORK/s3.crt" 2>/dev/null
    cat >"$WORK/stunnel.conf" <<EOF
foreground = yes
pid =
debug = warning
[s3]
accept = 127.0.0.1:$TLS_PORT
connect = 127.0.0.1:$MOTO_PORT
cert = $WORK/s3.crt
key = $WORK/s3.key
EOF
    stunnel4 "$WORK/stunnel.conf" >"$WORK/stunnel.log" 2>&1 &
    STUNNEL_PID=$!
    for _ in $(seq 1 100); do curl -sk "https://127.0.0.1:$TLS_PORT" >/dev/null && break; sleep 0.2; done
    curl -skf "https://127.0.0.1:$TLS_PORT/bench" >/dev/null || {
        echo "stunnel in front of moto does not answer: see $WORK/stunnel.log" >&2
        exit 1
    }
fi

# Per kind, two repositories for each tool: "main" (backups, sync pushes,
# archive-get of one segment) and "async" (async pushes, then archive-get of
# consecutive segments with prefetch), so that no push finds its segment
# already stored.
pp_config() { # kind repo(main|async)
    local file=$WORK/pp-$1-$2.toml extra="" repo
    [ "$2" = async ] && extra="archive_async = true
spool_path = \"$WORK/pp-spool-$1\""
    if [ "$1" = s3 ]; then
        repo="[backup.s3]
endpoint = \"https://127.0.0.1:$TLS_PORT\"
uri_style = \"path\"
region = \"us-east-1\"
bucket = \"bench\"
prefix = \"pgpilot-$2\"
access_key = \"testing\"
secret_key = \"testing\"
verify_tls = false"
    else
        install -d -o postgres -g postgres "$WORK/pp-posix-$2"
        repo="[backup.posix]
path = \"$WORK/pp-posix-$2\""
    fi
    cat >"$file" <<EOF
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
repository = "$1"
parallelism = 2
$extra
$repo
EOF
    chmod 644 "$file"
}
pgbr_config() { # kind repo(main|async)
    local file=$WORK/pgbr-$1-$2.conf repo
    if [ "$1" = s3 ]; then
        repo="repo1-type=s3
repo1-path=/pgbackrest-$2
repo1-s3-bucket=bench
repo1-s3-endpoint=127.0.0.1
repo1-storage-port=$TLS_PORT
repo1-s3-region=us-east-1
repo1-s3-key=testing
repo1-s3-key-secret=testing
repo1-s3-uri-style=path
repo1-storage-verify-tls=n"
    else
        install -d -o postgres -g postgres "$WORK/pgbr-posix-$2"
        repo="repo1-path=$WORK/pgbr-posix-$2"
    fi
    install -d -o postgres -g postgres "$WORK/pgbr-lock-$1" "$WORK/pgbr-spool-$1"
    cat >"$file" <<EOF
[global]
$repo
compress-type=zst
compress-level=3
process-max=2
start-fast=y
repo1-retention-full=99
archive-async=$([ "$2" = async ] && echo y || echo n)
spool-path=$WORK/pgbr-spool-$1
log-level-console=warn
log-level-file=off
lock-path=$WORK/pgbr-lock-$1
[bench]
pg1-path=$WORK/data
pg1-socket-path=$WORK/run
pg1-port=$PORT
EOF
    chmod 644 "$file"
}
PP() { echo "$PGPILOT $1 --config $WORK/pp-$2-$3.toml"; }                      # cmd kind repo
PB() { echo "pgbackrest --config=$WORK/pgbr-$2-$3.conf --stanza=bench $1"; } # cmd kind repo

ARCHIVE=
for kind in $KINDS; do
    for repo in main async; do
        pp_config "$kind" "$repo"
        pgbr_config "$kind" "$repo"
    done
    ARCHIVE="$ARCHIVE${ARCHIVE:+ && }$(PP archive-push "$kind" main) %p && $(PB archive-push "$kind" main) %p"
done

# Load without archiving (the load's WAL is not what is measured), then
# every main repository archives (the backups wait for their WAL).
cat >>"$WORK/data/postgresql.conf" <<EOF
archive_mode = on
archive_command = '/bin/true'
max_wal_size = '64GB'
checkpoint_timeout = '1h'
EOF
as_pg "$PG_BIN/pg_ctl -D $WORK/data -l $WORK/pg.log -o '-p $PORT -k $WORK/run -c listen_addresses=' -w start" >/dev/null
PSQL="$PG_BIN/psql -h $WORK/run -p $PORT -U postgres -qAt postgres"
for kind in $KINDS; do
    for repo in main async; do
        as_pg "$(PB stanza-create "$kind" "$repo")" >/dev/null
    done
done
as_pg "$PG_BIN/pgbench -h $WORK/run -p $PORT -U postgres -i -s $SCALE -q postgres" >/dev/null 2>&1
as_pg "$PSQL -c CHECKPOINT"
DATA_MIB=$(du -sm --exclude=pg_wal "$WORK/data" | cut -f1)
as_pg "$PSQL -c \"ALTER SYSTEM SET archive_command = '${ARCHIVE//\'/\'\'}'\""
as_pg "$PSQL -c 'SELECT pg_reload_conf()'" >/dev/null

# Run a timed command; prints "seconds rss_kib user_s sys_s".
timed() {
    sync
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/time" "$@" >"$WORK/out" 2>"$WORK/err" || {
        cat "$WORK/err" >&2
        exit 1
    }
    cat "$WORK/err" >>"$WORK/log"
    cat "$WORK/time"
}

declare -A RES
# Store the median seconds, the rate, the median CPU and the peak RSS of a
# times file.
record() { # row-prefix column file
    local s rss
    s=$(cut -d' ' -f1 "$3" | median)
    rss=$(cut -d' ' -f2 "$3" | max)
    RES["$1 CPU s|$2"]=$(awk '{print $3 + $4}' "$3" | median)
    RES["$1 s|$2"]=$s
    RES["$1 MiB/s|$2"]=$(echo "scale=0; $DATA_MIB / $s" | bc)
    RES["$1 RSS MiB|$2"]=$(mib "$rss")
}

for kind in $KINDS; do
    [[ $STEPS == *" backup "* ]] || break
    for tool in pp pgbr; do
        : >"$WORK/b.times"
        : >"$WORK/r.times"
        for i in $(seq 1 "$RUNS"); do
            if [ $tool = pp ]; then
                timed $(PP backup "$kind" main) >>"$WORK/b.times"
            else
                timed su postgres -s /bin/bash -c "$(PB '--type=full backup' "$kind" main)" >>"$WORK/b.times"
            fi
        done
        for i in $(seq 1 "$RUNS"); do
            rm -rf "$WORK/restore"
            if [ $tool = pp ]; then
                timed $(PP restore "$kind" main) --data-dir "$WORK/restore" >>"$WORK/r.times"
            else
                install -d -o postgres -g postgres -m 700 "$WORK/restore"
                timed su postgres -s /bin/bash -c "$(PB restore "$kind" main) --pg1-path=$WORK/restore" >>"$WORK/r.times"
            fi
        done
        rm -rf "$WORK/restore"
        record "full backup" "$tool $kind" "$WORK/b.times"
        record "restore" "$tool $kind" "$WORK/r.times"
    done
done

# Archive rows. Let the main repositories catch up, then stop archiving so
# that PostgreSQL keeps every new segment `.ready` in pg_wal.
if [[ $STEPS == *" archive "* ]]; then
    as_pg "$PSQL -c 'SELECT pg_switch_wal()'" >/dev/null
    ready() { find "$WORK/data/pg_wal/archive_status" -name '*.ready' | wc -l; }
    for _ in $(seq 1 300); do [ "$(ready)" -eq 0 ] && break; sleep 1; done
    [ "$(ready)" -eq 0 ] || { echo "archive_command does not keep up: see $WORK/pg.log" >&2; exit 1; }
    as_pg "$PSQL -c \"ALTER SYSTEM SET archive_command = ''\""
    as_pg "$PSQL -c 'SELECT pg_reload_conf()'" >/dev/null
    # Real WAL: pgbench transactions, with checkpoints (full-page images).
    for _ in $(seq 1 200); do
        [ "$(ready)" -ge "$SEGMENTS" ] && break
        as_pg "$PG_BIN/pgbench -h $WORK/run -p $PORT -U postgres -n -c 2 -j 2 -t 4000 postgres" >/dev/null 2>&1
        as_pg "$PSQL -c CHECKPOINT"
    done
    [ "$(ready)" -ge "$SEGMENTS" ] || { echo "could not generate $SEGMENTS segments" >&2; exit 1; }
    ls "$WORK/data/pg_wal/archive_status" | sed -n 's/^\([0-9A-F]\{24\}\)\.ready$/\1/p' | sort |
        head -n "$SEGMENTS" >"$WORK/segments"
fi
[ "$GETS" -le "$SEGMENTS" ] || GETS=$SEGMENTS

# Peak RSS (KiB) and mean CPU (user + system, ms) of the calls in $WORK/rss.
rss_cpu() {
    echo "$(cut -d' ' -f1 "$WORK/rss" | max) $(awk '{t += $2 + $3} END {printf "%.0f", 1000 * t / NR}' "$WORK/rss")"
}
# One call per segment, in order, as postgres from the data directory, each
# under /usr/bin/time; sets OUT="seconds peak_rss_kib cpu_ms_per_call".
push_loop() { # command...
    cat >"$WORK/loop.sh" <<EOF
cd $WORK/data
: >$WORK/rss
start=\$(date +%s%N)
while read -r seg; do
    /usr/bin/time -a -o $WORK/rss -f '%M %U %S' $* pg_wal/\$seg || { echo "failed on \$seg" >&2; exit 1; }
done <$WORK/segments
end=\$(date +%s%N)
echo "scale=3; (\$end - \$start) / 1000000000" | bc
EOF
    sync
    as_pg "bash $WORK/loop.sh" >"$WORK/loop.out" 2>>"$WORK/log" || { tail -5 "$WORK/log" >&2; exit 1; }
    OUT="$(cat "$WORK/loop.out") $(rss_cpu)"
}
# archive-get latency, ms per call: the middle segment GETS times
# (consecutive=0) or the first GETS segments in order (1); sets
# OUT="median_ms peak_rss_kib cpu_ms_per_call".
get_loop() { # consecutive command...
    local consecutive=$1
    shift
    cat >"$WORK/get.sh" <<EOF
cd $WORK/data
mkdir -p $WORK/get
: >$WORK/rss
i=0
while read -r seg; do
    i=\$((i + 1))
    [ \$i -le $GETS ] || break
    [ $consecutive = 1 ] || seg=\$(sed -n $(((SEGMENTS + 1) / 2))p $WORK/segments)
    start=\$(date +%s%N)
    /usr/bin/time -a -o $WORK/rss -f '%M %U %S' $* \$seg $WORK/get/RECOVERYXLOG || { echo "failed on \$seg" >&2; exit 1; }
    end=\$(date +%s%N)
    echo "scale=1; (\$end - \$start) / 1000000" | bc
done <$WORK/segments
EOF
    sync
    as_pg "bash $WORK/get.sh" >"$WORK/get.out" 2>>"$WORK/log" || { tail -5 "$WORK/log" >&2; exit 1; }
    OUT="$(median <"$WORK/get.out") $(rss_cpu)"
}
push_row() { # row column "seconds rss"
    set -- "$1" "$2" $3
    RES["$1 seg/s|$2"]=$(per_s "$SEGMENTS" "$3")
    RES["$1 RSS MiB|$2"]=$(mib "$4")
    RES["$1 CPU ms/call|$2"]=$5
}
get_row() { # row column "ms rss"
    set -- "$1" "$2" $3
    RES["$1 ms|$2"]=$3
    RES["$1 RSS MiB|$2"]=$(mib "$4")
    RES["$1 CPU ms/call|$2"]=$5
}

for kind in $KINDS; do
    [[ $STEPS == *" archive "* ]] || break
    push_loop "$(PP archive-push "$kind" main)"
    push_row "archive-push sync" "pp $kind" "$OUT"
    push_loop "$(PB archive-push "$kind" main)"
    push_row "archive-push sync" "pgbr $kind" "$OUT"
    # The push-ahead worker starts with the calls, as after a burst of WAL.
    "$PGPILOT" archive-ahead --config "$WORK/pp-$kind-async.toml" 2>"$WORK/ahead-$kind.log" &
    WORKER_PID=$!
    push_loop "$(PP archive-push "$kind" async)"
    push_row "archive-push async" "pp $kind" "$OUT"
    RES["archive-push async worker RSS MiB|pp $kind"]=$(mib "$(awk '/^VmHWM/ {print $2}' "/proc/$WORKER_PID/status")")
    kill "$WORKER_PID"
    wait "$WORKER_PID" 2>/dev/null || true
    WORKER_PID=
    push_loop "$(PB archive-push "$kind" async)"
    push_row "archive-push async" "pgbr $kind" "$OUT"
    get_loop 0 "$(PP archive-get "$kind" main)"
    get_row "archive-get one segment" "pp $kind" "$OUT"
    get_loop 0 "$(PB archive-get "$kind" main)"
    get_row "archive-get one segment" "pgbr $kind" "$OUT"
    get_loop 1 "$(PP archive-get "$kind" async)"
    get_row "archive-get prefetch" "pp $kind" "$OUT"
    get_loop 1 "$(PB archive-get "$kind" async)"
    get_row "archive-get prefetch" "pgbr $kind" "$OUT"
done

SCOPE=
[[ $STEPS == *" backup "* ]] && SCOPE="backup/restore: median of $RUNS runs; "
[[ $STEPS == *" archive "* ]] && SCOPE+="archive: $SEGMENTS real 16 MiB segments, archive-get: median of $GETS calls;"
COLS=()
for kind in $KINDS; do COLS+=("pp $kind" "pgbr $kind"); done
echo
echo "pgpilot $("$PGPILOT" version | cut -d' ' -f2) (pp) and $(pgbackrest version) (pgbr); pgbench scale $SCALE" \
    "($DATA_MIB MiB); zstd 3, parallelism 2;" \
    "$SCOPE" \
    "s3 = moto behind stunnel4 TLS; RSS = largest process, CPU = user + system of the command and its children (not of async workers); load average $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-46s' step
for c in "${COLS[@]}"; do printf ' %11s' "$c"; done
echo
for row in "full backup s" "full backup MiB/s" "full backup CPU s" "full backup RSS MiB" \
    "restore s" "restore MiB/s" "restore CPU s" "restore RSS MiB" \
    "archive-push sync seg/s" "archive-push sync CPU ms/call" "archive-push sync RSS MiB" \
    "archive-push async seg/s" "archive-push async CPU ms/call" "archive-push async RSS MiB" \
    "archive-push async worker RSS MiB" \
    "archive-get one segment ms" "archive-get one segment CPU ms/call" "archive-get one segment RSS MiB" \
    "archive-get prefetch ms" "archive-get prefetch CPU ms/call" "archive-get prefetch RSS MiB"; do
    row_label=$row
    [ "${row#archive-get prefetch}" != "$row" ] && row_label="archive-get prefetch, $GETS in a row${row#archive-get prefetch}"
    line=
    for c in "${COLS[@]}"; do line+=$(printf ' %11s' "${RES["$row|$c"]:--}"); done
    # Rows of steps not run.
    if [[ $line =~ [^\ -] ]]; then printf '%-46s%s\n' "$row_label" "$line"; fi
done
