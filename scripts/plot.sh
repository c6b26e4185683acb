#!/usr/bin/env bash
# Runs scripts/plot.py in its own virtualenv, created on first use (or when
# scripts/requirements-plots.txt changed) at
# ${P2P_PLOTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/plots-venv}.
#
#   scripts/plot.sh --db data/sensor.sqlite --nat-bench target/nat-matrix/bench.json --out plots/
#   scripts/plot.sh --results results/ --out plots/
#   scripts/plot.sh --setup-only        # create/refresh the venv, plot nothing
#
# Needs python3 with the venv module (Debian/Ubuntu: apt-get install python3-venv) and either
# network access to PyPI or pip's cache for the first install.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
requirements="$here/requirements-plots.txt"
venv="${P2P_PLOTS_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/p2p-sensor-operator/plots-venv}"
stamp="$venv/.requirements.sha256"

die() {
    echo "plot.sh: $*" >&2
    exit 1
}

command -v python3 >/dev/null || die "python3 not found (install python3 and python3-venv)"
want=$(sha256sum "$requirements" | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]] ||
    ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    echo "plot.sh: installing $requirements into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    python3 -m venv "$venv" || die "python3 -m venv failed (Debian/Ubuntu: apt-get install python3-venv)"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" ||
        die "pip install -r $requirements failed (network or PyPI unreachable?)"
    echo "$want" >"$stamp"
fi

if [[ "${1:-}" == "--setup-only" ]]; then
    echo "plot.sh: venv ready: $venv ($("$venv/bin/python" -c 'import matplotlib; print("matplotlib", matplotlib.__version__)'))"
    exit 0
fi
MPLBACKEND=Agg exec "$venv/bin/python" "$here/plot.py" "$@"
