//! Delivery by SMTP with lettre: `smtp://` upgrades with STARTTLS when the
//! server offers it, `smtps://` speaks TLS from the first byte. Certificates
//! are checked against the system's trust store (which honours
//! `SSL_CERT_FILE`).

use anyhow::{Context, bail};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use percent_encoding::percent_decode_str;

use super::{ATTEMPT_TIMEOUT, Mail, SendError};
use crate::domain::Secret;

/// The submission port with STARTTLS, and the implicit-TLS port.
const SMTP_PORT: u16 = 587;
const SMTPS_PORT: u16 = 465;

pub struct Smtp {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Smtp {
    /// `url` is `smtp://[user:pass@]host[:port]` or `smtps://…`, already
    /// checked for its scheme and host by the configuration.
    pub fn new(url: &Secret, from: &str) -> anyhow::Result<Smtp> {
        let url = url::Url::parse(url.expose()).context("invalid SMTP URL")?;
        let Some(host) = url
            .host_str()
            .map(|host| host.trim_matches(['[', ']']).to_string())
        else {
            bail!("invalid SMTP URL: it names no host");
        };
        let tls_parameters = TlsParameters::builder(host.clone())
            .build_rustls()
            .context("cannot set up TLS for SMTP")?;
        let (tls, default_port) = match url.scheme() {
            "smtps" => (Tls::Wrapper(tls_parameters), SMTPS_PORT),
            "smtp" => (Tls::Opportunistic(tls_parameters), SMTP_PORT),
            _ => bail!("invalid SMTP URL: expected smtp:// or smtps://"),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(url.port().unwrap_or(default_port))
            .tls(tls)
            .timeout(Some(ATTEMPT_TIMEOUT));
        if !url.username().is_empty() {
            let decode = |part: &str| percent_decode_str(part).decode_utf8_lossy().into_owned();
            builder = builder.credentials(Credentials::new(
                decode(url.username()),
                decode(url.password().unwrap_or("")),
            ));
        }
        let from = from.parse::<Mailbox>().with_context(|| {
            format!("invalid --mail-from `{from}`: expected an address like tollgate@example.com")
        })?;
        Ok(Smtp {
            transport: builder.build(),
            from,
        })
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let to = mail.to.as_str().parse::<Mailbox>().map_err(|error| {
            SendError::permanent(format!(
                "the recipient cannot be written in a mail: {error}"
            ))
        })?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.as_str())
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text.expose().to_string())
            .map_err(|error| SendError::permanent(format!("cannot build the mail: {error}")))?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            // lettre's errors name the server's answer or the network
            // failure, never the message.
            Err(error) if error.is_permanent() => Err(SendError::permanent(format!(
                "the SMTP server refused: {error}"
            ))),
            Err(error) => Err(SendError::transient(format!("SMTP: {error}"))),
        }
    }
}
