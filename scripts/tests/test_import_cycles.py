"""scripts/check-import-cycles.py: finds a cycle through `crate::`, `super::` and `self::` paths,
and nothing in comments, strings or test modules."""

import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "check-import-cycles.py"


def check(files: dict[str, str]) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as root:
        for name, text in files.items():
            path = Path(root, name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return subprocess.run([sys.executable, SCRIPT, root], capture_output=True, text=True, timeout=30)


class ImportCycles(unittest.TestCase):
    def test_a_cycle_through_crate_paths_fails_and_names_the_ties(self):
        r = check({"lib.rs": "mod a; mod b;", "a.rs": "use crate::b::B;\npub struct A;", "b.rs": "pub struct B(crate::a::A);"})
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("import cycle of 2 modules", r.stdout)
        self.assertIn("a.rs -> ", r.stdout)
        self.assertIn(": B", r.stdout)

    def test_a_cycle_through_super_and_grouped_uses_fails(self):
        r = check({
            "lib.rs": "mod net;",
            "net/mod.rs": "mod conn; mod server;",
            "net/conn.rs": "use super::{server::{Server, Other}};\npub struct Conn;",
            "net/server.rs": "use super::conn::Conn;\npub struct Server;",
        })
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("conn.rs", r.stdout)

    def test_one_way_imports_comments_strings_and_tests_pass(self):
        r = check({
            "lib.rs": "mod a; mod b;",
            "a.rs": "use crate::b::B;\npub struct A(B);",
            "b.rs": "//! See [`crate::a::A`].\npub struct B;\nconst S: &str = \"crate::a::A\";\n"
            "#[cfg(test)]\nmod tests {\n    use crate::a::A;\n}\n",
        })
        self.assertEqual(r.returncode, 0, r.stdout)
        self.assertIn("no import cycles", r.stdout)


if __name__ == "__main__":
    unittest.main()
