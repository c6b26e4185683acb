#!/usr/bin/env bash
# natlab.sh — a NAT lab of Linux network namespaces (docs/natlab.md), for experimenting by hand.
#
#   scripts/natlab.sh up     [--a TYPE] [--b TYPE] [--prefix NAME]   build the lab
#   scripts/natlab.sh down   [--prefix NAME]                        remove it (idempotent)
#   scripts/natlab.sh status [--prefix NAME]                        show what exists
#   scripts/natlab.sh rules  TYPE                                   print a router's nft ruleset
#
# TYPE (NAT behaviour of a router, default restricted):
#   full-cone   endpoint-independent mapping and filtering: masquerade, plus a map learned on the
#               way out (mapped protocol . port -> LAN address . port) that DNATs anything arriving
#               on that port, from anyone
#   restricted  port-restricted cone: endpoint-independent mapping (masquerade keeps the source
#               port), inbound only from the exact address:port the host sent to (conntrack)
#   symmetric   endpoint-dependent mapping: masquerade fully-random, a new random port per
#               destination
# Every router silently drops unsolicited inbound packets on its WAN leg (`ct state new drop` in
# input and forward), as home routers do; without that a peer's early packet poisons conntrack and
# hole punching fails.
#
# Topology (NAME = the prefix, default "natlab"; every namespace is NAME-…):
#
#   NAME-segment   bridge br0: the public segment 198.51.100.0/24 (no address, no root leg)
#   NAME-relay     198.51.100.2    public host (a relay, an echo server, …)
#   NAME-probe     198.51.100.3    a second public host (a second destination / a stranger)
#   NAME-nat-a     router A: wan 198.51.100.11, lan 10.0.1.1/24, NAT type --a
#   NAME-nat-a-in  host A 10.0.1.2, default route via 10.0.1.1
#   NAME-nat-b     router B: wan 198.51.100.12, lan 10.0.2.1/24, NAT type --b
#   NAME-nat-b-in  host B 10.0.2.2, default route via 10.0.2.1
#
# Nothing is created in the root namespace, so labs with different prefixes run side by side.
# Run commands inside with `ip netns exec NAME-relay …`. `rules` is also what the Rust test
# harness (sensor/tests/support/natlab.rs) loads into its routers: the NAT rules live only here.
# Needs root, iproute2 and nftables. Exit status: 0 on success, 1 on errors, 2 on bad usage.
set -euo pipefail

PREFIX=natlab
NAT_A=restricted
NAT_B=restricted

RELAY_IP=198.51.100.2
PROBE_IP=198.51.100.3
WAN_A=198.51.100.11
WAN_B=198.51.100.12

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

die() {
    echo "natlab: $*" >&2
    exit 1
}

check_type() {
    case "$1" in
        full-cone | restricted | symmetric) ;;
        *) echo "natlab: unknown NAT type '$1' (full-cone, restricted, symmetric)" >&2 && exit 2 ;;
    esac
}

# The nft ruleset of a router of NAT type $1; its WAN leg is "wan". Tables natlab_nat and
# natlab_filter (comment: the type). Loaded with `nft -f -` inside the router's namespace.
nat_rules() {
    local type=$1 masq="masquerade" cone_map="" cone_pre="" cone_learn="" cone_accept=""
    check_type "$type"
    case "$type" in
        symmetric) masq="masquerade fully-random" ;;
        full-cone)
            # Learned after masquerade has chosen the port: `ct reply proto-dst` is the mapped
            # port, `ct original` the LAN endpoint. Only connections the LAN opened teach it.
            cone_map='
    map cone {
        type inet_proto . inet_service : ipv4_addr . inet_service
        flags dynamic, timeout
        timeout 10m
    }'
            cone_pre='
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        iifname "wan" meta l4proto { tcp, udp } dnat ip to meta l4proto . th dport map @cone
    }'
            cone_learn='
    chain learn {
        type filter hook postrouting priority srcnat + 1; policy accept;
        oifname "wan" ct direction original meta l4proto { tcp, udp } update @cone { meta l4proto . ct reply proto-dst : ct original ip saddr . ct original proto-src }
    }'
            cone_accept='
        iifname "wan" ct state new ct status dnat accept'
            ;;
    esac
    cat <<EOF
table ip natlab_nat {
    comment "natlab: $type"$cone_map$cone_pre
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" $masq
    }$cone_learn
}
table inet natlab_filter {
    comment "natlab: $type"
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
    chain forward {
        type filter hook forward priority filter; policy accept;$cone_accept
        iifname "wan" ct state new drop
    }
}
EOF
}

# Every namespace of the lab, in creation order.
lab_namespaces() {
    local p=$PREFIX
    echo "$p-segment $p-relay $p-probe $p-nat-a $p-nat-a-in $p-nat-b $p-nat-b-in"
}

ns_exists() {
    [[ -e "/run/netns/$1" ]]
}

ns_add() {
    ip netns add "$1"
    ip -n "$1" link set lo up
}

# A veth from namespace $1 (interface $2) to bridge port $3 of the segment.
attach() {
    local seg="$PREFIX-segment"
    ip link add "$2" netns "$1" type veth peer name "$3" netns "$seg"
    ip -n "$seg" link set "$3" master br0 up
}

add_public() { # NAME IP PORT
    local ns="$PREFIX-$1"
    ns_add "$ns"
    attach "$ns" eth0 "$3"
    ip -n "$ns" addr add "$2/24" dev eth0
    ip -n "$ns" link set eth0 up
}

add_site() { # NAME WAN_IP LAN_OCTET TYPE PORT
    local r="$PREFIX-$1" h="$PREFIX-$1-in" lan_r="10.0.$3.1" lan_h="10.0.$3.2"
    ns_add "$r"
    ns_add "$h"
    attach "$r" wan "$5"
    ip -n "$r" addr add "$2/24" dev wan
    ip -n "$r" link set wan up
    ip link add lan netns "$r" type veth peer name eth0 netns "$h"
    ip -n "$r" addr add "$lan_r/24" dev lan
    ip -n "$r" link set lan up
    ip -n "$h" addr add "$lan_h/24" dev eth0
    ip -n "$h" link set eth0 up
    ip -n "$h" route add default via "$lan_r"
    ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1
    nat_rules "$4" | ip netns exec "$r" nft -f -
}

# Kills the processes inside namespace $1 (TERM, then KILL after up to 3 s).
kill_ns_pids() {
    local pids
    pids=$(ip netns pids "$1" 2>/dev/null || true)
    [[ -z "$pids" ]] && return 0
    # shellcheck disable=SC2086 # one pid a word
    kill -TERM $pids 2>/dev/null || true
    for _ in $(seq 30); do
        pids=$(ip netns pids "$1" 2>/dev/null || true)
        [[ -z "$pids" ]] && return 0
        sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
}

cmd_down() {
    local ns removed=0
    for ns in $(lab_namespaces | tr ' ' '\n' | tac); do
        if ns_exists "$ns"; then
            kill_ns_pids "$ns"
            ip netns del "$ns"
            removed=$((removed + 1))
        fi
    done
    echo "natlab: $PREFIX: removed $removed namespaces"
}

# The NAT type a router's ruleset carries in its comment, or "?".
router_type() {
    ip netns exec "$1" nft list table ip natlab_nat 2>/dev/null | sed -n 's/.*comment "natlab: \(.*\)".*/\1/p' | head -n1 | grep . || echo "?"
}

cmd_status() {
    local ns found=0 addrs
    for ns in $(lab_namespaces); do
        ns_exists "$ns" || continue
        found=$((found + 1))
        addrs=$(ip -n "$ns" -4 -br addr show | awk '$1 != "lo" {print $1 "=" $3}' | sed 's/@[^=]*=/=/' | tr '\n' ' ')
        case "$ns" in
            "$PREFIX-nat-a" | "$PREFIX-nat-b") printf '%-24s router (%s)  %s\n' "$ns" "$(router_type "$ns")" "$addrs" ;;
            "$PREFIX-segment") printf '%-24s bridge br0 (public segment 198.51.100.0/24)\n' "$ns" ;;
            *) printf '%-24s host  %s\n' "$ns" "$addrs" ;;
        esac
    done
    if [[ $found -eq 0 ]]; then
        echo "natlab: $PREFIX: not up"
        return 1
    fi
}

cmd_up() {
    local ns
    for ns in $(lab_namespaces); do
        ns_exists "$ns" && die "namespace $ns exists: run '$0 down --prefix $PREFIX' first"
    done
    # A half-built lab is removed again (set -e exits on the first failing step).
    trap 'echo "natlab: up failed; removing what was built" >&2; cmd_down >&2' EXIT
    ns_add "$PREFIX-segment"
    ip -n "$PREFIX-segment" link add br0 type bridge
    ip -n "$PREFIX-segment" link set br0 up
    add_public relay "$RELAY_IP" p0
    add_public probe "$PROBE_IP" p1
    add_site nat-a "$WAN_A" 1 "$NAT_A" p2
    add_site nat-b "$WAN_B" 2 "$NAT_B" p3
    trap - EXIT
    echo "natlab: $PREFIX is up (A: $NAT_A, B: $NAT_B)"
    cmd_status
    cat <<EOF

Try: ip netns exec $PREFIX-nat-a-in bash -c 'echo hi > /dev/udp/$RELAY_IP/9'
     ip netns exec $PREFIX-nat-a conntrack -L -p udp
     ip netns exec $PREFIX-nat-a nft list ruleset
     $0 down --prefix $PREFIX
EOF
}

main() {
    [[ $# -ge 1 ]] || usage
    local cmd=$1
    shift
    if [[ $cmd == rules ]]; then
        [[ $# -eq 1 ]] || usage
        nat_rules "$1"
        return
    fi
    while [[ $# -gt 0 ]]; do
        case "$1" in
            --a) [[ $# -ge 2 ]] || usage; check_type "$2"; NAT_A=$2; shift 2 ;;
            --b) [[ $# -ge 2 ]] || usage; check_type "$2"; NAT_B=$2; shift 2 ;;
            --prefix) [[ $# -ge 2 ]] || usage; PREFIX=$2; shift 2 ;;
            -h | --help) usage ;;
            *) echo "natlab: unknown argument '$1'" >&2; usage ;;
        esac
    done
    [[ $PREFIX =~ ^[A-Za-z0-9_.-]{1,40}$ ]] || die "--prefix: 1-40 characters of [A-Za-z0-9_.-]"
    [[ $(id -u) -eq 0 ]] || die "needs root (ip netns, nft)"
    case "$cmd" in
        up) cmd_up ;;
        down) cmd_down ;;
        status) cmd_status ;;
        *) usage ;;
    esac
}

main "$@"
