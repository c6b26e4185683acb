//! Hole punching with the real `sensor relay` and `sensor punch` binaries across the NAT lab:
//! {full-cone, restricted, symmetric}² × {TCP, QUIC}, one attempt per case, each asserted
//! against NAT theory and DCUtR's TCP direction rule (`support::punchlab::expected`): a success is a direct
//! connection confirmed by a ping; a failure keeps the relayed connection (a relayed RTT was
//! measured) and is never reported as a success. Each client's self-reachability verdict
//! (AutoNAT + the address-mapping test against the relay's alternate port) must match its
//! router's type. After every success A completes a Kaspa handshake with the `sensor listen`
//! behind B over a `/p2psensor/kaspa/1` stream on the direct connection. Prints the matrix and writes it to `target/nat-matrix/matrix.{csv,json}`.
//! Needs root, `ip` and `nft`; `scripts/test.sh` runs it as root in the `--ignored` phase.

mod support;

use std::time::Instant;

use support::natlab::{self, NatType};
use support::punchlab::{self, CaseResult, Expected, Transport};

/// Bound of one attempt: successes take well under a second here; DCUtR gives up on a
/// symmetric pair after ~15 s (QUIC) to ~30 s (TCP), so a failing case ends as `timeout` or
/// `failed` within this.
const ATTEMPT_TIMEOUT_SECS: u64 = 12;

#[test]
#[ignore = "needs root and network namespaces; run by scripts/test.sh"]
fn hole_punching_matches_nat_theory_for_every_pair_and_transport() {
    let started = Instant::now();
    let work = tempfile::tempdir().expect("work dir");
    let mut results: Vec<CaseResult> = Vec::new();
    let mut wrong = Vec::new();
    for a in NatType::ALL {
        for b in NatType::ALL {
            for transport in Transport::ALL {
                let case = format!("{} → {} over {}", a.name(), b.name(), transport.name());
                let r = punchlab::run_case(work.path(), a, b, transport, 1, ATTEMPT_TIMEOUT_SECS, true)
                    .unwrap_or_else(|e| panic!("{case}: {e}"));
                let attempt = &r.attempts[0];
                eprintln!("[nat-matrix] {case}: {attempt}");
                let outcome = attempt["outcome"].as_str().unwrap_or_default();
                let expected = punchlab::expected(a, b, transport);
                if outcome == "success" {
                    if expected == Expected::Failure {
                        wrong.push(format!("{case}: a success that NAT theory rules out: {attempt}"));
                    }
                    assert!(attempt["direct_rtt_ms"].as_f64().is_some(), "{case}: success without a direct ping");
                    assert!(attempt["time_to_direct_ms"].as_u64().is_some(), "{case}: {attempt}");
                    let direct = attempt["direct_address"].as_str().unwrap_or_default();
                    assert!(!direct.contains("p2p-circuit"), "{case}: direct address {direct}");
                    // Kaspa over the hole-punched connection: B's sensor answered A's Version.
                    let agent = attempt["kaspa_user_agent"].as_str().unwrap_or_default();
                    if !agent.starts_with("/kaspa-sensor:") || attempt["kaspa_network"] != "kaspa-devnet" {
                        wrong.push(format!("{case}: no Kaspa handshake over the direct connection: {attempt}"));
                    }
                } else if expected == Expected::Success {
                    wrong.push(format!("{case}: expected success, got {attempt}"));
                } else if !matches!(outcome, "failed" | "timeout") {
                    wrong.push(format!("{case}: expected failed or timeout, got {attempt}"));
                } else if attempt["relayed_rtt_ms"].as_f64().is_none() {
                    wrong.push(format!("{case}: the relayed connection was not kept (no relayed RTT): {attempt}"));
                }
                let verdict = attempt["nat_verdict"].as_str().unwrap_or_default();
                if !punchlab::expected_reachability(a).contains(&verdict) {
                    wrong.push(format!(
                        "{case}: A's reachability {verdict:?}, expected one of {:?}",
                        punchlab::expected_reachability(a)
                    ));
                }
                results.push(r);
            }
        }
    }
    let table = punchlab::write_matrix("matrix", &results).expect("matrix written");
    eprintln!(
        "[nat-matrix] {} cases in {:.0?} (this kernel has no netem: no added latency)\n{table}[nat-matrix] written to {}",
        results.len(),
        started.elapsed(),
        punchlab::output_dir().display()
    );
    assert!(wrong.is_empty(), "cases that contradict NAT theory:\n{}", wrong.join("\n"));
    let left = natlab::namespaces_with_prefix("sl");
    assert!(left.iter().all(|n| !n.starts_with(&format!("sl{}x", std::process::id()))), "namespaces left: {left:?}");
}
