#!/usr/bin/env bash
# A real one-machine Kubernetes control plane from upstream binaries (scripts/build-kubernetes.sh):
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler as local processes, with the
# certificates, keys and kubeconfigs this script generates with openssl. The flags follow
# Kubernetes' own hack/local-up-cluster.sh: Node,RBAC authorization, ServiceAccount token signing
# and issuing, the controller manager's signer and per-controller credentials, and the admission
# plugins a k3s/k3d cluster enables. An audit log (metadata level) records every request, so tests
# can count who wrote what.
# Then one node on this machine (scripts/lib/node.sh): Debian's containerd 1.6 as a plain process
# (its root, state, socket and runc root under the state directory; cgroupfs; CNI plugins from
# /usr/lib/cni), a pause image built here (gcc -static of the k8s.io/kubernetes module's
# build/pause/linux/pause.c, buildah, cached in ~/.cache/p2p-sensor-operator/pause), a bridge +
# host-local CNI network (pods in 10.244.0.0/24 on bridge p2pbr0), kubelet and kube-proxy
# (iptables mode). No registry is needed: images are imported (`ctr -n k8s.io images import`) and
# pods use them with imagePullPolicy: Never. No cluster DNS yet. One node per machine.
#
# Usage: scripts/cluster.sh up [--clean] [--control-plane-only]|down|status|env|kubeconfig|load-images
#                                                                (needs root for up/down)
#   up          build/find the binaries, generate what is missing, start what is not running and
#               wait until the API server is ready and the node is Ready (idempotent; after a crash
#               it restarts the dead processes on the same data, or starts clean with --clean)
#   up --clean  remove any earlier state first
#   up --control-plane-only
#               etcd and the control plane only, no node (no containerd, kubelet, kube-proxy)
#   down        stop every process (containers and their shims too), unmount what is mounted under
#               the state directory, remove the node's bridge, its KUBE-*/CNI-* iptables chains,
#               pod cgroups and network namespaces, restore the sysctls it changed, and remove the
#               state directory (nothing is left behind)
#   status      one line per component: running (pid) or stopped, and the API server's /readyz
#   env         print shell exports: eval "$(scripts/cluster.sh env)" puts kubectl and helm on PATH
#               and sets KUBECONFIG to the cluster-admin kubeconfig
#   kubeconfig  print the path of the cluster-admin kubeconfig
#   load-images build p2p-sensor:<appVersion> and p2p-sensor-operator:<appVersion> from the
#               repository's Dockerfile with buildah, on base images made here by debootstrap
#               (scripts/lib/images.sh), and import them into the node's containerd when it runs
# Environment:
#   P2P_CLUSTER_DIR       state (certificates, etcd data, logs, pids); default /var/lib/p2p-sensor-cluster
#   P2P_CLUSTER_API_PORT  kube-apiserver's port on 127.0.0.1; default 6443
#   P2P_CLUSTER_ETCD_PORT etcd's client port on 127.0.0.1 (peer port +1); default 2379
#   P2P_CLUSTER_TIMEOUT   seconds `up` waits for each readiness; default 120
#   P2P_CLUSTER_NODE      0: no node, as --control-plane-only; default 1
#   P2P_CLUSTER_NODE_NAME the node's name; default the host name (lower case)
#   P2P_CLUSTER_NODE_IP   the node's InternalIP; default the source address of the default route
# Exit codes: 0 success, 1 a step failed (also: another cluster's kubelet runs here), 2 usage
# error, 3 a prerequisite is missing.
set -euo pipefail

SCRIPT_NAME=cluster
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${P2P_CLUSTER_DIR:-/var/lib/p2p-sensor-cluster}"
api_port="${P2P_CLUSTER_API_PORT:-6443}"
etcd_port="${P2P_CLUSTER_ETCD_PORT:-2379}"
timeout_s="${P2P_CLUSTER_TIMEOUT:-120}"
pki="$state/pki"
logs="$state/logs"
run="$state/run"
# The Service network: its first address is the `kubernetes` Service (the API server's SAN).
service_cidr="10.96.0.0/16"
service_ip="10.96.0.1"
# The cluster DNS Service (kube-dns, CoreDNS), kubelet's clusterDNS.
dns_service_ip="10.96.0.10"
cluster_cidr="10.244.0.0/16"
components=(etcd kube-apiserver kube-controller-manager kube-scheduler)
with_node="${P2P_CLUSTER_NODE:-1}"
# shellcheck source-path=SCRIPTDIR source=lib/node.sh
. "$here/lib/node.sh"
# shellcheck source-path=SCRIPTDIR source=lib/addons.sh
. "$here/lib/addons.sh"
# shellcheck source-path=SCRIPTDIR source=lib/images.sh
. "$here/lib/images.sh"

log() { printf '[%s] %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    local code=$1
    shift
    printf '[%s] ERROR: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit "$code"
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

bin_dir() { bash "$here/build-kubernetes.sh" --print-bin-dir; }

require_root() {
    [[ $(id -u) -eq 0 ]] || die 3 "'$1' needs root (processes, state under $state); run: sudo scripts/cluster.sh $1"
}

# --- processes ----------------------------------------------------------------------------------
pid_of() {
    local f="$run/$1.pid" pid
    [[ -f "$f" ]] || return 1
    pid=$(cat "$f")
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 1
    # A pid file outlives its process after a crash or reboot: the pid must still be our binary.
    [[ "$(readlink "/proc/$pid/exe" 2>/dev/null)" == *"/$1" ]] || return 1
    echo "$pid"
}

# start NAME ARG...: runs the binary NAME ($START_EXE, else $BIN/NAME) in its own session, output to
# logs/NAME.log.
start() {
    local name=$1 pid
    shift
    if pid=$(pid_of "$name"); then
        log "$name: running (pid $pid)"
        return 0
    fi
    setsid "${START_EXE:-$BIN/$name}" "$@" >>"$logs/$name.log" 2>&1 </dev/null &
    echo $! >"$run/$name.pid"
    log "$name: started (pid $!, log $logs/$name.log)"
}

# The built kubectl as the cluster admin.
kubectl_admin() { "$BIN/kubectl" --kubeconfig "$state/admin.kubeconfig" "$@"; }

stop() {
    local name=$1 pid i
    pid=$(pid_of "$name") || {
        rm -f "$run/$name.pid"
        return 0
    }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$run/$name.pid"
    log "$name: stopped (pid $pid)"
}

# --- certificates (openssl only) ----------------------------------------------------------------
# cert NAME CN O [SAN]: a key and a certificate signed by the cluster CA, made once, and made again
# when its SAN changes (the API server's follows the node's address; pki/NAME.san keeps it).
cert() {
    local name=$1 cn=$2 org=$3 san=${4:-} subj ext
    [[ -f "$pki/$name.crt" && -f "$pki/$name.key" && "$(cat "$pki/$name.san" 2>/dev/null)" == "$san" ]] && return 0
    subj="/CN=$cn"
    [[ -n "$org" ]] && subj="/O=$org$subj"
    ext="$pki/$name.ext"
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n "$san" ]]; then
            echo "extendedKeyUsage=serverAuth,clientAuth"
            echo "subjectAltName=$san"
        else
            echo "extendedKeyUsage=clientAuth"
        fi
    } >"$ext"
    openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
    openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
        -days 3650 -sha256 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
    rm -f "$pki/$name.csr" "$ext"
    chmod 600 "$pki/$name.key"
    printf '%s' "$san" >"$pki/$name.san"
}

# kubeconfig NAME CERT: a kubeconfig for the client certificate CERT (pki/CERT.{crt,key}).
kubeconfig() {
    local name=$1 cert_name=$2
    cat >"$state/$name.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: p2p-sensor
    cluster:
      server: https://127.0.0.1:$api_port
      certificate-authority: $pki/ca.crt
users:
  - name: $name
    user:
      client-certificate: $pki/$cert_name.crt
      client-key: $pki/$cert_name.key
contexts:
  - name: p2p-sensor
    context: {cluster: p2p-sensor, user: $name}
current-context: p2p-sensor
EOF
    chmod 600 "$state/$name.kubeconfig"
}

generate() {
    mkdir -p "$pki" "$logs" "$run" "$state/etcd"
    chmod 700 "$state" "$pki" "$state/etcd"
    if [[ ! -f "$pki/ca.crt" ]]; then
        openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -days 3650 -sha256 \
            -subj "/CN=p2p-sensor-cluster-ca" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" -out "$pki/ca.crt" 2>/dev/null
        chmod 600 "$pki/ca.key"
    fi
    # The ServiceAccount token signing key pair.
    if [[ ! -f "$pki/sa.key" ]]; then
        openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
        openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
        chmod 600 "$pki/sa.key"
    fi
    cert apiserver kube-apiserver "" \
        "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$service_ip${api_advertise:+,IP:$api_advertise}"
    cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
    cert admin kubernetes-admin system:masters
    cert controller-manager system:kube-controller-manager ""
    cert scheduler system:kube-scheduler ""
    kubeconfig admin admin
    kubeconfig controller-manager controller-manager
    kubeconfig scheduler scheduler
    # Metadata of every request (user, verb, resource, response code); bodies are not logged.
    cat >"$state/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/livez*", "/readyz*", "/version"]
  - level: Metadata
EOF
}

# --- up / down / status -------------------------------------------------------------------------
api_ready() {
    [[ -f "$state/admin.kubeconfig" ]] || return 1
    curl -fsS --max-time 3 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" \
        "https://127.0.0.1:$api_port/readyz" >/dev/null 2>&1
}

wait_for() {
    local what=$1 deadline=$((SECONDS + timeout_s))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || die 1 "$what not ready after ${timeout_s}s; see $logs/"
        sleep 0.5
    done
}

etcd_ready() {
    curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" 2>/dev/null | grep -q '"health":"true"'
}

default_service_account() {
    kubectl_admin -n default get serviceaccount default -o name >/dev/null 2>&1
}

up() {
    require_root up
    local arg clean=0
    for arg in "$@"; do
        case "$arg" in
            --clean) clean=1 ;;
            --control-plane-only) with_node=0 ;;
            *) die 2 "unknown argument '$arg' to up (--clean, --control-plane-only)" ;;
        esac
    done
    [[ "$with_node" == 0 || "$with_node" == 1 ]] || die 2 "P2P_CLUSTER_NODE must be 0 or 1, not '$with_node'"
    ((clean == 0)) || down
    for tool in openssl curl setsid; do
        command -v "$tool" >/dev/null 2>&1 || die 3 "$tool not found on PATH (Debian: openssl, curl, util-linux)"
    done
    bash "$here/build-kubernetes.sh" >&2 || die 1 "building the Kubernetes binaries failed"
    BIN=$(bin_dir)
    # With a node, pods reach the API server through the `kubernetes` Service, whose endpoint is the
    # advertised address: the node's (a loopback address is never published as an endpoint), so the
    # API server listens on every address. Control plane only: loopback.
    api_bind=127.0.0.1 api_advertise=
    if [[ "$with_node" == 1 ]]; then
        api_bind=0.0.0.0 api_advertise=$(node_ip)
        [[ "$api_advertise" != 127.* ]] || die 1 "the node has no address but loopback (P2P_CLUSTER_NODE_IP sets one)"
    fi
    generate

    start etcd --name p2p-sensor --data-dir "$state/etcd" \
        --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
        --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
        --initial-cluster "p2p-sensor=http://127.0.0.1:$((etcd_port + 1))" \
        --listen-metrics-urls "http://127.0.0.1:$((etcd_port + 2))" --log-level warn
    wait_for etcd etcd_ready

    # Admission: the plugins enabled by default in 1.34 (NamespaceLifecycle, ServiceAccount,
    # DefaultStorageClass, ResourceQuota, MutatingAdmissionWebhook, ValidatingAdmissionPolicy,
    # ValidatingAdmissionWebhook, PodSecurity, ...) plus NodeRestriction, as k3s/k3d run it.
    # The kubelet is reached at the node's InternalIP first (as k3s does): its hostname may resolve
    # to 127.0.0.1 (/etc/hosts here), and the API server refuses to proxy to loopback ("address not
    # allowed" for /api/v1/nodes/NODE/proxy/..., e.g. the kubelet's /metrics/resource).
    start kube-apiserver --bind-address "$api_bind" --advertise-address "${api_advertise:-127.0.0.1}" --secure-port "$api_port" \
        --etcd-servers "http://127.0.0.1:$etcd_port" \
        --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
        --client-ca-file "$pki/ca.crt" \
        --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
        --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
        --kubelet-preferred-address-types InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP \
        --service-account-issuer "https://kubernetes.default.svc.cluster.local" \
        --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
        --service-cluster-ip-range "$service_cidr" \
        --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
        --allow-privileged=true --enable-priority-and-fairness=true \
        --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$logs/audit.log" \
        --audit-log-maxsize 200 --audit-log-maxbackup 2 \
        --profiling=false --v=1
    wait_for kube-apiserver api_ready

    # No serving port (--secure-port 0): nothing scrapes them here, and a second cluster on other
    # API/etcd ports must not collide with this one.
    start kube-controller-manager --kubeconfig "$state/controller-manager.kubeconfig" \
        --secure-port 0 --leader-elect=false \
        --use-service-account-credentials --service-account-private-key-file "$pki/sa.key" \
        --root-ca-file "$pki/ca.crt" --cluster-signing-cert-file "$pki/ca.crt" \
        --cluster-signing-key-file "$pki/ca.key" --service-cluster-ip-range "$service_cidr" \
        --cluster-cidr "$cluster_cidr" --allocate-node-cidrs=true --controllers '*' --v=1
    start kube-scheduler --kubeconfig "$state/scheduler.kubeconfig" --secure-port 0 --leader-elect=false --v=1

    # The controller manager's token controller creates the `default` ServiceAccount of each
    # namespace: a cluster where it exists can run workloads that need one.
    wait_for "ServiceAccount default/default" default_service_account
    if [[ "$with_node" == 1 ]]; then
        node_up
        touch "$state/node"
        dns_up
        test_image_up
        images_import --if-saved
    fi
    log "ready: $(kubectl_admin version 2>/dev/null | tail -n 1)"
    log "use it: eval \"\$(scripts/cluster.sh env)\"; kubectl get --raw /readyz"
}

down() {
    require_root down
    local name i
    node_down
    for ((i = ${#components[@]} - 1; i >= 0; i--)); do
        stop "${components[i]}"
    done
    # Processes whose pid file was lost: anything still running a binary with our state directory
    # on its command line.
    if [[ -d "$state" ]]; then
        for name in "${components[@]}" "${node_components[@]}"; do
            pkill -KILL -f "^[^ ]*/$name .*$state" 2>/dev/null || true
        done
    fi
    rm -rf "$state"
    log "down: $state removed"
}

status() {
    local name pid rc=0 names=("${components[@]}")
    [[ -f "$state/node" || -f "$run/kubelet.pid" ]] && names+=("${node_components[@]}")
    for name in "${names[@]}"; do
        if pid=$(pid_of "$name"); then
            printf '%-24s running (pid %s)\n' "$name" "$pid"
        else
            printf '%-24s stopped\n' "$name"
            rc=1
        fi
    done
    if api_ready; then
        printf '%-24s ready (https://127.0.0.1:%s)\n' "api /readyz" "$api_port"
    else
        printf '%-24s not ready\n' "api /readyz"
        rc=1
    fi
    if [[ -f "$state/node" ]]; then
        if BIN=$(bin_dir) node_ready; then
            printf '%-24s Ready\n' "node $node_name"
        else
            printf '%-24s not Ready\n' "node $node_name"
            rc=1
        fi
    fi
    return "$rc"
}

load_images() {
    require_root load-images
    local repo version
    repo="$(cd "$here/.." && pwd)"
    for tool in debootstrap buildah rustc; do
        command -v "$tool" >/dev/null || die 3 "$tool not found (scripts/install-prereqs.sh installs it)"
    done
    version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$repo/charts/p2p-sensor-operator/Chart.yaml")
    [[ -n "$version" ]] || die 1 "no appVersion in charts/p2p-sensor-operator/Chart.yaml"
    images_build "$repo" "$version"
    if containerd_ready; then
        images_import
    else
        log "the node's containerd is not running: images saved in $images_dir, not imported (run up, then load-images again)"
    fi
}

case "${1:-}" in
    up)
        shift
        up "$@"
        ;;
    down) down ;;
    status) status ;;
    env)
        # shellcheck disable=SC2016 # $PATH is for the shell that evals this line
        printf 'export PATH=%q:"$PATH"\n' "$(bin_dir)"
        printf 'export KUBECONFIG=%q\n' "$state/admin.kubeconfig"
        ;;
    kubeconfig) echo "$state/admin.kubeconfig" ;;
    load-images) load_images ;;
    -h | --help) usage ;;
    *)
        usage >&2
        exit 2
        ;;
esac
