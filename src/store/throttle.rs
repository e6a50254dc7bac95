//! Login throttle counters, shared by every instance on the database. A
//! counter is one row: events in a window fixed from its first event, on the
//! database's clock so that instances agree. Each check is one transaction
//! whose upserts write only when they admit, so concurrent checks on several
//! instances queue on the row and can never pass a budget together.

use std::time::Duration;

use tracing::instrument;

use super::{Store, StoreResult, WriteTx};
use crate::time::UnixMillis;

/// At most `limit` events in a window fixed from its first event; past the
/// limit, with a `trickle`, one more event that long after the last one let
/// through, until the window passes.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The name this budget's rows are stored under.
    pub name: &'static str,
    pub limit: u32,
    pub window: Duration,
    pub trickle: Option<Duration>,
}

/// One event to count against a budget, for one subject.
#[derive(Clone, Copy, Debug)]
pub struct Charge<'a> {
    pub budget: &'a Budget,
    pub subject: &'a str,
    /// A reservation is given back when a later charge of the same check is
    /// refused; an attempt stands whatever follows.
    pub reservation: bool,
}

/// A reserved event, held until its check ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    budget: &'static str,
    subject: String,
    /// The window it was counted in: giving it back never touches a later one.
    window_start: UnixMillis,
}

impl Held {
    pub fn budget(&self) -> &'static str {
        self.budget
    }
}

/// The outcome of a check.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Every charge was counted; the reservations among them are held, in
    /// the order they were charged.
    Admitted(Vec<Held>),
    /// The budget `budget` refused; no reservation is held. The earliest a
    /// new attempt can pass is `retry_after` from now (database clock).
    Refused {
        budget: &'static str,
        retry_after: Duration,
    },
}

/// How a held reservation ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settlement {
    /// The event did not happen after all (the check ended without a
    /// verdict, or it was not a failure): its count is given back.
    GiveBack,
    /// The subject's count starts over (a success forgives the failures).
    Clear,
}

/// A counter as read back when a charge was refused.
#[derive(sqlx::FromRow)]
struct Counter {
    window_start: UnixMillis,
    admitted_at: UnixMillis,
    now: UnixMillis,
}

impl Store {
    /// Counts `charges` in order, in one transaction, and stops at the first
    /// budget that refuses, giving back the reservations charged before it
    /// (the attempts stand).
    #[instrument(level = "debug", skip_all)]
    pub async fn charge_throttle(&self, charges: &[Charge<'_>]) -> StoreResult<Admission> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            let mut held = Vec::new();
            for charge in charges {
                match self.charge_in(&mut tx, charge).await? {
                    Ok(window_start) => {
                        if charge.reservation {
                            held.push(Held {
                                budget: charge.budget.name,
                                subject: charge.subject.to_string(),
                                window_start,
                            });
                        }
                    }
                    Err(retry_after) => {
                        for earlier in &held {
                            settle_in(&mut tx, earlier, Settlement::GiveBack).await?;
                        }
                        tx.commit().await?;
                        return Ok(Admission::Refused {
                            budget: charge.budget.name,
                            retry_after,
                        });
                    }
                }
            }
            tx.commit().await?;
            Ok(Admission::Admitted(held))
        })
        .await
    }

    /// Ends held reservations, in one transaction.
    #[instrument(level = "debug", skip_all)]
    pub async fn settle_throttle(&self, ends: &[(Held, Settlement)]) -> StoreResult<()> {
        self.bounded(async {
            let mut tx = self.begin_write().await?;
            for (held, settlement) in ends {
                settle_in(&mut tx, held, *settlement).await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Deletes the counters whose window opened more than `older_than` ago
    /// (database clock): the longest window, and they can no longer refuse
    /// anything. Returns how many went.
    #[instrument(level = "debug", skip_all)]
    pub async fn delete_old_throttle_counters(&self, older_than: Duration) -> StoreResult<u64> {
        self.bounded(async {
            let sql = format!(
                "DELETE FROM login_throttle WHERE window_start < ({}) - $1",
                self.backend.now_ms_sql()
            );
            let result = sqlx::query(&sql)
                .bind(millis(older_than))
                .execute(&self.pool)
                .await?;
            Ok(result.rows_affected())
        })
        .await
    }

    /// Counts one event: the window it was counted in, or how long until the
    /// budget admits again. The upsert writes only when it admits, and
    /// `RETURNING` yields a row only when it wrote: a window that has passed
    /// starts over, a count under the limit grows, and past the limit a
    /// trickle lets one event through once its interval has passed since
    /// the last. A refused event changes nothing, and Postgres still locks
    /// the row, so the read that follows is the state that refused it.
    async fn charge_in(
        &self,
        tx: &mut WriteTx,
        charge: &Charge<'_>,
    ) -> StoreResult<Result<UnixMillis, Duration>> {
        let budget = charge.budget;
        let window = millis(budget.window);
        // 0: no trickle.
        let trickle = budget.trickle.map_or(0, millis);
        let now = self.backend.now_ms_sql();
        let sql = format!(
            "INSERT INTO login_throttle (budget, subject, window_start, events, admitted_at) \
             SELECT $1, $2, clock.now, 1, clock.now FROM (SELECT ({now}) AS now) clock WHERE true \
             ON CONFLICT (budget, subject) DO UPDATE SET \
               window_start = CASE WHEN login_throttle.window_start <= excluded.admitted_at - $3 \
                 THEN excluded.admitted_at ELSE login_throttle.window_start END, \
               events = CASE WHEN login_throttle.window_start <= excluded.admitted_at - $3 \
                 THEN 1 ELSE login_throttle.events + 1 END, \
               admitted_at = excluded.admitted_at \
             WHERE login_throttle.window_start <= excluded.admitted_at - $3 \
               OR login_throttle.events < $4 \
               OR ($5 > 0 AND login_throttle.admitted_at <= excluded.admitted_at - $5) \
             RETURNING window_start"
        );
        let admitted: Option<UnixMillis> = sqlx::query_scalar(&sql)
            .bind(budget.name)
            .bind(charge.subject)
            .bind(window)
            .bind(i64::from(budget.limit))
            .bind(trickle)
            .fetch_optional(&mut **tx)
            .await?;
        if let Some(window_start) = admitted {
            return Ok(Ok(window_start));
        }
        let sql = format!(
            "SELECT window_start, admitted_at, ({now}) AS now FROM login_throttle \
             WHERE budget = $1 AND subject = $2"
        );
        let counter: Counter = sqlx::query_as(&sql)
            .bind(budget.name)
            .bind(charge.subject)
            .fetch_one(&mut **tx)
            .await?;
        let window_ends = counter.window_start.plus(budget.window);
        let next = match budget.trickle {
            Some(trickle) => window_ends.min(counter.admitted_at.plus(trickle)),
            None => window_ends,
        };
        Ok(Err(next.since(counter.now)))
    }
}

async fn settle_in(tx: &mut WriteTx, held: &Held, settlement: Settlement) -> sqlx::Result<()> {
    let query = match settlement {
        Settlement::GiveBack => sqlx::query(
            "UPDATE login_throttle SET events = events - 1 \
             WHERE budget = $1 AND subject = $2 AND window_start = $3 AND events > 0",
        )
        .bind(held.budget)
        .bind(&held.subject)
        .bind(held.window_start),
        Settlement::Clear => {
            sqlx::query("DELETE FROM login_throttle WHERE budget = $1 AND subject = $2")
                .bind(held.budget)
                .bind(&held.subject)
        }
    };
    query.execute(&mut **tx).await?;
    Ok(())
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
