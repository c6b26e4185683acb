#!/usr/bin/env bash
# Fuzz smoke run (issue 7): builds the libFuzzer targets of fuzz/ (cargo-fuzz) once, then fuzzes
# each for SECONDS_PER_TARGET seconds (libFuzzer -max_total_time) from the committed corpus
# fuzz/corpus/<target>/ plus a corpus kept across runs outside the clone. Fails when any target
# crashes — a panic, an integer overflow (built with debug assertions), an input running over 10 s
# or an RSS over 2 GiB — and names the input that did it (kept in fuzz/artifacts/<target>/).
#
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]     (default 60; docs/fuzzing.md)
# Environment:
#   FUZZ_TARGET_DIR  cargo target directory, kept for the next run (a cold build took 30 min on 2
#                    shared cores, a warm one seconds); default ~/.cache/p2p-sensor-fuzz/target
#   FUZZ_WORK_DIR    the grown corpus and the per-target logs; default ~/.cache/p2p-sensor-fuzz/work
#   FUZZ_TARGETS     space-separated subset of `cargo fuzz list`; default all
#   FUZZ_SANITIZER   cargo fuzz --sanitizer: none (default: the parsers under test are safe Rust,
#                    where a bad index already panics) or address (ASan, for unsafe code below)
# Exit codes: 0 no crash, 1 a target crashed or the build failed, 2 usage error.
# Toolchain: nightly when `rustup toolchain list` has one, else the default toolchain with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags). Installs cargo-fuzz when missing.
set -euo pipefail

# The version docs/fuzzing.md's commands assume; installed below when missing (not a CI prerequisite).
CARGO_FUZZ_VERSION="0.13.2"

log() { printf '[fuzz-smoke] %s\n' "$*"; }
die() {
    log "ERROR: $*" >&2
    exit 1
}
usage_error() {
    log "ERROR: $* (usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET])" >&2
    exit 2
}

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
(($# <= 1)) || usage_error "one argument at most"
seconds="${1:-60}"
[[ "$seconds" =~ ^[1-9][0-9]{0,4}$ ]] || usage_error "SECONDS_PER_TARGET must be 1..99999, got '$seconds'"

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-fuzz"
target_dir="${FUZZ_TARGET_DIR:-$cache/target}"
work_dir="${FUZZ_WORK_DIR:-$cache/work}"
sanitizer="${FUZZ_SANITIZER:-none}"
mkdir -p "$target_dir" "$work_dir"

# --- cargo-fuzz and the toolchain ---------------------------------------------------------------
if cargo fuzz --version 2>/dev/null | grep -q "^cargo-fuzz $CARGO_FUZZ_VERSION\b"; then
    log "cargo-fuzz $CARGO_FUZZ_VERSION: present"
else
    log "cargo-fuzz $CARGO_FUZZ_VERSION: installing (cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION --locked)"
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi
toolchain=()
if command -v rustup >/dev/null 2>&1 && rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly)
    log "toolchain: nightly ($(rustc +nightly --version))"
else
    export RUSTC_BOOTSTRAP=1
    log "toolchain: $(rustc --version) with RUSTC_BOOTSTRAP=1 (no nightly installed)"
fi
fuzz_args=(--release --debug-assertions --sanitizer "$sanitizer" --target-dir "$target_dir" --fuzz-dir fuzz)

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list --fuzz-dir fuzz)
fi
((${#targets[@]} > 0)) || die "no fuzz targets (cargo fuzz list --fuzz-dir fuzz printed none)"

# --- build all targets once ---------------------------------------------------------------------
log "building ${targets[*]} (sanitizer $sanitizer, debug assertions) into $target_dir"
started=$SECONDS
cargo "${toolchain[@]}" fuzz build "${fuzz_args[@]}"
log "built in $((SECONDS - started)) s"
# The binaries are run directly: `cargo fuzz run` would rebuild first whenever a source changed.
host=$(rustc "${toolchain[@]}" -vV | sed -n 's/^host: //p')
bin_dir="$target_dir/$host/release"

# --- run each target ----------------------------------------------------------------------------
failed=()
summary=()
for target in "${targets[@]}"; do
    [[ -d "fuzz/corpus/$target" ]] || die "no committed corpus fuzz/corpus/$target"
    grown="$work_dir/corpus/$target"
    target_log="$work_dir/$target.log"
    mkdir -p "$grown" "fuzz/artifacts/$target"
    log "$target: fuzzing for $seconds s (corpus fuzz/corpus/$target + $grown; log $target_log)"
    # The first corpus directory receives the new inputs; the committed one is only read.
    # -timeout: one input over 10 s is a hang; -rss_limit_mb: more than 2 GiB is a leak or a bomb.
    [[ -x "$bin_dir/$target" ]] || die "cargo fuzz build left no $bin_dir/$target"
    if "$bin_dir/$target" -artifact_prefix="fuzz/artifacts/$target/" -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -print_final_stats=1 "$grown" "fuzz/corpus/$target" >"$target_log" 2>&1; then
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$target_log" | tail -n 1)
        rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$target_log" | tail -n 1)
        cov=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+' "$target_log" | tail -n 1 || true)
        summary+=("$target: ok, ${execs:-?} runs, ${rate:-?} exec/s, ${cov:-no coverage line}")
        log "${summary[-1]}"
    else
        failed+=("$target")
        summary+=("$target: FAILED")
        log "$target: FAILED; the end of $target_log:"
        tail -n 60 "$target_log" >&2
        crash=$(grep -Eo "fuzz/artifacts/$target/[a-z-]+-[0-9a-f]+" "$target_log" | tail -n 1 || true)
        if [[ -n "$crash" && -f "$crash" ]]; then
            log "$target: input $crash ($(stat -c %s "$crash") bytes, hex below); reproduce with:"
            log "  $bin_dir/$target $crash"
            log "  or: cargo ${toolchain[*]} fuzz run ${fuzz_args[*]} $target $crash"
            od -A x -t x1z -v "$crash" | head -n 64 >&2 || true
        fi
    fi
done

log "summary (${seconds} s per target):"
printf '  %s\n' "${summary[@]}"
if ((${#failed[@]} > 0)); then
    die "${#failed[@]} target(s) crashed: ${failed[*]}; keep each crash input in fuzz/corpus/<target>/ once fixed"
fi
log "all ${#targets[@]} targets ran $seconds s without a crash"
