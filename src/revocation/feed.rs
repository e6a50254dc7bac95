//! The revocation feed's log: the revoked sessions this instance knows of,
//! ordered by when they were revoked, for upstreams that verify tokens
//! themselves and poll `/.well-known/revoked-sessions`.
//!
//! It holds what the set beside it holds, over the same window (the longest
//! an access token can be accepted), and is fed by the same two sources: a
//! revocation made here is logged at once with this machine's clock, and the
//! poll logs what the database says, on the database's clock, replacing the
//! provisional time.
//!
//! A cursor is the newest database time this instance had seen when it
//! answered. Reading from a cursor re-reads [`OVERLAP`] before it, as the
//! poller does, so that a revocation whose transaction committed late (its
//! time earlier than revocations already seen) is still delivered. Answers
//! may therefore repeat a session: a consumer adds sessions to a set.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::OVERLAP;
use crate::domain::SessionId;
use crate::time::UnixMillis;

/// Where a consumer has read the feed up to: opaque outside this module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedCursor(UnixMillis);

/// A cursor that this gateway did not hand out.
#[derive(Debug, thiserror::Error)]
#[error("invalid cursor: pass back the `cursor` of an earlier answer, or none")]
pub struct InvalidCursor;

const CURSOR_VERSION: &str = "v1.";

impl FeedCursor {
    pub fn parse(raw: &str) -> Result<FeedCursor, InvalidCursor> {
        let decoded = URL_SAFE_NO_PAD.decode(raw).map_err(|_| InvalidCursor)?;
        let text = std::str::from_utf8(&decoded).map_err(|_| InvalidCursor)?;
        let millis = text
            .strip_prefix(CURSOR_VERSION)
            .and_then(|millis| millis.parse::<i64>().ok())
            .filter(|millis| *millis >= 0)
            .ok_or(InvalidCursor)?;
        Ok(FeedCursor(UnixMillis::new(millis)))
    }

    pub fn encode(self) -> String {
        URL_SAFE_NO_PAD.encode(format!("{CURSOR_VERSION}{}", self.0.get()))
    }
}

/// One answer of the feed: oldest first.
#[derive(Debug)]
pub struct FeedPage {
    pub revoked: Vec<(SessionId, UnixMillis)>,
    pub cursor: FeedCursor,
}

pub struct RevocationLog {
    /// How long an entry matters: the longest an access token can be
    /// accepted, plus the overlap the poller re-reads.
    window: Duration,
    state: Mutex<LogState>,
}

struct LogState {
    /// Ordered by revocation time; the sequence number only makes keys
    /// unique.
    entries: BTreeMap<(UnixMillis, u64), SessionId>,
    /// Each session's key in `entries`, and whether its time is the
    /// database's (a poll saw it) or this machine's (revoked here).
    keys: HashMap<SessionId, ((UnixMillis, u64), Clock)>,
    next_sequence: u64,
    /// The newest revocation time a poll has seen, or where polling began.
    newest_seen: UnixMillis,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    Local,
    Database,
}

impl RevocationLog {
    /// `polled_from` is where the first poll reads from.
    pub fn new(token_lifetime: Duration, polled_from: UnixMillis) -> RevocationLog {
        RevocationLog {
            window: token_lifetime + OVERLAP,
            state: Mutex::new(LogState {
                entries: BTreeMap::new(),
                keys: HashMap::new(),
                next_sequence: 0,
                newest_seen: polled_from,
            }),
        }
    }

    /// A session revoked here just now.
    pub fn record_local(&self, session: &SessionId, now: UnixMillis) {
        let mut state = self.lock();
        if !state.keys.contains_key(session) {
            state.put(session, now, Clock::Local);
        }
        state.forget_before(now.minus(self.window));
    }

    /// What a poll read from the database.
    pub fn record_polled(&self, revoked: &[(SessionId, UnixMillis)], now: UnixMillis) {
        let mut state = self.lock();
        for (session, at) in revoked {
            let known = state.keys.get(session).copied();
            match known {
                Some((key, Clock::Database)) if key.0 == *at => {}
                Some((key, _)) => {
                    state.entries.remove(&key);
                    state.put(session, *at, Clock::Database);
                }
                None => state.put(session, *at, Clock::Database),
            }
            state.newest_seen = state.newest_seen.max(*at);
        }
        state.forget_before(now.minus(self.window));
    }

    /// The sessions revoked since `since` (re-reading the overlap before
    /// it), or all that can still have unexpired access tokens.
    pub fn read(&self, since: Option<FeedCursor>, now: UnixMillis) -> FeedPage {
        let mut state = self.lock();
        state.forget_before(now.minus(self.window));
        let from = since.map_or(UnixMillis::new(i64::MIN), |cursor| cursor.0.minus(OVERLAP));
        let revoked = state
            .entries
            .range((from, 0)..)
            .map(|(&(at, _), session)| (session.clone(), at))
            .collect();
        // Only the database's clock moves the cursor: this machine's could
        // run ahead of it and skip what the database stamps later.
        let newest = since.map_or(state.newest_seen, |cursor| cursor.0.max(state.newest_seen));
        FeedPage {
            revoked,
            cursor: FeedCursor(newest),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LogState> {
        // A panic while holding the lock leaves consistent maps behind.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl LogState {
    fn put(&mut self, session: &SessionId, at: UnixMillis, clock: Clock) {
        let key = (at, self.next_sequence);
        self.next_sequence += 1;
        self.entries.insert(key, session.clone());
        self.keys.insert(session.clone(), (key, clock));
    }

    fn forget_before(&mut self, oldest: UnixMillis) {
        while let Some(entry) = self.entries.first_entry() {
            if entry.key().0 >= oldest {
                break;
            }
            let session = entry.remove();
            self.keys.remove(&session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(15 * 60);

    fn at(seconds: i64) -> UnixMillis {
        UnixMillis::new(1_800_000_000_000 + seconds * 1000)
    }

    fn session() -> SessionId {
        SessionId::new_random()
    }

    fn sessions(page: &FeedPage) -> Vec<SessionId> {
        page.revoked
            .iter()
            .map(|(session, _)| session.clone())
            .collect()
    }

    #[test]
    fn cursors_round_trip_and_refuse_what_was_not_handed_out() {
        let cursor = FeedCursor(at(5));
        assert_eq!(FeedCursor::parse(&cursor.encode()).unwrap(), cursor);
        for bad in ["", "x", "djEuYWJj", "djIuMTIz", "djEuLTE", "not base64!"] {
            assert!(FeedCursor::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_revocation_made_here_is_listed_at_once_then_takes_the_database_time() {
        let log = RevocationLog::new(LIFETIME, at(0));
        let (here, elsewhere) = (session(), session());
        log.record_local(&here, at(100));
        let page = log.read(None, at(100));
        assert_eq!(page.revoked, [(here.clone(), at(100))]);
        assert_eq!(
            page.cursor,
            FeedCursor(at(0)),
            "a local clock moves no cursor"
        );

        log.record_polled(
            &[(elsewhere.clone(), at(98)), (here.clone(), at(99))],
            at(101),
        );
        let page = log.read(None, at(101));
        assert_eq!(page.revoked, [(elsewhere, at(98)), (here, at(99))]);
        assert_eq!(page.cursor, FeedCursor(at(99)));
    }

    #[test]
    fn reading_from_a_cursor_repeats_the_overlap_so_a_late_commit_is_delivered() {
        let log = RevocationLog::new(LIFETIME, at(0));
        let (first, second) = (session(), session());
        log.record_polled(&[(first.clone(), at(100))], at(101));
        let cursor = log.read(None, at(101)).cursor;

        let page = log.read(Some(cursor), at(102));
        assert_eq!(
            sessions(&page),
            std::slice::from_ref(&first),
            "the overlap is re-read"
        );
        assert_eq!(page.cursor, cursor);

        // A transaction stamped at 80 s commits after 100 s was seen.
        let late = session();
        log.record_polled(
            &[(second.clone(), at(110)), (late.clone(), at(80))],
            at(111),
        );
        let page = log.read(Some(cursor), at(111));
        assert_eq!(sessions(&page), [late, first, second.clone()]);
        assert_eq!(page.cursor, FeedCursor(at(110)));

        // Older than the overlap: the poller would not have read it either.
        let too_late = session();
        log.record_polled(&[(too_late.clone(), at(79))], at(112));
        assert!(!sessions(&log.read(Some(page.cursor), at(112))).contains(&too_late));
    }

    #[test]
    fn a_cursor_never_goes_back() {
        let log = RevocationLog::new(LIFETIME, at(0));
        let ahead = FeedCursor(at(500));
        assert_eq!(log.read(Some(ahead), at(10)).cursor, ahead);
    }

    #[test]
    fn entries_are_forgotten_once_no_access_token_can_outlive_them() {
        let log = RevocationLog::new(LIFETIME, at(0));
        let (old, recent) = (session(), session());
        log.record_polled(&[(old.clone(), at(0)), (recent.clone(), at(600))], at(600));
        let later = at(0).plus(LIFETIME + OVERLAP + Duration::from_secs(1));
        assert_eq!(sessions(&log.read(None, later)), [recent]);
        // And a forgotten session can be recorded again.
        log.record_local(&old, later);
        assert!(sessions(&log.read(None, later)).contains(&old));
    }
}
