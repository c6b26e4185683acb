//! Fuzz target `report`: the input and the properties checked are described in
//! `fuzz/checks/report.rs`, which the corpus replay under `cargo test` (`sensor/tests/fuzz_corpus.rs`)
//! calls too.

#![no_main]

#[path = "../checks/report.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
