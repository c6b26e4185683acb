#!/usr/bin/env bash
# Builds the real Kubernetes binaries the cluster of scripts/cluster.sh runs, from upstream Go
# modules on the Go module proxy, and caches them by version so that a later run only links what is
# missing:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
#                          k8s.io/kubernetes (scripts/kube/kubernetes/go.mod: every staging module
#                          replaced by its published v0.<minor>.<patch>, as upstream's own
#                          hack/local-up-cluster.sh binaries are built from the same sources)
#   etcd                   go.etcd.io/etcd/server/v3 etcdmain (scripts/kube/etcd)
#   helm                   helm.sh/helm/v4/cmd/helm (scripts/kube/helm)
#   coredns                github.com/coredns/coredns (scripts/kube/coredns): the cluster DNS,
#                          run as a pod from an image scripts/cluster.sh makes of this binary
# Each module is built with CGO_ENABLED=0; the Kubernetes binaries carry their version in the
# ldflags (else nodes and `kubectl version` report v0.0.0-master).
#
# Usage: scripts/build-kubernetes.sh [--print-bin-dir|--print-kubernetes-version]
#   --print-bin-dir             print the directory holding the binaries (building nothing) and exit
#   --print-kubernetes-version  print the Kubernetes version built (e.g. v1.34.4) and exit
# Environment:
#   P2P_KUBE_CACHE    cache root; default ~/.cache/p2p-sensor-operator/kube. Each module's binaries
#                     go to <root>/<module>-<version>-<hash of its go.mod and go.sum>/, then are linked
#                     into <root>/bin, so a changed go.mod never reuses a stale build.
#   P2P_KUBE_BINARIES space-separated subset to build (default: all of the above)
# Exit codes: 0 built or present, 1 a build failed, 2 usage error.
# Cold build on 2 cores: see docs/kubernetes.md, "Real Kubernetes"; Go's build cache (~/.cache/go-build)
# shares the packages the binaries have in common.
set -euo pipefail

KUBERNETES_VERSION="v1.34.4"
ETCD_VERSION="v3.6.4"
HELM_VERSION="v4.3.2"
COREDNS_VERSION="v1.14.7"
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)

log() { printf '[build-kubernetes] %s\n' "$*"; }

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${P2P_KUBE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/kube}"
bin_dir="$cache/bin"

case "${1:-}" in
    --print-bin-dir)
        echo "$bin_dir"
        exit 0
        ;;
    --print-kubernetes-version)
        echo "$KUBERNETES_VERSION"
        exit 0
        ;;
    -h | --help)
        sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *)
        log "ERROR: unknown argument '$1' (usage: scripts/build-kubernetes.sh [--print-bin-dir|--print-kubernetes-version])" >&2
        exit 2
        ;;
esac

command -v go >/dev/null 2>&1 || {
    log "ERROR: go not found on PATH (Go >= 1.24 builds Kubernetes; helm $HELM_VERSION needs 1.26, which go fetches as a toolchain module)" >&2
    exit 1
}

wanted=("${KUBE_BINARIES[@]}" etcd helm coredns)
if [[ -n "${P2P_KUBE_BINARIES:-}" ]]; then
    read -r -a wanted <<<"$P2P_KUBE_BINARIES"
fi
want() {
    local b
    for b in "${wanted[@]}"; do [[ "$b" == "$1" ]] && return 0; done
    return 1
}

mkdir -p "$bin_dir"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -trimpath"

# build MODULE_DIR VERSION LDFLAGS BINARY=PACKAGE...
build() {
    local module=$1 version=$2 ldflags=$3
    shift 3
    local name key out missing=() pairs=("$@") pair bin
    name=$(basename "$module")
    key=$(cat "$module/go.mod" "$module/go.sum" | sha256sum | cut -c1-12)
    out="$cache/$name-$version-$key"
    for pair in "${pairs[@]}"; do
        bin=${pair%%=*}
        want "$bin" || continue
        if [[ -x "$out/$bin" ]]; then
            ln -sfn "$out/$bin" "$bin_dir/$bin"
        else
            missing+=("$pair")
        fi
    done
    if ((${#missing[@]} == 0)); then
        return 0
    fi
    mkdir -p "$out"
    for pair in "${missing[@]}"; do
        bin=${pair%%=*}
        local started=$SECONDS
        log "$bin $version: building ${pair#*=} (cache $out)"
        (cd "$module" && go build -ldflags "$ldflags" -o "$out/$bin.partial" "${pair#*=}")
        mv "$out/$bin.partial" "$out/$bin"
        ln -sfn "$out/$bin" "$bin_dir/$bin"
        log "$bin $version: built in $((SECONDS - started)) s"
    done
}

# The version stamps `kubectl version` and the nodes report (hack/lib/version.sh sets the same).
minor=${KUBERNETES_VERSION#v1.}
minor=${minor%%.*}
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
kube_pairs=()
for b in "${KUBE_BINARIES[@]}"; do kube_pairs+=("$b=k8s.io/kubernetes/cmd/$b"); done
build "$here/kube/kubernetes" "$KUBERNETES_VERSION" "$kube_ldflags" "${kube_pairs[@]}"
build "$here/kube/etcd" "$ETCD_VERSION" "-s -w" "etcd=."
build "$here/kube/helm" "$HELM_VERSION" "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" "helm=helm.sh/helm/v4/cmd/helm"
build "$here/kube/coredns" "$COREDNS_VERSION" "-s -w" "coredns=github.com/coredns/coredns"

for b in "${wanted[@]}"; do
    [[ -x "$bin_dir/$b" ]] || {
        log "ERROR: $b is not in $bin_dir after the build" >&2
        exit 1
    }
done
log "present in $bin_dir: ${wanted[*]}"
