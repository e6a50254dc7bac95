//! Outgoing mail (password-reset links, the probe's test mail), by SMTP or by
//! a webhook. Sending never blocks or fails the request that asked for it:
//! mail goes into a bounded queue, and deliveries that fail for a reason that
//! may pass are retried with growing delays. Every failed attempt is logged
//! (never with the mail's text or link, which carry a token) and counted.

mod smtp;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use prometheus_client::metrics::counter::Counter;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::config::{MailConfig, PublicUrl};
use crate::domain::{Email, Secret};
use crate::time::UnixMillis;

/// Mails waiting to be sent; more are dropped (and counted), never waited for.
pub const QUEUE_CAPACITY: usize = 256;
/// Mails being delivered at once.
const CONCURRENT_DELIVERIES: usize = 4;
/// How long one delivery attempt may take, connecting included.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// The waits between attempts: five attempts over about two and a half
/// minutes, well within a reset link's 30 minutes.
const RETRY_DELAYS: [Duration; 4] = [
    Duration::from_secs(1),
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
];

/// What a mail is for; the webhook's `kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MailKind {
    PasswordReset,
    Test,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::PasswordReset => "password_reset",
            MailKind::Test => "test",
        }
    }
}

/// One plain-text mail. The text and the link may carry a token: they are
/// secrets, redacted in `Debug` and never logged.
#[derive(Clone, Debug)]
pub struct Mail {
    pub to: Email,
    pub subject: String,
    pub text: Secret,
    pub kind: MailKind,
    pub link: Option<Secret>,
}

impl Mail {
    /// The password-reset mail: what to do, the link, the token itself (for
    /// a frontend that asks for it), and when both expire.
    pub fn password_reset(
        to: Email,
        username: &str,
        public_url: &PublicUrl,
        token: &Secret,
        expires_at: UnixMillis,
        valid_for: Duration,
    ) -> Mail {
        let link = format!(
            "{}/reset-password#token={}",
            public_url.as_str(),
            token.expose()
        );
        let minutes = valid_for.as_secs() / 60;
        let text = format!(
            "Hello {username},\n\
             \n\
             someone, hopefully you, asked to reset the password of your account at {host}.\n\
             \n\
             To choose a new password, open this link within {minutes} minutes:\n\
             \n\
             {link}\n\
             \n\
             If a page asks for a reset token instead, paste this one:\n\
             \n\
             {token}\n\
             \n\
             The link and the token work once and expire in {minutes} minutes, at {expires}. \
             Asking again sends a new link and voids this one. Once the password is changed, \
             every device signed in to the account is signed out.\n\
             \n\
             If you did not ask for this, ignore this mail: your password stays as it is.\n",
            host = public_url.host(),
            token = token.expose(),
            expires = expires_at.rfc3339(),
        );
        Mail {
            to,
            subject: format!("Reset your password at {}", public_url.host()),
            text: Secret::new(text),
            kind: MailKind::PasswordReset,
            link: Some(Secret::new(link)),
        }
    }

    /// The probe's test mail: proof that mail from this gateway arrives.
    pub fn test(to: Email, public_url: &PublicUrl) -> Mail {
        let text = format!(
            "This is a test mail from the tollgate gateway at {url}, sent because someone \
             with the admin role ran `tollgate probe --check-mail`.\n\
             \n\
             It arrived, so password-reset mail from this gateway reaches this address. \
             Nothing else needs doing.\n",
            url = public_url.as_str(),
        );
        Mail {
            to,
            subject: format!("Test mail from {}", public_url.host()),
            text: Secret::new(text),
            kind: MailKind::Test,
            link: None,
        }
    }
}

/// Why one delivery attempt failed. The description names the server's
/// answer or the network failure, never the mail's content.
#[derive(Debug, thiserror::Error)]
#[error("{description}")]
pub struct SendError {
    description: String,
    /// A retry could succeed (a network failure, a busy server) rather than
    /// not (a refused address, bad credentials).
    transient: bool,
}

impl SendError {
    fn transient(description: impl Into<String>) -> SendError {
        SendError {
            description: description.into(),
            transient: true,
        }
    }

    fn permanent(description: impl Into<String>) -> SendError {
        SendError {
            description: description.into(),
            transient: false,
        }
    }

    pub fn is_transient(&self) -> bool {
        self.transient
    }
}

/// The counters `/metrics` shows for mail.
#[derive(Clone, Default)]
pub struct MailCounters {
    /// Mails the server or webhook accepted.
    pub sent: Counter,
    /// Failed delivery attempts, retried or not.
    pub failures: Counter,
    /// Mails given up on: the queue was full, or every attempt failed.
    pub dropped: Counter,
}

enum Transport {
    Smtp(smtp::Smtp),
    Webhook(webhook::Webhook),
}

impl Transport {
    async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let attempt = async {
            match self {
                Transport::Smtp(smtp) => smtp.send(mail).await,
                Transport::Webhook(webhook) => webhook.send(mail).await,
            }
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
            Ok(result) => result,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}s",
                ATTEMPT_TIMEOUT.as_secs()
            ))),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Transport::Smtp(_) => "smtp",
            Transport::Webhook(_) => "webhook",
        }
    }
}

/// Sends mail in the background. Dropping it lets the mails already queued
/// go out and then stops.
pub struct Mailer {
    queue: mpsc::Sender<Mail>,
    transport: Arc<Transport>,
    counters: MailCounters,
}

impl Mailer {
    /// The mailer `config` describes, or `None` when mail is not set up.
    /// Must run inside the runtime: it starts the delivery task.
    pub fn start(
        config: &MailConfig,
        public_url: Option<&PublicUrl>,
        counters: MailCounters,
    ) -> anyhow::Result<Option<Mailer>> {
        let transport = match (&config.smtp_url, &config.webhook) {
            (None, None) => return Ok(None),
            (Some(url), _) => {
                let from = from_address(config, public_url)?;
                Transport::Smtp(smtp::Smtp::new(url, &from)?)
            }
            (None, Some(url)) => Transport::Webhook(webhook::Webhook::new(url.clone())?),
        };
        let transport = Arc::new(transport);
        let (queue, queued) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(deliver_queued(queued, transport.clone(), counters.clone()));
        Ok(Some(Mailer {
            queue,
            transport,
            counters,
        }))
    }

    /// Queues `mail` and returns at once. A full queue drops it: the caller's
    /// answer must not depend on the mail server.
    pub fn send_later(&self, mail: Mail) {
        if let Err(error) = self.queue.try_send(mail) {
            self.counters.dropped.inc();
            let kind = match &error {
                mpsc::error::TrySendError::Full(mail) | mpsc::error::TrySendError::Closed(mail) => {
                    mail.kind
                }
            };
            tracing::warn!(
                kind = kind.as_str(),
                queued = QUEUE_CAPACITY,
                "mail dropped: the mail queue is full"
            );
        }
    }

    /// One attempt, now, for a caller that wants to know how it went (the
    /// probe's test mail). Counted like queued mail.
    pub async fn send_now(&self, mail: &Mail) -> Result<(), SendError> {
        let result = self.transport.send(mail).await;
        match &result {
            Ok(()) => {
                self.counters.sent.inc();
            }
            Err(error) => {
                self.counters.failures.inc();
                log_failure(&self.transport, mail.kind, 1, error, false);
            }
        }
        result
    }
}

/// The `From` of every mail: `--mail-from`, else `tollgate@<public-url host>`.
fn from_address(config: &MailConfig, public_url: Option<&PublicUrl>) -> anyhow::Result<String> {
    if let Some(from) = &config.from {
        return Ok(from.clone());
    }
    let Some(public_url) = public_url else {
        bail!("mail needs --mail-from or --public-url to have a From address");
    };
    let host = public_url.host();
    // An address literal is written in brackets in a mail address.
    Ok(if host.parse::<std::net::IpAddr>().is_ok() {
        format!("tollgate@[{}]", host.trim_matches(['[', ']']))
    } else {
        format!("tollgate@{host}")
    })
}

/// Takes mails off the queue and delivers up to [`CONCURRENT_DELIVERIES`]
/// at once, each with its retries. Ends when the mailer is dropped and the
/// queue is empty.
async fn deliver_queued(
    mut queued: mpsc::Receiver<Mail>,
    transport: Arc<Transport>,
    counters: MailCounters,
) {
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    while let Some(mail) = queued.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (transport, counters) = (transport.clone(), counters.clone());
        tokio::spawn(async move {
            let _slot = slot;
            deliver(&transport, &counters, &mail).await;
        });
    }
}

/// Delivers one mail, retrying transient failures after each of
/// [`RETRY_DELAYS`].
async fn deliver(transport: &Transport, counters: &MailCounters, mail: &Mail) {
    let mut delays = RETRY_DELAYS.iter();
    for attempt in 1.. {
        let error = match transport.send(mail).await {
            Ok(()) => {
                counters.sent.inc();
                tracing::info!(kind = mail.kind.as_str(), attempt, "mail sent");
                return;
            }
            Err(error) => error,
        };
        counters.failures.inc();
        let delay = delays.next().filter(|_| error.is_transient());
        log_failure(transport, mail.kind, attempt, &error, delay.is_some());
        match delay {
            Some(delay) => tokio::time::sleep(*delay).await,
            None => break,
        }
    }
    counters.dropped.inc();
}

fn log_failure(
    transport: &Transport,
    kind: MailKind,
    attempt: u32,
    error: &SendError,
    retrying: bool,
) {
    tracing::warn!(
        via = transport.name(),
        kind = kind.as_str(),
        attempt,
        retrying,
        %error,
        "cannot send mail"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_public_url;

    #[test]
    fn the_reset_mail_says_what_to_do_and_when_it_expires() {
        let url = parse_public_url("https://auth.example.com/").unwrap();
        let token = Secret::new("tok3n".repeat(8));
        let mail = Mail::password_reset(
            Email::parse("alice@example.com").unwrap(),
            "alice",
            &url,
            &token,
            UnixMillis::new(1_800_000_000_000),
            Duration::from_secs(30 * 60),
        );
        let link = format!(
            "https://auth.example.com/reset-password#token={}",
            token.expose()
        );
        assert_eq!(mail.link.as_ref().unwrap().expose(), link);
        let text = mail.text.expose();
        assert!(text.contains(&link), "{text}");
        assert!(text.contains("30 minutes"), "{text}");
        assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
        assert!(!format!("{mail:?}").contains(token.expose()));
    }

    #[test]
    fn the_sender_defaults_to_the_public_host() {
        let config = MailConfig::default();
        let named = parse_public_url("https://auth.example.com").unwrap();
        assert_eq!(
            from_address(&config, Some(&named)).unwrap(),
            "tollgate@auth.example.com"
        );
        let address = parse_public_url("http://127.0.0.1:8080").unwrap();
        assert_eq!(
            from_address(&config, Some(&address)).unwrap(),
            "tollgate@[127.0.0.1]"
        );
        let given = MailConfig {
            from: Some("auth@example.org".into()),
            ..MailConfig::default()
        };
        assert_eq!(from_address(&given, None).unwrap(), "auth@example.org");
    }
}
