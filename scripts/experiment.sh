#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Runs a named scenario on the k3d cluster of scripts/k3d-up.sh and collects its results.
set -euo pipefail

export SCRIPT_NAME=experiment
# Sourced helpers (shellcheck -x follows them; plain shellcheck checks them as their own inputs).
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

# Scenario table: NAME|SENSORS|PUBLIC_KASPAD|NAT_KASPAD|DESCRIPTION
SCENARIOS=(
    "baseline|3|4|0|3 sensors, 4 reachable kaspad devnet peers, a relay: every peer should be classified public"
    "nat|3|2|2|3 sensors, 2 reachable + 2 NAT'd kaspad peers (inbound denied by a NetworkPolicy, outbound allowed), a relay: the NAT'd ones should be classified private"
    "sensors-only|3|0|0|3 sensors and a relay, no kaspad (no kaspad image needed): hole punching and the crawl of an empty network"
)

usage() {
    cat <<USAGE
Usage: scripts/experiment.sh [options] SCENARIO
       scripts/experiment.sh --list | --check-netem | -h|--help

Runs SCENARIO in namespace $P2P_NAMESPACE of the k3d cluster $K3D_CLUSTER (scripts/k3d-up.sh first;
kaspad scenarios need the p2p-kaspad image: scripts/k3d-up.sh --with-kaspad 1), waits for Ready,
lets it run, and writes results/<UTC timestamp>/ (docs/experiments.md).

Scenarios (--list):
$(scenario_table)

Options:
  --sensors N              override the scenario's sensor count
  --peers N                override the scenario's reachable kaspad count
  --nat-peers N            override the scenario's NAT'd kaspad count
  --duration SECS          run time after Ready before collecting (default 300)
  --netem DELAY_MS[,LOSS_PCT]
                           add latency (and loss) on every k3d node's eth0 with tc netem, when the
                           kernel has sch_netem; otherwise runs without it and says so
  --results DIR            parent of the timestamped result directory (default results/)
  --collect-only           collect the current state now: no apply, no wait
  --dry-run                print the plan and the netem decision; needs no cluster
  --check-netem            only probe whether this kernel supports netem (exit 0 yes, 1 no)
  --list                   print the scenario table

Exit codes: 0 done, 1 a step failed, 2 usage error, 3 a prerequisite is missing (docker, k3d,
kubectl, python3, the cluster). Environment: K3D_CLUSTER, P2P_NAMESPACE, P2P_WAIT_TIMEOUT.
USAGE
}

scenario_table() {
    local row
    for row in "${SCENARIOS[@]}"; do
        IFS='|' read -r name sensors peers nat description <<<"$row"
        printf '  %-13s sensors=%s kaspad=%s nat-kaspad=%s\n  %-13s %s\n' "$name" "$sensors" "$peers" "$nat" "" "$description"
    done
}

# scenario_lookup NAME: sets S_SENSORS S_PEERS S_NAT S_DESCRIPTION; 1 when unknown.
scenario_lookup() {
    local row name
    for row in "${SCENARIOS[@]}"; do
        IFS='|' read -r name S_SENSORS S_PEERS S_NAT S_DESCRIPTION <<<"$row"
        [[ $name == "$1" ]] && return 0
    done
    return 1
}

# parse_netem SPEC: sets NETEM_DELAY_MS NETEM_LOSS_PCT; 1 when malformed.
parse_netem() {
    [[ $1 =~ ^([0-9]{1,5})(,([0-9]{1,2}(\.[0-9]+)?|100))?$ ]] || return 1
    NETEM_DELAY_MS=${BASH_REMATCH[1]}
    NETEM_LOSS_PCT=${BASH_REMATCH[3]:-0}
}

scenario=""
sensors="" peers="" nat_peers=""
duration=300
netem_spec=""
results_parent="$REPO_ROOT/results"
mode=run
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --list) scenario_table; exit 0 ;;
        --check-netem) mode=check-netem; shift ;;
        --dry-run) mode=dry-run; shift ;;
        --collect-only) mode=collect; shift ;;
        --sensors | --peers | --nat-peers | --duration | --netem | --results)
            (($# >= 2)) || die "$EXIT_USAGE" "$1 needs a value"
            case "$1" in
                --sensors) is_positive_int "$2" || die "$EXIT_USAGE" "--sensors: '$2' is not a positive number"; sensors=$2 ;;
                --peers) is_nonnegative_int "$2" || die "$EXIT_USAGE" "--peers: '$2' is not a number"; peers=$2 ;;
                --nat-peers) is_nonnegative_int "$2" || die "$EXIT_USAGE" "--nat-peers: '$2' is not a number"; nat_peers=$2 ;;
                --duration) is_nonnegative_int "$2" || die "$EXIT_USAGE" "--duration: '$2' is not a number of seconds"; duration=$2 ;;
                --netem) parse_netem "$2" || die "$EXIT_USAGE" "--netem: '$2' is not DELAY_MS[,LOSS_PCT] (e.g. 50 or 50,1.5)"; netem_spec=$2 ;;
                --results) results_parent=$2 ;;
            esac
            shift 2
            ;;
        -*) usage >&2; die "$EXIT_USAGE" "unknown option: $1" ;;
        *)
            [[ -z $scenario ]] || die "$EXIT_USAGE" "one scenario only (got '$scenario' and '$1')"
            scenario=$1
            shift
            ;;
    esac
done

if [[ $mode == check-netem ]]; then
    netem_probe
    exit $?
fi
if [[ $mode != collect ]]; then
    [[ -n $scenario ]] || { usage >&2; die "$EXIT_USAGE" "no SCENARIO given (--list shows them)"; }
    scenario_lookup "$scenario" || die "$EXIT_USAGE" "unknown scenario '$scenario'; known: $(scenario_table | awk 'NR % 2 == 1 {print $1}' | tr '\n' ' ')"
    sensors=${sensors:-$S_SENSORS}
    peers=${peers:-$S_PEERS}
    nat_peers=${nat_peers:-$S_NAT}
fi

# The netem decision: requested and supported, or said why not.
netem=off
netem_note="not requested"
if [[ -n $netem_spec ]]; then
    parse_netem "$netem_spec"
    if netem_note=$(netem_probe); then
        netem=on
    else
        log "netem not available on this kernel; running without latency emulation ($netem_note)"
    fi
fi

if [[ $mode == dry-run ]]; then
    printf 'scenario=%s sensors=%s kaspad=%s nat-kaspad=%s duration=%ss namespace=%s cluster=%s\n' \
        "$scenario" "$sensors" "$peers" "$nat_peers" "$duration" "$P2P_NAMESPACE" "$K3D_CLUSTER"
    echo "description=$S_DESCRIPTION"
    if [[ -n $netem_spec ]]; then
        printf 'netem=%s delay=%sms loss=%s%% (%s)\n' "$netem" "$NETEM_DELAY_MS" "$NETEM_LOSS_PCT" "$netem_note"
    else
        echo "netem=off (not requested)"
    fi
    exit 0
fi

require_tools docker k3d kubectl python3
require_docker_daemon
require_cluster
kc get crd sensorfleets.p2psensor.dev relaynodes.p2psensor.dev >/dev/null 2>&1 ||
    die "$EXIT_PREREQ" "the p2psensor.dev CRDs are not installed in k3d cluster $K3D_CLUSTER: run scripts/k3d-up.sh first"

# k3d node containers (servers and agents; not the load balancer).
k3d_nodes() {
    docker ps --filter "label=k3d.cluster=$K3D_CLUSTER" --format '{{.Names}} {{.Label "k3d.role"}}' |
        awk '$2 == "server" || $2 == "agent" {print $1}'
}

# netem_node NODE tc-args...: tc in NODE's network namespace (the netem image, as root for NET_ADMIN).
netem_node() {
    local node=$1
    shift
    docker run --rm --network "container:$node" --cap-add NET_ADMIN --user 0:0 "$P2P_NETEM_IMAGE" "$@"
}

netem_clear() {
    local node
    for node in $(k3d_nodes); do
        netem_node "$node" qdisc del dev eth0 root >/dev/null 2>&1 || true
    done
}

if [[ $mode == run ]]; then
    if ((peers + nat_peers > 0)) && ! docker image inspect "$P2P_KASPAD_IMAGE" >/dev/null 2>&1; then
        die "$EXIT_PREREQ" "scenario $scenario needs kaspad peers but image $P2P_KASPAD_IMAGE is missing: scripts/k3d-up.sh --with-kaspad 1 (slow), or --peers 0 --nat-peers 0"
    fi
    if ((peers + nat_peers > 0)); then
        k3d image import --cluster "$K3D_CLUSTER" "$P2P_KASPAD_IMAGE"
    fi
    if [[ $netem == on ]]; then
        docker image inspect "$P2P_NETEM_IMAGE" >/dev/null 2>&1 ||
            DOCKER_BUILDKIT=1 docker build --target netem -t "$P2P_NETEM_IMAGE" "$REPO_ROOT"
        trap netem_clear EXIT
        args=(qdisc replace dev eth0 root netem delay "${NETEM_DELAY_MS}ms")
        [[ $NETEM_LOSS_PCT == 0 ]] || args+=(loss "${NETEM_LOSS_PCT}%")
        for node in $(k3d_nodes); do
            if ! netem_node "$node" "${args[@]}"; then
                log "netem not available on this kernel; running without latency emulation (tc failed on $node)"
                netem=off
                netem_note="tc netem failed on the k3d nodes"
                break
            fi
            log "netem on $node eth0: ${args[*]:5}"
        done
    fi
    log "scenario $scenario: $sensors sensors, $peers kaspad, $nat_peers NAT'd kaspad (namespace $P2P_NAMESPACE)"
    lab_namespace
    lab_relay
    lab_fleet "$sensors"
    if ((nat_peers > 0)); then lab_nat_policy on; else lab_nat_policy off; fi
    lab_wait_ready
    lab_kaspad kaspad "$peers" false
    lab_kaspad kaspad-nat "$nat_peers" true
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    log "Ready, peers started; running for ${duration}s before collecting"
    sleep "$duration"
else
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
fi

out="$results_parent/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/metrics"
log "collecting into $out"
kc get -n "$P2P_NAMESPACE" sensorfleets,relaynodes -o json >"$out/resources.json"
kc get -n "$P2P_NAMESPACE" pods -o json >"$out/pods.json"
python3 "$REPO_ROOT/scripts/lib/results.py" csv "$out/resources.json" "$out"
scraped=0
while read -r namespace pod port container; do
    if kc get --raw "/api/v1/namespaces/$namespace/pods/$pod:$port/proxy/metrics" >"$out/metrics/$pod-$port.prom" 2>"$out/metrics/$pod-$port.err"; then
        rm -f "$out/metrics/$pod-$port.err"
        scraped=$((scraped + 1))
    else
        log "WARNING: /metrics of $pod:$port ($container) failed: $(head -c 200 "$out/metrics/$pod-$port.err")"
    fi
done < <(python3 "$REPO_ROOT/scripts/lib/results.py" metrics-targets "$out/pods.json")
RUN_SCENARIO=$scenario RUN_MODE=$mode RUN_SENSORS=$sensors RUN_KASPAD=$peers RUN_NAT_KASPAD=$nat_peers \
    RUN_DURATION=$duration RUN_NETEM=$netem RUN_NETEM_SPEC=$netem_spec RUN_NETEM_NOTE=$netem_note \
    RUN_STARTED=$started RUN_SCRAPED=$scraped P2P_NAMESPACE=$P2P_NAMESPACE K3D_CLUSTER=$K3D_CLUSTER \
    python3 - "$out/run.json" <<'PY'
import datetime, json, os, sys
e = os.environ
json.dump({
    "scenario": e["RUN_SCENARIO"], "mode": e["RUN_MODE"], "sensors": e["RUN_SENSORS"],
    "kaspad": e["RUN_KASPAD"], "nat_kaspad": e["RUN_NAT_KASPAD"], "duration_secs": int(e["RUN_DURATION"]),
    "namespace": e["P2P_NAMESPACE"], "cluster": e["K3D_CLUSTER"], "netem": e["RUN_NETEM"],
    "netem_spec": e["RUN_NETEM_SPEC"], "netem_note": e["RUN_NETEM_NOTE"], "started": e["RUN_STARTED"],
    "collected": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "metrics_scraped": int(e["RUN_SCRAPED"]),
}, open(sys.argv[1], "w"), indent=2)
PY
log "done: $out (fleets.csv, sensors.csv, relays.csv, relay_transports.csv, metrics/: $scraped endpoints)"
