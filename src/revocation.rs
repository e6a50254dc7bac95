//! The set of revoked sessions whose access tokens may still be unexpired.
//!
//! The instance that revokes a session adds it here at once. Every instance
//! also polls the database for sessions revoked anywhere: one small indexed
//! query per interval, whatever the number of users or requests, ordered by
//! the database clock. Entries expire after the longest an access token can
//! live, after which the token's own `exp` refuses it. With the database
//! unreachable the set keeps what it has and signed tokens keep working.
//!
//! Beside the set, and apart from it, [`feed`] keeps the same revocations in
//! order of time for `/.well-known/revoked-sessions`: upstreams that verify
//! tokens themselves poll it instead of the database.

mod feed;

use std::sync::Weak;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use foldhash::fast::RandomState;
use moka::sync::Cache;

use self::feed::RevocationLog;
pub use self::feed::{FeedCursor, FeedPage, InvalidCursor};
use crate::domain::SessionId;
use crate::store::{Store, StoreResult};
use crate::time::UnixMillis;

/// How often each instance asks the database for new revocations.
pub const POLL_INTERVAL: Duration = Duration::from_secs(2);
/// Revocations are re-read this far behind the newest one seen, so that a
/// transaction that committed late is not skipped.
const OVERLAP: Duration = Duration::from_secs(30);

pub struct Revocations {
    revoked: Cache<SessionId, (), RandomState>,
    /// Poll from here (database clock, unix ms).
    cursor: AtomicI64,
    /// The same revocations in order of time, for the feed.
    log: RevocationLog,
}

impl Revocations {
    /// `token_lifetime` is the longest an access token can be accepted: its
    /// TTL plus the clock-skew leeway.
    pub fn new(token_lifetime: Duration) -> Revocations {
        let since = UnixMillis::now().minus(token_lifetime + OVERLAP);
        Revocations {
            // Looked up on every request: a fast hash, keyed per process.
            revoked: Cache::builder()
                .time_to_live(token_lifetime)
                .build_with_hasher(RandomState::default()),
            cursor: AtomicI64::new(since.get()),
            log: RevocationLog::new(token_lifetime, since),
        }
    }

    pub fn is_revoked(&self, session: &SessionId) -> bool {
        self.revoked.contains_key(session)
    }

    pub fn insert(&self, session: &SessionId) {
        self.revoked.insert(session.clone(), ());
        self.log.record_local(session, UnixMillis::now());
    }

    pub fn insert_all(&self, sessions: &[SessionId]) {
        for session in sessions {
            self.insert(session);
        }
    }

    /// Reads the sessions revoked since the cursor. Returns how many it saw.
    pub async fn poll(&self, store: &Store) -> StoreResult<usize> {
        let since = UnixMillis::new(self.cursor.load(Ordering::Relaxed));
        let revoked = store.revoked_since(since).await?;
        let newest = revoked.iter().map(|(_, at)| *at).max();
        for (session, _) in &revoked {
            if !self.revoked.contains_key(session) {
                self.insert(session);
            }
        }
        // After `insert`, which logged this machine's time: the database's
        // replaces it.
        self.log.record_polled(&revoked, UnixMillis::now());
        if let Some(newest) = newest {
            self.cursor
                .fetch_max(newest.minus(OVERLAP).get(), Ordering::Relaxed);
        }
        Ok(revoked.len())
    }

    /// The feed from `since`, or all revocations whose sessions can still
    /// have unexpired access tokens: never a database call.
    pub fn feed(&self, since: Option<FeedCursor>) -> FeedPage {
        self.log.read(since, UnixMillis::now())
    }

    /// Polls every [`POLL_INTERVAL`] until the owner is dropped.
    pub fn spawn_poller<T: Send + Sync + 'static>(
        owner: Weak<T>,
        revocations: impl Fn(&T) -> (&Revocations, &Store) + Send + 'static,
    ) {
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(POLL_INTERVAL);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(owner) = owner.upgrade() else { return };
                let (revocations, store) = revocations(&owner);
                if let Err(error) = revocations.poll(store).await {
                    tracing::warn!(%error, "cannot poll for revoked sessions; keeping the known ones");
                }
            }
        });
    }
}
