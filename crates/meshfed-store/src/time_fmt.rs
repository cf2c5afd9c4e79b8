//! Timestamps as people read them in error messages, and as the file holds them.

use std::fmt;

use meshfed_proto::envelope::Timestamp;
use time::OffsetDateTime;

use crate::error::StoreError;

/// Shows a [`Timestamp`] as RFC 3339 UTC with milliseconds (`2026-05-01T12:00:00.000Z`), or as
/// raw milliseconds when it lies outside the calendar `time` can represent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shown(pub(crate) Timestamp);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = i128::from(self.0.0) * 1_000_000;
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(nanos) else {
            return write!(f, "{} ms after the Unix epoch", self.0.0);
        };
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond()
        )
    }
}

/// A timestamp as the file stores it (SQLite integers are signed 64-bit).
pub(crate) fn to_sql(field: &'static str, t: Timestamp) -> Result<i64, StoreError> {
    i64::try_from(t.0).map_err(|_| StoreError::TimestampOutOfRange { field, value: t.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_show_as_rfc3339_utc() {
        assert_eq!(Shown(Timestamp(0)).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Shown(Timestamp(1_767_225_600_123)).to_string(),
            "2026-01-01T00:00:00.123Z"
        );
        assert_eq!(
            Shown(Timestamp(u64::MAX)).to_string(),
            format!("{} ms after the Unix epoch", u64::MAX)
        );
    }

    #[test]
    fn timestamps_beyond_i64_are_refused() {
        let err = to_sql("created", Timestamp(u64::MAX)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("created 18446744073709551615 ms is beyond"),
            "{err}"
        );
    }
}
