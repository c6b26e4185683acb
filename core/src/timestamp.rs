//! The one timestamp form the sensor stores and exports.

use time::{
    OffsetDateTime, UtcOffset,
    format_description::{BorrowedFormatItem, well_known::Rfc3339},
    macros::format_description,
};

/// RFC 3339 UTC with a fixed 9-digit fraction, so that text order is time order (the store's
/// `ORDER BY timestamp` and `max(last_seen)` rely on it).
const TIMESTAMP_FORMAT: &[BorrowedFormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// `2026-11-21T04:26:00.123456789Z`: the form of every stored and exported timestamp, whatever
/// the offset of `t`. Never fails (a year outside 0..=9999 falls back to `time`'s own text).
pub fn format_timestamp(t: OffsetDateTime) -> String {
    t.to_offset(UtcOffset::UTC).format(TIMESTAMP_FORMAT).unwrap_or_else(|_| t.to_string())
}

/// Parses any RFC 3339 timestamp (the stored form among them). `None` when `text` is not one.
pub fn parse_timestamp(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_width_utc_and_round_trip() {
        let t = time::macros::datetime!(2026-11-21 05:26:00.5 +01:00);
        let text = format_timestamp(t);
        assert_eq!(text, "2026-11-21T04:26:00.500000000Z");
        assert_eq!(parse_timestamp(&text), Some(t));
        assert_eq!(parse_timestamp("yesterday"), None);
    }
}
