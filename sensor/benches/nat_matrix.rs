//! Hole-punch benchmark across the NAT lab with the real binaries (issue 4, "Measure"):
//! {full-cone, restricted, symmetric}² × {TCP, QUIC}, ATTEMPTS attempts per case, each bounded by
//! TIMEOUT_SECS; prints success rate and time-to-direct p50/p95 per case (time from the relayed
//! connection to the first direct connection confirmed by a ping) and writes
//! `target/nat-matrix/bench.{csv,json}`. Needs root.
//!
//! ```text
//! cargo bench -p sensor --bench nat_matrix -- [ATTEMPTS=50] [TIMEOUT_SECS=5] [PARALLEL=3] [A:B:T...]
//! ```
//!
//! `A:B:T` runs only the cases that match (e.g. `restricted:restricted:tcp`, `symmetric::` or
//! `::quic`; an empty part matches anything).
//!
//! PARALLEL cases run at once, each in its own isolated lab. This kernel has no `sch_netem`: the
//! lab adds no latency, so times are the software's own (plus the machine's load).

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use support::natlab::NatType;
use support::punchlab::{self, CaseResult, Expected, Transport};

fn main() {
    let work = tempfile::tempdir().expect("work dir");
    // `cargo test --all-targets` runs this binary without `--bench`: one small case then, so the
    // benchmark cannot rot unnoticed.
    if !std::env::args().any(|a| a == "--bench") {
        let r =
            punchlab::run_case(work.path(), NatType::Restricted, NatType::Restricted, Transport::Quic, 2, 10, false)
                .unwrap_or_else(|e| panic!("smoke case: {e}"));
        assert_eq!(r.successes(), 2, "restricted ↔ restricted over QUIC punches: {:?}", r.attempts);
        println!("nat_matrix smoke: restricted ↔ restricted quic 2/2, time to direct {:?} ms", r.times_to_direct_ms());
        return;
    }
    let args: Vec<u64> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let attempts = args.first().copied().unwrap_or(50) as u32;
    let timeout = args.get(1).copied().unwrap_or(5);
    let parallel = args.get(2).copied().unwrap_or(3).max(1) as usize;
    let filters: Vec<Vec<String>> = std::env::args()
        .skip(1)
        .filter(|a| a.contains(':'))
        .map(|f| f.split(':').map(str::to_owned).collect())
        .collect();
    let part = |want: Option<&String>, name: &str| want.is_none_or(|w| w.is_empty() || w == name);
    let wanted = |a: NatType, b: NatType, t: Transport| {
        filters.is_empty()
            || filters.iter().any(|f| part(f.first(), a.name()) && part(f.get(1), b.name()) && part(f.get(2), t.name()))
    };
    let cases: Vec<(NatType, NatType, Transport)> = NatType::ALL
        .into_iter()
        .flat_map(|a| NatType::ALL.into_iter().flat_map(move |b| Transport::ALL.map(|t| (a, b, t))))
        .filter(|&(a, b, t)| wanted(a, b, t))
        .collect();
    println!("nat_matrix: {} cases × {attempts} attempts, {timeout} s bound each, {parallel} at once", cases.len());
    let started = Instant::now();
    let queue = Arc::new(Mutex::new(cases.clone()));
    let results = Arc::new(Mutex::new(Vec::<CaseResult>::new()));
    std::thread::scope(|scope| {
        for _ in 0..parallel {
            let (queue, results, work) = (queue.clone(), results.clone(), work.path());
            scope.spawn(move || {
                loop {
                    // Not `while let … = queue.lock()…`: that would hold the lock for the whole case.
                    let next = queue.lock().unwrap().pop();
                    let Some((a, b, t)) = next else { break };
                    match punchlab::run_case(work, a, b, t, attempts, timeout, false) {
                        Ok(r) => {
                            println!(
                                "  {:<10} → {:<10} {:<4}: {}/{} in {:.0?}",
                                a.name(),
                                b.name(),
                                t.name(),
                                r.successes(),
                                r.attempts.len(),
                                r.elapsed
                            );
                            results.lock().unwrap().push(r);
                        }
                        Err(e) => eprintln!("  {} → {} {}: FAILED TO RUN: {e}", a.name(), b.name(), t.name()),
                    }
                }
            });
        }
    });
    let mut results = Arc::try_unwrap(results).unwrap().into_inner().unwrap();
    let order = |r: &CaseResult| cases.iter().position(|c| *c == (r.a, r.b, r.transport));
    results.sort_by_key(order);
    let table = punchlab::write_matrix("bench", &results).expect("bench results written");
    println!("{table}");
    let (mut cone_ok, mut cone_all, mut false_success) = (0, 0, 0);
    let (mut ttd, mut first) = (Vec::new(), Vec::new());
    for r in &results {
        match punchlab::expected(r.a, r.b, r.transport) {
            Expected::Success => {
                cone_ok += r.successes();
                cone_all += r.attempts.len();
                ttd.extend(r.times_to_direct_ms());
                first.extend(r.first_time_to_direct_ms());
            }
            Expected::Failure => false_success += r.successes(),
            Expected::Race => {}
        }
    }
    ttd.sort_unstable();
    first.sort_unstable();
    println!(
        "traversable cases: {cone_ok}/{cone_all} succeeded ({:.1} %), time to direct p50 {:?} ms p95 {:?} ms \
         (first attempts, fresh NAT state: p50 {:?} ms, max {:?} ms); untraversable cases: {false_success} false \
         successes; {} cases in {:.0?}; no netem on this kernel",
        100.0 * cone_ok as f64 / cone_all.max(1) as f64,
        punchlab::quantile(&ttd, 0.5),
        punchlab::quantile(&ttd, 0.95),
        punchlab::quantile(&first, 0.5),
        first.last(),
        results.len(),
        started.elapsed()
    );
    println!("written to {}", punchlab::output_dir().display());
}
