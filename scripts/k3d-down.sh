#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Deletes the k3d cluster of scripts/k3d-up.sh (and with it everything in it). Idempotent.
set -euo pipefail

export SCRIPT_NAME=k3d-down
# Sourced helpers (shellcheck -x follows them; plain shellcheck checks them as their own inputs).
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
# shellcheck disable=SC1091
source "$(dirname "${BASH_SOURCE[0]}")/lib/lab.sh"

usage() {
    cat <<USAGE
Usage: scripts/k3d-down.sh [-h|--help]

Deletes the k3d cluster $K3D_CLUSTER (K3D_CLUSTER to change) with everything in it; the images
stay in Docker and results/ stays on disk. Nothing to do when the cluster does not exist.
Exit codes: 0 done (or nothing to do), 1 k3d failed, 2 usage error, 3 docker/k3d missing.
USAGE
}

while (($# > 0)); do
    case "$1" in
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "$EXIT_USAGE" "unknown argument: $1" ;;
    esac
done

require_tools docker k3d
require_docker_daemon
if cluster_exists; then
    log "deleting k3d cluster $K3D_CLUSTER"
    k3d cluster delete "$K3D_CLUSTER"
else
    log "k3d cluster $K3D_CLUSTER does not exist: nothing to do"
fi
