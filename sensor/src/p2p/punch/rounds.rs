//! The hole-punch client's modes over time: holding the reservation, rounds of attempts, and
//! one attempt from the circuit dial to its verdict.

use std::path::Path;

use futures::StreamExt;
use libp2p::{
    PeerId,
    swarm::dial_opts::{DialOpts, PeerCondition},
};
use time::OffsetDateTime;
use tokio::{
    sync::watch,
    time::{Instant, sleep_until},
};
use uuid::Uuid;

use super::{
    DISCONNECT_TIMEOUT, Mode, PunchClient, SETUP_TIMEOUT, attempt::AttemptTracker, client::sleep_until_opt,
    events::observe,
};
use crate::{kaspa::version::LocalVersion, p2p::kaspa_stream};
use sensor_core::{
    punch::{KaspaCheck, Outcome, PunchAttempt},
    reachability::Reachability,
};

/// First and longest pause before a lost reservation is requested again.
const RESERVE_BACKOFF: (std::time::Duration, std::time::Duration) =
    (std::time::Duration::from_secs(1), std::time::Duration::from_secs(30));
/// Bound of the Kaspa handshake after a success: stream, gRPC stream and Version/Verack/Ready.
pub const KASPA_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Lines of a targets file read at most (a fleet is far smaller).
pub const MAX_TARGETS: usize = 10_000;

impl PunchClient {
    /// Runs the configured [`Mode`] until it is done or `stop` turns true.
    pub async fn run(&mut self, mut stop: watch::Receiver<bool>) {
        match self.settings.mode {
            Mode::Hold { hold_for } => {
                if !self.hold(&mut stop, hold_for.map(|d| Instant::now() + d)).await {
                    tracing::info!(seconds = hold_for.map(|d| d.as_secs()), "reservation held for punch.timeout_secs");
                }
            }
            Mode::Once => {
                self.wait_for_relay(&mut stop).await;
                self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
                self.round(&mut stop).await;
            }
            Mode::Rounds { interval } => {
                self.wait_for_relay(&mut stop).await;
                loop {
                    let next = Instant::now() + interval;
                    self.round(&mut stop).await;
                    if *stop.borrow() || self.hold(&mut stop, Some(next)).await {
                        break;
                    }
                }
            }
        }
    }

    /// Holds the reservation until `stop` (returns true) or `until` (returns false),
    /// re-reserving with backoff when it is lost.
    async fn hold(&mut self, stop: &mut watch::Receiver<bool>, until: Option<Instant>) -> bool {
        let mut backoff = RESERVE_BACKOFF.0;
        let mut retry_at: Option<Instant> = None;
        loop {
            if self.reservation.is_some() {
                backoff = RESERVE_BACKOFF.0;
            } else if self.circuit_listener.is_none() && retry_at.is_none() {
                tracing::info!(retry_in = ?backoff, "no reservation on the relay; retrying");
                retry_at = Some(Instant::now() + backoff);
                backoff = (backoff * 2).min(RESERVE_BACKOFF.1);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return true,
                _ = sleep_until_opt(until) => return false,
                _ = sleep_until_opt(retry_at) => {
                    retry_at = None;
                    tracing::info!(relay = %self.settings.relay, "requesting the reservation again");
                    self.reserve();
                }
                event = self.swarm.select_next_some() => self.handle(&event),
            }
        }
    }

    /// One round: every attempt of every current target, one at a time. In rounds mode a round
    /// without a relay connection is skipped (logged): its attempts could only say
    /// `no_relay_connection`, and would lower the relay's success rate for an outage.
    async fn round(&mut self, stop: &mut watch::Receiver<bool>) {
        if matches!(self.settings.mode, Mode::Rounds { .. }) && self.relay_connections.is_empty() {
            tracing::warn!(relay = %self.settings.relay, "not connected to the relay: round skipped");
            return;
        }
        let targets = self.current_targets();
        tracing::info!(targets = targets.len(), attempts = self.settings.attempts, "punch round");
        'targets: for target in targets {
            for n in 1..=self.settings.attempts {
                if *stop.borrow() {
                    break 'targets;
                }
                self.disconnect(target).await;
                let mut attempt = self.attempt(target, n, stop).await;
                if self.settings.kaspa_handshake && attempt.result.outcome == Outcome::Success {
                    attempt.kaspa = Some(self.kaspa_handshake(target).await);
                }
                let cancelled = attempt.result.outcome == Outcome::Cancelled;
                self.record(attempt);
                if cancelled {
                    break 'targets;
                }
            }
        }
    }

    /// `punch.targets` then the targets file's PeerIds, de-duplicated, without our own.
    fn current_targets(&self) -> Vec<PeerId> {
        let mut targets = self.settings.targets.clone();
        if let Some(path) = &self.settings.targets_file {
            targets.extend(read_targets(path));
        }
        let mut seen = std::collections::HashSet::new();
        targets.retain(|t| *t != self.peer_id && seen.insert(*t));
        targets
    }

    /// Before the first attempt: waits (bounded) for the relay connection, the observed address
    /// from its identify (which DCUtR hands to the target) and a self-reachability verdict.
    /// Carries on without them (the attempts then say what failed).
    async fn wait_for_relay(&mut self, stop: &mut watch::Receiver<bool>) {
        let deadline = Instant::now() + SETUP_TIMEOUT.min(self.settings.attempt_timeout);
        // A failed reservation request means the relay is unreachable or refuses us: go on.
        while (!self.observed || self.waiting_for_mapping()) && self.circuit_listener.is_some() {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = sleep_until(deadline) => {
                    if self.relay_connections.is_empty() {
                        tracing::warn!(relay = %self.settings.relay, "not connected to the relay; attempts will fail");
                    } else if !self.observed {
                        tracing::warn!("the relay reported no observed address yet; hole punching will likely fail");
                    } else {
                        tracing::info!("no self-reachability verdict yet; attempts record it as unknown");
                    }
                    return;
                }
                event = self.swarm.select_next_some() => self.handle(&event),
            }
        }
    }

    /// A Kaspa handshake with the node behind `target`'s bridge, over a `/p2psensor/kaspa/1`
    /// stream on the direct connection just made, bounded by [`KASPA_HANDSHAKE_TIMEOUT`]; the
    /// swarm keeps being driven meanwhile.
    async fn kaspa_handshake(&mut self, target: PeerId) -> KaspaCheck {
        let ours = LocalVersion { network: self.network, id: uuid::Uuid::new_v4(), address: None }.message();
        let mut control = self.streams.clone();
        let handshake = kaspa_stream::handshake(&mut control, target, ours, KASPA_HANDSHAKE_TIMEOUT);
        tokio::pin!(handshake);
        let result = loop {
            tokio::select! {
                result = &mut handshake => break result,
                event = self.swarm.select_next_some() => self.handle(&event),
            }
        };
        match result {
            Ok(k) => {
                tracing::info!(%target, user_agent = %k.user_agent, network = %k.network, ms = k.elapsed_ms, "Kaspa handshake over the hole-punched connection");
                KaspaCheck::Done { user_agent: k.user_agent, network: k.network, elapsed_ms: k.elapsed_ms }
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "no Kaspa handshake over the hole-punched connection");
                KaspaCheck::Failed(e.to_string())
            }
        }
    }

    /// A mapping-test dial of the relay's alternate address is out and has no verdict yet.
    fn waiting_for_mapping(&self) -> bool {
        !self.mapping_dials.is_empty() && self.reachability == Reachability::Unknown
    }

    /// Closes every connection to `target` and waits (bounded) until they are gone.
    async fn disconnect(&mut self, target: PeerId) {
        if self.swarm.disconnect_peer_id(target).is_err() {
            return;
        }
        let deadline = Instant::now() + DISCONNECT_TIMEOUT;
        while self.swarm.is_connected(&target) {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.handle(&event),
                Err(_) => {
                    tracing::warn!(%target, "connections to the target did not close within {DISCONNECT_TIMEOUT:?}");
                    return;
                }
            }
        }
    }

    /// One attempt (see [`attempt`] for the verdicts).
    async fn attempt(&mut self, target: PeerId, n: u32, stop: &mut watch::Receiver<bool>) -> PunchAttempt {
        let started_at = OffsetDateTime::now_utc();
        let t0 = Instant::now();
        let limit = self.settings.attempt_timeout;
        let mut tracker = AttemptTracker::new(t0.into_std(), self.settings.relay_transport);
        let opts = DialOpts::peer_id(target)
            .addresses(vec![self.settings.circuit_to(target)])
            .condition(PeerCondition::Always)
            .build();
        tracker.circuit_dial_started(opts.connection_id());
        tracing::info!(%target, attempt = n, via = %self.settings.relay, "punch attempt started");
        if let Err(e) = self.swarm.dial(opts) {
            tracker.circuit_dial_refused(std::time::Instant::now(), e.to_string());
        }
        let deadline = t0 + limit;
        while tracker.verdict().is_none() {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {
                    tracker.cancel(std::time::Instant::now());
                }
                _ = sleep_until(deadline) => {
                    tracker.deadline(std::time::Instant::now(), limit);
                }
                event = self.swarm.select_next_some() => {
                    let now = std::time::Instant::now();
                    self.handle(&event);
                    observe(&mut tracker, target, &event, now);
                }
            }
        }
        let mut result = tracker.verdict().cloned().expect("the loop ends with a verdict");
        if result.outcome == Outcome::NoRelayConnection && self.relay_connections.is_empty() {
            let error = result.error.take().unwrap_or_default();
            result.error = Some(format!("not connected to the relay {}: {error}", self.settings.relay));
        }
        PunchAttempt {
            attempt_id: Uuid::now_v7(),
            started_at,
            sensor_id: self.settings.sensor_id.clone(),
            relay: self.settings.relay.to_string(),
            relay_node: self.settings.relay_node.clone(),
            target: target.to_base58(),
            attempt: n,
            nat_verdict: self.reachability,
            result,
            kaspa: None,
        }
    }
}

/// The PeerIds in a targets file (see `punch.targets_file`); a missing or unreadable file is an
/// empty list, logged.
pub fn read_targets(path: &Path) -> Vec<PeerId> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let (targets, malformed) = parse_targets(&text);
            if !malformed.is_empty() {
                tracing::warn!(file = %path.display(), lines = ?malformed, "targets file: lines that are not PeerIds skipped");
            }
            targets
        }
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "targets file unreadable: no targets from it this round");
            Vec::new()
        }
    }
}

/// Parses a targets file: one base58 PeerId per line, surrounding blanks trimmed, blank lines
/// and `#` comments ignored, at most [`MAX_TARGETS`] lines. Returns the PeerIds in order and the
/// 1-based numbers of the lines that are not PeerIds.
pub fn parse_targets(text: &str) -> (Vec<PeerId>, Vec<usize>) {
    let (mut targets, mut malformed) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().take(MAX_TARGETS).enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match line.parse::<PeerId>() {
            Ok(peer) => targets.push(peer),
            Err(_) => malformed.push(i + 1),
        }
    }
    (targets, malformed)
}

#[cfg(test)]
mod tests {
    use libp2p::identity::Keypair;

    use super::*;

    #[test]
    fn targets_files_skip_comments_blanks_and_garbage() {
        let a = Keypair::generate_ed25519().public().to_peer_id();
        let b = Keypair::generate_ed25519().public().to_peer_id();
        let text = format!("# fleet members\n{a}\n\n  {b}  # sensor-1\nnot-a-peer-id\n{a}\n");
        let (targets, malformed) = parse_targets(&text);
        assert_eq!(targets, [a, b, a], "duplicates are dropped by the caller, not the parser");
        assert_eq!(malformed, [5]);
        let huge = format!("{a}\n").repeat(MAX_TARGETS + 5);
        assert_eq!(parse_targets(&huge).0.len(), MAX_TARGETS);
        let dir = tempfile::tempdir().unwrap();
        assert!(read_targets(&dir.path().join("missing")).is_empty());
        let file = dir.path().join("targets");
        std::fs::write(&file, format!("{b}\n")).unwrap();
        assert_eq!(read_targets(&file), [b]);
    }
}
