#!/usr/bin/env python3
"""Writes the Grafana dashboards in this directory (fleet-overview.json, probe-latency.json,
hole-punching.json) from the panel lists below. Edit here, then run

    python3 dashboards/generate.py

and commit the JSON. `cargo test -p sensor --test dashboards` checks every metric name against the
code's registries. Standard library only; the output is deterministic (sorted keys, 2-space indent).
"""

import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
DS = {"type": "prometheus", "uid": "${datasource}"}
# Sensor-pod selector: labels added by the PodMonitor / scrape config in this directory.
SEL = 'namespace=~"$namespace", fleet=~"$fleet", pod=~"$pod"'
NS = 'namespace=~"$namespace"'
RI = "$__rate_interval"


def variables(*, fleet=True, pod=True, probe_metric="sensor_connections_active"):
    out = [
        {
            "name": "datasource",
            "label": "Prometheus",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
        }
    ]

    def query_var(name, label, query):
        return {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": {"query": query, "refId": f"{name}-var"},
            "definition": query,
            "refresh": 2,
            "includeAll": True,
            "multi": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
            "regex": "",
        }

    out.append(query_var("namespace", "Namespace", f"label_values({probe_metric}, namespace)"))
    if fleet:
        out.append(query_var("fleet", "Fleet", f'label_values({probe_metric}{{{NS}}}, fleet)'))
    if pod:
        sel = NS + (', fleet=~"$fleet"' if fleet else "")
        out.append(query_var("pod", "Pod", f"label_values({probe_metric}{{{sel}}}, pod)"))
    return out


class Layout:
    """Places panels left to right, 24 columns wide, and numbers them."""

    def __init__(self):
        self.panels, self.x, self.y, self.row_h, self.next_id = [], 0, 0, 0, 1

    def _place(self, w, h):
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def _id(self):
        self.next_id += 1
        return self.next_id - 1

    def row(self, title):
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append(
            {"id": self._id(), "type": "row", "title": title, "collapsed": False, "panels": [],
             "gridPos": {"x": 0, "y": self.y, "w": 24, "h": 1}}
        )
        self.y += 1

    def panel(self, kind, title, targets, *, unit="short", w=12, h=8, description="", stack=False,
              fmt=None, decimals=None, max_=None, thresholds=None):
        refs = "ABCDEFGH"
        tgts = []
        for i, (expr, legend) in enumerate(targets):
            t = {"refId": refs[i], "datasource": DS, "expr": expr, "legendFormat": legend, "range": True}
            if fmt:
                t["format"] = fmt
            if kind == "stat":
                t["instant"] = False
            tgts.append(t)
        defaults = {"unit": unit}
        if decimals is not None:
            defaults["decimals"] = decimals
        if max_ is not None:
            defaults["max"] = max_
            defaults["min"] = 0
        if thresholds:
            defaults["thresholds"] = {"mode": "absolute", "steps": thresholds}
        if kind == "timeseries":
            defaults["custom"] = {
                "drawStyle": "line",
                "lineWidth": 1,
                "fillOpacity": 10 if stack else 0,
                "stacking": {"mode": "normal" if stack else "none", "group": "A"},
                "showPoints": "never",
            }
        p = {
            "id": self._id(),
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self._place(w, h),
            "targets": tgts,
            "fieldConfig": {"defaults": defaults, "overrides": []},
            "options": {},
        }
        if kind == "timeseries":
            p["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                            "tooltip": {"mode": "multi", "sort": "desc"}}
        elif kind == "stat":
            p["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                            "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        elif kind == "heatmap":
            p["options"] = {"calculate": False, "yAxis": {"unit": unit}, "cellGap": 1,
                            "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64}}
        elif kind == "bargauge":
            p["options"] = {"displayMode": "gradient", "orientation": "horizontal",
                            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}}
        return p

    def add(self, *args, **kwargs):
        self.panels.append(self.panel(*args, **kwargs))


def dashboard(uid, title, description, layout, templating, tags):
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["p2p-sensor"] + tags,
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["p2p-sensor"], "asDropdown": True, "title": "p2p-sensor"}],
        "templating": {"list": templating},
        "panels": layout.panels,
    }


def quantiles(metric, sel, by="", qs=(0.5, 0.9, 0.99)):
    by_l = f"le, {by}" if by else "le"
    suffix = f" {{{{{by}}}}}" if by else ""
    return [
        (f"histogram_quantile({q}, sum by ({by_l}) (rate({metric}_bucket{{{sel}}}[{RI}])))", f"p{int(q * 100)}{suffix}")
        for q in qs
    ]


def fleet_overview():
    L = Layout()
    L.row("Fleet (operator)")
    L.add("stat", "SensorFleets", [("sum(p2psensor_fleets)", "fleets")], w=4, h=5,
          description="SensorFleets with a computed status (p2psensor_fleets).")
    L.add("stat", "Sensors ready / desired",
          [('sum(p2psensor_fleet_sensors{state="ready"})', "ready"),
           ('sum(p2psensor_fleet_sensors{state="desired"})', "desired"),
           ('sum(p2psensor_fleet_sensors{state="reporting"})', "reporting")], w=8, h=5,
          description="Sensor pods over all fleets (p2psensor_fleet_sensors{state}).")
    L.add("stat", "Crawlers reporting", [("sum(p2psensor_fleet_crawlers)", "crawlers")], w=4, h=5,
          description="Crawl sidecars that reported within the report timeout (p2psensor_fleet_crawlers).")
    L.add("stat", "Collector: owners / senders",
          [("sum(operator_collector_owners)", "owners"), ("sum(operator_collector_senders)", "senders")], w=8, h=5,
          description="What the operator's collector tracks (operator_collector_owners, operator_collector_senders).")
    L.add("timeseries", "Peers by classification (fleet totals)",
          [("sum by (class) (p2psensor_fleet_peers)", "{{class}}")],
          description="Latest verdict per peer, summed over sensors; `unique` counts peers once across the fleet "
                      "(p2psensor_fleet_peers{class}).")
    L.add("timeseries", "Crawl: known and reachable nodes per network",
          [("max by (network, state) (p2psensor_fleet_crawl_nodes)", "{{network}} {{state}}")],
          description="Maximum over fleets and crawlers of a network (p2psensor_fleet_crawl_nodes{network,state}).")
    L.add("timeseries", "Reports received by the collector",
          [(f"sum by (result) (rate(operator_collector_reports_total[{RI}]))", "{{result}}")], unit="reqps",
          description="operator_collector_reports_total{result}: stored, stale or a validation error.")
    L.add("timeseries", "Last crawl round duration",
          [("max by (network) (p2psensor_fleet_crawl_last_duration_seconds)", "{{network}}")], unit="s",
          description="Wall time of the network's most recently finished crawl round "
                      "(p2psensor_fleet_crawl_last_duration_seconds).")
    L.add("timeseries", "Reconciliations",
          [(f"sum by (controller, result) (rate(controller_runtime_reconcile_total[{RI}]))", "{{controller}} {{result}}"),
           (f"histogram_quantile(0.95, sum by (le, controller) (rate(controller_runtime_reconcile_time_seconds_bucket[{RI}])))",
            "p95 {{controller}} (s)")],
          unit="short",
          description="controller_runtime_reconcile_total and the p95 of controller_runtime_reconcile_time_seconds.")

    L.row("Sensors: connections and verdicts")
    L.add("timeseries", "Verdicts by classification",
          [(f"sum by (classification) (rate(sensor_verdicts_total{{{SEL}}}[{RI}]))", "{{classification}}")],
          unit="ops", stack=True,
          description="Every verdict recorded, cache hits included (sensor_verdicts_total{classification}).")
    L.add("timeseries", "Inbound connections accepted / rejected",
          [(f'sum by (result) (rate(sensor_connections_total{{{SEL}, direction="inbound"}}[{RI}]))', "{{result}}"),
           (f"sum(sensor_connections_active{{{SEL}}})", "active (held now)"),
           (f"sum(sensor_handshakes_pending{{{SEL}}})", "handshakes pending")],
          description="sensor_connections_total{direction=inbound,result} as a rate; sensor_connections_active and "
                      "sensor_handshakes_pending as counts.")
    L.add("timeseries", "Inbound rejections by reason",
          [(f"sum by (reason) (rate(sensor_inbound_rejections_total{{{SEL}}}[{RI}]))", "{{reason}}")],
          unit="ops", stack=True, description="sensor_inbound_rejections_total{reason}.")
    L.add("timeseries", "Dial-back probes and verdict reasons",
          [(f"sum by (classification) (rate(sensor_probes_total{{{SEL}}}[{RI}]))", "probes {{classification}}"),
           (f"sum by (reason) (rate(sensor_verdicts_total{{{SEL}}}[{RI}]))", "verdict {{reason}}"),
           (f"sum(rate(sensor_verdict_cache_hits_total{{{SEL}}}[{RI}]))", "cache hits")],
          unit="ops",
          description="sensor_probes_total{classification} (finished probes), sensor_verdicts_total{reason}, "
                      "sensor_verdict_cache_hits_total.")
    L.add("timeseries", "Dial-back attempts (outbound)",
          [(f'sum by (result) (rate(sensor_connections_total{{{SEL}, direction="outbound"}}[{RI}]))', "{{result}}")],
          unit="ops", description="sensor_connections_total{direction=outbound,result}: dial-back attempts.")
    L.add("timeseries", "Gossip from inbound peers",
          [(f"sum by (result) (rate(sensor_gossip_messages_total{{{SEL}}}[{RI}]))", "Addresses {{result}}"),
           (f"sum(rate(sensor_gossip_addresses_total{{{SEL}}}[{RI}]))", "addresses recorded")],
          unit="ops", description="sensor_gossip_messages_total{result}, sensor_gossip_addresses_total.")

    L.row("Sensors: storage and reports")
    L.add("timeseries", "Storage errors by kind",
          [(f"sum by (kind) (rate(sensor_storage_errors_total{{{SEL}}}[{RI}]))", "{{kind}}"),
           (f"sum(rate(sensor_storage_events_total{{{SEL}}}[{RI}]))", "events committed")],
          unit="ops", description="sensor_storage_errors_total{kind} (full, locked, io, other, queue_full); "
                                  "sensor_storage_events_total.")
    L.add("timeseries", "Storage queue depth",
          [(f"max by (pod) (sensor_storage_queue_depth{{{SEL}}})", "{{pod}}")],
          description="Events accepted but not yet committed (sensor_storage_queue_depth).")
    L.add("timeseries", "Report pushes by result",
          [(f"sum by (result) (rate(sensor_report_pushes_total{{{SEL}}}[{RI}]))", "{{result}}")],
          unit="ops", stack=True, description="sensor_report_pushes_total{result}: pushes to the operator's collector.")
    L.add("timeseries", "Seconds since the last accepted report",
          [(f"time() - max by (pod) (sensor_report_last_success_timestamp_seconds{{{SEL}}} > 0)", "{{pod}}")],
          unit="s", description="From sensor_report_last_success_timestamp_seconds (0 = none yet, hidden).")

    L.row("Crawl (sidecars)")
    L.add("timeseries", "Crawl visits by result",
          [(f"sum by (result) (rate(sensor_crawl_visits_total{{{SEL}}}[{RI}]))", "{{result}}")],
          unit="ops", stack=True, description="sensor_crawl_visits_total{result}: reachable or the error class.")
    L.add("timeseries", "Known nodes (current crawl)",
          [(f"max by (pod) (sensor_crawl_nodes_known{{{SEL}}})", "{{pod}}")],
          description="sensor_crawl_nodes_known: distinct addresses the current crawl knows.")
    L.add("timeseries", "Crawl visit duration",
          quantiles("sensor_crawl_visit_duration_seconds", SEL, qs=(0.5, 0.95)), unit="s",
          description="Quantiles of sensor_crawl_visit_duration_seconds.")
    L.add("timeseries", "Addresses not dialled, by reason",
          [(f"sum by (reason) (rate(sensor_crawl_addresses_filtered_total{{{SEL}}}[{RI}]))", "{{reason}}")],
          unit="ops", description="sensor_crawl_addresses_filtered_total{reason}.")
    return dashboard("p2ps-fleet-overview", "P2P sensor: fleet overview",
                     "Operator fleet gauges, sensor connections, verdicts, storage, report pushes and crawls.",
                     L, variables(), ["fleet"])


def probe_latency():
    L = Layout()
    L.add("timeseries", "Probe duration quantiles (all selected pods)",
          quantiles("sensor_probe_duration_seconds", SEL, qs=(0.5, 0.9, 0.99)), unit="s",
          description="Wall time of a whole dial-back probe, all attempts (sensor_probe_duration_seconds).")
    L.add("timeseries", "p95 probe duration by pod",
          quantiles("sensor_probe_duration_seconds", SEL, by="pod", qs=(0.95,)), unit="s",
          description="histogram_quantile(0.95) of sensor_probe_duration_seconds per pod.")
    L.add("heatmap", "Probe duration distribution",
          [(f"sum by (le) (increase(sensor_probe_duration_seconds_bucket{{{SEL}}}[{RI}]))", "{{le}}")],
          unit="s", fmt="heatmap", description="Buckets of sensor_probe_duration_seconds per interval.")
    L.add("timeseries", "Probe rate and mean duration",
          [(f"sum(rate(sensor_probe_duration_seconds_count{{{SEL}}}[{RI}]))", "probes/s"),
           (f"sum(rate(sensor_probe_duration_seconds_sum{{{SEL}}}[{RI}])) / "
            f"sum(rate(sensor_probe_duration_seconds_count{{{SEL}}}[{RI}]))", "mean (s)")],
          description="_count rate and _sum/_count of sensor_probe_duration_seconds.")
    L.add("timeseries", "Probes in flight",
          [(f"sum by (pod) (sensor_probes_in_flight{{{SEL}}})", "{{pod}}")],
          description="Dial-backs running now (sensor_probes_in_flight).")
    L.add("timeseries", "Probe queue depth",
          [(f"sum by (pod) (sensor_probe_queue_depth{{{SEL}}})", "{{pod}}")],
          description="Peers waiting for a dial-back (sensor_probe_queue_depth).")
    L.add("timeseries", "Probes finished by classification",
          [(f"sum by (classification) (rate(sensor_probes_total{{{SEL}}}[{RI}]))", "{{classification}}")],
          unit="ops", stack=True, description="sensor_probes_total{classification} (cache hits excluded).")
    L.add("timeseries", "Verdict cache hit ratio",
          [(f"sum(rate(sensor_verdict_cache_hits_total{{{SEL}}}[{RI}])) / "
            f"sum(rate(sensor_verdicts_total{{{SEL}}}[{RI}]))", "cache hits / verdicts")],
          unit="percentunit", max_=1,
          description="sensor_verdict_cache_hits_total over sensor_verdicts_total.")
    return dashboard("p2ps-probe-latency", "P2P sensor: probe latency",
                     "Dial-back probe latency (sensor_probe_duration_seconds), concurrency and queueing.",
                     L, variables(), ["probes"])


def hole_punching():
    L = Layout()
    L.row("Hole punching (sensor punch sidecars)")
    L.add("stat", "Success rate (time range)",
          [(f'sum(increase(sensor_punch_attempts_total{{{SEL}, outcome="success"}}[$__range])) / '
            f"sum(increase(sensor_punch_attempts_total{{{SEL}}}[$__range]))", "success rate")],
          unit="percentunit", w=6, h=6, decimals=1, max_=1,
          thresholds=[{"color": "red", "value": None}, {"color": "orange", "value": 0.3},
                      {"color": "green", "value": 0.6}],
          description="Successful attempts over all finished attempts in the dashboard's time range.")
    L.add("bargauge", "Success rate by transport (time range)",
          [(f'sum by (transport) (increase(sensor_punch_attempts_total{{{SEL}, outcome="success"}}[$__range])) / '
            f"sum by (transport) (increase(sensor_punch_attempts_total{{{SEL}}}[$__range]))", "{{transport}}")],
          unit="percentunit", w=6, h=6, max_=1, description="Per transport (tcp, quic).")
    L.add("timeseries", "Attempts by transport and outcome",
          [(f"sum by (transport, outcome) (rate(sensor_punch_attempts_total{{{SEL}}}[{RI}]))",
            "{{transport}} {{outcome}}")],
          unit="ops", w=12, h=6, stack=True,
          description="sensor_punch_attempts_total{transport,outcome}.")
    L.add("timeseries", "Success rate by transport",
          [(f'sum by (transport) (rate(sensor_punch_attempts_total{{{SEL}, outcome="success"}}[{RI}])) / '
            f"sum by (transport) (rate(sensor_punch_attempts_total{{{SEL}}}[{RI}]))", "{{transport}}")],
          unit="percentunit", max_=1, description="Rolling success ratio per transport.")
    L.add("timeseries", "Time to direct connection",
          quantiles("sensor_punch_time_to_direct_seconds", SEL, qs=(0.5, 0.95, 0.99)), unit="s",
          description="Relayed connection established to direct connection established, successful attempts "
                      "(sensor_punch_time_to_direct_seconds).")
    L.add("heatmap", "Time to direct: distribution",
          [(f"sum by (le) (increase(sensor_punch_time_to_direct_seconds_bucket{{{SEL}}}[{RI}]))", "{{le}}")],
          unit="s", fmt="heatmap", description="Buckets of sensor_punch_time_to_direct_seconds per interval.")
    L.add("timeseries", "DCUtR events (libp2p)",
          [(f"sum by (event) (rate(libp2p_dcutr_events_total{{{SEL}}}[{RI}]))", "{{event}}")],
          unit="ops", description="libp2p-metrics' libp2p_dcutr_events_total{event} of the punch clients.")

    L.row("Reachability")
    L.add("timeseries", "Self-reachability verdict",
          [(f"sum by (verdict) (sensor_reachability{{{NS}, pod=~\"$pod\"}})", "{{verdict}}")],
          stack=True, w=24,
          description="sensor_reachability{verdict}: 1 for each node's current verdict (punch clients and relays); "
                      "the sum is the number of nodes with that verdict.")

    L.row("Relays (sensor relay)")
    L.add("timeseries", "Active reservations and circuits",
          [(f"sum by (pod) (sensor_relay_reservations_active{{{NS}}})", "reservations {{pod}}"),
           (f"sum by (pod) (sensor_relay_circuits_active{{{NS}}})", "circuits {{pod}}")],
          description="sensor_relay_reservations_active, sensor_relay_circuits_active.")
    L.add("timeseries", "Reservation and circuit requests",
          [(f"sum by (result) (rate(sensor_relay_reservations_total{{{NS}}}[{RI}]))", "reservation {{result}}"),
           (f"sum by (result) (rate(sensor_relay_circuits_total{{{NS}}}[{RI}]))", "circuit {{result}}")],
          unit="ops", description="sensor_relay_reservations_total{result}, sensor_relay_circuits_total{result}.")
    L.add("timeseries", "Relay events (libp2p)",
          [(f"sum by (event) (rate(libp2p_relay_events_total{{{NS}}}[{RI}]))", "{{event}}")],
          unit="ops", w=24, description="libp2p-metrics' libp2p_relay_events_total{event} of the relays.")
    return dashboard("p2ps-hole-punching", "P2P sensor: hole punching",
                     "DCUtR hole-punch attempts, success rate, time to direct, relays and reachability.",
                     L, variables(probe_metric="sensor_reachability"), ["hole-punching"])


def main():
    for name, d in [("fleet-overview.json", fleet_overview()), ("probe-latency.json", probe_latency()),
                    ("hole-punching.json", hole_punching())]:
        path = os.path.join(HERE, name)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(d, f, indent=2, sort_keys=True)
            f.write("\n")
        print(f"wrote {path} ({len(d['panels'])} panels)")


if __name__ == "__main__":
    main()
