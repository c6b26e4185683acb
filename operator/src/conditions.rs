//! kstatus conditions: pure helpers that keep `lastTransitionTime` stable.
//!
//! A condition's `lastTransitionTime` changes only when its `status` flips; rewriting it on every
//! reconcile would change `.status` each time and re-trigger the watch (docs/operator.md).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition as computed by a pure status function, before timestamps are attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// `Ready`, `Reconciling`, `Stalled` or `Degraded`.
    pub type_: &'static str,
    pub status: bool,
    /// CamelCase reason, e.g. `AllSensorsReporting`.
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Self { type_, status, reason, message: message.into() }
    }
}

fn status_str(status: bool) -> &'static str {
    if status { "True" } else { "False" }
}

/// Builds the new condition list: one entry per `desired`, in that order, each stamped with
/// `generation`; `lastTransitionTime` is copied from `old` when the status did not change and set
/// to `now` otherwise.
pub fn merge(old: &[Condition], desired: &[Desired], generation: Option<i64>, now: &Time) -> Vec<Condition> {
    desired
        .iter()
        .map(|d| {
            let status = status_str(d.status).to_string();
            let previous = old.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status,
                reason: d.reason.to_string(),
                message: d.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// True for the abnormal state of a condition: `Stalled`/`Degraded` True, `Ready` False.
pub fn is_abnormal(condition: &Condition) -> bool {
    match condition.type_.as_str() {
        "Stalled" | "Degraded" => condition.status == "True",
        "Ready" => condition.status == "False",
        _ => false,
    }
}

/// The conditions of `new` worth a Kubernetes Event: every status flip against `old`, and a
/// condition seen for the first time only when it is abnormal and not the normal start-up state
/// (`Ready` False is how every resource starts; `Stalled`/`Degraded` True are news).
pub fn transitions<'a>(old: &[Condition], new: &'a [Condition]) -> Vec<&'a Condition> {
    new.iter()
        .filter(|n| match old.iter().find(|o| o.type_ == n.type_) {
            Some(o) => o.status != n.status,
            None => is_abnormal(n) && n.type_ != "Ready",
        })
        .collect()
}

/// True when `conditions` has `type_` with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let first = merge(&[], &[Desired::new("Ready", false, "Starting", "m")], Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));
        // Same status, other reason and generation: the time stays.
        let same = merge(&first, &[Desired::new("Ready", false, "WorkloadNotReady", "n")], Some(2), &at(200));
        assert_eq!(same[0].last_transition_time, at(100));
        assert_eq!(same[0].observed_generation, Some(2));
        assert_eq!(same[0].reason, "WorkloadNotReady");
        assert!(transitions(&first, &same).is_empty());
        // Flip: the time moves and it is a transition.
        let flipped = merge(&same, &[Desired::new("Ready", true, "AllSensorsReporting", "")], Some(2), &at(300));
        assert_eq!(flipped[0].last_transition_time, at(300));
        assert_eq!(transitions(&same, &flipped).len(), 1);
        assert!(is_true(&flipped, "Ready"));
        assert!(!is_true(&same, "Ready"));
    }

    #[test]
    fn first_conditions_raise_events_only_for_news() {
        let first = merge(
            &[],
            &[
                Desired::new("Ready", false, "WorkloadNotFound", ""),
                Desired::new("Reconciling", true, "Creating", ""),
                Desired::new("Stalled", true, "InvalidSpec", "replicas"),
                Desired::new("Degraded", false, "AsExpected", ""),
            ],
            Some(1),
            &at(1),
        );
        let events: Vec<&str> = transitions(&[], &first).iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(events, ["Stalled"]);
    }
}
