#!/usr/bin/env bash
# Writes the seed inputs of the fuzz targets into fuzz/seeds/<target>/: real protobuf encodings,
# made by protoc --encode from the text-format messages below against the real .proto files
# (kaspa-p2p-lib 2.1.0's p2p.proto for `version` and `addresses`, report/proto for `report`),
# and TOML files for `config` (the `sensor config` printout plus hand-written ones).
# fuzz/corpus/<target>/ is these seeds after `cargo fuzz cmin` (docs/fuzzing.md).
# Usage: fuzz/seed-corpus.sh   (needs protoc, python3, cargo; run from anywhere). SENSOR_BIN=PATH
# takes `sensor config` from an already built binary instead of `cargo run -p sensor`.
set -euo pipefail

fuzz_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$fuzz_dir")"
out="$fuzz_dir/seeds"

# kaspa-p2p-lib's proto/ directory, wherever cargo unpacked the crate.
kaspa_manifest=$(cargo metadata --format-version 1 --manifest-path "$fuzz_dir/Cargo.toml" |
    python3 -c 'import json, sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "kaspa-p2p-lib"))')
kaspa_proto="$(dirname "$kaspa_manifest")/proto"
report_proto="$repo/report/proto"

# encode TARGET NAME PROTO_DIR PROTO_FILE MESSAGE TEXT: one seed file from a text-format message.
encode() {
    local target=$1 name=$2 dir=$3 file=$4 message=$5 text=$6
    mkdir -p "$out/$target"
    printf '%s\n' "$text" | protoc -I"$dir" --encode="$message" "$file" >"$out/$target/$name"
}

rm -rf "$out"

# --- version: protowire.VersionMessage --------------------------------------------------------
v() { encode version "$1" "$kaspa_proto" p2p.proto protowire.VersionMessage "$2"; }
id='id: "\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef"'
v sensor-devnet "protocolVersion: 11 timestamp: 1763730000000 address { ip: \"\xcb\x00\x71\x07\" port: 16611 } $id userAgent: \"/kaspa-sensor:0.1.0/\" disableRelayTx: true network: \"kaspa-devnet\""
v kaspad-mainnet "protocolVersion: 7 services: 1 timestamp: 1763730000000 $id userAgent: \"/kaspad:2.1.0/\" network: \"kaspa-mainnet\""
v ipv6-address "protocolVersion: 11 address { timestamp: 1 ip: \"\x2a\x01\x04\xf8\0\0\0\0\0\0\0\0\0\0\0\x01\" port: 16111 } $id userAgent: \"/kaspad:2.1.0/\" network: \"kaspa-mainnet\" subnetworkId { bytes: \"\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\" }"
v ipv4-mapped "protocolVersion: 11 address { ip: \"\0\0\0\0\0\0\0\0\0\0\xff\xff\x01\x02\x03\x04\" port: 16211 } $id network: \"kaspa-testnet-10\""
v id-15-bytes 'protocolVersion: 11 id: "\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f" network: "kaspa-mainnet"'
v ip-3-bytes "protocolVersion: 11 address { ip: \"\x01\x02\x03\" port: 1 } $id network: \"kaspa-mainnet\""
v port-70000 "protocolVersion: 11 address { ip: \"\x01\x02\x03\x04\" port: 70000 } $id network: \"kaspa-mainnet\""
# 300 two-byte characters: kaspa-p2p-lib truncates at 256 bytes, on a character boundary.
long_ua=$(python3 -c 'print("\\303\\251" * 300)')
v long-user-agent "protocolVersion: 11 $id userAgent: \"$long_ua\" network: \"kaspa-mainnet\""

# --- addresses: protowire.AddressesMessage ----------------------------------------------------
a() { encode addresses "$1" "$kaspa_proto" p2p.proto protowire.AddressesMessage "$2"; }
na() { printf 'addressList { timestamp: 1763730000 ip: "%s" port: %s } ' "$1" "$2"; }
a mixed "$(na '\x08\x08\x08\x08' 16111)$(na '\x0a\x01\x02\x03' 16111)$(na '\x7f\0\0\x05' 16611)$(na '\xa9\xfe\x01\x01' 16111)$(na '\xe0\0\0\x01' 16111)$(na '\xff\xff\xff\xff' 16111)$(na '\x64\x40\0\x01' 16111)$(na '\xcb\0\x71\x07' 16611)$(na '\x08\x08\x08\x08' 0)$(na '\x08\x08\x08\x08' 16111)"
a ipv6 "$(na '\x2a\x01\x04\xf8\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)$(na '\0\0\0\0\0\0\0\0\0\0\xff\xff\x01\x02\x03\x04' 16111)$(na '\xfe\x80\0\0\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)$(na '\xfc\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)$(na '\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)$(na '\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)$(na '\xff\x02\0\0\0\0\0\0\0\0\0\0\0\0\0\x01' 16111)"
a malformed "$(na '\x01\x02\x03' 16111)$(na '' 16111)$(na '\x01\x02\x03\x04' 70000)$(na '\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11' 1)"

# --- report: p2psensor.report.v1.Report and PushAck -------------------------------------------
r() { encode report "$1" "$report_proto" p2psensor/report/v1/report.proto "p2psensor.report.v1.$2" "$3"; }
owner='owner { namespace: "default" kind: "SensorFleet" name: "fleet" }'
r fleet-peers Report "$owner sender: \"fleet-0\" sensor_id: \"fleet-0\" network: \"mainnet\" started_at_unix_ms: 1763730000000 sequence: 3 generated_at_unix_ms: 1763730030000 agent: \"sensor/0.1.0\" peers { public: 2 private: 1 unknown: 1 unclassified: 1 connections_accepted: 9 connections_rejected: 1 top_user_agents { user_agent: \"/kaspad:2.1.0/\" peers: 2 } peer_ids: \"\x01\x23\x45\x67\x89\xab\xcd\xef\x01\x23\x45\x67\x89\xab\xcd\xef\" peer_ids: \"\xfe\xdc\xba\x98\x76\x54\x32\x10\xfe\xdc\xba\x98\x76\x54\x32\x10\" peer_ids_complete: true distinct_peers: 2 }"
r relay Report "owner { namespace: \"default\" kind: \"RelayNode\" name: \"edge\" } sender: \"edge-0\" agent: \"sensor/0.1.0\" relay { peer_id: \"12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\" listen_addrs: \"/ip4/203.0.113.7/tcp/4001\" listen_addrs: \"/ip4/203.0.113.7/udp/4001/quic-v1\" reservations_active: 2 circuits_active: 1 reservations_accepted_total: 5 circuits_total: 3 reachability: \"public\" }"
r hole-punch Report "$owner sender: \"fleet-1\" hole_punch { attempts: 10 successes: 7 failures: 3 by_transport { transport: \"tcp\" attempts: 6 successes: 4 } by_transport { transport: \"quic\" attempts: 4 successes: 3 } time_to_direct_ms_buckets: [0, 1, 2, 3, 1, 0, 0, 0, 0, 0, 0, 0, 0] relay: \"edge\" peer_id: \"12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN\" reservation_held: true reachability: \"private-cone\" kaspa_handshakes: 5 kaspa_handshake_failures: 1 }"
r crawl Report "$owner sender: \"fleet-crawl-0\" crawl { network: \"kaspa-mainnet\" crawls: 4 known_nodes: 812 reachable_nodes: 240 last_visited: 800 last_reachable: 238 last_duration_ms: 61000 last_finished_unix_ms: 1763730000000 last_unreachable_by_class { error_class: \"timeout\" visits: 400 } last_unreachable_by_class { error_class: \"refused\" visits: 162 } }"
# A sensor over MAX_EXACT_PEER_IDS peers sends only the sketch: 4096 registers, each <= 53.
sketch=$(python3 -c 'print("".join("\\%03o" % ((i * 7) % 6) for i in range(4096)))')
r sketch Report "$owner sender: \"fleet-2\" peers { public: 5000 peer_ids_complete: false peer_id_sketch: \"$sketch\" distinct_peers: 5000 }"
r push-ack PushAck 'next_report_after_ms: 30000'
# Saturated buckets (the collector sums them with saturating adds): overflowed the u64 total of
# sensor_report::bucket_quantile_ms (a panic with debug assertions) until it summed in u128.
r bucket-overflow Report "$owner sender: \"fleet-1\" hole_punch { attempts: 2 successes: 2 time_to_direct_ms_buckets: [18446744073709551615, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0] }"

# --- config: sensor.toml, then (after a NUL byte) SENSOR_* variables, one NAME=VALUE a line ---
mkdir -p "$out/config"
if [[ -n "${SENSOR_BIN:-}" ]]; then
    "$SENSOR_BIN" config >"$out/config/default"
else
    cargo run --quiet --manifest-path "$repo/Cargo.toml" -p sensor -- config >"$out/config/default"
fi
cat >"$out/config/listen" <<'TOML'
network = "testnet-10"
data_dir = "/var/lib/sensor"
sensor_id = "sensor-a"

[listen]
address = "0.0.0.0:16211"
external_address = "203.0.113.7:16211"
max_peers_per_ip = 2
hold_time_secs = 0

[storage]
batch_size = 100
queue_capacity = 1000
TOML
cat >"$out/config/report-relay-punch" <<'TOML'
[report]
endpoint = "http://collector.p2p-sensor.svc:7070"
owner_namespace = "default"
owner_kind = "SensorFleet"
owner_name = "fleet"

[relay]
listen_tcp = "0.0.0.0:4001"
listen_quic = "0.0.0.0:4001"
external_addresses = ["/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"]

[punch]
relay = "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
targets = ["12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
attempts = 3
TOML
cat >"$out/config/crawl-export" <<'TOML'
[crawl]
seeds = ["198.51.100.41:16611", "[2001:db8::1]:16111"]
seed_dns = ["seeder1.kaspad.net"]
interval_secs = 600
min_revisit_secs = 300
max_revisit_secs = 3600

[export]
sink = "http"
endpoint = "https://events.example.invalid/ingest"
bearer_token_env = "EXPORT_TOKEN"
gzip = false
TOML
printf 'sensor_id = "from-file"\n\0SENSOR_NETWORK=devnet\nSENSOR_LISTEN_MAX_PEERS_PER_IP=8\nSENSOR_PUNCH_TARGETS=a,b\nSENSOR_EXPORT_GZIP=0\nSENSOR_SERVICE_HOST=10.0.0.1\n' >"$out/config/env"
printf 'listen = [\n' >"$out/config/invalid-toml"
printf '[listen]\nmax_peer = 3\n' >"$out/config/unknown-key"

for target in "$out"/*/; do
    printf '%s: %s seeds, %s bytes\n' "$(basename "$target")" "$(find "$target" -type f | wc -l)" "$(du -sb "$target" | cut -f1)"
done
