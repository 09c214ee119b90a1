#!/usr/bin/env bash
# scripts/services.sh - make sure the local services the fleetpulse test suite needs are installed and running.
# Called by `make services` and `.ci/run`.
#
#   postgresql  PostgreSQL 15 (Debian postgresql-15), cluster 15/main on 127.0.0.1:5432, user postgres with
#               trust auth over TCP, max_connections >= 200, shared_buffers a quarter of RAM (<= 2 GB),
#               TimescaleDB (Apache-2 edition, built from Debian trixie's *source* package) in
#               shared_preload_libraries, telemetry off. Its status line states these settings. The kernel's
#               huge-page reservation is changed only with FLEETPULSE_HUGE_PAGES=1 (see below).
#   rabbitmq    RabbitMQ (Debian rabbitmq-server) on 127.0.0.1:5672 (guest/guest), management plugin with
#               the HTTP API on http://127.0.0.1:15672 (guest/guest works from localhost only).
#   tools       prometheus + promtool (the Debian prometheus *service* is kept stopped and disabled; tests
#               start their own), docker-compose (Python v1, only used as a compose-file parser), curl, wrk
#               (the load generator of bench/capacity_api.py), systemd-analyze (checks packaging/systemd;
#               the package is only installed, nothing is started), dbus-daemon (Debian dbus) and Xvfb
#               (Debian xvfb): the agent's presence tests run their own bus with a test logind and their
#               own X server.
#
# Idempotent.  When everything is already fine nothing but a psql query, a curl and a few file checks run
# (no apt-get, no root needed), well under a second.  Prints exactly one line per service on stdout.  On
# failure prints one line on stderr naming the service / URL that failed and how to fix it, and exits 1.
# Everything the commands print goes to the log file ($FLEETPULSE_SERVICES_LOG, default
# /var/tmp/fleetpulse-services.log as root); SERVICES_VERBOSE=1 also streams it to stderr, and when $CI is
# set the last lines of the log follow the failure line.
#
# Works on a bare Debian bookworm (as root, or as a user with password-less sudo): installs what is missing
# with apt-get (running `apt-get update` only when needed), creates/starts the cluster with pg_ctlcluster
# (so the server runs as the postgres user, never as root) and starts RabbitMQ with `rabbitmq-server
# -detached` (or systemctl where systemd is PID 1).
set -Eeuo pipefail

export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C.UTF-8   # stable (English) tool output; also the locale a cluster created by apt's postinst gets

SCRIPT=$(readlink -f "${BASH_SOURCE[0]}")

# ---------------------------------------------------------------------------------------------- settings
PG_MAJOR=15
PG_HOST=127.0.0.1
PG_PORT=5432
PG_MIN_CONNECTIONS=200
# shared_buffers as timescaledb-tune (and so the TimescaleDB image) would size it: a quarter of the memory,
# here capped at 2 GiB. With Debian's 128 MB a million-row registry does not fit, and every sweep or batch
# evicts dirty pages itself (a WAL flush each). In 8 kB pages, as pg_settings and `postgres -C` report it.
meminfo() { awk -v k="$1:" '$1 == k {print $2}' /proc/meminfo 2>/dev/null || echo 0; }  # a field, in kB or pages
PG_MEM_KB=$(meminfo MemTotal)
PG_WANT_BUFFERS=$(( PG_MEM_KB / 4 / 8 ))
(( PG_WANT_BUFFERS <= 262144 )) || PG_WANT_BUFFERS=262144
(( PG_WANT_BUFFERS >= 16384 )) || PG_WANT_BUFFERS=16384
# Huge pages for that shared memory are opt-in (FLEETPULSE_HUGE_PAGES=1), as they change a kernel setting of
# the whole machine: vm.nr_hugepages (root only; also written to sysctl.d). They spare PostgreSQL a page-table
# walk per buffer touched: the silence sweep at a million agents took 77 ms on huge pages against 100 ms on
# 4 kB pages here (README). PostgreSQL's default huge_pages=try uses them when there are enough, else normal pages.
PG_WANT_HUGE=$(( PG_WANT_BUFFERS * 8 / 2048 * 11 / 10 + 64 ))   # 2 MB pages: buffers + 10 % + the rest
HUGE_SYSCTL=/etc/sysctl.d/60-fleetpulse-hugepages.conf
HUGE_UNAVAILABLE=/run/fleetpulse-hugepages-unavailable
TOOL_PKGS=(prometheus docker-compose curl wrk systemd dbus xvfb)        # Debian packages of the tools
TOOL_CMDS=(prometheus promtool docker-compose curl wrk systemd-analyze dbus-daemon Xvfb)  # and the commands they must provide
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONF_DIR=/etc/postgresql/$PG_MAJOR/main
PG_DROPIN=$PG_CONF_DIR/conf.d/95-fleetpulse.conf
PG_EXT_DIR=/usr/share/postgresql/$PG_MAJOR/extension
PG_LIB_DIR=/usr/lib/postgresql/$PG_MAJOR/lib
MARK="added by fleetpulse scripts/services.sh"

TSDB_SUITE=trixie                 # Debian suite whose *source* package we build (2.19.x, Apache-2 only, +dfsg)
TSDB_SERIES=2.19
TSDB_SRC_LIST=/etc/apt/sources.list.d/fleetpulse-trixie-src.list
TSDB_PIN=/etc/apt/preferences.d/fleetpulse-trixie-src   # no dot in the name: apt ignores e.g. *.list here
TSDB_BUILD_ROOT=/usr/local/src/fleetpulse-timescaledb
TSDB_BUILD_DEPS=("postgresql-server-dev-$PG_MAJOR" cmake build-essential libssl-dev dpkg-dev xz-utils)

RMQ_HOST=127.0.0.1
RMQ_AMQP_PORT=5672
RMQ_API_URL=http://127.0.0.1:15672/api/overview
RMQ_WAIT_S=60
RMQ_CONF=/etc/rabbitmq/rabbitmq.conf
RMQ_FLEETPULSE_CONF=$(dirname "$SCRIPT")/rabbitmq-fleetpulse.conf   # the settings we need, one source

LOCK_FILE=/var/tmp/fleetpulse-services.lock

if [[ -z ${FLEETPULSE_SERVICES_LOG:-} ]]; then
    if (( EUID == 0 )); then LOG=/var/tmp/fleetpulse-services.log
    else LOG=${TMPDIR:-/tmp}/fleetpulse-services-$EUID.log; fi
else
    LOG=$FLEETPULSE_SERVICES_LOG
fi

# ------------------------------------------------------------------------------------ logging / failure
SVC=services            # which service the current step belongs to (named in failure lines)
HINT="see the log"      # how to fix the current step if an unexpected command fails

: >"$LOG" 2>/dev/null || { LOG=$(mktemp -t fleetpulse-services.XXXXXX.log); : >"$LOG"; }
if [[ ${SERVICES_VERBOSE:-0} == 1 ]]; then
    exec 3> >(tee -a "$LOG" >&2)
else
    exec 3>>"$LOG"
fi
log() { printf '%s\n' "$*" >&3; }
log "== $(date -u +%FT%TZ) $SCRIPT (uid $EUID)"

# run CMD...: run a command, its output goes to the log only
run() { log "+ $*"; "$@" </dev/null >&3 2>&3 9>&-; }
# run_daemon CMD...: same, for commands that leave a daemon behind: it must inherit neither the log pipe
# (fd 3, a pipe in verbose mode) nor the lock (fd 9), nor our stdout/stderr (callers may read them via a pipe)
run_daemon() { log "+ $*"; "$@" </dev/null >>"$LOG" 2>&1 3>&- 9>&-; }

fail() { # fail WHAT HOW-TO-FIX
    trap - ERR
    log "FAILED ($SVC): $1"
    printf '%s: FAILED: %s; fix: %s (details: %s)\n' "$SVC" "$1" "$2" "$LOG" >&2
    if [[ -n ${CI:-} ]]; then tail -n 60 "$LOG" | sed 's/^/    | /' >&2 || true; fi
    exit 1
}
on_err() { # unexpected failure of a command under set -e
    local rc=$1 line=$2 cmd=$3
    if [[ $BASHPID != "$$" ]]; then exit "$rc"; fi   # in a subshell: let the parent report it
    fail "command failed (exit $rc, line $line): $cmd" "$HINT"
}
trap 'on_err "$?" "$LINENO" "$BASH_COMMAND"' ERR

# ---------------------------------------------------------------------------------------------- helpers
have() { command -v "$1" >/dev/null 2>&1; }
systemd_running() { [[ -d /run/systemd/system ]] && have systemctl; }
tcp_open() { (exec 7<>"/dev/tcp/$1/$2") 2>/dev/null; }
pkg_installed() { [[ $(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null) == ii* ]]; }
join_actions() { local out="" a; for a in "$@"; do out+="${out:+, }$a"; done; printf '%s' "${out:-checked}"; }

# psql over TCP as the tests connect: user postgres, no password, nothing from the caller's environment
tcp_psql() {
    env -u PGPASSWORD -u PGSERVICE -u PGOPTIONS -u PGSSLMODE PGPASSFILE=/nonexistent/fleetpulse-no-pgpass PGCONNECT_TIMEOUT=5 \
        "$PG_BIN/psql" -X -w -q -At -F '|' -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
}
# admin psql over the unix socket as the postgres OS user (peer/trust on Debian), independent of pg_hba TCP rules
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
admin_psql() { as_postgres "$PG_BIN/psql" -X -w -q -At -p "$PG_PORT" -d postgres "$@"; }
# value of a setting as the on-disk configuration has it (postgresql.conf + conf.d + postgresql.auto.conf)
pg_conf_value() { as_postgres "$PG_BIN/postgres" -D "$PG_CONF_DIR" -C "$1" 2>&3; }

pgctl() { # pgctl start|stop|restart|reload|status - via pg_ctlcluster, which runs the server as postgres
    local redirect=(--skip-systemctl-redirect)
    systemd_running && redirect=()
    if [[ $1 == status ]]; then pg_ctlcluster "${redirect[@]}" "$PG_MAJOR" main status >/dev/null 2>&1; return; fi
    run_daemon pg_ctlcluster "${redirect[@]}" "$PG_MAJOR" main "$1"
}

tsdb_files_present() { [[ -f $PG_EXT_DIR/timescaledb.control && -f $PG_LIB_DIR/timescaledb.so ]]; }
has_timescaledb() { [[ ",${1// /}," == *,timescaledb,* || ",${1// /}," == *,\"timescaledb\",* ]]; }

# ----------------------------------------------------------------------------------------------- probes
# Each probe returns 0 when that service is fine, and sets *_INFO (what the status line says about it).
PG_INFO="" PG_PROBLEM="" PG_VERNUM=""
probe_postgresql() {
    local out ver spl maxc bufs telem lic ext
    [[ -x $PG_BIN/psql ]] || return 1
    out=$(tcp_psql -c "SELECT split_part(current_setting('server_version'), ' ', 1),
                              current_setting('server_version_num'),
                              current_setting('shared_preload_libraries'),
                              current_setting('max_connections'),
                              (SELECT setting FROM pg_settings WHERE name = 'shared_buffers'),
                              coalesce(current_setting('timescaledb.telemetry_level', true), ''),
                              coalesce((SELECT default_version FROM pg_available_extensions
                                        WHERE name = 'timescaledb'), '')" 2>&3) || return 1
    IFS='|' read -r ver PG_VERNUM spl maxc bufs telem ext <<<"$out"
    # timescaledb.license only exists once the extension is loaded in a database; the edition shows in the
    # files: the Timescale-License part lives in a separate timescaledb-tsl-*.so, absent in the Apache build
    lic=apache
    compgen -G "$PG_LIB_DIR/timescaledb-tsl-*.so" >/dev/null && lic="timescale license available"
    PG_INFO="timescaledb ${ext:-?} (${lic:-?}) on $PG_HOST:$PG_PORT (PostgreSQL $ver, max_connections=$maxc, shared_buffers=$(( bufs / 128 ))MB, $(huge_pages_state))"
    log "postgresql probe: version=$ver spl=$spl max_connections=$maxc telemetry=$telem license=$lic ext=$ext"
    PG_PROBLEM=""
    [[ $PG_VERNUM == "$PG_MAJOR"* ]] || { PG_PROBLEM="server on $PG_HOST:$PG_PORT is PostgreSQL $ver, not $PG_MAJOR"; return 1; }
    has_timescaledb "$spl" || { PG_PROBLEM="timescaledb not in shared_preload_libraries ('$spl')"; return 1; }
    [[ -n $ext ]] || { PG_PROBLEM="timescaledb extension not available"; return 1; }
    (( maxc >= PG_MIN_CONNECTIONS )) || { PG_PROBLEM="max_connections=$maxc < $PG_MIN_CONNECTIONS"; return 1; }
    (( bufs >= PG_WANT_BUFFERS )) || { PG_PROBLEM="shared_buffers=$(( bufs / 128 ))MB < $(( PG_WANT_BUFFERS / 128 ))MB"; return 1; }
    [[ $telem == off ]] || { PG_PROBLEM="timescaledb.telemetry_level=$telem, not off"; return 1; }
    huge_pages_settled || { PG_PROBLEM="shared memory not on huge pages"; return 1; }
    return 0
}

# 0 when huge pages are ours to arrange: asked for (FLEETPULSE_HUGE_PAGES=1), settable, not found
# unavailable since boot. Otherwise the kernel's setting is left exactly as found.
huge_pages_ours() {
    [[ ${FLEETPULSE_HUGE_PAGES:-0} == 1 && -w /proc/sys/vm/nr_hugepages && ! -e $HUGE_UNAVAILABLE ]]
}
# 0 when there is nothing (more) to do about huge pages: not asked for, cannot be changed by us, tried and
# unavailable, or some in use (PostgreSQL is the only big user of shared memory on such a box).
huge_pages_settled() {
    huge_pages_ours || return 0
    local total free rsvd
    total=$(meminfo HugePages_Total) free=$(meminfo HugePages_Free) rsvd=$(meminfo HugePages_Rsvd)
    (( total - free + rsvd > 0 ))
}
# What the status line says about huge pages (the kernel's reservation, whoever made it).
huge_pages_state() {
    local total
    total=$(meminfo HugePages_Total)
    if (( ${total:-0} > 0 )); then
        printf 'vm.nr_hugepages=%s' "$total"
    elif [[ ${FLEETPULSE_HUGE_PAGES:-0} == 1 ]]; then
        printf '4 kB pages: huge pages asked for but unavailable'
    else
        printf '4 kB pages; FLEETPULSE_HUGE_PAGES=1 reserves huge pages'
    fi
}
# Reserve enough 2 MB pages for shared_buffers; sets HUGE_ACTION. Returns 1 when the kernel gave too few
# (then they are handed back and not asked for again until the next boot).
reserve_huge_pages() {
    HUGE_ACTION=""
    huge_pages_ours || return 0
    local have
    have=$(cat /proc/sys/vm/nr_hugepages)
    (( have >= PG_WANT_HUGE )) && return 0
    log "+ sysctl vm.nr_hugepages=$PG_WANT_HUGE"
    echo "$PG_WANT_HUGE" >/proc/sys/vm/nr_hugepages 2>&3 || true
    have=$(cat /proc/sys/vm/nr_hugepages)
    if (( have < PG_WANT_HUGE )); then
        log "only $have of $PG_WANT_HUGE huge pages available; staying on normal pages"
        echo 0 >/proc/sys/vm/nr_hugepages 2>&3 || true
        : >"$HUGE_UNAVAILABLE"
        return 1
    fi
    printf '# %s: huge pages for PostgreSQL shared_buffers\nvm.nr_hugepages = %s\n' "$MARK" "$PG_WANT_HUGE" >"$HUGE_SYSCTL" 2>&3 || true
    HUGE_ACTION="reserved $PG_WANT_HUGE huge pages"
    return 0
}

RMQ_INFO=""
probe_rabbitmq() {
    local body ver
    have curl || return 1
    tcp_open "$RMQ_HOST" "$RMQ_AMQP_PORT" || return 1
    body=$(curl -fsS -m 5 -u guest:guest "$RMQ_API_URL" 2>&3) || return 1
    ver=$(sed -n 's/.*"rabbitmq_version":"\([^"]*\)".*/\1/p' <<<"$body")
    RMQ_INFO="RabbitMQ ${ver:-?} on $RMQ_HOST:$RMQ_AMQP_PORT, management API http://127.0.0.1:15672 (guest/guest)"
    rabbitmq_config_current
}

# the settings of rabbitmq-fleetpulse.conf ("key = value" lines), as they must appear in rabbitmq.conf
rabbitmq_settings() { grep -E '^[a-z_.]+ *= *' "$RMQ_FLEETPULSE_CONF" | sed 's/ *= */ = /'; }
rabbitmq_config_current() { # every setting is in rabbitmq.conf (a file check; no root needed)
    local line
    [[ -r $RMQ_CONF ]] || return 1
    while read -r line; do
        grep -qxF "$line" "$RMQ_CONF" || return 1
    done < <(rabbitmq_settings)
}
rabbitmq_apply_config() { # write missing settings, and set them on the running node (no restart)
    local line key value
    mkdir -p "$(dirname "$RMQ_CONF")"
    touch "$RMQ_CONF"
    while read -r line; do
        key=${line%% =*}
        value=${line#*= }
        grep -qxF "$line" "$RMQ_CONF" && continue
        sed -i "/^${key//./\\.} *=/d" "$RMQ_CONF"
        printf '# %s\n%s\n' "$MARK" "$line" >>"$RMQ_CONF"
        if tcp_open "$RMQ_HOST" "$RMQ_AMQP_PORT" && [[ $value =~ ^[0-9]+$ ]]; then
            run rabbitmqctl eval "application:set_env(rabbit, $key, $value)." ||
                fail "rabbitmqctl could not set $key on the running node" "$HINT"
        fi
        RMQ_ACTIONS+=("set $key = $value")
    done < <(rabbitmq_settings)
}

# pids of a prometheus started by the Debian package's service (it runs as user prometheus; the tests'
# own Prometheus instances run as the test user and are left alone)
debian_prometheus_pids() {
    local d comm
    for d in /proc/[0-9]*; do
        read -r comm 2>/dev/null <"$d/comm" || continue
        [[ $comm == prometheus ]] || continue
        [[ $(stat -c %U "$d" 2>/dev/null) == prometheus ]] && printf '%s\n' "${d#/proc/}"
    done
    return 0
}
prometheus_service_enabled() {
    [[ -e /etc/systemd/system/multi-user.target.wants/prometheus.service ]] || compgen -G '/etc/rc[2345].d/S*prometheus' >/dev/null
}
TOOLS_INFO=""
probe_tools() {
    local t
    for t in "${TOOL_CMDS[@]}"; do have "$t" || return 1; done
    [[ -z $(debian_prometheus_pids) ]] || return 1
    prometheus_service_enabled && return 1
    TOOLS_INFO=$(dpkg-query -W -f='${Package} ${Version}, ' "${TOOL_PKGS[@]}" 2>/dev/null) || TOOLS_INFO=""
    TOOLS_INFO="${TOOLS_INFO%, }"
    return 0
}

# ------------------------------------------------------------------------------------------------- root
become_root() {
    (( EUID == 0 )) && return 0
    if have sudo && sudo -n true 2>/dev/null; then
        log "re-running as root via sudo"
        exec 3>&-
        exec sudo -n env SERVICES_VERBOSE="${SERVICES_VERBOSE:-0}" CI="${CI:-}" "$SCRIPT" "$@"
    fi
    SVC=services
    fail "not ready: $NOT_READY; fixing that needs root" "run 'sudo $SCRIPT' (or run it as root)"
}

# -------------------------------------------------------------------------------------------------- apt
APT_UPDATED=0
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
apt_update() {
    (( APT_UPDATED )) && return 0
    HINT="check that this machine reaches its Debian mirror ($(debian_mirror)) and that /etc/apt/sources.list* are valid"
    run apt-get "${APT_OPTS[@]}" update
    APT_UPDATED=1
}
apt_lists_present() { compgen -G '/var/lib/apt/lists/*_Packages*' >/dev/null; }
tsdb_source_known() {
    local out
    out=$(apt-cache showsrc --only-source timescaledb 2>/dev/null) || return 1
    grep -q "^Version: $TSDB_SERIES\." <<<"$out"
}
INSTALLED=()
apt_install() { # apt_install PKG... (only the missing ones; update first only when the lists can't serve them)
    local missing=() p
    for p in "$@"; do pkg_installed "$p" || missing+=("$p"); done
    (( ${#missing[@]} )) || return 0
    SVC=apt
    apt_lists_present || apt_update
    # run_daemon: maintainer scripts may start services, which must not inherit our log pipe or lock
    local cmd=(env DEBIAN_FRONTEND=noninteractive apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}")
    if ! run_daemon "${cmd[@]}"; then
        if (( APT_UPDATED )); then
            fail "apt-get install ${missing[*]} failed" "run 'apt-get install ${missing[*]}' by hand to see why"
        fi
        log "install failed with the current package lists; updating them and retrying"
        apt_update
        run_daemon "${cmd[@]}" || fail "apt-get install ${missing[*]} failed" "run 'apt-get install ${missing[*]}' by hand to see why"
    fi
    INSTALLED+=("${missing[@]}")
}

# The machine's Debian mirror, as used for bookworm in /etc/apt/sources.list(.d) (one-line and deb822 format)
debian_mirror() { # [FILE...] (default: the machine's apt sources)
    local files=() f uri=""
    (( $# )) || set -- /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources
    for f in "$@"; do
        [[ -f $f && $f != "$TSDB_SRC_LIST" ]] && files+=("$f")
    done
    if (( ${#files[@]} )); then
        uri=$(awk '
            function pick(u) { if (!found && u ~ /^(https?|ftp):\/\//) { print u; found = 1 } }
            FILENAME ~ /\.sources$/ {
                if ($0 ~ /^[ \t]*$/) { flush(); next }
                if ($0 ~ /^[ \t]*#/) next
                k = tolower($1); sub(/:$/, "", k); $1 = ""; v = " " $0 " "
                if (k == "types") ty = v; else if (k == "uris") ur = v; else if (k == "suites") su = v
                else if (k == "components") co = v; else if (k == "enabled") en = v
                next
            }
            FNR == 1 { flush() }
            /^[ \t]*deb[ \t]/ {
                line = $0; sub(/\[[^]]*\]/, "", line); n = split(line, w, /[ \t]+/)
                for (i = 1; i <= n && w[i] != "deb"; i++); 
                if (w[i+2] == "bookworm" || w[i+2] == "stable") { for (j = i+3; j <= n; j++) if (w[j] == "main") pick(w[i+1]) }
            }
            function flush() {
                if (ty ~ / deb / && (su ~ / bookworm / || su ~ / stable /) && co ~ / main / && en !~ / no /) {
                    split(ur, u, /[ \t]+/); for (x in u) if (u[x] != "") { pick(u[x]); break }
                }
                ty = ur = su = co = en = ""
            }
            END { flush() }' "${files[@]}" 2>/dev/null) || uri=""
    fi
    uri=${uri%%$'\n'*}
    printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# deb-src entry for trixie (sources only) + a pin so no trixie *binary* package can ever be installed
setup_tsdb_source() {
    local mirror want signed=""
    mirror=$(debian_mirror)
    mirror=${mirror%/}
    [[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] && signed="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] "
    want="# $MARK: Debian $TSDB_SUITE *sources* only, to build timescaledb (binaries pinned away in $TSDB_PIN)
deb-src ${signed}${mirror} $TSDB_SUITE main"
    if [[ ! -f $TSDB_SRC_LIST || $(<"$TSDB_SRC_LIST") != "$want" ]]; then
        log "writing $TSDB_SRC_LIST (mirror $mirror)"
        printf '%s\n' "$want" >"$TSDB_SRC_LIST"
    fi
    want="Explanation: $MARK: $TSDB_SUITE is configured for deb-src only; never install its binary packages
Package: *
Pin: release n=$TSDB_SUITE
Pin-Priority: -1"
    if [[ ! -f $TSDB_PIN || $(<"$TSDB_PIN") != "$want" ]]; then
        log "writing $TSDB_PIN"
        printf '%s\n' "$want" >"$TSDB_PIN"
    fi
    TSDB_MIRROR=$mirror
}

# --------------------------------------------------------------------------------------------- timescaledb
TSDB_BUILT=""
build_timescaledb() {
    SVC=postgresql
    local t0=$SECONDS src ver d
    HINT="check the log; the build dir is $TSDB_BUILD_ROOT"
    setup_tsdb_source
    tsdb_source_known || apt_update
    SVC=postgresql
    tsdb_source_known || fail "no timescaledb $TSDB_SERIES.x source package in Debian $TSDB_SUITE (deb-src $TSDB_MIRROR)" \
        "check $TSDB_SRC_LIST and 'apt-cache showsrc timescaledb'"
    rm -rf "$TSDB_BUILD_ROOT"
    mkdir -p "$TSDB_BUILD_ROOT"
    cd "$TSDB_BUILD_ROOT"
    HINT="check the deb-src entry in $TSDB_SRC_LIST and that dpkg-dev is installed"
    run apt-get "${APT_OPTS[@]}" source "timescaledb/$TSDB_SUITE"
    src=""
    for d in "$TSDB_BUILD_ROOT"/timescaledb-*/; do [[ -d $d ]] && { src=${d%/}; break; }; done
    [[ -n $src && -f $src/version.config ]] || fail "apt-get source timescaledb/$TSDB_SUITE unpacked nothing usable in $TSDB_BUILD_ROOT" "see the log"
    ver=$(sed -n 's/^version *= *//p' "$src/version.config")
    [[ $ver == "$TSDB_SERIES".* ]] || fail "Debian $TSDB_SUITE now ships timescaledb $ver, not $TSDB_SERIES.x" "update TSDB_SERIES in $SCRIPT"
    HINT="timescaledb $ver failed to configure/build against $PG_BIN/pg_config; see the log ($TSDB_BUILD_ROOT)"
    run cmake -S "$src" -B "$src/build" \
        -DCMAKE_BUILD_TYPE=Release \
        -DPG_CONFIG="$PG_BIN/pg_config" \
        -DAPACHE_ONLY=1 \
        -DREGRESS_CHECKS=OFF -DTAP_CHECKS=OFF -DWARNINGS_AS_ERRORS=OFF \
        -DSEND_TELEMETRY_DEFAULT=OFF
    run make -C "$src/build" -j"$(nproc)" install
    cd /
    tsdb_files_present || fail "timescaledb $ver built but $PG_EXT_DIR/timescaledb.control or $PG_LIB_DIR/timescaledb.so is missing" "see the log"
    TSDB_BUILT="built timescaledb $ver (apache, Debian $TSDB_SUITE source) in $((SECONDS - t0)) s"
    log "$TSDB_BUILT"
    printf 'timescaledb %s from %s (Debian %s source), built %s in %s s against %s\n' "$ver" "${src##*/}" \
        "$TSDB_SUITE" "$(date -u +%FT%TZ)" "$((SECONDS - t0))" "$PG_BIN/pg_config" >"$TSDB_BUILD_ROOT/BUILD_INFO"
}

# ----------------------------------------------------------------------------------------------- postgresql
# Settings we manage go in one conf.d drop-in, merged with what the configuration already says (so re-running
# is a fixed point and other preloaded libraries / wider listen_addresses are kept).
pg_write_dropin() {
    local spl listen maxc bufs port libs=() l want
    port=$(pg_conf_value port)
    [[ $port == "$PG_PORT" ]] || fail "cluster $PG_MAJOR/main is configured for port $port, not $PG_PORT" \
        "set 'port = $PG_PORT' in $PG_CONF_DIR/postgresql.conf (and move whatever else uses $PG_PORT), then re-run"
    spl=$(pg_conf_value shared_preload_libraries)
    IFS=',' read -ra libs <<<"${spl//[\"\' ]/}"
    spl=""
    for l in "${libs[@]}"; do [[ -n $l && $l != timescaledb ]] && spl+="$l,"; done
    spl+="timescaledb"
    listen=$(pg_conf_value listen_addresses)
    listen=${listen// /}
    case ",$listen," in
        *,\*,* | *,127.0.0.1,* | *,localhost,* | *,0.0.0.0,*) ;;
        ,,) listen=$PG_HOST ;;
        *) listen="$listen,$PG_HOST" ;;
    esac
    maxc=$(pg_conf_value max_connections)
    (( maxc >= PG_MIN_CONNECTIONS )) || maxc=$PG_MIN_CONNECTIONS
    bufs=$(pg_conf_value shared_buffers)
    (( bufs >= PG_WANT_BUFFERS )) || bufs=$PG_WANT_BUFFERS
    want="# Managed by fleetpulse scripts/services.sh (merged with the rest of the configuration; rewritten when needed)
listen_addresses = '$listen'
max_connections = $maxc
shared_buffers = $(( bufs / 128 ))MB
shared_preload_libraries = '$spl'
timescaledb.telemetry_level = off"
    PG_WANT_LISTEN=$listen PG_WANT_MAXC=$maxc PG_WANT_BUFFERS=$bufs
    PG_DROPIN_CHANGED=0
    if [[ -f $PG_DROPIN && $(<"$PG_DROPIN") == "$want" ]]; then return 0; fi
    grep -Eq "^[[:space:]]*include_dir[[:space:]]*=?[[:space:]]*'conf\.d'" "$PG_CONF_DIR/postgresql.conf" ||
        fail "$PG_CONF_DIR/postgresql.conf does not include conf.d" "add \"include_dir = 'conf.d'\" to it and re-run"
    log "writing $PG_DROPIN"
    printf '%s\n' "$want" >"$PG_DROPIN"
    chown postgres:postgres "$PG_DROPIN"
    chmod 644 "$PG_DROPIN"
    PG_DROPIN_CHANGED=1
}

pg_wait_ready() { # wait (bounded) until the server accepts connections on the socket and on 127.0.0.1
    local i
    for (( i = 0; i < 60; i++ )); do
        "$PG_BIN/pg_isready" -q -p "$PG_PORT" && break
        sleep 0.5
    done
    "$PG_BIN/pg_isready" -q -p "$PG_PORT" ||
        fail "cluster $PG_MAJOR/main did not come up within 30 s" "see /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
    for (( i = 0; i < 20; i++ )); do
        "$PG_BIN/pg_isready" -q -h "$PG_HOST" -p "$PG_PORT" && return 0
        sleep 0.5
    done
    fail "cluster $PG_MAJOR/main runs but does not accept TCP connections on $PG_HOST:$PG_PORT" \
        "check listen_addresses/port (psql -c 'SHOW listen_addresses') and /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
}

pg_ensure_trust() { # psql -h 127.0.0.1 -U postgres must work without a password
    local hba tmp i
    tcp_psql -c 'SELECT 1' >&3 2>&3 && return 0
    hba=$(admin_psql -c 'SHOW hba_file' 2>&3) ||
        fail "cannot connect as postgres, neither via TCP nor via the unix socket" "check $PG_CONF_DIR/pg_hba.conf"
    if grep -qF "$MARK" "$hba"; then
        fail "psql -h $PG_HOST -U postgres fails although $hba has our trust lines" "check $hba and the server log"
    fi
    log "adding trust lines for 127.0.0.1/32 and ::1/128 at the top of $hba"
    tmp=$(mktemp)
    { printf '# %s: the fleetpulse test suite connects as postgres over TCP without a password\n' "$MARK"
      printf 'host    all    all    127.0.0.1/32    trust\n'
      printf 'host    all    all    ::1/128         trust\n\n'
      cat "$hba"; } >"$tmp"
    cat "$tmp" >"$hba"    # keeps owner and mode
    rm -f "$tmp"
    pgctl reload
    PG_ACTIONS+=("added trust for 127.0.0.1/::1 to pg_hba.conf")
    for (( i = 0; i < 10; i++ )); do
        tcp_psql -c 'SELECT 1' >&3 2>&3 && return 0
        sleep 0.5
    done
    fail "psql -h $PG_HOST -U postgres still fails after adding trust lines to $hba" "check $hba and the server log"
}

ensure_postgresql() {
    SVC=postgresql
    HINT="see the log and /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
    PG_ACTIONS=()
    if probe_postgresql; then
        echo "postgresql: already running with $PG_INFO"
        return 0
    fi
    log "postgresql: not ready yet (${PG_PROBLEM:-no connection}); fixing"
    local p
    for p in postgresql-$PG_MAJOR postgresql-client-$PG_MAJOR; do
        [[ " ${INSTALLED[*]} " == *" $p "* ]] && PG_ACTIONS+=("installed $p")
    done
    [[ -x $PG_BIN/postgres ]] || fail "postgresql-$PG_MAJOR is not installed" "apt-get install postgresql-$PG_MAJOR"

    # cluster
    if [[ ! -f $PG_CONF_DIR/postgresql.conf ]]; then
        HINT="see the log; 'pg_lsclusters' shows what exists"
        run pg_createcluster --locale=C.UTF-8 "$PG_MAJOR" main
        PG_ACTIONS+=("created cluster $PG_MAJOR/main")
    fi

    # timescaledb
    if ! tsdb_files_present; then
        build_timescaledb
        PG_ACTIONS+=("$TSDB_BUILT")
    fi

    # configuration (conf.d drop-in)
    HINT="see the log and /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
    pg_write_dropin
    (( PG_DROPIN_CHANGED )) && PG_ACTIONS+=("wrote ${PG_DROPIN#"$PG_CONF_DIR"/} (max_connections=$PG_WANT_MAXC, shared_buffers=$(( PG_WANT_BUFFERS / 128 ))MB, listen_addresses=$PG_WANT_LISTEN, timescaledb preloaded, its telemetry off)")
    reserve_huge_pages || PG_ACTIONS+=("huge pages unavailable")
    [[ -n $HUGE_ACTION ]] && PG_ACTIONS+=("$HUGE_ACTION")

    # running?
    if ! pgctl status; then
        HINT="see /var/log/postgresql/postgresql-$PG_MAJOR-main.log; start it by hand with 'pg_ctlcluster $PG_MAJOR main start'"
        pgctl start
        PG_ACTIONS+=("started")
        pg_wait_ready
    else
        pg_wait_ready
        local spl maxc listen bufs
        spl=$(admin_psql -c 'SHOW shared_preload_libraries' 2>&3) || spl=""
        maxc=$(admin_psql -c 'SHOW max_connections' 2>&3) || maxc=0
        bufs=$(admin_psql -c "SELECT setting FROM pg_settings WHERE name = 'shared_buffers'" 2>&3) || bufs=0
        listen=$(admin_psql -c 'SHOW listen_addresses' 2>&3) || listen=""
        if ! has_timescaledb "$spl" || (( maxc < PG_WANT_MAXC || bufs < PG_WANT_BUFFERS )) || [[ ${listen// /} != "$PG_WANT_LISTEN" ]] \
            || ! huge_pages_settled; then
            HINT="see /var/log/postgresql/postgresql-$PG_MAJOR-main.log"
            pgctl restart
            PG_ACTIONS+=("restarted to load timescaledb/apply settings")
            pg_wait_ready
        elif (( PG_DROPIN_CHANGED )); then
            pgctl reload
            PG_ACTIONS+=("reloaded")
            sleep 1
        fi
    fi
    pg_ensure_trust

    local i
    for (( i = 0; i < 10; i++ )); do
        probe_postgresql && break
        sleep 0.5
    done
    if ! probe_postgresql; then
        local src
        src=$(admin_psql -c "SELECT coalesce(string_agg(name || ' from ' || coalesce(sourcefile, source), ', '), '')
                             FROM pg_settings WHERE name IN ('shared_preload_libraries', 'max_connections', 'shared_buffers',
                                                             'timescaledb.telemetry_level')" 2>&3) || src="?"
        fail "${PG_PROBLEM:-cannot query the server on $PG_HOST:$PG_PORT} after configuring it" \
            "a setting elsewhere overrides $PG_DROPIN ($src); e.g. ALTER SYSTEM RESET it, then re-run"
    fi
    echo "postgresql: $(join_actions "${PG_ACTIONS[@]}"); running with $PG_INFO"
}

# ------------------------------------------------------------------------------------------------- rabbitmq
rabbitmq_start() {
    if systemd_running && [[ -e /lib/systemd/system/rabbitmq-server.service ]]; then
        run_daemon systemctl start rabbitmq-server
    else
        run_daemon rabbitmq-server -detached
    fi
}

ensure_rabbitmq() {
    SVC=rabbitmq
    HINT="see the log and /var/log/rabbitmq/"
    local actions=() i out t0=$SECONDS
    RMQ_ACTIONS=()
    if ! rabbitmq_config_current && have rabbitmqctl; then
        rabbitmq_apply_config
        if probe_rabbitmq; then
            echo "rabbitmq: $(join_actions "${RMQ_ACTIONS[@]}"); running with the management plugin enabled ($RMQ_INFO)"
            return 0
        fi
    fi
    if probe_rabbitmq; then
        echo "rabbitmq: already running, management plugin enabled ($RMQ_INFO)"
        return 0
    fi
    actions+=("${RMQ_ACTIONS[@]}")
    [[ " ${INSTALLED[*]} " == *" rabbitmq-server "* ]] && actions+=("installed rabbitmq-server")
    have rabbitmq-server || fail "rabbitmq-server is not installed" "apt-get install rabbitmq-server"
    have curl || fail "curl is not installed" "apt-get install curl"

    HINT="see /var/log/rabbitmq/ (if the node name rabbit@${HOSTNAME%%.*} does not resolve, put NODENAME=rabbit@localhost in /etc/rabbitmq/rabbitmq-env.conf)"
    if ! tcp_open "$RMQ_HOST" "$RMQ_AMQP_PORT"; then
        # node down: enable the plugin offline first so a single start brings up AMQP and the API
        out=$(rabbitmq-plugins enable --offline rabbitmq_management </dev/null 2>&1) ||
            { log "$out"; fail "rabbitmq-plugins enable --offline rabbitmq_management failed" "$HINT"; }
        log "$out"
        grep -qi 'have been enabled\|will be enabled' <<<"$out" && actions+=("enabled rabbitmq_management")
        rabbitmq_start
        for (( i = 0; i < RMQ_WAIT_S * 2; i++ )); do
            tcp_open "$RMQ_HOST" "$RMQ_AMQP_PORT" && break
            sleep 0.5
        done
        tcp_open "$RMQ_HOST" "$RMQ_AMQP_PORT" ||
            fail "RabbitMQ started but $RMQ_HOST:$RMQ_AMQP_PORT did not answer within $RMQ_WAIT_S s" "$HINT"
        actions+=("started in $((SECONDS - t0)) s")
    else
        # node up, API not answering: plugin not enabled (or still starting)
        out=$(rabbitmq-plugins list -e -m </dev/null 2>&3) || out=""
        if ! grep -qx rabbitmq_management <<<"$out"; then
            run rabbitmq-plugins enable rabbitmq_management || fail "rabbitmq-plugins enable rabbitmq_management failed" "$HINT"
            actions+=("enabled rabbitmq_management")
        fi
    fi
    for (( i = 0; i < RMQ_WAIT_S * 2; i++ )); do
        probe_rabbitmq && break
        sleep 0.5
    done
    probe_rabbitmq || fail "$RMQ_API_URL does not answer with guest:guest (waited $RMQ_WAIT_S s)" \
        "'rabbitmq-plugins enable rabbitmq_management'; check that user guest exists ('rabbitmqctl list_users') and /var/log/rabbitmq/"
    echo "rabbitmq: $(join_actions "${actions[@]}"); running with the management plugin enabled ($RMQ_INFO)"
}

# ---------------------------------------------------------------------------------------------------- tools
PROM_ACTION=""
stop_debian_prometheus() { # the package's postinst may have enabled/started it; tests start their own
    local stopped=0 disabled=0 pids
    if systemd_running; then
        if systemctl is-active --quiet prometheus 2>/dev/null; then stopped=1; fi
        if systemctl is-enabled --quiet prometheus 2>/dev/null || (( stopped )); then
            run systemctl disable --now prometheus || true
            disabled=1
        fi
    else
        if prometheus_service_enabled; then
            [[ -e /etc/systemd/system/multi-user.target.wants/prometheus.service ]] && { run deb-systemd-helper disable prometheus.service || rm -f /etc/systemd/system/multi-user.target.wants/prometheus.service; }
            compgen -G '/etc/rc[2345].d/S*prometheus' >/dev/null && run update-rc.d prometheus disable || true
            disabled=1
        fi
        if [[ -n $(debian_prometheus_pids) ]]; then
            [[ -x /etc/init.d/prometheus ]] && run /etc/init.d/prometheus stop || true
            stopped=1
        fi
    fi
    pids=$(debian_prometheus_pids)
    if [[ -n $pids ]]; then
        stopped=1
        # shellcheck disable=SC2086  # one pid per word
        run kill $pids || true
        sleep 1
    fi
    [[ -z $(debian_prometheus_pids) ]] || fail "the Debian prometheus service (user prometheus) is still running on :9090" \
        "systemctl disable --now prometheus (or /etc/init.d/prometheus stop)"
    if prometheus_service_enabled; then
        fail "could not disable the Debian prometheus service" "systemctl disable prometheus / update-rc.d prometheus disable"
    fi
    PROM_ACTION=""
    (( disabled )) && PROM_ACTION="disabled"
    (( stopped )) && PROM_ACTION="stopped${PROM_ACTION:+ and $PROM_ACTION}"
    return 0
}

ensure_tools() {
    SVC=tools
    HINT="apt-get install --no-install-recommends ${TOOL_PKGS[*]}; systemctl disable --now prometheus"
    local actions=() p
    for p in "${TOOL_PKGS[@]}"; do
        [[ " ${INSTALLED[*]} " == *" $p "* ]] && actions+=("installed $p")
    done
    for p in "${TOOL_CMDS[@]}"; do
        have "$p" || fail "$p is missing" "apt-get install --no-install-recommends ${TOOL_PKGS[*]}"
    done
    stop_debian_prometheus
    [[ -n $PROM_ACTION ]] && actions+=("$PROM_ACTION the Debian prometheus service (tests start their own)")
    probe_tools || fail "tools check failed (${TOOL_CMDS[*]})" "see the log"
    if (( ${#actions[@]} )); then
        echo "tools: $(join_actions "${actions[@]}"); have $TOOLS_INFO (with promtool)"
    else
        echo "tools: already installed ($TOOLS_INFO, with promtool; Debian prometheus service not running)"
    fi
}

# ----------------------------------------------------------------------------------------------------- main
main() {
    local pg_ok=0 rmq_ok=0 tools_ok=0
    probe_postgresql && pg_ok=1
    probe_rabbitmq && rmq_ok=1
    probe_tools && tools_ok=1
    if (( pg_ok && rmq_ok && tools_ok )); then     # fast path: no apt, no root, no restarts
        echo "postgresql: already running with $PG_INFO"
        echo "rabbitmq: already running, management plugin enabled ($RMQ_INFO)"
        echo "tools: already installed ($TOOLS_INFO, with promtool; Debian prometheus service not running)"
        return 0
    fi

    local notready=()
    (( pg_ok )) || notready+=("postgresql (${PG_PROBLEM:-nothing answers psql -h $PG_HOST -p $PG_PORT -U postgres})")
    (( rmq_ok )) || notready+=("rabbitmq ($RMQ_API_URL does not answer)")
    (( tools_ok )) || notready+=("tools (one of ${TOOL_CMDS[*]} missing or Debian prometheus service enabled)")
    log "not ready: ${notready[*]}"
    NOT_READY=$(join_actions "${notready[@]}")
    become_root "$@"
    exec 9>"$LOCK_FILE"
    flock -w 3600 9 || fail "another scripts/services.sh run holds $LOCK_FILE for over an hour" "wait for it or remove the lock"

    # everything apt must install, in one go (one `apt-get update` at most, only when needed)
    local pkgs=() p
    if (( ! pg_ok )); then
        pkgs+=("postgresql-$PG_MAJOR" "postgresql-client-$PG_MAJOR")
        if ! tsdb_files_present; then
            SVC=postgresql
            setup_tsdb_source
            pkgs+=("${TSDB_BUILD_DEPS[@]}")
        fi
    fi
    (( rmq_ok )) || pkgs+=(rabbitmq-server curl)
    (( tools_ok )) || pkgs+=("${TOOL_PKGS[@]}")
    if (( ${#pkgs[@]} )); then
        local missing=()
        for p in "${pkgs[@]}"; do pkg_installed "$p" || missing+=("$p"); done
        if (( ${#missing[@]} )) && [[ -f $TSDB_SRC_LIST ]] && ! tsdb_files_present && ! tsdb_source_known; then
            apt_update   # the new deb-src entry needs fresh lists anyway
        fi
        apt_install "${pkgs[@]}"
    fi

    ensure_postgresql
    ensure_rabbitmq
    ensure_tools
}

# (sourced, e.g. by a test, it only defines the functions)
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; fi
