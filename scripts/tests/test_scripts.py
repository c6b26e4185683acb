"""Tests of scripts/k3d-up.sh, scripts/k3d-down.sh, scripts/experiment.sh and scripts/lib/ that need
no cluster, no Docker and no network (stdlib only):

- every script's --help works and exits 0; bash -n parses every script;
- with a PATH holding only basic tools (no docker, k3d, kubectl, helm), the scripts fail fast
  (exit 3, within a few seconds) naming each missing tool; usage errors exit 2;
- netem detection: on this CI kernel (no sch_netem) it reports "not available" and the scenario
  says it runs without latency emulation; P2P_NETEM_PROBE forces either answer;
- the JSON -> CSV conversion (scripts/lib/results.py) on fixtures/resources.json gives the
  expected rows, and metrics-targets on fixtures/pods.json picks the *metrics ports of running pods;
- the k3d manifests' templates render with no placeholder left.
"""

import csv
import os
import shutil
import subprocess
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "scripts"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
CLUSTER_SCRIPTS = ["k3d-up.sh", "k3d-down.sh", "experiment.sh"]
# What a minimal system has; never docker, k3d, kubectl or helm.
BASIC_TOOLS = ["bash", "sh", "env", "dirname", "cat", "printf", "awk", "grep", "sed", "date", "mkdir",
               "timeout", "id", "tr", "sort", "head", "rm", "uname"]


def run(args, env=None, timeout=20):
    started = time.monotonic()
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - started


def kernel_has_netem():
    """Independent of the script under test: does `tc qdisc add ... netem` work in a throwaway
    user+network namespace? None when that cannot be tried here."""
    if not shutil.which("tc") or not shutil.which("unshare"):
        return None
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode != 0:
        return None
    probe = subprocess.run(["unshare", "-rn", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"],
                           capture_output=True)
    return probe.returncode == 0


class BasicPath:
    """A directory of symlinks to BASIC_TOOLS, used as the whole PATH."""

    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="p2p-basic-path-")
        for tool in BASIC_TOOLS:
            found = shutil.which(tool)
            if found:
                os.symlink(found, os.path.join(self.dir, tool))
        for absent in ("docker", "k3d", "kubectl", "helm"):
            assert not os.path.exists(os.path.join(self.dir, absent))
        return {"PATH": self.dir, "HOME": os.environ.get("HOME", "/tmp"), "LC_ALL": "C"}

    def __exit__(self, *exc):
        shutil.rmtree(self.dir)


class HelpAndSyntax(unittest.TestCase):
    def test_bash_n(self):
        for script in sorted(SCRIPTS.glob("*.sh")) + sorted((SCRIPTS / "lib").glob("*.sh")):
            with self.subTest(script=script.name):
                proc, _ = run(["bash", "-n", str(script)])
                self.assertEqual(proc.returncode, 0, proc.stderr)

    def test_help(self):
        for script in CLUSTER_SCRIPTS:
            for flag in ("--help", "-h"):
                with self.subTest(script=script, flag=flag), BasicPath() as env:
                    proc, _ = run(["bash", str(SCRIPTS / script), flag], env=env)
                    self.assertEqual(proc.returncode, 0, proc.stderr)
                    self.assertIn("Usage: scripts/" + script, proc.stdout)
                    self.assertIn("Exit codes", proc.stdout)

    def test_unknown_argument_is_a_usage_error(self):
        for script in CLUSTER_SCRIPTS:
            with self.subTest(script=script):
                proc, _ = run(["bash", str(SCRIPTS / script), "--no-such-flag"])
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn("unknown", proc.stderr)

    def test_experiment_usage_errors(self):
        for args, needle in [
            ([], "no SCENARIO"),
            (["no-such-scenario"], "unknown scenario"),
            (["baseline", "--netem", "fast"], "DELAY_MS"),
            (["baseline", "--netem", "50,200"], "DELAY_MS"),
            (["baseline", "--sensors", "0"], "positive"),
            (["baseline", "nat"], "one scenario"),
        ]:
            with self.subTest(args=args):
                proc, _ = run(["bash", str(SCRIPTS / "experiment.sh"), *args])
                self.assertEqual(proc.returncode, 2, proc.stderr)
                self.assertIn(needle, proc.stderr)

    def test_k3d_up_usage_errors(self):
        for args in (["--with-kaspad"], ["--with-kaspad", "x"], ["--sensors", "-1"]):
            with self.subTest(args=args):
                proc, _ = run(["bash", str(SCRIPTS / "k3d-up.sh"), *args])
                self.assertEqual(proc.returncode, 2, proc.stderr)


class FailFastWithoutTools(unittest.TestCase):
    def check(self, script, args, missing):
        with BasicPath() as env:
            proc, elapsed = run(["bash", str(SCRIPTS / script), *args], env=env)
        self.assertEqual(proc.returncode, 3, proc.stderr)
        self.assertLess(elapsed, 5, "must fail fast")
        for tool in missing:
            self.assertIn(f"{tool} not found on PATH", proc.stderr)
        self.assertIn("missing prerequisite", proc.stderr)
        self.assertEqual(proc.stdout, "", "nothing may look like progress")

    def test_k3d_up(self):
        self.check("k3d-up.sh", [], ["docker", "k3d", "kubectl", "helm"])
        self.check("k3d-up.sh", ["--with-kaspad", "2"], ["docker", "k3d", "kubectl", "helm"])

    def test_k3d_down(self):
        self.check("k3d-down.sh", [], ["docker", "k3d"])

    def test_experiment(self):
        self.check("experiment.sh", ["baseline"], ["docker", "k3d", "kubectl"])
        self.check("experiment.sh", ["--collect-only"], ["docker", "k3d", "kubectl"])


class Netem(unittest.TestCase):
    def test_detection_matches_the_kernel(self):
        has = kernel_has_netem()
        proc, elapsed = run(["bash", str(SCRIPTS / "experiment.sh"), "--check-netem"])
        self.assertLess(elapsed, 10)
        if has is None:
            self.skipTest("cannot probe netem independently here (no tc/unshare or no user namespaces)")
        if has:
            self.assertEqual(proc.returncode, 0, proc.stdout)
            self.assertIn("netem available", proc.stdout)
        else:
            self.assertEqual(proc.returncode, 1, proc.stdout)
            self.assertIn("netem not available", proc.stdout)

    def test_this_ci_kernel_has_no_netem(self):
        """docs/natlab.md: the CI kernel has no sch_netem; the scenario must say so, not pretend."""
        if kernel_has_netem() is not False:
            self.skipTest("this kernel supports netem (or cannot be probed)")
        proc, _ = run(["bash", str(SCRIPTS / "experiment.sh"), "nat", "--netem", "50,1", "--dry-run"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("netem not available on this kernel; running without latency emulation", proc.stderr)
        self.assertIn("netem=off delay=50ms loss=1%", proc.stdout)

    def test_forced_answers(self):
        for forced, code, word in (("available", 0, "netem=on"), ("unavailable", 0, "netem=off")):
            with self.subTest(forced=forced):
                env = dict(os.environ, P2P_NETEM_PROBE=forced)
                proc, _ = run(["bash", str(SCRIPTS / "experiment.sh"), "baseline", "--netem", "20", "--dry-run"], env=env)
                self.assertEqual(proc.returncode, code, proc.stderr)
                self.assertIn(word, proc.stdout)

    def test_dry_run_plan(self):
        proc, _ = run(["bash", str(SCRIPTS / "experiment.sh"), "nat", "--sensors", "5", "--peers", "1", "--dry-run"])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("scenario=nat sensors=5 kaspad=1 nat-kaspad=2", proc.stdout)
        self.assertIn("netem=off (not requested)", proc.stdout)

    def test_list(self):
        proc, _ = run(["bash", str(SCRIPTS / "experiment.sh"), "--list"])
        self.assertEqual(proc.returncode, 0)
        for name in ("baseline", "nat", "sensors-only"):
            self.assertIn(name, proc.stdout)


class Results(unittest.TestCase):
    def read(self, directory, name):
        with open(os.path.join(directory, name), newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))

    def test_csv(self):
        with tempfile.TemporaryDirectory() as out:
            proc, _ = run(["python3", str(SCRIPTS / "lib" / "results.py"), "csv", str(FIXTURES / "resources.json"), out])
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertIn("2 fleet(s), 1 relay(s)", proc.stdout)
            fleets = self.read(out, "fleets.csv")
            self.assertEqual(len(fleets), 2)
            self.assertEqual(fleets[0], {
                "namespace": "p2p-lab", "name": "devnet", "network": "devnet", "ready": "True",
                "sensors_desired": "2", "sensors_ready": "2", "sensors_reporting": "2",
                "peers_public": "3", "peers_private": "2", "peers_unknown": "1", "peers_unique": "4",
                "crawl_known_nodes": "6", "crawl_reachable_nodes": "4",
                "last_report_time": "2026-11-21T12:00:00Z",
            })
            # A fleet without a status yet: a row of empty cells, not a crash.
            self.assertEqual(fleets[1]["name"], "fresh")
            self.assertEqual(fleets[1]["ready"], "")
            self.assertEqual(fleets[1]["peers_public"], "")
            sensors = self.read(out, "sensors.csv")
            self.assertEqual([(s["sensor"], s["reporting"], s["public"], s["private"], s["unknown"]) for s in sensors],
                             [("devnet-sensor-0", "true", "2", "1", "0"), ("devnet-sensor-1", "false", "1", "1", "1")])
            relays = self.read(out, "relays.csv")
            self.assertEqual(len(relays), 1)
            r = relays[0]
            self.assertEqual((r["name"], r["ready"], r["attempts"], r["successes"], r["failures"], r["success_rate"],
                              r["time_to_direct_p50_ms"], r["time_to_direct_p95_ms"], r["reservations_active"]),
                             ("relay", "True", "10", "7", "3", "0.7", "42", "180", "2"))
            transports = self.read(out, "relay_transports.csv")
            self.assertEqual([(t["transport"], t["attempts"], t["successes"], t["success_rate"]) for t in transports],
                             [("tcp", "6", "4", "0.6667"), ("quic", "4", "3", "0.75")])

    def test_csv_of_an_empty_list(self):
        with tempfile.TemporaryDirectory() as out:
            empty = os.path.join(out, "empty.json")
            Path(empty).write_text('{"kind": "List", "items": []}')
            proc, _ = run(["python3", str(SCRIPTS / "lib" / "results.py"), "csv", empty, out])
            self.assertEqual(proc.returncode, 0, proc.stderr)
            self.assertEqual(self.read(out, "fleets.csv"), [])
            self.assertTrue(Path(out, "fleets.csv").read_text().startswith("namespace,name,network,ready,"))

    def test_metrics_targets(self):
        proc, _ = run(["python3", str(SCRIPTS / "lib" / "results.py"), "metrics-targets", str(FIXTURES / "pods.json")])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertEqual(proc.stdout.splitlines(), [
            "p2p-lab devnet-sensor-0 9102 sensor",
            "p2p-lab devnet-sensor-0 9103 punch",
            "p2p-lab devnet-sensor-0 9104 crawl",
        ])


class Templates(unittest.TestCase):
    def render(self, template, *pairs):
        script = f'source scripts/lib/common.sh; render_template {template} {" ".join(pairs)}'
        proc, _ = run(["bash", "-c", script])
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotRegex(proc.stdout, r"__[A-Z_]+__")
        return proc.stdout

    def test_fleet(self):
        text = self.render("k3d/manifests/fleet.yaml", "SENSORS=3")
        self.assertIn("replicas: 3", text)
        self.assertIn("nodePort: 31611", text)

    def test_kaspad(self):
        text = self.render("k3d/manifests/kaspad.yaml", "NAME=kaspad-nat", "REPLICAS=2", "NAT=true")
        self.assertIn("replicas: 2", text)
        self.assertIn('p2psensor.dev/lab-nat: "true"', text)
        self.assertIn("image: p2p-kaspad:2.1.0", text)

    def test_missing_value_is_an_error(self):
        proc, _ = run(["bash", "-c", "source scripts/lib/common.sh; render_template k3d/manifests/kaspad.yaml NAME=x"])
        self.assertEqual(proc.returncode, 1)
        self.assertIn("__REPLICAS__", proc.stderr)

    def test_cluster_config(self):
        text = (REPO / "k3d" / "cluster.yaml").read_text()
        self.assertIn("apiVersion: k3d.io/v1alpha5", text)
        self.assertRegex(text, r"(?m)^servers: 1$")
        self.assertRegex(text, r"(?m)^agents: 2$")
        for mapping in ("16611:31611/tcp", "4001:4001/tcp", "4001:4001/udp"):
            self.assertIn(f"port: {mapping}", text)


if __name__ == "__main__":
    unittest.main()
