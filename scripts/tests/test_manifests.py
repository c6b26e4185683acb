"""The k3d manifests, rendered as the scripts render them, validated like the chart's examples by
scripts/validate-chart.py: SensorFleet against crds/ (schema, defaults, CEL rules), Service,
StatefulSet and NetworkPolicy against Kubernetes' own schemas (kubernetes-validate). Needs the
chart validation's virtualenv (scripts/test.sh runs this suite with it); skipped under a plain
python3 without those packages.
"""

import importlib.util
import subprocess
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# validate-chart.py re-executes itself under the chart venv when its packages are missing: load it
# only when they are all importable here.
NEEDED = ("yaml", "jsonschema", "kubernetes_validate", "cel", "helm_python")
validate_chart = None
if all(importlib.util.find_spec(name) is not None for name in NEEDED):
    import yaml

    spec = importlib.util.spec_from_file_location("validate_chart", REPO / "scripts" / "validate-chart.py")
    validate_chart = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(validate_chart)


def render(template, *pairs):
    proc = subprocess.run(["bash", "-c", f"source scripts/lib/common.sh; render_template {template} {' '.join(pairs)}"],
                          cwd=REPO, capture_output=True, text=True, check=True)
    return list(yaml.safe_load_all(proc.stdout))


@unittest.skipIf(validate_chart is None, "chart validation packages missing (run with the chart venv's python)")
class Manifests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.crds, errors = validate_chart.load_crds(REPO / "crds")
        assert not errors, errors

    def check_builtin(self, obj):
        errors, skipped = validate_chart.validate_k8s_object(obj)
        self.assertEqual(errors, [])
        self.assertIsNone(skipped)

    def test_fleet(self):
        for sensors in ("1", "3"):
            (fleet,) = render("k3d/manifests/fleet.yaml", f"SENSORS={sensors}")
            errors, _ = validate_chart.validate_custom_resource(fleet, self.crds)
            self.assertEqual(errors, [], sensors)
            self.assertEqual(fleet["spec"]["relayRef"]["name"], "relay")

    def test_relay_example_used_by_the_scripts(self):
        (relay,) = list(yaml.safe_load_all((REPO / "examples" / "relay.yaml").read_text()))
        self.assertEqual(relay["metadata"]["name"], "relay")
        self.assertEqual(relay["spec"]["placement"]["nodeSelector"], {"p2psensor.dev/relay": "true"})
        self.assertIn("p2psensor.dev/relay=true", (REPO / "k3d" / "cluster.yaml").read_text())

    def test_kaspad(self):
        for nat in ("true", "false"):
            docs = render("k3d/manifests/kaspad.yaml", "NAME=kaspad-nat", "REPLICAS=2", f"NAT={nat}")
            self.assertEqual([d["kind"] for d in docs], ["Service", "StatefulSet"])
            for doc in docs:
                self.check_builtin(doc)
            pod = docs[1]["spec"]["template"]
            self.assertEqual(pod["metadata"]["labels"]["p2psensor.dev/lab-nat"], nat)
            self.assertEqual(validate_chart.restricted_pod_errors("kaspad", pod["spec"]), [])

    def test_nat_policy(self):
        (policy,) = list(yaml.safe_load_all((REPO / "k3d" / "manifests" / "nat-policy.yaml").read_text()))
        self.check_builtin(policy)
        self.assertEqual(policy["spec"]["ingress"], [])
        self.assertEqual(policy["spec"]["podSelector"]["matchLabels"], {"p2psensor.dev/lab-nat": "true"})


if __name__ == "__main__":
    unittest.main()
