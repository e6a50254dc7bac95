//! Points in time that say their unit. Stored times are [`UnixMillis`]; JWT
//! claims are [`UnixSeconds`]. Converting between them is explicit, so no
//! call site divides by 1000 and hopes.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the unix epoch: the unit of every time in the database.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct UnixMillis(i64);

/// Seconds since the unix epoch: the unit of `iat`, `exp` and `nbf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixSeconds(i64);

impl UnixMillis {
    pub const fn new(ms: i64) -> UnixMillis {
        UnixMillis(ms)
    }

    pub fn now() -> UnixMillis {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("the system clock is after 1970");
        UnixMillis(since_epoch.as_millis() as i64)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The same instant, rounded down to the second.
    pub fn to_seconds(self) -> UnixSeconds {
        UnixSeconds(self.0.div_euclid(1000))
    }

    pub fn plus(self, duration: Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_add(millis(duration)))
    }

    pub fn minus(self, duration: Duration) -> UnixMillis {
        UnixMillis(self.0.saturating_sub(millis(duration)))
    }

    /// How long after `earlier` this is; zero if it is not after it.
    pub fn since(self, earlier: UnixMillis) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }

    /// As an RFC 3339 timestamp, to the second.
    pub fn rfc3339(self) -> String {
        let time = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_seconds(time).to_string()
    }

    /// As an RFC 3339 timestamp, to the millisecond: events that follow each
    /// other within a second keep their order.
    pub fn rfc3339_millis(self) -> String {
        let time = UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        humantime::format_rfc3339_millis(time).to_string()
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

impl UnixSeconds {
    pub const fn new(secs: i64) -> UnixSeconds {
        UnixSeconds(secs)
    }

    pub fn now() -> UnixSeconds {
        UnixMillis::now().to_seconds()
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    pub fn to_millis(self) -> UnixMillis {
        UnixMillis(self.0.saturating_mul(1000))
    }

    pub fn plus(self, duration: Duration) -> UnixSeconds {
        UnixSeconds(self.0.saturating_add(duration.as_secs() as i64))
    }

    /// Seconds from `earlier` to this (negative when this is earlier).
    pub fn seconds_after(self, earlier: UnixSeconds) -> i64 {
        self.0.saturating_sub(earlier.0)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_convert_explicitly() {
        let t = UnixMillis::new(1_700_000_000_999);
        assert_eq!(t.to_seconds(), UnixSeconds::new(1_700_000_000));
        assert_eq!(UnixSeconds::new(2).to_millis(), UnixMillis::new(2_000));
        assert_eq!(
            t.plus(Duration::from_secs(1)).get(),
            1_700_000_001_999,
            "durations add in milliseconds"
        );
        assert_eq!(t.since(t.plus(Duration::from_secs(5))), Duration::ZERO);
        assert_eq!(UnixMillis::new(0).rfc3339(), "1970-01-01T00:00:00Z");
    }
}
