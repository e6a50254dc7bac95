//! Login throttling, in memory (moka): per username and client address, five
//! failures in fifteen minutes lock that pair out until the window passes,
//! even with the right password; per client address, thirty attempts a
//! minute. Windows are fixed from their first event, so `Retry-After` is
//! exact.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use moka::sync::Cache;

pub const FAILURE_LIMIT: u32 = 5;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
pub const ATTEMPT_LIMIT: u32 = 30;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Bounds memory under a flood of distinct usernames or addresses.
const MAX_TRACKED: u64 = 100_000;

/// Events counted since a window opened.
struct Window {
    opened: Instant,
    count: AtomicU32,
}

impl Window {
    fn retry_after(&self, length: Duration) -> Duration {
        length
            .saturating_sub(self.opened.elapsed())
            .max(Duration::from_secs(1))
    }
}

pub struct LoginThrottle {
    failures: Cache<(String, IpAddr), Arc<Window>>,
    attempts: Cache<IpAddr, Arc<Window>>,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle::new()
    }
}

impl LoginThrottle {
    pub fn new() -> LoginThrottle {
        LoginThrottle {
            failures: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(FAILURE_WINDOW)
                .build(),
            attempts: Cache::builder()
                .max_capacity(MAX_TRACKED)
                .time_to_live(ATTEMPT_WINDOW)
                .build(),
        }
    }

    /// Counts a login attempt for `username_key` from `client`; `Err` with
    /// the wait when it must be refused.
    pub fn attempt(&self, username_key: &str, client: IpAddr) -> Result<(), Duration> {
        if let Some(failures) = self.failures.get(&(username_key.to_string(), client))
            && failures.count.load(Ordering::Relaxed) >= FAILURE_LIMIT
        {
            return Err(failures.retry_after(FAILURE_WINDOW));
        }
        let attempts = self.attempts.get_with(client, new_window);
        if attempts.count.fetch_add(1, Ordering::Relaxed) >= ATTEMPT_LIMIT {
            return Err(attempts.retry_after(ATTEMPT_WINDOW));
        }
        Ok(())
    }

    pub fn failed(&self, username_key: &str, client: IpAddr) {
        let failures = self
            .failures
            .get_with((username_key.to_string(), client), new_window);
        failures.count.fetch_add(1, Ordering::Relaxed);
    }

    /// A successful login clears the pair's failures.
    pub fn succeeded(&self, username_key: &str, client: IpAddr) {
        self.failures
            .invalidate(&(username_key.to_string(), client));
    }
}

fn new_window() -> Arc<Window> {
    Arc::new(Window {
        opened: Instant::now(),
        count: AtomicU32::new(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn five_failures_lock_the_pair_only() {
        let throttle = LoginThrottle::new();
        for _ in 0..FAILURE_LIMIT {
            assert!(throttle.attempt("alice", ip(1)).is_ok());
            throttle.failed("alice", ip(1));
        }
        let wait = throttle.attempt("alice", ip(1)).unwrap_err();
        assert!(
            wait > Duration::from_secs(14 * 60) && wait <= FAILURE_WINDOW,
            "{wait:?}"
        );
        assert!(throttle.attempt("alice", ip(2)).is_ok(), "another address");
        assert!(throttle.attempt("bob", ip(1)).is_ok(), "another user");
    }

    #[test]
    fn success_before_the_limit_clears_failures() {
        let throttle = LoginThrottle::new();
        for _ in 0..FAILURE_LIMIT - 1 {
            throttle.failed("alice", ip(1));
        }
        throttle.succeeded("alice", ip(1));
        throttle.failed("alice", ip(1));
        assert!(throttle.attempt("alice", ip(1)).is_ok());
    }

    #[test]
    fn an_address_gets_thirty_attempts_a_minute() {
        let throttle = LoginThrottle::new();
        for n in 0..ATTEMPT_LIMIT {
            assert!(throttle.attempt(&format!("user{n}"), ip(3)).is_ok());
        }
        let wait = throttle.attempt("someone", ip(3)).unwrap_err();
        assert!(
            wait <= ATTEMPT_WINDOW && wait > Duration::from_secs(50),
            "{wait:?}"
        );
        assert!(throttle.attempt("someone", ip(4)).is_ok());
    }
}
