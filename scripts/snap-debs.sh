# shellcheck shell=bash
# The Debian packages in the charmed-postgresql snap that scripts/build-snap.sh
# builds on Debian 12, and how they are chosen. Sourced (not run); callers set
# -euo pipefail.
#
# snapcraft.yaml's `postgresql` part stages Ubuntu 24.04's packages; its
# stage-packages resolve every dependency and leave out those the base snap
# (core24) already has, except the ones named in stage-packages. This file
# does the same with Debian 12's packages: SNAP_DEB_ROOTS and their
# Depends/Pre-Depends (no Recommends), recursively, first alternative of an
# "a | b", minus SNAP_DEB_IN_BASE and SNAP_DEB_NOT_NEEDED (whose own
# dependencies are not followed either).

# What snapcraft.yaml's postgresql part names. Debian 12 has PostgreSQL 15, not Ubuntu 24.04's
# 16: the snap built here carries 15 (usr/lib/postgresql/15/...).
SNAP_DEB_POSTGRESQL=postgresql-15 # the version of the snap is this package's
SNAP_DEB_ROOTS=(
    "$SNAP_DEB_POSTGRESQL" # postgres, initdb, pg_ctl, pg_rewind, pg_controldata, ...
    postgresql-client-15 # psql, pg_basebackup
    etcd-server          # usr/bin/etcd
    etcd-client          # usr/bin/etcdctl
    pgbouncer            # usr/sbin/pgbouncer
)
# snapcraft.yaml's setpriv part: util-linux, of which only usr/bin/setpriv
# goes into the snap (its dependencies, libc6 and libcap-ng0, are core24's).
# shellcheck disable=SC2034 # used by scripts/build-snap.sh
SNAP_DEB_SETPRIV_PKG=util-linux
# shellcheck disable=SC2034
SNAP_DEB_SETPRIV_FILES=(usr/bin/setpriv)

# Libraries core24 already has, under the same soname (Ubuntu 24.04 renamed
# several packages for 64-bit time_t, e.g. libssl3t64, keeping the soname).
# core24 is ubuntu-base (apt, dpkg, bash, coreutils, PAM, ...) plus systemd,
# udev, openssh-server, cryptsetup, gnutls-bin, iproute2, sudo, tzdata and
# locales (canonical/core-base, hooks/001-extra-packages.chroot). Only what
# those certainly pull in is here; a library not listed is shipped in the
# snap even if the base might have it (harmless: LD_LIBRARY_PATH picks the
# snap's copy). libc6, libgcc-s1 and libstdc++6 must come from the base: the
# snap runs on the base's dynamic loader. The ldd check of build-snap.sh
# accepts a library outside the snap only from these packages.
SNAP_DEB_IN_BASE=(
    libc6 libc-bin libgcc-s1 libstdc++6 # glibc (and its C.UTF-8 locale), the GCC runtime
    zlib1g liblzma5 libbz2-1.0 libzstd1 liblz4-1 # compression (dpkg, apt, systemd)
    libssl3                                      # OpenSSL 3 (systemd, openssh; libssl3t64)
    libsystemd0 libudev1 libcap2 libcap-ng0 libacl1 libaudit1 libaudit-common # systemd, util-linux
    libselinux1 libsepol2 libsemanage2 libsemanage-common libpcre2-8-0        # SELinux libs (passwd, util-linux)
    libpam0g libpam-modules libpam-modules-bin libcrypt1 libdb5.3 # PAM (login, sudo)
    libblkid1 libmount1 libuuid1 libsmartcols1                    # util-linux libraries
    libtinfo6                                                     # ncurses (bash)
    libgcrypt20 libgpg-error0                                     # systemd, apt (gpgv)
    libgnutls30 libnettle8 libhogweed6 libgmp10 libidn2-0 libp11-kit0 libtasn1-6 libffi8 # gnutls-bin, apt
    libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libkeyutils1 libcom-err2   # openssh-server (GSSAPI)
    libedit2 libbsd0 libmd0                                       # openssh-client
    tzdata # /usr/share/zoneinfo: Debian's PostgreSQL is built --with-system-tzdata
)

# Packages not needed at run time: maintainer-script helpers, Debian's init
# integration, Perl tooling, data the base or the host provides. Their
# dependencies are not followed (that is what keeps Perl out).
SNAP_DEB_NOT_NEEDED=(
    postgresql-common postgresql-client-common # Debian's cluster wrappers (pg_ctlcluster, pg_wrapper; Perl): the snap runs usr/lib/postgresql/15/bin directly
    ssl-cert openssl                           # the snakeoil certificate of the postinst; TLS files come from the configuration
    locales locales-all libc-l10n              # PostgreSQL runs with C.UTF-8, which glibc's libc-bin (base) carries
    debconf cdebconf debconf-2.0 ucf           # maintainer scripts' questions and config-file handling
    adduser passwd                             # maintainer scripts create users; the snap uses _daemon_
    init-system-helpers lsb-base sysvinit-utils # init scripts and systemd units the snap does not use
    usrmerge usr-is-merged                     # the base's file system layout, not the snap's
    perl perl-base perl-modules-5.36 libperl5.36 # only postgresql-common's scripts use Perl
    dpkg tar install-info sensible-utils       # tools of the package manager and of maintainer scripts
    readline-common                            # /usr/share/readline/inputrc only (psql works without it)
    netbase                                    # /etc/services, /etc/protocols: a strict snap sees the host's /etc
    gcc-12-base                                # an empty marker package of the GCC runtime
    util-linux-extra                           # util-linux's rarely used tools; setpriv is in util-linux itself
)

# snap_deb_listed NAME ARRAY...: is NAME one of the words given?
snap_deb_listed() {
    local name=$1 item
    shift
    for item in "$@"; do
        [ "$item" = "$name" ] && return 0
    done
    return 1
}

# snap_deb_direct_deps PKG: PKG's Depends and Pre-Depends, one a line: the
# first alternative of each "a | b" group, a virtual package's first provider.
snap_deb_direct_deps() {
    local line name alt=0 prev_alt=0 want_provider=0 out
    out=$(apt-cache depends --no-recommends --no-suggests --no-conflicts \
        --no-breaks --no-replaces --no-enhances "$1") || {
        echo "snap-debs: apt-cache depends $1 failed (is it a Debian 12 package? run apt-get update)" >&2
        return 1
    }
    while IFS= read -r line; do
        case $line in
        " |Depends: "* | " |PreDepends: "*) alt=1 ;;
        "  Depends: "* | "  PreDepends: "*) alt=0 ;;
        "    "*)
            if [ "$want_provider" -eq 1 ]; then
                name=${line#"    "}
                printf '%s\n' "${name%%:*}"
                want_provider=0
            fi
            continue
            ;;
        *) continue ;;
        esac
        name=${line#*: }
        want_provider=0
        if [ "$prev_alt" -eq 1 ]; then
            prev_alt=$alt # a later alternative of a group already chosen
            continue
        fi
        prev_alt=$alt
        case $name in
        "<"*">") # virtual: only worth a provider if not left out by name
            name=${name#<}
            name=${name%>}
            if snap_deb_listed "$name" "${SNAP_DEB_NOT_NEEDED[@]}"; then
                printf '%s\n' "$name"
            else
                want_provider=1
            fi
            ;;
        *) printf '%s\n' "${name%%:*}" ;;
        esac
    done <<<"$out"
}

# snap_deb_resolve: fills SNAP_DEBS (to stage) and SNAP_DEBS_LEFT_OUT
# ("name: why" lines), walking the dependencies from SNAP_DEB_ROOTS.
snap_deb_resolve() {
    SNAP_DEBS=()
    SNAP_DEBS_LEFT_OUT=()
    local -A seen=()
    local -a queue=("${SNAP_DEB_ROOTS[@]}")
    local pkg deps dep
    while [ "${#queue[@]}" -gt 0 ]; do
        pkg=${queue[0]}
        queue=("${queue[@]:1}")
        [ -z "${seen[$pkg]:-}" ] || continue
        seen[$pkg]=1
        if ! snap_deb_listed "$pkg" "${SNAP_DEB_ROOTS[@]}"; then
            if snap_deb_listed "$pkg" "${SNAP_DEB_IN_BASE[@]}"; then
                SNAP_DEBS_LEFT_OUT+=("$pkg: in the core24 base")
                continue
            fi
            if snap_deb_listed "$pkg" "${SNAP_DEB_NOT_NEEDED[@]}"; then
                SNAP_DEBS_LEFT_OUT+=("$pkg: not needed at run time")
                continue
            fi
        fi
        SNAP_DEBS+=("$pkg")
        deps=$(snap_deb_direct_deps "$pkg") || return 1
        while IFS= read -r dep; do
            [ -n "$dep" ] && queue+=("$dep")
        done <<<"$deps"
    done
}
