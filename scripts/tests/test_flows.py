"""The cluster scripts' whole flow against stand-ins for docker, k3d, kubectl and helm (no Docker,
no cluster): each stand-in logs its arguments (and any manifest piped to `kubectl apply -f -`)
and answers like the real tool would for the calls the scripts make. This checks the order of
the steps (prerequisites, build, cluster, import, chart, lab, wait) and the results layout of
scripts/experiment.sh; it cannot check that the real tools accept the calls, which only a machine
with Docker and k3d can.
"""

import csv
import json
import os
import stat
import subprocess
import tempfile
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures"

STUB = r"""#!/usr/bin/env bash
tool=$(basename "$0")
printf '%s %s\n' "$tool" "$*" >>"$STUB_LOG"
case "$tool $*" in
    "docker info"*) exit 0 ;;
    "docker image inspect"*) exit 0 ;;
    "docker ps"*) printf 'k3d-p2p-sensor-server-0 server\nk3d-p2p-sensor-agent-0 agent\nk3d-p2p-sensor-serverlb loadbalancer\n'; exit 0 ;;
    "k3d cluster get"*) [[ -n ${STUB_CLUSTER_EXISTS:-} ]]; exit $? ;;
    "kubectl "*"create namespace"*) printf 'apiVersion: v1\nkind: Namespace\nmetadata:\n  name: x\n'; exit 0 ;;
    "kubectl "*"apply"*"-f -"*) { echo '--- stdin'; cat; } >>"$STUB_LOG"; exit 0 ;;
    "kubectl "*" get "*"sensorfleets,relaynodes -o json"*) cat "$STUB_FIXTURES/resources.json"; exit 0 ;;
    "kubectl "*" get "*"pods -o json"*) cat "$STUB_FIXTURES/pods.json"; exit 0 ;;
    "kubectl "*"get --raw /api/v1/"*) printf '# TYPE sensor_connections_active gauge\nsensor_connections_active 1\n'; exit 0 ;;
esac
exit 0
"""


class Flows(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.bin = Path(self.tmp.name, "bin")
        self.bin.mkdir()
        for tool in ("docker", "k3d", "kubectl", "helm"):
            path = self.bin / tool
            path.write_text(STUB)
            path.chmod(path.stat().st_mode | stat.S_IXUSR)
        self.log = Path(self.tmp.name, "calls.log")
        self.env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", STUB_LOG=str(self.log),
                        STUB_FIXTURES=str(FIXTURES), P2P_NETEM_PROBE="unavailable")

    def tearDown(self):
        self.tmp.cleanup()

    def run_script(self, *args, **env):
        proc = subprocess.run(["bash", *map(str, args)], cwd=REPO, env=dict(self.env, **env),
                              capture_output=True, text=True, timeout=60)
        calls = self.log.read_text() if self.log.exists() else ""
        return proc, calls

    def commands(self, calls):
        return [line for line in calls.splitlines() if line.split(" ", 1)[0] in ("docker", "k3d", "kubectl", "helm")]

    def index(self, lines, needle):
        for i, line in enumerate(lines):
            if needle in line:
                return i
        self.fail(f"no call with {needle!r} in:\n" + "\n".join(lines))

    def assert_steps_in_order(self, lines, steps):
        """Each step (the first call containing the needle) comes after every call of the steps before
        it. A tuple is one shell pipeline: its stages run concurrently, so each stand-in logs its
        call whenever its process gets there and the stages appear in any order among themselves;
        the whole pipeline still comes after the step before it and before the step after it."""
        groups = [step if isinstance(step, tuple) else (step,) for step in steps]
        positions = [[self.index(lines, needle) for needle in group] for group in groups]
        for i in range(1, len(steps)):
            self.assertLess(max(positions[i - 1]), min(positions[i]),
                            f"steps out of order: {steps[i]!r} must follow {steps[i - 1]!r}, positions {positions}:\n"
                            + "\n".join(lines))

    def test_k3d_up_new_cluster(self):
        proc, calls = self.run_script("scripts/k3d-up.sh", "--with-kaspad", "2")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = self.commands(calls)
        order = [
            "docker info",
            "docker build --target sensor -t p2p-sensor:0.1.0",
            "docker build --target operator -t p2p-sensor-operator:0.1.0",
            "docker build --target kaspad -t p2p-kaspad:2.1.0",
            "k3d cluster get p2p-sensor",
            "k3d cluster create p2p-sensor --config",
            "k3d image import --cluster p2p-sensor p2p-sensor:0.1.0 p2p-sensor-operator:0.1.0 p2p-kaspad:2.1.0",
            "apply -f " + str(REPO / "crds"),
            "helm --kube-context k3d-p2p-sensor upgrade --install p2p-sensor-operator",
            "apply -n p2p-lab -f " + str(REPO / "examples/relay.yaml"),
            "--for=condition=Ready relaynode/relay sensorfleet/devnet",
            "statefulset/kaspad",
        ]
        self.assert_steps_in_order(lines, order)
        self.assertIn("replicas: 2\n", calls)  # the fleet (2 sensors) and kaspad (2 peers) manifests
        self.assertIn("kind: SensorFleet", calls)
        self.assertIn("kind: StatefulSet", calls)
        self.assertNotRegex(calls, r"__[A-Z_]+__")
        for line in lines:
            if line.startswith("kubectl"):
                self.assertIn("--context k3d-p2p-sensor", line)

    def test_k3d_up_existing_cluster_no_build(self):
        proc, calls = self.run_script("scripts/k3d-up.sh", "--no-build", STUB_CLUSTER_EXISTS="1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("exists: keeping it", proc.stderr)
        self.assertNotIn("k3d cluster create", calls)
        self.assertNotIn("docker build", calls)
        self.assertIn("k3d image import --cluster p2p-sensor p2p-sensor:0.1.0 p2p-sensor-operator:0.1.0\n", calls)

    def test_k3d_up_with_monitoring(self):
        proc, calls = self.run_script("scripts/k3d-up.sh", "--no-build", "--with-monitoring", STUB_CLUSTER_EXISTS="1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        lines = self.commands(calls)
        order = [
            "repo add prometheus-community https://prometheus-community.github.io/helm-charts",
            "upgrade --install monitoring prometheus-community/kube-prometheus-stack --namespace monitoring",
            "apply -n monitoring -f " + str(REPO / "dashboards/podmonitor.yaml"),
            # One pipeline (create | label | apply): its three calls are logged in any order.
            ("create configmap p2p-sensor-dashboards -n monitoring --from-file=" + str(REPO / "dashboards"),
             "label --local -f - grafana_dashboard=1",
             "apply -n monitoring -f -"),
            "upgrade --install p2p-sensor-operator",
        ]
        self.assert_steps_in_order(lines, order)
        dashboards = sorted(p.name for p in (REPO / "dashboards").glob("*.json"))
        configmap = lines[self.index(lines, "create configmap p2p-sensor-dashboards")]
        self.assertEqual(sorted(Path(f.split("=", 1)[1]).name for f in configmap.split() if f.startswith("--from-file=")),
                         dashboards, "every dashboard is loaded")
        self.assertIn("--set serviceMonitor.enabled=true", lines[self.index(lines, "upgrade --install p2p-sensor-operator")])

    def test_k3d_up_without_monitoring_installs_none(self):
        proc, calls = self.run_script("scripts/k3d-up.sh", "--no-build", STUB_CLUSTER_EXISTS="1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertNotIn("kube-prometheus-stack", calls)
        self.assertIn("--set serviceMonitor.enabled=false", calls)

    def test_k3d_down(self):
        proc, calls = self.run_script("scripts/k3d-down.sh")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("nothing to do", proc.stderr)
        self.assertNotIn("k3d cluster delete", calls)
        proc, calls = self.run_script("scripts/k3d-down.sh", STUB_CLUSTER_EXISTS="1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("k3d cluster delete p2p-sensor", calls)

    def test_experiment_needs_the_cluster(self):
        proc, _ = self.run_script("scripts/experiment.sh", "baseline")
        self.assertEqual(proc.returncode, 3, proc.stderr)
        self.assertIn("scripts/k3d-up.sh first", proc.stderr)

    def test_experiment_run_and_results(self):
        results = Path(self.tmp.name, "results")
        proc, calls = self.run_script("scripts/experiment.sh", "nat", "--duration", "0", "--netem", "40,2",
                                      "--results", results, STUB_CLUSTER_EXISTS="1")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        self.assertIn("netem not available on this kernel; running without latency emulation", proc.stderr)
        self.assertNotIn("netem delay", calls)
        lines = self.commands(calls)
        order = ["nat-policy.yaml", "--for=condition=Ready", "statefulset/kaspad ", "statefulset/kaspad-nat",
                 "get -n p2p-lab sensorfleets,relaynodes -o json", "proxy/metrics"]
        self.assert_steps_in_order(lines, order)
        (out,) = list(results.iterdir())
        self.assertRegex(out.name, r"^\d{8}T\d{6}Z$")
        names = sorted(p.name for p in out.iterdir())
        self.assertEqual(names, ["fleets.csv", "metrics", "pods.json", "relay_transports.csv", "relays.csv",
                                 "resources.json", "run.json", "sensors.csv"])
        self.assertEqual(sorted(p.name for p in (out / "metrics").iterdir()),
                         ["devnet-sensor-0-9102.prom", "devnet-sensor-0-9103.prom", "devnet-sensor-0-9104.prom"])
        run = json.loads((out / "run.json").read_text())
        self.assertEqual((run["scenario"], run["sensors"], run["kaspad"], run["nat_kaspad"], run["netem"],
                          run["netem_spec"], run["metrics_scraped"]), ("nat", "3", "2", "2", "off", "40,2", 3))
        with open(out / "fleets.csv", newline="") as f:
            self.assertEqual([r["name"] for r in csv.DictReader(f)], ["devnet", "fresh"])

    def test_experiment_netem_applied_and_cleared(self):
        results = Path(self.tmp.name, "results")
        proc, calls = self.run_script("scripts/experiment.sh", "sensors-only", "--duration", "0", "--netem", "40,2",
                                      "--results", results, STUB_CLUSTER_EXISTS="1", P2P_NETEM_PROBE="available")
        self.assertEqual(proc.returncode, 0, proc.stderr)
        for node in ("k3d-p2p-sensor-server-0", "k3d-p2p-sensor-agent-0"):
            self.assertIn(f"--network container:{node} --cap-add NET_ADMIN --user 0:0 p2p-netem:latest "
                          "qdisc replace dev eth0 root netem delay 40ms loss 2%", calls)
            self.assertIn(f"container:{node} --cap-add NET_ADMIN --user 0:0 p2p-netem:latest qdisc del dev eth0 root", calls)
        self.assertNotIn("serverlb --cap-add", calls)


if __name__ == "__main__":
    unittest.main()


def kubelet_expand(text, env):
    """Kubernetes' expansion of command/args: $$ -> $, $(VAR) -> value when VAR is defined."""
    out, i = [], 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i)
                name = text[i + 2:end] if end > 0 else ""
                if name in env:
                    out.append(env[name])
                    i = end + 1
                    continue
        out.append(text[i])
        i += 1
    return "".join(out)


class KaspadWrapper(unittest.TestCase):
    """The sh wrapper of k3d/manifests/kaspad.yaml, as the kubelet hands it to /bin/sh, with
    stand-ins for getent (the cluster DNS) and kaspad: it must add every sensor pod and the first
    kaspad pod as --addpeer IP:16611 and exec kaspad on devnet."""

    def wrapper(self):
        lines = (REPO / "k3d" / "manifests" / "kaspad.yaml").read_text().splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == "- |") + 1
        indent = len(lines[start]) - len(lines[start].lstrip())
        body = []
        for line in lines[start:]:
            if line.strip() and len(line) - len(line.lstrip()) < indent:
                break
            body.append(line[indent:])
        return kubelet_expand("\n".join(body) + "\n", {})

    def test_peers(self):
        script = self.wrapper()
        self.assertNotIn("$$", script)
        with tempfile.TemporaryDirectory() as tmp:
            bin_dir = Path(tmp)
            (bin_dir / "getent").write_text(
                '#!/bin/sh\ncase "$2" in\n'
                '  devnet-sensors) printf "10.42.1.7 STREAM devnet-sensors\\n10.42.1.7 DGRAM\\n10.42.2.9 STREAM\\n" ;;\n'
                '  kaspad-0.kaspad) printf "10.42.0.5 STREAM kaspad-0.kaspad\\n" ;;\n'
                '  *) exit 2 ;;\nesac\n')
            (bin_dir / "kaspad").write_text('#!/bin/sh\necho "kaspad $*"\n')
            for tool in ("getent", "kaspad"):
                (bin_dir / tool).chmod(0o755)
            script = script.replace("/usr/local/bin/kaspad", str(bin_dir / "kaspad"))
            env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", SENSOR_SERVICE="devnet-sensors",
                       LAB_SEED="kaspad-0.kaspad")
            proc = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, timeout=20)
        self.assertEqual(proc.returncode, 0, proc.stderr)
        launched = proc.stdout.splitlines()[-1]
        self.assertTrue(launched.startswith("kaspad --devnet --appdir=/data --nologfiles --nodnsseed"), launched)
        self.assertIn("--listen=0.0.0.0:16611", launched)
        peers = [w for w in launched.split() if w.startswith("--addpeer=")]
        self.assertEqual(peers, ["--addpeer=10.42.1.7:16611", "--addpeer=10.42.2.9:16611", "--addpeer=10.42.0.5:16611"])
