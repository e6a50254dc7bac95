//! Prometheus metrics, one registry per gateway (no global recorder), served
//! as text at `/metrics`. Every name starts with `tollgate_`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::mail::MailCounters;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `auth`, `wellknown`, `health`, `metrics`, `debug`, `proxy` or `other`.
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub logins: Family<OutcomeLabels, Counter>,
    pub refreshes: Family<OutcomeLabels, Counter>,
    pub refresh_reuse: Counter,
    pub revocations: Counter,
    pub upstream_latency: Histogram,
    pub argon2_queue_depth: Gauge,
    pub mail: MailCounters,
    pub audit_write_failures: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tollgate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route class and status",
            requests.clone(),
        );
        let auth_failures = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Refused credentials, by reason",
            auth_failures.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Login attempts, by outcome", logins.clone());
        let refreshes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "refreshes",
            "Refresh attempts, by outcome",
            refreshes.clone(),
        );
        let refresh_reuse = Counter::default();
        registry.register(
            "refresh_reuse_detections",
            "Spent refresh tokens presented after the grace; each revoked its session",
            refresh_reuse.clone(),
        );
        let revocations = Counter::default();
        registry.register(
            "session_revocations",
            "Sessions revoked by this instance",
            revocations.clone(),
        );
        let upstream_latency = Histogram::new(exponential_buckets(0.0005, 2.0, 16));
        registry.register(
            "upstream_request_duration_seconds",
            "Time until the upstream's response headers arrived",
            upstream_latency.clone(),
        );
        let argon2_queue_depth = Gauge::default();
        registry.register(
            "argon2_queue_depth",
            "Password hashes waiting for a hashing slot",
            argon2_queue_depth.clone(),
        );
        let mail = MailCounters::default();
        registry.register(
            "mail_sent",
            "Mails the SMTP server or the mail webhook accepted",
            mail.sent.clone(),
        );
        registry.register(
            "mail_failures",
            "Failed mail delivery attempts, retried or not",
            mail.failures.clone(),
        );
        registry.register(
            "mail_dropped",
            "Mails given up on: the queue was full or every attempt failed",
            mail.dropped.clone(),
        );
        let audit_write_failures = Counter::default();
        registry.register(
            "audit_write_failures",
            "Audit-trail rows that could not be written (the event itself went on)",
            audit_write_failures.clone(),
        );
        Metrics {
            registry,
            mail,
            audit_write_failures,
            requests,
            auth_failures,
            logins,
            refreshes,
            refresh_reuse,
            revocations,
            upstream_latency,
            argon2_queue_depth,
        }
    }

    pub fn request(&self, route: &'static str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels { route, status })
            .inc();
    }

    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
    }

    pub fn revoked(&self, sessions: usize) {
        self.revocations.inc_by(sessions as u64);
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}
