#!/usr/bin/env bash
# Installs what building and testing this workspace needs, and nothing that is already there:
#   - Debian packages: protoc (kaspa-p2p-lib's build), clang/libclang (kaspad's RocksDB build),
#     iproute2/nftables/iptables/conntrack (the network-namespace lab), sqlite3, curl;
#   - rustup components rustfmt and clippy;
#   - kaspad 2.1.0 (the real peer of the end-to-end test), cached in ~/.cargo/bin.
# Idempotent: a second run prints "present" for every step and changes nothing.
set -euo pipefail

KASPAD_VERSION="2.1.0"
DEB_PACKAGES=(protobuf-compiler clang libclang-dev iproute2 nftables iptables conntrack sqlite3 curl ca-certificates)

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
log "done"
