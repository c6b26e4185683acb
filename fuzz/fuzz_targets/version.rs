//! Fuzz target `version`: the input and the properties checked are described in
//! `fuzz/checks/version.rs`, which the corpus replay under `cargo test` (`sensor/tests/fuzz_corpus.rs`)
//! calls too.

#![no_main]

#[path = "../checks/version.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
