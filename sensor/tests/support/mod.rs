//! Test support for the end-to-end tests: a network-namespace lab, real kaspad nodes in it,
//! processes with log files, and a std-only HTTP GET. Each test binary uses a subset.
#![allow(dead_code)]

pub mod cluster;
pub mod collector;
pub mod http;
pub mod kaspad;
pub mod load;
pub mod natlab;
pub mod netns;
pub mod postgres;
pub mod process;
pub mod punchlab;
pub mod sensor_process;
pub mod webhook;

/// `Ok(())` when `cond` holds, else `Err(what())`: a step's check that reports instead of panicking
/// (the scenario returns the error, and the test prints its failure report).
pub fn ensure(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}
