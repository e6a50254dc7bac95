//! Login throttling (contract section 8). The counters live in the database,
//! so every instance on it shares the budgets and N instances allow no more
//! guesses than one. A password check is guarded by three budgets:
//!
//! - per client address: 30 attempts a minute (registrations included);
//! - per guarded name and client address: 5 failures in 15 minutes, then 429
//!   even with the right password until the window passes;
//! - per guarded name from all addresses: after 20 failures in 15 minutes,
//!   one attempt a minute until the window passes, so that guessing from many
//!   addresses is slowed and the real user is slowed, never locked out.
//!
//! A check under way counts as a failure until it ends, so concurrent
//! guesses cannot slip past a limit while they are verified: a success
//! forgives the pair's failures and gives its own count back, a check that
//! ends without a verdict gives its count back. Windows are fixed from their
//! first event on the database's clock, so `Retry-After` is exact. Client
//! addresses count per IPv6 /64. Only the auth routes call in here: the
//! proxied path never touches the counters.
//!
//! Without the database nothing is admitted: the check fails with the store's
//! error (503 `database_unavailable`), never open.

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::store::{Admission, Budget, Charge, Held, Settlement, Store, StoreError};

/// Attempts per client address.
pub const ADDRESS: Budget = Budget {
    name: "address",
    limit: 30,
    window: Duration::from_secs(60),
    trickle: None,
};

/// Failures per guarded name and client address.
pub const PAIR: Budget = Budget {
    name: "pair",
    limit: 5,
    window: Duration::from_secs(15 * 60),
    trickle: None,
};

/// Failures per guarded name from all addresses; past the limit, one
/// attempt a minute.
pub const ACCOUNT: Budget = Budget {
    name: "account",
    limit: 20,
    window: Duration::from_secs(15 * 60),
    trickle: Some(Duration::from_secs(60)),
};

/// The longest window: counters older than this can refuse nothing.
pub const LONGEST_WINDOW: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ThrottleError {
    /// A budget is spent: come back after `retry_after` (whole seconds,
    /// rounded up, so a client that waits exactly that long is let in).
    #[error("rate limited for {retry_after:?}")]
    Limited { retry_after: Duration },
    /// The counters cannot be read or written: nothing is admitted.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ThrottleError {
    pub fn is_limited(&self) -> bool {
        matches!(self, ThrottleError::Limited { .. })
    }
}

/// The login budgets, kept in the database.
pub struct LoginThrottle {
    store: Store,
}

impl LoginThrottle {
    pub fn new(store: Store) -> LoginThrottle {
        LoginThrottle { store }
    }

    /// Starts a password check for `key` (a username key, or another name
    /// for what is being guessed) from `client`. The check counts as a
    /// failure until [`Attempt::succeeded`] or [`Attempt::failed`] ends it.
    pub async fn begin(&self, key: &str, client: IpAddr) -> Result<Attempt, ThrottleError> {
        let held = self.charge_guarded(key, client).await?;
        Ok(Attempt {
            store: self.store.clone(),
            held,
            verdict: false,
        })
    }

    /// Counts a registration from `client` against its address's attempts:
    /// each one costs a password hash.
    pub async fn registration(&self, client: IpAddr) -> Result<(), ThrottleError> {
        let address = client_key(client);
        self.charge(&[Charge {
            budget: &ADDRESS,
            subject: &address,
            reservation: false,
        }])
        .await?;
        Ok(())
    }

    /// Counts a password-reset request for `account` (the username or email
    /// address as given; case is ignored) from `client`. Each request counts
    /// as a failure under every budget of a password check, in a namespace
    /// of its own: reset requests never slow the account's logins, and one
    /// address cannot have more than five mails sent to one account in 15
    /// minutes, all addresses together twenty and then one a minute.
    pub async fn reset_request(&self, account: &str, client: IpAddr) -> Result<(), ThrottleError> {
        let key = format!("password-reset:{}", account.to_lowercase());
        self.charge_guarded(&key, client).await?;
        Ok(())
    }

    /// The three budgets of a password check, in an order that wastes
    /// nothing: the address's attempt stands even when a later budget
    /// refuses; the pair's reservation is given back if the account refuses,
    /// so a locked pair never spends the account's slow-down slot.
    async fn charge_guarded(&self, key: &str, client: IpAddr) -> Result<Vec<Held>, ThrottleError> {
        let address = client_key(client);
        let pair = format!("{key} {address}");
        self.charge(&[
            Charge {
                budget: &ADDRESS,
                subject: &address,
                reservation: false,
            },
            Charge {
                budget: &PAIR,
                subject: &pair,
                reservation: true,
            },
            Charge {
                budget: &ACCOUNT,
                subject: key,
                reservation: true,
            },
        ])
        .await
    }

    async fn charge(&self, charges: &[Charge<'_>]) -> Result<Vec<Held>, ThrottleError> {
        match self.store.charge_throttle(charges).await? {
            Admission::Admitted(held) => Ok(held),
            Admission::Refused { retry_after, .. } => Err(ThrottleError::Limited {
                retry_after: whole_seconds(retry_after),
            }),
        }
    }
}

/// One password check under way, counted as a failure until it ends.
#[must_use = "an attempt dropped without a verdict gives its count back"]
pub struct Attempt {
    store: Store,
    /// The pair's and the account's reservations.
    held: Vec<Held>,
    verdict: bool,
}

impl Attempt {
    /// The password was wrong: the failure stands.
    pub fn failed(mut self) {
        self.verdict = true;
    }

    /// The password was right: the pair's failures are forgiven, and this
    /// check does not count against the account. The account's other
    /// failures stand: the real user logging in does not hand a guesser
    /// on other addresses twenty more fast guesses.
    pub async fn succeeded(mut self) -> Result<(), StoreError> {
        self.verdict = true;
        let ends: Vec<(Held, Settlement)> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| {
                let settlement = if held.budget() == PAIR.name {
                    Settlement::Clear
                } else {
                    Settlement::GiveBack
                };
                (held, settlement)
            })
            .collect();
        self.store.settle_throttle(&ends).await
    }
}

impl Drop for Attempt {
    /// A check that ends without a verdict (the client went away, the
    /// database or the hasher failed) gives its count back, in the
    /// background. If that write fails too, the count stands as a failure.
    fn drop(&mut self) {
        if self.verdict || self.held.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let ends: Vec<(Held, Settlement)> = std::mem::take(&mut self.held)
            .into_iter()
            .map(|held| (held, Settlement::GiveBack))
            .collect();
        runtime.spawn(async move {
            if let Err(error) = store.settle_throttle(&ends).await {
                tracing::warn!(%error, "cannot give back an undecided login check's count");
            }
        });
    }
}

/// The part of a client address that is one client: an IPv4 address as is
/// (IPv4-mapped IPv6 included), an IPv6 address by its /64, the smallest
/// block a subscriber is given and within which a host picks any address.
pub fn client_key(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::from(u64::MAX));
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

/// A wait in whole seconds, rounded up and at least one: `Retry-After` says
/// seconds, and a client that waits what it says must be let in.
fn whole_seconds(wait: Duration) -> Duration {
    let seconds = wait.as_millis().div_ceil(1000).max(1);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ip: &str) -> String {
        client_key(ip.parse().unwrap())
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(key("2001:db8:1:3::1"), key("2001:db8:1:2::1"));
        assert_eq!(key("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(key("198.51.100.7"), "198.51.100.7");
        assert_eq!(key("::1"), "::/64");
    }

    #[test]
    fn waits_round_up_to_whole_seconds() {
        assert_eq!(
            whole_seconds(Duration::from_millis(59_001)),
            Duration::from_secs(60)
        );
        assert_eq!(
            whole_seconds(Duration::from_secs(60)),
            Duration::from_secs(60)
        );
        assert_eq!(whole_seconds(Duration::ZERO), Duration::from_secs(1));
    }
}
