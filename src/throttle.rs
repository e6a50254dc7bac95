//! Login throttling, in memory (moka): per username and client address, five
//! failures in fifteen minutes lock that pair out until the window passes,
//! even with the right password; per client address, thirty attempts a
//! minute, registrations included. Windows are fixed from their first event,
//! so `Retry-After` is exact.

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

    /// Starts a password check for `key` (a username, or another name for
    /// what is being guessed) from `client`; `Err` with the wait when it must
    /// be refused. The check counts as a failure from the start, so that
    /// concurrent guesses cannot slip past the limit while they are being
    /// verified: a success clears the pair's failures, a check that ends
    /// without a verdict gives its count back.
    pub fn begin(&self, key: &str, client: IpAddr) -> Result<Attempt<'_>, Duration> {
        self.address_attempt(client)?;
        let pair = (key.to_string(), client);
        let failures = self.failures.get_with(pair.clone(), new_window);
        let reserved = failures
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < FAILURE_LIMIT).then_some(count + 1)
            });
        match reserved {
            Ok(_) => Ok(Attempt {
                throttle: self,
                pair,
                failures,
                verdict: false,
            }),
            Err(_) => Err(failures.retry_after(FAILURE_WINDOW)),
        }
    }

    /// Counts a registration from `client` against its attempts budget.
    pub fn registration(&self, client: IpAddr) -> Result<(), Duration> {
        self.address_attempt(client)
    }

    fn address_attempt(&self, client: IpAddr) -> Result<(), Duration> {
        let attempts = self.attempts.get_with(client, new_window);
        if attempts.count.fetch_add(1, Ordering::Relaxed) >= ATTEMPT_LIMIT {
            return Err(attempts.retry_after(ATTEMPT_WINDOW));
        }
        Ok(())
    }
}

/// One password check under way, counted as a failure until it succeeds.
pub struct Attempt<'a> {
    throttle: &'a LoginThrottle,
    pair: (String, IpAddr),
    failures: Arc<Window>,
    verdict: bool,
}

impl Attempt<'_> {
    /// The password was wrong: the failure stands.
    pub fn failed(mut self) {
        self.verdict = true;
    }

    /// The password was right: the pair's failures are forgiven.
    pub fn succeeded(mut self) {
        self.verdict = true;
        self.throttle.failures.invalidate(&self.pair);
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.verdict {
            self.failures.count.fetch_sub(1, Ordering::AcqRel);
        }
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
            throttle.begin("alice", ip(1)).unwrap().failed();
        }
        let wait = throttle.begin("alice", ip(1)).err().unwrap();
        assert!(
            wait > Duration::from_secs(14 * 60) && wait <= FAILURE_WINDOW,
            "{wait:?}"
        );
        assert!(throttle.begin("alice", ip(2)).is_ok(), "another address");
        assert!(throttle.begin("bob", ip(1)).is_ok(), "another user");
    }

    #[test]
    fn concurrent_guesses_cannot_pass_the_limit() {
        let throttle = LoginThrottle::new();
        let in_flight: Vec<_> = (0..FAILURE_LIMIT)
            .map(|_| throttle.begin("alice", ip(1)).unwrap())
            .collect();
        assert!(
            throttle.begin("alice", ip(1)).is_err(),
            "five guesses are already under way"
        );
        drop(in_flight);
        assert!(
            throttle.begin("alice", ip(1)).is_ok(),
            "undecided checks give their count back"
        );
    }

    #[test]
    fn success_before_the_limit_clears_failures() {
        let throttle = LoginThrottle::new();
        for _ in 0..FAILURE_LIMIT - 1 {
            throttle.begin("alice", ip(1)).unwrap().failed();
        }
        throttle.begin("alice", ip(1)).unwrap().succeeded();
        throttle.begin("alice", ip(1)).unwrap().failed();
        assert!(throttle.begin("alice", ip(1)).is_ok());
    }

    #[test]
    fn an_address_gets_thirty_attempts_a_minute() {
        let throttle = LoginThrottle::new();
        for n in 0..ATTEMPT_LIMIT {
            throttle.begin(&format!("user{n}"), ip(3)).unwrap().failed();
        }
        let wait = throttle.begin("someone", ip(3)).err().unwrap();
        assert!(
            wait <= ATTEMPT_WINDOW && wait > Duration::from_secs(50),
            "{wait:?}"
        );
        assert!(throttle.registration(ip(4)).is_ok());
        assert!(
            throttle.registration(ip(3)).is_err(),
            "registrations share the budget"
        );
    }
}
