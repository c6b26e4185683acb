//! The committed fuzz corpus, replayed under plain `cargo test`: every input in
//! `fuzz/corpus/<target>/` goes through the same property checks as the libFuzzer target
//! (`fuzz/checks/<target>.rs`, one function per target, compiled here and by
//! `fuzz/fuzz_targets/<target>.rs`). CI needs no cargo-fuzz build this way; fuzzing for new
//! inputs is `scripts/fuzz-smoke.sh` (README.md, "Fuzzing").

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::{Path, PathBuf},
};

#[path = "../../fuzz/checks/addresses.rs"]
mod addresses;
#[path = "../../fuzz/checks/config.rs"]
mod config;
#[path = "../../fuzz/checks/report.rs"]
mod report;
#[path = "../../fuzz/checks/version.rs"]
mod version;

/// A fuzz target's property checks: panics when an input breaks one.
type Check = fn(&[u8]);

/// Every fuzz target and its check.
const TARGETS: [(&str, Check); 4] = [
    ("addresses", addresses::check),
    ("config", config::check),
    ("report", report::check),
    ("version", version::check),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// File stems of the `.rs` files in `dir`, sorted.
fn stems(dir: &Path) -> Vec<String> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs `check` on every file of `fuzz/corpus/<target>/`; fails naming each input that panicked,
/// and when the directory is missing, empty, or holds anything but files.
fn replay(target: &str) {
    let check = TARGETS.iter().find(|(name, _)| *name == target).expect("a known target").1;
    let dir = fuzz_dir().join("corpus").join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("no corpus for target {target}: {}: {e}", dir.display()));
    let mut inputs: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "the corpus of target {target} ({}) is empty", dir.display());
    let mut failed = Vec::new();
    for input in &inputs {
        assert!(input.is_file(), "{}: not a file (a corpus is a flat directory of inputs)", input.display());
        let data = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(input.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "target {target}: {} of {} corpus inputs broke a property (panic messages above): {failed:?}",
        failed.len(),
        inputs.len()
    );
    eprintln!("target {target}: {} corpus inputs replayed", inputs.len());
}

#[test]
fn every_fuzz_target_has_its_corpus_replayed() {
    let known: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    assert_eq!(stems(&fuzz_dir().join("fuzz_targets")), known, "fuzz/fuzz_targets/ vs the replayed targets");
    assert_eq!(stems(&fuzz_dir().join("checks")), known, "fuzz/checks/ vs the replayed targets");
    let mut corpora: Vec<String> = std::fs::read_dir(fuzz_dir().join("corpus"))
        .expect("fuzz/corpus/")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    corpora.sort();
    assert_eq!(corpora, known, "fuzz/corpus/ vs the replayed targets");
}

#[test]
fn addresses_corpus() {
    replay("addresses");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn report_corpus() {
    replay("report");
}

#[test]
fn version_corpus() {
    replay("version");
}
