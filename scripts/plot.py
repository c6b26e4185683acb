#!/usr/bin/env python3
"""Turns what the sensor measured into PNGs (matplotlib, Agg backend, 1200x700 px at 100 dpi).

    plot.py [--db FILE]... [--nat-bench FILE]... [--results DIR] --out DIR

Inputs (each optional, repeatable where it says ...; give at least one):
  --db FILE         a sensor's SQLite store (`sensor listen` / `crawl` / `punch` write it; read-only
                    here, stdlib sqlite3): tables events, peers, crawls, crawl_visits, crawl_nodes,
                    punch_attempts (sensor/src/store/migrations.rs)
  --nat-bench FILE  the NAT benchmark's JSON (target/nat-matrix/bench.json or matrix.json): a list
                    of cases {nat_a, nat_b, transport, attempts, successes, success_rate,
                    time_to_direct_ms_p50/p95, attempt_lines: [{time_to_direct_ms, ...}]}
  --results DIR     an experiment's results/<timestamp>/ (scripts/experiment.sh), or their parent
                    (the newest one is used): fleets.csv, sensors.csv, relay_transports.csv,
                    metrics/*.prom; *.sqlite files in it count as --db, *.json NAT cases as --nat-bench

Outputs in --out (written only when their data is there; otherwise a "skipped" line says why):
  peers_by_class.png   peers by latest classification over time (verdict events)
  user_agents.png      user-agent distribution of the peers
  crawl_summary.png    last crawl: reachable vs unreachable by error class, nodes per /16
  nat_matrix.png       NAT type (A x B) hole-punch success rate, one heatmap per transport
  time_to_direct.png   time-to-direct distribution (benchmark attempts, punch_attempts, /metrics)
  fleet_peers.png      experiment: peers by class per fleet and per sensor
  relay_punch.png      experiment: hole-punch success rate per relay and transport

Prints one line per file written or skipped (a missing input file is a "skipped input" line); exits
0 unless an input exists but cannot be read (2) or nothing at all was written (1).
"""

import argparse
import collections
import csv
import datetime
import glob
import ipaddress
import json
import os
import sqlite3
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

WIDTH_PX, HEIGHT_PX, DPI = 1200, 700, 100
CLASS_COLORS = {"public": "#2e7d32", "private": "#c62828", "unknown": "#9e9e9e"}
PLOTS = ["peers_by_class", "user_agents", "crawl_summary", "nat_matrix", "time_to_direct", "fleet_peers",
         "relay_punch"]


class Report:
    def __init__(self, out):
        self.out, self.written, self.skipped = out, [], []

    def save(self, fig, name):
        path = os.path.join(self.out, name + ".png")
        fig.savefig(path, dpi=DPI)  # no bbox_inches: the size stays exactly WIDTH_PX x HEIGHT_PX
        plt.close(fig)
        self.written.append(path)
        print(f"wrote   {path}")

    def skip(self, name, why):
        self.skipped.append(name)
        print(f"skipped {name}.png: {why}")


def figure(nrows=1, ncols=1, **kw):
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH_PX / DPI, HEIGHT_PX / DPI), dpi=DPI,
                             layout="constrained", **kw)
    return fig, axes


def parse_time(text):
    # RFC 3339 with up to 9 fraction digits and Z; Python 3.11 wants at most 6.
    text = text.rstrip("Z")
    if "." in text:
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.timezone.utc)


# ---------------------------------------------------------------------------------------------
# Inputs


def open_db(path):
    conn = sqlite3.connect(f"file:{os.path.abspath(path)}?mode=ro", uri=True)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    return conn, tables


def rows(dbs, table, sql):
    """`sql` over every store that has `table`, as dicts."""
    out = []
    for conn, tables in dbs:
        if table in tables:
            cur = conn.execute(sql)
            names = [d[0] for d in cur.description]
            out.extend(dict(zip(names, r)) for r in cur)
    return out


def load_nat_cases(path):
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    cases = doc if isinstance(doc, list) else doc.get("cases", [])
    return [c for c in cases if isinstance(c, dict) and {"nat_a", "nat_b", "transport"} <= c.keys()]


def find_results_dir(path):
    """A results/<timestamp>/ directory itself, or the newest one under a parent."""
    if os.path.exists(os.path.join(path, "run.json")) or glob.glob(os.path.join(path, "*.csv")):
        return path
    subdirs = sorted(d for d in glob.glob(os.path.join(path, "*")) if os.path.isdir(d))
    return subdirs[-1] if subdirs else path


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def number(value, default=0.0):
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def prom_buckets(paths, metric):
    """Sums `metric`_bucket{le=...} over every exposition file: {le: cumulative count}."""
    sums = collections.defaultdict(float)
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.startswith(metric + "_bucket"):
                    continue
                try:
                    labels, value = line.rsplit(" ", 1)
                    le = labels.split('le="', 1)[1].split('"', 1)[0]
                    sums[float(le)] += float(value)
                except (IndexError, ValueError):
                    continue
    return dict(sorted(sums.items()))


# ---------------------------------------------------------------------------------------------
# Plots


def plot_peers_by_class(report, dbs):
    name = "peers_by_class"
    verdicts = rows(dbs, "events", "SELECT timestamp, peer_id, peer_ip, peer_port, classification FROM events "
                                   "WHERE kind = 'verdict' AND classification IS NOT NULL ORDER BY timestamp")
    if not verdicts:
        return report.skip(name, "no verdict events (--db with an `events` table)")
    verdicts.sort(key=lambda r: r["timestamp"])
    latest, series = {}, collections.defaultdict(list)
    times = []
    for r in verdicts:
        latest[r["peer_id"] or f"{r['peer_ip']}:{r['peer_port']}"] = r["classification"]
        times.append(parse_time(r["timestamp"]))
        counts = collections.Counter(latest.values())
        for cls in CLASS_COLORS:
            series[cls].append(counts.get(cls, 0))
    fig, ax = figure()
    for cls, color in CLASS_COLORS.items():
        if any(series[cls]):
            ax.step(times, series[cls], where="post", color=color, linewidth=2, label=f"{cls} ({series[cls][-1]})")
    ax.set_title(f"Peers by latest classification over time ({len(latest)} peers, {len(verdicts)} verdicts)")
    ax.set_xlabel("time (UTC)")
    ax.set_ylabel("peers")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.autofmt_xdate()
    report.save(fig, name)


def plot_user_agents(report, dbs):
    name = "user_agents"
    peers = rows(dbs, "peers", "SELECT user_agent, classification FROM peers")
    if not peers:
        return report.skip(name, "no peers (--db with a `peers` table)")
    by_agent = collections.defaultdict(collections.Counter)
    for p in peers:
        by_agent[p["user_agent"] or "(none)"][p["classification"] or "unknown"] += 1
    agents = sorted(by_agent, key=lambda a: (-sum(by_agent[a].values()), a))[:20]
    agents.reverse()
    fig, ax = figure()
    left = [0] * len(agents)
    for cls, color in CLASS_COLORS.items():
        values = [by_agent[a][cls] for a in agents]
        if any(values):
            ax.barh(agents, values, left=left, color=color, label=cls)
            left = [x + v for x, v in zip(left, values)]
    for y, total in enumerate(left):
        ax.text(total, y, f" {total}", va="center")
    ax.set_title(f"User agents of {len(peers)} peers (top {len(agents)}), by latest classification")
    ax.set_xlabel("peers")
    ax.legend(loc="lower right")
    ax.grid(axis="x", alpha=0.3)
    report.save(fig, name)


def plot_crawl_summary(report, dbs):
    name = "crawl_summary"
    crawls = rows(dbs, "crawls", "SELECT crawl_id, started_at, visited, reachable, known, duration_ms FROM crawls "
                                 "WHERE finished_at IS NOT NULL ORDER BY started_at")
    if not crawls:
        return report.skip(name, "no finished crawl (--db with `crawls`/`crawl_visits`)")
    last = crawls[-1]
    visits = [v for v in rows(dbs, "crawl_visits", "SELECT crawl_id, address, reachable, error_class "
                                                   "FROM crawl_visits") if v["crawl_id"] == last["crawl_id"]]
    classes = collections.Counter("reachable" if v["reachable"] else (v["error_class"] or "other") for v in visits)
    fig, (ax1, ax2) = figure(1, 2)
    labels = sorted(classes, key=lambda c: (c != "reachable", -classes[c], c))
    colors = ["#2e7d32" if c == "reachable" else "#c62828" for c in labels]
    ax1.bar(labels, [classes[c] for c in labels], color=colors)
    for i, c in enumerate(labels):
        ax1.text(i, classes[c], str(classes[c]), ha="center", va="bottom")
    ax1.set_title(f"Last crawl ({last['started_at'][:19]}Z): {last['visited']} visited, "
                  f"{last['reachable']} reachable, {last['known']} known\n"
                  f"{len(crawls)} crawl(s) in the store, last took {number(last['duration_ms']) / 1000:.1f} s")
    ax1.set_ylabel("visits")
    ax1.tick_params(axis="x", rotation=30)
    ax1.grid(axis="y", alpha=0.3)
    # Nodes per /16 (IPv4) or /32 (IPv6), from the node table (every crawl), reachable or not.
    nodes = rows(dbs, "crawl_nodes", "SELECT address, reachable_visits FROM crawl_nodes")
    prefixes = collections.defaultdict(collections.Counter)
    for n in nodes:
        host = n["address"].rsplit(":", 1)[0].strip("[]")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            continue
        net = ipaddress.ip_network(f"{ip}/{16 if ip.version == 4 else 32}", strict=False)
        prefixes[str(net)]["reachable" if n["reachable_visits"] else "never reached"] += 1
    top = sorted(prefixes, key=lambda p: (-sum(prefixes[p].values()), p))[:15]
    top.reverse()
    if top:
        reach = [prefixes[p]["reachable"] for p in top]
        never = [prefixes[p]["never reached"] for p in top]
        ax2.barh(top, reach, color="#2e7d32", label="reached at least once")
        ax2.barh(top, never, left=reach, color="#c62828", label="never reached")
        ax2.legend(loc="lower right")
    ax2.set_title(f"Known nodes by network prefix (top {len(top)} of {len(prefixes)}, {len(nodes)} nodes)")
    ax2.set_xlabel("nodes")
    ax2.grid(axis="x", alpha=0.3)
    report.save(fig, name)


def merged_nat_cases(cases):
    """One case per (nat_a, nat_b, transport): the one with the most attempts."""
    best = {}
    for c in cases:
        key = (c["nat_a"], c["nat_b"], c["transport"])
        if key not in best or number(c.get("attempts")) > number(best[key].get("attempts")):
            best[key] = c
    return best


def plot_nat_matrix(report, cases):
    name = "nat_matrix"
    if not cases:
        return report.skip(name, "no NAT benchmark cases (--nat-bench target/nat-matrix/bench.json)")
    best = merged_nat_cases(cases)
    order = ["public", "full-cone", "restricted", "port-restricted", "symmetric"]
    nats = sorted({k[0] for k in best} | {k[1] for k in best}, key=lambda n: (order.index(n) if n in order else 99, n))
    transports = sorted({k[2] for k in best})
    fig, axes = figure(1, len(transports), squeeze=False)
    cmap = matplotlib.colormaps["RdYlGn"].copy()
    cmap.set_bad("#e0e0e0")
    image = None
    for ax, transport in zip(axes[0], transports):
        grid = [[float("nan")] * len(nats) for _ in nats]
        for (a, b, t), c in best.items():
            if t == transport:
                grid[nats.index(a)][nats.index(b)] = number(c.get("success_rate"), float("nan"))
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1)
        for (a, b, t), c in best.items():
            if t != transport:
                continue
            i, j = nats.index(a), nats.index(b)
            p50 = c.get("time_to_direct_ms_p50")
            text = f"{int(number(c.get('successes')))}/{int(number(c.get('attempts')))}"
            text += f"\np50 {p50} ms" if p50 is not None else ""
            ax.text(j, i, text, ha="center", va="center", fontsize=9)
        ax.set_xticks(range(len(nats)), nats, rotation=20)
        ax.set_yticks(range(len(nats)), nats)
        ax.set_xlabel("NAT of B (punch target)")
        ax.set_ylabel("NAT of A (punch client)")
        ax.set_title(f"{transport}: success rate (successes/attempts)")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="success rate")
    fig.suptitle(f"Hole punching by NAT type x transport ({len(best)} cases; grey: not measured)")
    report.save(fig, name)


def plot_time_to_direct(report, cases, dbs, prom_files):
    name = "time_to_direct"
    samples = {}
    for c in cases:
        values = [number(l.get("time_to_direct_ms")) for l in c.get("attempt_lines") or []
                  if l.get("time_to_direct_ms") is not None]
        if values:
            label = f"bench {c['nat_a']} x {c['nat_b']} {c['transport']} (n={len(values)})"
            samples[label] = sorted(values)
    by_transport = collections.defaultdict(list)
    for r in rows(dbs, "punch_attempts", "SELECT transport, time_to_direct_ms FROM punch_attempts "
                                         "WHERE outcome = 'success' AND time_to_direct_ms IS NOT NULL"):
        by_transport[r["transport"]].append(number(r["time_to_direct_ms"]))
    for t, values in sorted(by_transport.items()):
        samples[f"store {t} (n={len(values)})"] = sorted(values)
    buckets = prom_buckets(prom_files, "sensor_punch_time_to_direct_seconds")
    if not samples and not any(buckets.values()):
        return report.skip(name, "no successful attempts with a time to direct (--nat-bench with attempt_lines, "
                                 "--db with punch_attempts, or --results with metrics/*.prom)")
    fig, (ax1, ax2) = figure(1, 2)
    for label, values in samples.items():
        n = len(values)
        ax1.step(values, [(i + 1) / n for i in range(n)], where="post", label=label)
    if any(buckets.values()):
        total = max(buckets.values())
        finite = [(le * 1000, v / total) for le, v in buckets.items() if le != float("inf")]
        ax1.step([x for x, _ in finite], [y for _, y in finite], where="post", linestyle="--",
                 label=f"/metrics buckets (n={int(total)})")
    ax1.set_xscale("log")
    ax1.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax1.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
    ax1.set_xlabel("time to direct connection (ms, log)")
    ax1.set_ylabel("fraction of successful attempts")
    ax1.set_title("Time to direct: cumulative distribution")
    ax1.grid(alpha=0.3, which="both")
    ax1.legend(loc="lower right", fontsize=8)
    if samples:
        labels = list(samples)
        ax2.boxplot([samples[k] for k in labels], vert=False, showfliers=True)
        ax2.set_yticks(range(1, len(labels) + 1), [k.split(" (n=")[0] for k in labels], fontsize=8)
        ax2.set_xlabel("time to direct connection (ms)")
        ax2.set_title("Per case: median, quartiles, whiskers 1.5 IQR")
        ax2.grid(axis="x", alpha=0.3)
    else:
        ax2.axis("off")
    report.save(fig, name)


def plot_fleet_peers(report, results):
    name = "fleet_peers"
    fleets_csv = results and os.path.join(results, "fleets.csv")
    if not fleets_csv or not os.path.exists(fleets_csv):
        return report.skip(name, "no fleets.csv (--results results/<timestamp>/)")
    fleets = read_csv(fleets_csv)
    sensors_csv = os.path.join(results, "sensors.csv")
    sensors = read_csv(sensors_csv) if os.path.exists(sensors_csv) else []
    fig, (ax1, ax2) = figure(1, 2)
    names = [f"{f['namespace']}/{f['name']}" for f in fleets]
    bottom = [0.0] * len(fleets)
    for cls, color in CLASS_COLORS.items():
        values = [number(f.get(f"peers_{cls}")) for f in fleets]
        ax1.bar(names, values, bottom=bottom, color=color, label=cls)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax1.plot(names, [number(f.get("peers_unique")) for f in fleets], "k_", markersize=30, label="unique")
    ax1.set_title("Peers by class per SensorFleet (status)")
    ax1.legend()
    ax1.grid(axis="y", alpha=0.3)
    if sensors:
        labels = [s["sensor"] for s in sensors]
        bottom = [0.0] * len(sensors)
        for cls, color in CLASS_COLORS.items():
            values = [number(s.get(cls)) for s in sensors]
            ax2.barh(labels, values, left=bottom, color=color, label=cls)
            bottom = [b + v for b, v in zip(bottom, values)]
        ax2.set_title("Peers by class per sensor")
        ax2.grid(axis="x", alpha=0.3)
    else:
        ax2.axis("off")
    report.save(fig, name)


def plot_relay_punch(report, results):
    name = "relay_punch"
    path = results and os.path.join(results, "relay_transports.csv")
    if not path or not os.path.exists(path):
        return report.skip(name, "no relay_transports.csv (--results results/<timestamp>/)")
    rows_ = [r for r in read_csv(path) if number(r.get("attempts")) > 0]
    if not rows_:
        return report.skip(name, "relay_transports.csv has no attempts")
    fig, ax = figure()
    labels = [f"{r['relay']} {r['transport']}" for r in rows_]
    rates = [number(r.get("success_rate")) for r in rows_]
    ax.bar(labels, rates, color="#1565c0")
    for i, r in enumerate(rows_):
        ax.text(i, rates[i], f"{int(number(r['successes']))}/{int(number(r['attempts']))}", ha="center",
                va="bottom")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("success rate")
    ax.set_title("Hole-punch success rate per relay and transport (RelayNode status)")
    ax.grid(axis="y", alpha=0.3)
    report.save(fig, name)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", action="append", default=[], help="sensor SQLite store (repeatable)")
    parser.add_argument("--nat-bench", action="append", default=[], help="NAT benchmark JSON (repeatable)")
    parser.add_argument("--results", help="results/<timestamp>/ of scripts/experiment.sh (or its parent)")
    parser.add_argument("--out", required=True, help="output directory (created)")
    args = parser.parse_args(argv)
    if not (args.db or args.nat_bench or args.results):
        parser.error("give at least one of --db, --nat-bench, --results")
    os.makedirs(args.out, exist_ok=True)
    report = Report(args.out)

    db_paths, bench_paths, prom_files, results = list(args.db), list(args.nat_bench), [], None
    if args.results:
        if not os.path.isdir(args.results):
            print(f"error: --results {args.results}: not a directory", file=sys.stderr)
            return 2
        results = find_results_dir(args.results)
        print(f"results: {results}")
        db_paths += sorted(glob.glob(os.path.join(results, "**", "*.sqlite"), recursive=True))
        prom_files = sorted(glob.glob(os.path.join(results, "metrics", "*.prom")))
        for path in sorted(glob.glob(os.path.join(results, "**", "*.json"), recursive=True)):
            try:
                if load_nat_cases(path):
                    bench_paths.append(path)
            except (OSError, ValueError):
                pass
    dbs, cases = [], []
    for flag, paths in (("--db", db_paths), ("--nat-bench", bench_paths)):
        for path in [p for p in paths if not os.path.isfile(p)]:
            print(f"skipped input {flag} {path}: no such file")
            paths.remove(path)
    for path in db_paths:
        try:
            dbs.append(open_db(path))
        except sqlite3.Error as e:
            print(f"error: --db {path}: {e}", file=sys.stderr)
            return 2
    for path in bench_paths:
        try:
            cases.extend(load_nat_cases(path))
        except (OSError, ValueError) as e:
            print(f"error: --nat-bench {path}: {e}", file=sys.stderr)
            return 2

    plot_peers_by_class(report, dbs)
    plot_user_agents(report, dbs)
    plot_crawl_summary(report, dbs)
    plot_nat_matrix(report, cases)
    plot_time_to_direct(report, cases, dbs, prom_files)
    plot_fleet_peers(report, results)
    plot_relay_punch(report, results)
    print(f"{len(report.written)} written, {len(report.skipped)} skipped")
    return 0 if report.written else 1


if __name__ == "__main__":
    sys.exit(main())
