#!/usr/bin/env bash
# CI check of the plots and dashboards (issue 6, "Prove it"):
#   1. sets up the plots venv (scripts/plot.sh) and runs scripts/plot.py on the in-repo lab data
#      (docs/examples/data/) into a temporary directory;
#   2. checks every expected PNG exists, is larger than 10 kB and is exactly 1200x700 px (read from
#      the PNG's IHDR chunk with the Python standard library);
#   3. checks every dashboards/*.json parses as JSON and is a dashboard (title, panels).
# Exits non-zero with a message naming what failed. The dashboards' metric names are checked
# against the code's registries by `cargo test -p sensor --test dashboards`.
#
#   scripts/check-observability.sh [--keep DIR]   # --keep: write the PNGs to DIR and keep them
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data="$root/docs/examples/data"
expected=(peers_by_class user_agents crawl_summary nat_matrix time_to_direct)
width=1200
height=700
min_bytes=10240

fail() {
    echo "check-observability: FAIL: $*" >&2
    exit 1
}

if [[ "${1:-}" == "--keep" ]]; then
    [[ -n "${2:-}" ]] || fail "--keep needs a directory"
    out=$2
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

for f in lab-sensor.sqlite nat-bench.json nat-matrix.json; do
    [[ -f "$data/$f" ]] || fail "missing example input $data/$f"
done

echo "check-observability: plotting $data into $out"
"$root/scripts/plot.sh" --db "$data/lab-sensor.sqlite" --nat-bench "$data/nat-bench.json" \
    --nat-bench "$data/nat-matrix.json" --out "$out" || fail "scripts/plot.sh exited $?"

python3 - "$out" "$width" "$height" "$min_bytes" "${expected[@]}" <<'PY' || fail "PNG checks (above)"
import os, struct, sys

out, width, height, min_bytes, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:]
bad = []
for name in names:
    path = os.path.join(out, name + ".png")
    if not os.path.isfile(path):
        bad.append(f"{name}.png: not written")
        continue
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(33)
    if len(head) < 33 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        bad.append(f"{name}.png: not a PNG (no signature/IHDR)")
        continue
    w, h = struct.unpack(">II", head[16:24])
    if size <= min_bytes:
        bad.append(f"{name}.png: {size} bytes, expected > {min_bytes}")
    if (w, h) != (width, height):
        bad.append(f"{name}.png: {w}x{h} px, expected {width}x{height}")
    print(f"check-observability: {name}.png {w}x{h} px, {size} bytes")
for b in bad:
    print(f"check-observability: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

python3 - "$root"/dashboards/*.json <<'PY' || fail "dashboard JSON checks (above)"
import json, sys

bad = []
if len(sys.argv) < 2 or sys.argv[1].endswith("*.json"):
    bad.append("no dashboards/*.json")
for path in sys.argv[1:]:
    try:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        bad.append(f"{path}: {e}")
        continue
    if not isinstance(d, dict) or not d.get("title") or not isinstance(d.get("panels"), list) or not d["panels"]:
        bad.append(f"{path}: not a Grafana dashboard (title, panels)")
        continue
    print(f"check-observability: {path.rsplit('/', 1)[-1]}: {d['title']!r}, {len(d['panels'])} panels")
for b in bad:
    print(f"check-observability: {b}", file=sys.stderr)
sys.exit(1 if bad else 0)
PY
echo "check-observability: OK"
