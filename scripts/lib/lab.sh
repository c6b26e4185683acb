#!/usr/bin/env bash
# The in-cluster lab of the k3d demo and the experiments (sourced after common.sh): a namespace
# with the RelayNode of examples/relay.yaml, the SensorFleet of k3d/manifests/fleet.yaml and
# optionally kaspad devnet peers (k3d/manifests/kaspad.yaml), all in the k3d cluster's context.

# kubectl and helm always talk to the k3d cluster, whatever the current context is.
kc() { kubectl --context "k3d-$K3D_CLUSTER" "$@"; }
hc() { helm --kube-context "k3d-$K3D_CLUSTER" "$@"; }

# cluster_exists: is the k3d cluster $K3D_CLUSTER there?
cluster_exists() { k3d cluster get "$K3D_CLUSTER" >/dev/null 2>&1; }

require_cluster() {
    cluster_exists || die "$EXIT_PREREQ" "k3d cluster $K3D_CLUSTER not found: run scripts/k3d-up.sh first"
    kc get --raw /readyz >/dev/null 2>&1 ||
        die "$EXIT_PREREQ" "the API server of k3d cluster $K3D_CLUSTER does not answer (k3d cluster start $K3D_CLUSTER?)"
}

# lab_namespace: the namespace, allowed hostNetwork pods (the relay) under Pod Security.
lab_namespace() {
    kc create namespace "$P2P_NAMESPACE" --dry-run=client -o yaml | kc apply -f - >/dev/null
    kc label namespace "$P2P_NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=privileged >/dev/null
}

lab_relay() {
    kc apply -n "$P2P_NAMESPACE" -f "$REPO_ROOT/examples/relay.yaml"
}

# lab_fleet SENSORS
lab_fleet() {
    render_template "$REPO_ROOT/k3d/manifests/fleet.yaml" "SENSORS=$1" | kc apply -n "$P2P_NAMESPACE" -f -
}

# lab_kaspad NAME REPLICAS NAT(true|false): a fresh kaspad StatefulSet (an earlier one is deleted
# first, so every pod resolves the current sensors at start-up), waited for; REPLICAS 0 only removes.
# Apply it after lab_wait_ready: the pods add the sensors that exist when they start.
lab_kaspad() {
    local name=$1 replicas=$2 nat=$3
    kc delete -n "$P2P_NAMESPACE" statefulset/"$name" service/"$name" --ignore-not-found --cascade=foreground --wait=true >/dev/null
    ((replicas > 0)) || return 0
    render_template "$REPO_ROOT/k3d/manifests/kaspad.yaml" "NAME=$name" "REPLICAS=$replicas" "NAT=$nat" |
        kc apply -n "$P2P_NAMESPACE" -f -
    kc rollout status -n "$P2P_NAMESPACE" statefulset/"$name" --timeout="$P2P_WAIT_TIMEOUT" ||
        die "$EXIT_FAILED" "kaspad StatefulSet $name not ready within $P2P_WAIT_TIMEOUT (kubectl logs -n $P2P_NAMESPACE $name-0)"
}

# lab_nat_policy on|off
lab_nat_policy() {
    if [[ $1 == on ]]; then
        kc apply -n "$P2P_NAMESPACE" -f "$REPO_ROOT/k3d/manifests/nat-policy.yaml"
    else
        kc delete -n "$P2P_NAMESPACE" -f "$REPO_ROOT/k3d/manifests/nat-policy.yaml" --ignore-not-found >/dev/null
    fi
}

# lab_wait_ready: the custom resources' Ready condition (sensors ready and reporting to the
# collector; the relay up with a PeerId), bounded by $P2P_WAIT_TIMEOUT.
lab_wait_ready() {
    log "waiting up to $P2P_WAIT_TIMEOUT for relaynode/relay and sensorfleet/devnet to be Ready"
    if ! kc wait -n "$P2P_NAMESPACE" --for=condition=Ready relaynode/relay sensorfleet/devnet --timeout="$P2P_WAIT_TIMEOUT"; then
        kc get -n "$P2P_NAMESPACE" sensorfleets,relaynodes,pods -o wide >&2 || true
        die "$EXIT_FAILED" "not Ready within $P2P_WAIT_TIMEOUT: see the conditions (kubectl describe sensorfleet devnet -n $P2P_NAMESPACE) and docs/troubleshooting.md"
    fi
}

# lab_monitoring: Prometheus and Grafana (kube-prometheus-stack, release "monitoring" in namespace
# "monitoring", from the prometheus-community Helm repository: needs internet), scraping the
# operator (the chart's ServiceMonitor) and the sensor pods (dashboards/podmonitor.yaml), with the
# dashboards of dashboards/*.json loaded by Grafana's sidecar (ConfigMap label grafana_dashboard=1).
lab_monitoring() {
    local ns=monitoring files=()
    hc repo add prometheus-community https://prometheus-community.github.io/helm-charts --force-update >/dev/null
    # Selectors left open: every ServiceMonitor and PodMonitor in the cluster is scraped.
    hc upgrade --install monitoring prometheus-community/kube-prometheus-stack \
        --namespace "$ns" --create-namespace \
        --set prometheus.prometheusSpec.podMonitorSelectorNilUsesHelmValues=false \
        --set prometheus.prometheusSpec.serviceMonitorSelectorNilUsesHelmValues=false \
        --set grafana.sidecar.dashboards.enabled=true --set grafana.sidecar.dashboards.label=grafana_dashboard \
        --wait --timeout 10m
    kc apply -n "$ns" -f "$REPO_ROOT/dashboards/podmonitor.yaml"
    for f in "$REPO_ROOT"/dashboards/*.json; do files+=("--from-file=$f"); done
    kc create configmap p2p-sensor-dashboards -n "$ns" "${files[@]}" --dry-run=client -o yaml |
        kc label --local -f - grafana_dashboard=1 -o yaml | kc apply -n "$ns" -f -
}
