#!/usr/bin/env bash
# Shared helpers of scripts/k3d-up.sh, scripts/k3d-down.sh and scripts/experiment.sh (sourced).
# Exit codes used by those scripts:
#   0 success, 1 a step failed, 2 usage error, 3 a prerequisite is missing (tool, daemon, cluster).

# shellcheck disable=SC2034 # used by the scripts that source this file
readonly EXIT_FAILED=1 EXIT_USAGE=2 EXIT_PREREQ=3

# Repository root (this file is scripts/lib/common.sh).
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# shellcheck disable=SC2034
readonly REPO_ROOT

# Defaults shared by the scripts; each can be overridden from the environment.
: "${K3D_CLUSTER:=p2p-sensor}"          # metadata.name in k3d/cluster.yaml
: "${P2P_NAMESPACE:=p2p-lab}"           # namespace of the fleet, the relay and the kaspad peers
: "${P2P_OPERATOR_NAMESPACE:=p2p-system}"
: "${P2P_IMAGE_TAG:=0.1.0}"             # charts/p2p-sensor-operator/Chart.yaml appVersion
: "${P2P_KASPAD_IMAGE:=p2p-kaspad:2.1.0}"
: "${P2P_NETEM_IMAGE:=p2p-netem:latest}"
: "${P2P_WAIT_TIMEOUT:=300s}"

log() { printf '[%s] %s\n' "${SCRIPT_NAME:-p2p}" "$*" >&2; }
die() {
    local code=$1
    shift
    printf '[%s] ERROR: %s\n' "${SCRIPT_NAME:-p2p}" "$*" >&2
    exit "$code"
}

# Where each tool comes from, for the "missing" message.
tool_hint() {
    case "$1" in
        docker) echo "https://docs.docker.com/engine/install/ (the daemon must be running)" ;;
        k3d) echo "https://k3d.io/#installation (v5)" ;;
        kubectl) echo "https://kubernetes.io/docs/tasks/tools/" ;;
        helm) echo "https://helm.sh/docs/intro/install/ (v3)" ;;
        python3) echo "your distribution's python3 package" ;;
        *) echo "your package manager" ;;
    esac
}

# require_tools TOOL...: every missing tool is named, then exit 3. Nothing is installed.
require_tools() {
    local tool missing=()
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]} > 0)); then
        for tool in "${missing[@]}"; do
            printf '[%s] ERROR: %s not found on PATH; install it: %s\n' "${SCRIPT_NAME:-p2p}" "$tool" "$(tool_hint "$tool")" >&2
        done
        die "$EXIT_PREREQ" "missing prerequisite(s): ${missing[*]}"
    fi
}

# require_docker_daemon: the docker CLI is there, is its daemon reachable? (bounded: a hung socket
# must not hang the script)
require_docker_daemon() {
    if ! timeout 20 docker info >/dev/null 2>&1; then
        die "$EXIT_PREREQ" "the Docker daemon is not reachable ('docker info' failed): start it, or check DOCKER_HOST and that you may use its socket"
    fi
}

# is_positive_int VALUE
is_positive_int() { [[ $1 =~ ^[1-9][0-9]*$ ]]; }
# is_nonnegative_int VALUE
is_nonnegative_int() { [[ $1 =~ ^(0|[1-9][0-9]*)$ ]]; }

# render_template FILE KEY=VALUE...: FILE with every __KEY__ replaced by VALUE, on stdout.
render_template() {
    local file=$1 text pair
    shift
    text=$(<"$file")
    for pair in "$@"; do
        text=${text//__${pair%%=*}__/${pair#*=}}
    done
    if grep -Eq '__[A-Z_]+__' <<<"$text"; then
        die "$EXIT_FAILED" "template $file: unreplaced placeholder(s): $(grep -Eo '__[A-Z_]+__' <<<"$text" | sort -u | tr '\n' ' ')"
    fi
    printf '%s\n' "$text"
}

# netem_probe: can this kernel run the netem qdisc? Prints one line and returns 0 (available) or
# 1 (not available / cannot tell). Nothing on the host changes: the probe adds a netem qdisc to
# the loopback device of a throwaway network namespace (an unprivileged user+net namespace with
# `unshare -rn`, else, as root, `ip netns`), which the kernel loads sch_netem for on demand.
# P2P_NETEM_PROBE=available|unavailable forces the answer (tests, or kernels where neither works).
netem_probe() {
    case "${P2P_NETEM_PROBE:-}" in
        available) echo "netem available (P2P_NETEM_PROBE)"; return 0 ;;
        unavailable) echo "netem not available (P2P_NETEM_PROBE)"; return 1 ;;
    esac
    if [[ -d /sys/module/sch_netem ]]; then
        echo "netem available (sch_netem loaded)"
        return 0
    fi
    if ! command -v tc >/dev/null 2>&1; then
        echo "netem not available: tc (iproute2) not found, cannot probe the kernel"
        return 1
    fi
    local probe='tc qdisc add dev lo root netem delay 1ms'
    if command -v unshare >/dev/null 2>&1 && unshare -rn true >/dev/null 2>&1; then
        if unshare -rn sh -c "$probe" >/dev/null 2>&1; then
            echo "netem available (probed in a throwaway network namespace)"
            return 0
        fi
        echo "netem not available: the kernel has no sch_netem (tc qdisc ... netem failed in a throwaway network namespace)"
        return 1
    fi
    if [[ $(id -u) -eq 0 ]] && command -v ip >/dev/null 2>&1; then
        local ns="p2p-netem-probe-$$" rc=1
        if ip netns add "$ns" >/dev/null 2>&1; then
            ip netns exec "$ns" sh -c "$probe" >/dev/null 2>&1 && rc=0
            ip netns delete "$ns" >/dev/null 2>&1 || true
            if ((rc == 0)); then
                echo "netem available (probed in network namespace $ns)"
                return 0
            fi
            echo "netem not available: the kernel has no sch_netem (tc qdisc ... netem failed in network namespace $ns)"
            return 1
        fi
    fi
    echo "netem not available: cannot probe (no unprivileged user namespaces and not root); set P2P_NETEM_PROBE=available to force it"
    return 1
}
