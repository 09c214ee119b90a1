#!/usr/bin/env bash
# scripts/cluster.sh - a three-node RabbitMQ cluster on this machine, beside (never touching) the default node.
# Called by `make cluster`, `make cluster-down` and `make test-cluster`.
#
#   scripts/cluster.sh up          start the nodes that are down, join them into one cluster (idempotent)
#   scripts/cluster.sh down        stop every node and remove its data
#   scripts/cluster.sh start N     start node N (1-3) again with its data (after a crash or `stop N`)
#   scripts/cluster.sh stop N      stop node N gracefully, keeping its data
#   scripts/cluster.sh status      one line per node
#   scripts/cluster.sh urls        the AMQP URLs, comma-separated (for FLEETPULSE_AMQP_URLS)
#
# Node N is fleetpulse-N@localhost with AMQP on 127.0.0.1:$((5700+N)), the management API on
# 127.0.0.1:$((15700+N)) and Erlang distribution on 127.0.0.1:$((25700+N)); data, logs and config live in
# $FLEETPULSE_CLUSTER_DIR/nodeN (default /var/tmp/fleetpulse-cluster). The nodes share one Erlang cookie of
# their own (in that directory, not the default node's) and use cluster_partition_handling = pause_minority.
# As root the nodes run as the rabbitmq user (like the default node); as another user, as that user.
# The base ports move with FLEETPULSE_CLUSTER_PORT_BASE (AMQP base; management +10000, distribution +20000).
#
# Prints one line per node on stdout; on failure one line on stderr naming the node, the fix and the log.
# Needs rabbitmq-server and curl (`make services` installs both).
set -Eeuo pipefail
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C.UTF-8

BASE=${FLEETPULSE_CLUSTER_DIR:-/var/tmp/fleetpulse-cluster}
PORT_BASE=${FLEETPULSE_CLUSTER_PORT_BASE:-5700}
NODES=(1 2 3)
RMQ_BIN=/usr/lib/rabbitmq/bin
WAIT_S=${FLEETPULSE_CLUSTER_WAIT_S:-120}

amqp_port() { echo $(( PORT_BASE + $1 )); }
mgmt_port() { echo $(( PORT_BASE + 10000 + $1 )); }
dist_port() { echo $(( PORT_BASE + 20000 + $1 )); }
node_name() { echo "fleetpulse-$1@localhost"; }
node_dir() { echo "$BASE/node$1"; }

fail() { # fail NODE WHAT FIX
    printf 'cluster %s: FAILED: %s; fix: %s (log: %s)\n' "$1" "$2" "$3" "$(node_dir "${1#node }")/log" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }
tcp_open() { (exec 7<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if (( EUID == 0 )); then
    RUN_USER=rabbitmq
    as_user() { runuser -u "$RUN_USER" -- "$@"; }
else
    RUN_USER=$(id -un)
    as_user() { "$@"; }
fi

# the environment every node and every CLI call on it gets: its own cookie (HOME), config, data, ports
node_env() { # node_env N -> env assignments
    local n=$1 dir
    dir=$(node_dir "$n")
    printf '%s\n' \
        "HOME=$BASE" \
        "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf" \
        "RABBITMQ_NODENAME=$(node_name "$n")" \
        "RABBITMQ_NODE_IP_ADDRESS=127.0.0.1" \
        "RABBITMQ_NODE_PORT=$(amqp_port "$n")" \
        "RABBITMQ_DIST_PORT=$(dist_port "$n")" \
        "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf" \
        "RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config" \
        "RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins" \
        "RABBITMQ_MNESIA_BASE=$dir/mnesia" \
        "RABBITMQ_LOG_BASE=$dir/log" \
        "RABBITMQ_LOGS=$dir/log/node.log" \
        "RABBITMQ_PID_FILE=$dir/pid" \
        "ERL_EPMD_ADDRESS=127.0.0.1"
}
ctl() { # ctl N ARGS... : rabbitmqctl against node N, as the node's user
    local n=$1; shift
    local envs
    mapfile -t envs < <(node_env "$n")
    (cd "$BASE" && as_user env "${envs[@]}" "$RMQ_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@")
}
api() { # api N PATH : GET from node N's management API
    curl -fsS -m 5 -u guest:guest "http://127.0.0.1:$(mgmt_port "$1")$2" 2>/dev/null
}
# 0 when node N answers its management API as itself
running() { api "$1" /api/overview | grep -q "\"node\":\"$(node_name "$1")\""; }
# the nodes running in node N's view of the cluster, one name a line
running_peers() {
    api "$1" '/api/nodes?columns=name,running' | tr '{' '\n' | grep '"running":true' |
        sed -n 's/.*"name":"\([^"]*\)".*/\1/p' | sort
}
# the node's OS pid, from the pid file the node writes at boot (empty when it is not alive)
os_pid() {
    local pid
    pid=$(cat "$(node_dir "$1")/pid" 2>/dev/null) || return 0
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
    return 0
}

prepare() { # the node's files, written once; the cookie is shared by the three nodes
    local n=$1 dir
    dir=$(node_dir "$n")
    mkdir -p "$dir/log" "$dir/mnesia"
    if [[ ! -s $BASE/.erlang.cookie ]]; then
        head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$BASE/.erlang.cookie"
        chmod 400 "$BASE/.erlang.cookie"
    fi
    cat >"$dir/rabbitmq.conf" <<EOF
# written by fleetpulse scripts/cluster.sh
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$n")
management.tcp.ip = 127.0.0.1
management.tcp.port = $(mgmt_port "$n")
cluster_partition_handling = pause_minority
loopback_users.guest = true
EOF
    printf '[{kernel, [{inet_dist_use_interface, {127,0,0,1}}]}].\n' >"$dir/advanced.config"
    printf '[rabbitmq_management].\n' >"$dir/enabled_plugins"
    : >"$dir/rabbitmq-env.conf"   # not /etc/rabbitmq's: that one names the default node
    if (( EUID == 0 )); then chown -R "$RUN_USER:" "$BASE"; fi
}

start_node() { # start N: start node N if it is down; returns once its management API answers
    local n=$1 dir i envs
    dir=$(node_dir "$n")
    running "$n" && return 0
    tcp_open "$(amqp_port "$n")" &&
        fail "node $n" "port $(amqp_port "$n") is taken by something else" "free it or set FLEETPULSE_CLUSTER_PORT_BASE"
    prepare "$n"
    mapfile -t envs < <(node_env "$n")
    (cd "$BASE" && as_user env "${envs[@]}" "$RMQ_BIN/rabbitmq-server" -detached \
        </dev/null >>"$dir/log/startup.log" 2>&1 3>&- 9>&-) ||
        fail "node $n" "rabbitmq-server -detached failed" "see the log"
    for (( i = 0; i < WAIT_S * 2; i++ )); do
        running "$n" && return 0
        sleep 0.5
    done
    fail "node $n" "$(node_name "$n") did not answer on :$(mgmt_port "$n") within $WAIT_S s" "see the log"
}

join_node() { # join N: make node N a member of node 1's cluster, unless it is one already
    local n=$1 first
    first=$(node_name 1)
    if running_peers "$n" | grep -qx "$first"; then return 1; fi
    {
        ctl "$n" stop_app
        ctl "$n" reset
        ctl "$n" join_cluster "$first"
        ctl "$n" start_app
    } >>"$(node_dir "$n")/log/cluster.log" 2>&1 ||
        fail "node $n" "could not join $first" "scripts/cluster.sh down && scripts/cluster.sh up"
    return 0
}

wait_members() { # until node 1 sees all three running
    local i
    for (( i = 0; i < WAIT_S * 2; i++ )); do
        (( $(running_peers 1 | grep -c '^fleetpulse-') == ${#NODES[@]} )) && return 0
        sleep 0.5
    done
    fail "node 1" "the cluster did not show ${#NODES[@]} running nodes within $WAIT_S s" "see the logs"
}

line() { # line N WHAT
    local n=$1
    printf 'cluster node %s: %s (%s, amqp://guest:guest@127.0.0.1:%s/, management http://127.0.0.1:%s, pid %s)\n' \
        "$n" "$2" "$(node_name "$n")" "$(amqp_port "$n")" "$(mgmt_port "$n")" "$(os_pid "$n")"
}

cmd_up() {
    local n was=() joined
    have curl || fail "node 1" "curl is missing" "make services"
    [[ -x $RMQ_BIN/rabbitmq-server ]] || fail "node 1" "rabbitmq-server is not installed" "make services"
    mkdir -p "$BASE"
    for n in "${NODES[@]}"; do
        if running "$n"; then was[n]=1; else was[n]=0; fi
    done
    # start them all first (the boots overlap), then wait for each
    for n in "${NODES[@]}"; do (( was[n] )) || start_node "$n" & done
    wait_ok=1
    for job in $(jobs -p); do wait "$job" || wait_ok=0; done
    (( wait_ok )) || exit 1
    for n in "${NODES[@]}"; do
        if (( n == 1 )); then
            if (( was[n] )); then line "$n" "already running"; else line "$n" "started"; fi
            continue
        fi
        joined=0
        join_node "$n" && joined=1
        if (( joined )); then
            line "$n" "$( (( was[n] )) && echo "running" || echo "started"), joined $(node_name 1)"
        elif (( was[n] )); then
            line "$n" "already running, in the cluster"
        else
            line "$n" "started, rejoined the cluster"
        fi
    done
    wait_members
}

cmd_start() {
    local n=${1:?node number}
    start_node "$n"
    line "$n" "running"
}

cmd_stop() {
    local n=${1:?node number}
    if running "$n"; then
        ctl "$n" shutdown >>"$(node_dir "$n")/log/cluster.log" 2>&1 || true
        echo "cluster node $n: stopped ($(node_name "$n"), data kept)"
    else
        echo "cluster node $n: not running ($(node_name "$n"))"
    fi
}

cmd_down() {
    local n pid dir i
    for n in "${NODES[@]}"; do
        dir=$(node_dir "$n")
        pid=$(os_pid "$n")
        if [[ -n $pid ]] && running "$n"; then
            ctl "$n" shutdown >>"$dir/log/cluster.log" 2>&1 || kill -9 "$pid" 2>/dev/null || true
            for (( i = 0; i < 60 && $(kill -0 "$pid" 2>/dev/null && echo 1 || echo 0); i++ )); do sleep 0.5; done
            kill -9 "$pid" 2>/dev/null || true
            what="stopped and removed"
        elif [[ -n $pid ]]; then
            kill -9 "$pid" 2>/dev/null || true
            what="killed (not answering) and removed"
        else
            what="not running; removed"
        fi
        rm -rf "$dir"
        echo "cluster node $n: $what ($(node_name "$n"))"
    done
    rm -f "$BASE/.erlang.cookie"
    rmdir "$BASE" 2>/dev/null || true
}

cmd_status() {
    local n
    for n in "${NODES[@]}"; do
        if running "$n"; then line "$n" "running, sees $(running_peers "$n" | paste -sd' ')"
        else echo "cluster node $n: down ($(node_name "$n"))"; fi
    done
}

cmd_urls() {
    local n out=()
    for n in "${NODES[@]}"; do out+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/"); done
    (IFS=,; echo "${out[*]}")
}

case ${1:-up} in
    up) cmd_up ;;
    down) cmd_down ;;
    start) cmd_start "${2:-}" ;;
    stop) cmd_stop "${2:-}" ;;
    status) cmd_status ;;
    urls) cmd_urls ;;
    *) echo "usage: $0 up|down|start N|stop N|status|urls" >&2; exit 2 ;;
esac
