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

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use foldhash::fast::RandomState;
use moka::sync::Cache;
use tokio::sync::Notify;

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
    /// Long-lived connections (WebSocket tunnels) told of their session's
    /// revocation.
    watchers: Watchers,
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
            watchers: Watchers::default(),
        }
    }

    pub fn is_revoked(&self, session: &SessionId) -> bool {
        self.revoked.contains_key(session)
    }

    pub fn insert(&self, session: &SessionId) {
        self.revoked.insert(session.clone(), ());
        self.log.record_local(session, UnixMillis::now());
        self.watchers.fire(session);
    }

    /// A signal that fires when `session` is revoked (at once if it already
    /// is). Costs one map entry per watched session until dropped.
    pub fn watch(&self, session: &SessionId) -> SessionWatch<'_> {
        let watch = self.watchers.watch(session);
        if self.is_revoked(session) {
            watch.signal.fire();
        }
        watch
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

    /// Polls every [`POLL_INTERVAL`] until the owner is dropped or the
    /// store closed.
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
                if store.is_closed() {
                    return;
                }
                match revocations.poll(store).await {
                    Ok(_) => {}
                    // Closed while polling: shutting down, nothing to report.
                    Err(_) if store.is_closed() => return,
                    Err(error) => {
                        tracing::warn!(%error, "cannot poll for revoked sessions; keeping the known ones")
                    }
                }
            }
        });
    }
}

/// The sessions someone waits on, each with one shared signal.
#[derive(Default)]
struct Watchers {
    by_session: Mutex<HashMap<SessionId, Weak<Signal>>>,
}

#[derive(Default)]
struct Signal {
    notify: Notify,
    fired: AtomicBool,
}

impl Signal {
    fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }
}

/// Waits for one session's revocation; stops watching when dropped.
pub struct SessionWatch<'a> {
    watchers: &'a Watchers,
    session: SessionId,
    signal: Arc<Signal>,
}

impl SessionWatch<'_> {
    /// Completes once the session is revoked.
    pub async fn revoked(&self) {
        loop {
            let notified = self.signal.notify.notified();
            if self.signal.fired.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for SessionWatch<'_> {
    fn drop(&mut self) {
        let mut by_session = self.watchers.lock();
        // The last watcher of a session takes its entry with it.
        if Arc::strong_count(&self.signal) == 1 {
            by_session.remove(&self.session);
        }
    }
}

impl Watchers {
    fn watch(&self, session: &SessionId) -> SessionWatch<'_> {
        let mut by_session = self.lock();
        let signal = match by_session.get(session).and_then(Weak::upgrade) {
            Some(signal) => signal,
            None => {
                let signal = Arc::new(Signal::default());
                by_session.insert(session.clone(), Arc::downgrade(&signal));
                signal
            }
        };
        SessionWatch {
            watchers: self,
            session: session.clone(),
            signal,
        }
    }

    fn fire(&self, session: &SessionId) {
        let signal = self.lock().get(session).and_then(Weak::upgrade);
        if let Some(signal) = signal {
            signal.fire();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Weak<Signal>>> {
        self.by_session
            .lock()
            .expect("the watchers lock is never poisoned")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_watch_fires_on_revocation_and_cleans_up_after_itself() {
        let revocations = Revocations::new(Duration::from_secs(60));
        let session = SessionId::new_random();
        let first = revocations.watch(&session);
        let second = revocations.watch(&session);
        revocations.insert(&session);
        tokio::time::timeout(Duration::from_secs(1), first.revoked())
            .await
            .expect("fired");
        tokio::time::timeout(Duration::from_secs(1), second.revoked())
            .await
            .expect("fired for every watcher");
        drop((first, second));
        assert!(revocations.watchers.lock().is_empty());
        let late = revocations.watch(&session);
        tokio::time::timeout(Duration::from_secs(1), late.revoked())
            .await
            .expect("a session revoked before the watch fires at once");
    }
}
