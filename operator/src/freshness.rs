//! Report timestamps in `.status` (`lastReportTime`, each sensor's `lastReportTime`) move with
//! every report, every 10 s. Written each time, they would make every status write a heartbeat:
//! on a real API server, 1,000 quiet fleets cost 100 status writes/s, and as many reconciles of
//! the operator's own writes, although nothing a reader acts on had changed. Kubernetes moved its
//! own heartbeats out of Node status into Leases for the same reason.
//!
//! [`hold`] keeps the timestamps a status already has while nothing else in it changed and the
//! newest of them is younger than a heartbeat interval; anything else that changes (counts,
//! `reporting`, conditions, the set of sensors) is written at once, with fresh timestamps. A
//! status' report timestamps are thus at most one heartbeat (`--status-heartbeat-secs`, 60 s by
//! default) behind; the exact age of each sensor's newest report is the Prometheus metrics'.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::crd::{RelayNodeStatus, SensorFleetStatus};

/// A status with report timestamps.
pub trait ReportTimes: Clone + PartialEq {
    /// Every report timestamp, in a fixed order (the same statuses give the same order).
    fn report_times_mut(&mut self) -> Vec<&mut Option<Time>>;
}

impl ReportTimes for SensorFleetStatus {
    fn report_times_mut(&mut self) -> Vec<&mut Option<Time>> {
        let mut times = vec![&mut self.last_report_time];
        times.extend(self.sensor_summaries.iter_mut().map(|s| &mut s.last_report_time));
        times
    }
}

impl ReportTimes for RelayNodeStatus {
    fn report_times_mut(&mut self) -> Vec<&mut Option<Time>> {
        vec![&mut self.last_report_time]
    }
}

/// Sets `new`'s report timestamps to `old`'s when that makes the two equal and `new`'s newest
/// timestamp is less than `heartbeat` after `old`'s newest (then `new == old`: nothing to write).
/// Otherwise `new` is left as it is. A zero `heartbeat` holds nothing.
pub fn hold<S: ReportTimes>(new: &mut S, old: Option<&S>, heartbeat: Duration) {
    let Some(old) = old else { return };
    if heartbeat.is_zero() {
        return;
    }
    let mut old_times = old.clone();
    let old_times: Vec<Option<Time>> = old_times.report_times_mut().into_iter().map(|t| t.clone()).collect();
    let mut held = new.clone();
    let slots = held.report_times_mut();
    if slots.len() != old_times.len() {
        return;
    }
    let newest_new = slots.iter().filter_map(|t| t.as_ref().map(|t| t.0)).max();
    for (slot, time) in slots.into_iter().zip(&old_times) {
        slot.clone_from(time);
    }
    if held != *old {
        return;
    }
    let newest_old = old_times.iter().filter_map(|t| t.as_ref().map(|t| t.0)).max();
    let due = match (newest_old, newest_new) {
        (Some(o), Some(n)) => n.duration_since(o).unsigned_abs() >= heartbeat,
        (None, None) => false,
        _ => true,
    };
    if !due {
        *new = held;
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::crd::SensorSummary;

    const MINUTE: Duration = Duration::from_secs(60);

    fn at(s: i64) -> Option<Time> {
        Some(Time(Timestamp::from_second(1_750_000_000 + s).unwrap()))
    }

    fn fleet(public: i64, times: [i64; 2]) -> SensorFleetStatus {
        let summary = |name: &str, t: i64| SensorSummary {
            name: name.into(),
            public,
            last_report_time: at(t),
            ..Default::default()
        };
        SensorFleetStatus {
            last_report_time: at(times[0].max(times[1])),
            sensor_summaries: vec![summary("a-0", times[0]), summary("a-1", times[1])],
            ..SensorFleetStatus::default()
        }
    }

    #[test]
    fn only_newer_report_times_are_held_until_the_heartbeat() {
        let old = fleet(5, [0, 3]);
        let mut new = fleet(5, [10, 13]);
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new, old, "10 s later, nothing else changed: the old timestamps stay");

        let mut new = fleet(5, [60, 63]);
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new, fleet(5, [60, 63]), "a heartbeat later the fresh timestamps are written");
    }

    #[test]
    fn any_other_change_is_written_with_fresh_times() {
        let old = fleet(5, [0, 3]);
        let mut new = fleet(6, [10, 13]);
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new, fleet(6, [10, 13]), "a count changed");

        let mut new = fleet(5, [10, 13]);
        new.sensor_summaries[1].reporting = true;
        let expected = new.clone();
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new, expected, "a sensor's reporting flag changed");

        let mut new = fleet(5, [10, 13]);
        new.sensor_summaries.pop();
        let expected = new.clone();
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new, expected, "a sensor left the summaries");
    }

    #[test]
    fn a_first_status_or_a_zero_heartbeat_holds_nothing() {
        let mut new = fleet(5, [10, 13]);
        hold(&mut new, None, MINUTE);
        assert_eq!(new, fleet(5, [10, 13]));
        hold(&mut new, Some(&fleet(5, [0, 3])), Duration::ZERO);
        assert_eq!(new, fleet(5, [10, 13]));
    }

    #[test]
    fn a_first_report_time_is_written() {
        let old = RelayNodeStatus::default();
        let mut new = RelayNodeStatus { last_report_time: at(0), ..RelayNodeStatus::default() };
        hold(&mut new, Some(&old), MINUTE);
        assert_eq!(new.last_report_time, at(0));
    }
}
