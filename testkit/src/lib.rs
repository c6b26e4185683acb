//! Test support for the sensor's integration tests and benchmarks; a dev-dependency of `sensor`,
//! never linked into a binary (issue 15).
//!
//! [`lab`]: a synthetic Kaspa network of kaspa-p2p-lib nodes on loopback, for the crawler's tests
//! (`sensor/tests/crawl_synthetic.rs`, `crawl_continuous.rs`, `dashboards.rs`) and its benchmark
//! (`sensor/benches/crawl.rs`).

pub mod lab;
