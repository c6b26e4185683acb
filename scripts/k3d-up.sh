#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# A k3d cluster running the operator, a relay and a devnet sensor fleet, from this checkout.
set -euo pipefail

export SCRIPT_NAME=k3d-up
# Sourced helpers (shellcheck -x follows them; plain shellcheck checks them as their own inputs).
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

usage() {
    cat <<USAGE
Usage: scripts/k3d-up.sh [--with-kaspad N] [--with-monitoring] [--sensors N] [--no-build] [-h|--help]

Builds the images (Dockerfile targets sensor and operator), creates the k3d cluster of
k3d/cluster.yaml ($K3D_CLUSTER; kept if it exists), imports the images into it (no registry),
installs the Helm chart (release p2p-sensor-operator in $P2P_OPERATOR_NAMESPACE), applies the relay
(examples/relay.yaml) and the devnet fleet (k3d/manifests/fleet.yaml) in $P2P_NAMESPACE, and waits
until both are Ready. Idempotent: run it again after a code change to rebuild and roll out.

  --with-kaspad N   also run N real kaspad 2.1.0 devnet peers (k3d/manifests/kaspad.yaml) so the
                    sensors classify real peers; builds the kaspad image first (cargo install
                    kaspad: slow, ~35 min cold on 2 cores; cached by BuildKit afterwards);
                    without it, kaspad peers of an earlier run are removed
  --with-monitoring also install Prometheus and Grafana (kube-prometheus-stack from the
                    prometheus-community Helm repository: needs internet), scraping the operator
                    and the sensor pods, with the dashboards of dashboards/ loaded; then
                    kubectl -n monitoring port-forward svc/monitoring-grafana 3000:80
  --sensors N       sensors in the fleet (default 2)
  --no-build        use the images already built (p2p-sensor:$P2P_IMAGE_TAG, p2p-sensor-operator:$P2P_IMAGE_TAG)

Needs docker (daemon running), k3d v5, kubectl and helm v3 on PATH. Exit codes: 0 Ready,
1 a step failed, 2 usage error, 3 a prerequisite is missing.
Environment: K3D_CLUSTER, P2P_NAMESPACE, P2P_OPERATOR_NAMESPACE, P2P_IMAGE_TAG, P2P_WAIT_TIMEOUT.
Remove everything with scripts/k3d-down.sh.
USAGE
}

kaspad=0
monitoring=0
sensors=2
build=1
while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        --with-kaspad)
            (($# >= 2)) || die "$EXIT_USAGE" "--with-kaspad needs a number"
            is_nonnegative_int "$2" || die "$EXIT_USAGE" "--with-kaspad: '$2' is not a number"
            kaspad=$2
            shift 2
            ;;
        --with-kaspad=*)
            kaspad=${1#*=}
            is_nonnegative_int "$kaspad" || die "$EXIT_USAGE" "--with-kaspad: '$kaspad' is not a number"
            shift
            ;;
        --sensors)
            (($# >= 2)) || die "$EXIT_USAGE" "--sensors needs a number"
            is_positive_int "$2" || die "$EXIT_USAGE" "--sensors: '$2' is not a positive number"
            sensors=$2
            shift 2
            ;;
        --no-build) build=0; shift ;;
        --with-monitoring) monitoring=1; shift ;;
        *) usage >&2; die "$EXIT_USAGE" "unknown argument: $1" ;;
    esac
done

require_tools docker k3d kubectl helm
require_docker_daemon

sensor_image="p2p-sensor:$P2P_IMAGE_TAG"
operator_image="p2p-sensor-operator:$P2P_IMAGE_TAG"
images=("$sensor_image" "$operator_image")
((kaspad == 0)) || images+=("$P2P_KASPAD_IMAGE")

if ((build)); then
    log "building $sensor_image and $operator_image (Dockerfile targets sensor, operator)"
    DOCKER_BUILDKIT=1 docker build --target sensor -t "$sensor_image" "$REPO_ROOT"
    DOCKER_BUILDKIT=1 docker build --target operator -t "$operator_image" "$REPO_ROOT"
    if ((kaspad > 0)); then
        log "building $P2P_KASPAD_IMAGE (cargo install kaspad --version 2.1.0: ~35 min cold)"
        DOCKER_BUILDKIT=1 docker build --target kaspad -t "$P2P_KASPAD_IMAGE" "$REPO_ROOT"
    fi
else
    for image in "${images[@]}"; do
        docker image inspect "$image" >/dev/null 2>&1 || die "$EXIT_PREREQ" "--no-build: image $image not found (run without --no-build)"
    done
fi

if cluster_exists; then
    log "k3d cluster $K3D_CLUSTER exists: keeping it"
else
    log "creating k3d cluster $K3D_CLUSTER (k3d/cluster.yaml: 1 server, 2 agents)"
    k3d cluster create "$K3D_CLUSTER" --config "$REPO_ROOT/k3d/cluster.yaml"
fi
# The context k3d-$K3D_CLUSTER in the default kubeconfig (again, for a cluster created elsewhere).
k3d kubeconfig merge "$K3D_CLUSTER" --kubeconfig-merge-default --kubeconfig-switch-context=false >/dev/null

log "importing ${images[*]} into $K3D_CLUSTER"
k3d image import --cluster "$K3D_CLUSTER" "${images[@]}"

service_monitor=false
if ((monitoring)); then
    service_monitor=true
    log "installing Prometheus and Grafana (kube-prometheus-stack, namespace monitoring) and the dashboards"
    lab_monitoring
fi

log "installing the CRDs and the chart (release p2p-sensor-operator, namespace $P2P_OPERATOR_NAMESPACE)"
# Helm installs crds/ only once; applying them keeps them current on a re-run.
kc apply -f "$REPO_ROOT/crds/"
hc upgrade --install p2p-sensor-operator "$REPO_ROOT/charts/p2p-sensor-operator" \
    --namespace "$P2P_OPERATOR_NAMESPACE" --create-namespace \
    --set image.tag="$P2P_IMAGE_TAG" --set sensorImage.tag="$P2P_IMAGE_TAG" \
    --set image.pullPolicy=IfNotPresent \
    --set serviceMonitor.enabled="$service_monitor" \
    --wait --timeout 5m
# Same tag, new build: restart so that the pods run the image just imported.
if ((build)); then
    kc rollout restart -n "$P2P_OPERATOR_NAMESPACE" deployment/p2p-sensor-operator >/dev/null
    kc rollout status -n "$P2P_OPERATOR_NAMESPACE" deployment/p2p-sensor-operator --timeout=180s
fi

# The relay's node (k3d/cluster.yaml labels it at creation; again here for a cluster made otherwise).
kc label node "k3d-$K3D_CLUSTER-agent-0" p2psensor.dev/relay=true --overwrite >/dev/null

log "applying the relay and the devnet fleet ($sensors sensors) in namespace $P2P_NAMESPACE"
lab_namespace
# Same tag, new build: existing sensor/relay pods are recreated from the image just imported
# (the operator's workloads bring them back).
if ((build)); then
    kc delete pods -n "$P2P_NAMESPACE" -l app.kubernetes.io/managed-by=p2p-sensor-operator --ignore-not-found --wait=false >/dev/null
fi
lab_relay
lab_fleet "$sensors"
lab_wait_ready
if ((kaspad > 0)); then
    log "starting $kaspad kaspad devnet peers (they connect to the sensors; peers show up in a minute)"
fi
lab_kaspad kaspad "$kaspad" false

kc get -n "$P2P_NAMESPACE" sensorfleets,relaynodes -o wide
log "done. Watch: kubectl get sensorfleets,relaynodes -n $P2P_NAMESPACE -w; remove: scripts/k3d-down.sh"
