#!/usr/bin/env bash
# Checks that vendor/libp2p-swarm-0.48.0 is the published crates.io release except for the one
# requirement vendor/README.md names: fetches libp2p-swarm 0.48.0 with cargo (a scratch package
# that depends on it, no [patch]), diffs the two trees, and fails on any difference other than the
# wasm-only `wasm-bindgen-futures` requirement in Cargo.toml.
#
# Usage: scripts/check-vendor.sh        Exit codes: 0 identical but for that line, 1 otherwise.
set -euo pipefail

log() { printf '[check-vendor] %s\n' "$*"; }

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
vendored=vendor/libp2p-swarm-0.48.0
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

mkdir -p "$scratch/src"
cat >"$scratch/Cargo.toml" <<'EOF'
[package]
name = "vendor-check"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
libp2p-swarm = "=0.48.0"

[workspace]
EOF
touch "$scratch/src/lib.rs"
# The published crate, unpacked by cargo into its registry source directory.
(cd "$scratch" && cargo fetch --quiet)
published=$(cd "$scratch" && cargo metadata --format-version 1 --quiet |
    python3 -c 'import json, sys, os; m = json.load(sys.stdin); print(next(os.path.dirname(p["manifest_path"]) for p in m["packages"] if p["name"] == "libp2p-swarm"))')
[[ -f "$published/Cargo.toml" ]] || {
    log "ERROR: cargo did not unpack libp2p-swarm 0.48.0 (looked in '$published')"
    exit 1
}

# The registry copy carries .cargo-ok and .cargo_vcs_info.json; the vendored copy does not.
diffs=$(diff -r -x .cargo-ok -x .cargo_vcs_info.json "$published" "$vendored" || true)
expected='--- 
<<< version = "=0.4.58"
>>> # p2p-sensor-operator: was "=0.4.58"; see vendor/README.md.
>>> version = "0.4.50"'
actual=$(printf '%s\n' "$diffs" | grep -E '^[<>]' | sed -e 's/^</<<</' -e 's/^>/>>>/' || true)
if [[ "$(printf -- '--- \n%s' "$actual")" != "$expected" ]]; then
    log "ERROR: $vendored differs from the published libp2p-swarm 0.48.0 ($published) beyond the one requirement:"
    printf '%s\n' "$diffs" >&2
    exit 1
fi
log "$vendored = published libp2p-swarm 0.48.0 except Cargo.toml's wasm-bindgen-futures requirement (=0.4.58 -> 0.4.50)"
