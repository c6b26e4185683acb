#!/usr/bin/env python3
"""Turns what scripts/experiment.sh collected into CSV (stdlib only; no jq needed).

    results.py csv RESOURCES_JSON OUT_DIR   `kubectl get sensorfleets,relaynodes -o json` ->
                                            fleets.csv, sensors.csv, relays.csv, relay_transports.csv
    results.py metrics-targets PODS_JSON    `kubectl get pods -o json` -> one "NAMESPACE POD PORT
                                            CONTAINER" line per container port named *metrics

Layout of results/<UTC timestamp>/ (docs/experiments.md):
    run.json              scenario, parameters, netem decision, start/end times
    resources.json        kubectl get sensorfleets,relaynodes -o json (the raw status)
    pods.json             kubectl get pods -o json of the namespace
    fleets.csv            one row per SensorFleet: sensors and peers by class (public/private/unknown)
    sensors.csv           one row per sensor of a fleet (.status.sensorSummaries)
    relays.csv            one row per RelayNode: reservations, hole-punch attempts/successes/rate,
                          time to direct connection p50/p95
    relay_transports.csv  one row per RelayNode and transport (tcp, quic)
    metrics/POD-PORT.prom each sensor/sidecar/relay /metrics, scraped through the API server proxy
"""

import csv
import json
import os
import sys

FLEET_COLUMNS = [
    "namespace", "name", "network", "ready", "sensors_desired", "sensors_ready", "sensors_reporting",
    "peers_public", "peers_private", "peers_unknown", "peers_unique", "crawl_known_nodes",
    "crawl_reachable_nodes", "last_report_time",
]
SENSOR_COLUMNS = ["namespace", "fleet", "sensor", "reporting", "public", "private", "unknown", "last_report_time"]
RELAY_COLUMNS = [
    "namespace", "name", "ready", "peer_id", "reservations_active", "circuits_active", "attempts",
    "successes", "failures", "success_rate", "time_to_direct_p50_ms", "time_to_direct_p95_ms",
    "kaspa_handshakes", "kaspa_handshake_failures", "last_report_time",
]
TRANSPORT_COLUMNS = ["namespace", "relay", "transport", "attempts", "successes", "success_rate"]


def _ready(status):
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status", "")
    return ""


def _value(value):
    """CSV cell: absent = empty, booleans as true/false."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def rows(document):
    """(fleets, sensors, relays, transports): lists of dicts keyed by the *_COLUMNS names."""
    items = document.get("items") if document.get("kind") == "List" or "items" in document else [document]
    fleets, sensors, relays, transports = [], [], [], []
    for item in items or []:
        kind = item.get("kind")
        meta = item.get("metadata") or {}
        spec = item.get("spec") or {}
        status = item.get("status") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        if kind == "SensorFleet":
            counts, peers, crawl = status.get("sensors") or {}, status.get("peers") or {}, status.get("crawl") or {}
            fleets.append({
                "namespace": namespace, "name": name, "network": spec.get("network"),
                "ready": _ready(status), "sensors_desired": counts.get("desired"),
                "sensors_ready": counts.get("ready"), "sensors_reporting": counts.get("reporting"),
                "peers_public": peers.get("public"), "peers_private": peers.get("private"),
                "peers_unknown": peers.get("unknown"), "peers_unique": peers.get("uniqueAcrossFleet"),
                "crawl_known_nodes": crawl.get("knownNodes"), "crawl_reachable_nodes": crawl.get("reachableNodes"),
                "last_report_time": status.get("lastReportTime"),
            })
            for summary in status.get("sensorSummaries") or []:
                sensors.append({
                    "namespace": namespace, "fleet": name, "sensor": summary.get("name"),
                    "reporting": summary.get("reporting"), "public": summary.get("public"),
                    "private": summary.get("private"), "unknown": summary.get("unknown"),
                    "last_report_time": summary.get("lastReportTime"),
                })
        elif kind == "RelayNode":
            punch = status.get("holePunch") or {}
            relays.append({
                "namespace": namespace, "name": name, "ready": _ready(status), "peer_id": status.get("peerId"),
                "reservations_active": status.get("reservationsActive"),
                "circuits_active": status.get("circuitsActive"), "attempts": punch.get("attempts"),
                "successes": punch.get("successes"), "failures": punch.get("failures"),
                "success_rate": punch.get("successRate"),
                "time_to_direct_p50_ms": punch.get("timeToDirectP50Ms"),
                "time_to_direct_p95_ms": punch.get("timeToDirectP95Ms"),
                "kaspa_handshakes": punch.get("kaspaHandshakes"),
                "kaspa_handshake_failures": punch.get("kaspaHandshakeFailures"),
                "last_report_time": status.get("lastReportTime"),
            })
            for transport in punch.get("byTransport") or []:
                transports.append({
                    "namespace": namespace, "relay": name, "transport": transport.get("transport"),
                    "attempts": transport.get("attempts"), "successes": transport.get("successes"),
                    "success_rate": transport.get("successRate"),
                })
    return fleets, sensors, relays, transports


def write_csv(path, columns, records):
    with open(path, "w", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow({column: _value(record.get(column)) for column in columns})


def to_csv(resources_path, out_dir):
    with open(resources_path, encoding="utf-8") as f:
        document = json.load(f)
    fleets, sensors, relays, transports = rows(document)
    os.makedirs(out_dir, exist_ok=True)
    write_csv(os.path.join(out_dir, "fleets.csv"), FLEET_COLUMNS, fleets)
    write_csv(os.path.join(out_dir, "sensors.csv"), SENSOR_COLUMNS, sensors)
    write_csv(os.path.join(out_dir, "relays.csv"), RELAY_COLUMNS, relays)
    write_csv(os.path.join(out_dir, "relay_transports.csv"), TRANSPORT_COLUMNS, transports)
    return len(fleets), len(relays)


def metrics_targets(pods_path):
    """[(namespace, pod, port, container)] for every container port named `metrics` or `*-metrics`
    of a running pod."""
    with open(pods_path, encoding="utf-8") as f:
        document = json.load(f)
    targets = []
    for pod in document.get("items") or []:
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        if (pod.get("status") or {}).get("phase") != "Running":
            continue
        for container in spec.get("containers") or []:
            for port in container.get("ports") or []:
                if str(port.get("name", "")).endswith("metrics"):
                    targets.append((meta.get("namespace", ""), meta.get("name", ""), port["containerPort"], container.get("name", "")))
    return targets


def main(argv):
    if len(argv) == 3 and argv[0] == "csv":
        fleets, relays = to_csv(argv[1], argv[2])
        print(f"{fleets} fleet(s), {relays} relay(s) -> {argv[2]}")
        return 0
    if len(argv) == 2 and argv[0] == "metrics-targets":
        for target in metrics_targets(argv[1]):
            print(*target)
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
