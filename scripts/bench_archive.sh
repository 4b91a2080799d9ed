#!/usr/bin/env bash
# WAL archiving figures only (archive-push one call each and async,
# archive-get one segment and with prefetch), pgpilot and pgBackRest side by
# side on a posix repository: the archive rows of scripts/bench_backup.sh,
# which documents the method. Run as root after
# `cargo build --release -p pgpilot`.
#
#   scripts/bench_archive.sh [segments] [gets] [posix|s3|both]   (defaults: 200 20 posix)
set -euo pipefail
PGPILOT_BENCH_STEPS=archive exec "$(dirname "$0")/bench_backup.sh" "${3:-posix}" 20 1 "${1:-200}" "${2:-20}"
