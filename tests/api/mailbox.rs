//! Where the gateway's mail lands in the tests: a webhook receiver (an HTTP
//! server taking `POST {to, subject, text, kind, link}`) and an SMTP sink (a
//! small SMTP server, plain, with STARTTLS, or with TLS from the first byte),
//! both on port 0, both handing every mail they accept to a [`Mailbox`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc};
use tokio_rustls::TlsAcceptor;

/// How long a test waits for a mail that should come.
const MAIL_DEADLINE: Duration = Duration::from_secs(15);

/// One mail as it arrived.
#[derive(Clone, Debug)]
pub struct ReceivedMail {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// The webhook's `kind` and `link` (SMTP has neither).
    pub kind: Option<String>,
    pub link: Option<String>,
    /// Whether it came over TLS (SMTP only).
    pub encrypted: bool,
}

impl ReceivedMail {
    /// The reset token: what follows `#token=` in the link the text gives.
    #[track_caller]
    pub fn token(&self) -> String {
        let (_, after) = self
            .text
            .split_once("#token=")
            .unwrap_or_else(|| panic!("no link with a token in: {}", self.text));
        after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect()
    }
}

/// The mails a receiver accepted, in order.
pub struct Mailbox {
    mails: Mutex<mpsc::UnboundedReceiver<ReceivedMail>>,
}

impl Mailbox {
    fn new() -> (Mailbox, mpsc::UnboundedSender<ReceivedMail>) {
        let (sender, mails) = mpsc::unbounded_channel();
        (
            Mailbox {
                mails: Mutex::new(mails),
            },
            sender,
        )
    }

    /// The next mail, waiting for it.
    pub async fn next(&self) -> ReceivedMail {
        let mut mails = self.mails.lock().await;
        tokio::time::timeout(MAIL_DEADLINE, mails.recv())
            .await
            .expect("a mail arrives in time")
            .expect("the receiver runs")
    }

    /// Asserts that no mail arrives within `wait`.
    pub async fn assert_none_within(&self, wait: Duration) {
        let mut mails = self.mails.lock().await;
        if let Ok(Some(mail)) = tokio::time::timeout(wait, mails.recv()).await {
            panic!("an unexpected mail to {}: {}", mail.to, mail.subject);
        }
    }
}

/// An HTTP server taking the gateway's mail webhook.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub mailbox: Mailbox,
    attempts: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookReceiver {
    /// A receiver that answers 503 to its first `failures` requests.
    pub async fn failing_first(failures: usize) -> WebhookReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mailbox, sender) = Mailbox::new();
        let attempts = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let attempts = attempts.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (sender, attempts) = (sender.clone(), attempts.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            take(request, sender.clone(), attempts.clone(), failures)
                        });
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        WebhookReceiver {
            addr,
            mailbox,
            attempts,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/mail", self.addr)
    }

    /// Requests received, failed ones included.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn take(
    request: Request<Incoming>,
    mails: mpsc::UnboundedSender<ReceivedMail>,
    attempts: Arc<AtomicUsize>,
    failures: usize,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let attempt = attempts.fetch_add(1, Ordering::SeqCst);
    let json = request.headers().get("content-type").map(|v| v.as_bytes())
        == Some(b"application/json".as_slice());
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let status = if attempt < failures {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        assert!(json, "the webhook is sent JSON");
        let mail: Value = serde_json::from_slice(&body).expect("a JSON mail");
        let field = |name: &str| mail[name].as_str().map(str::to_string);
        let _ = mails.send(ReceivedMail {
            to: field("to").expect("to"),
            subject: field("subject").expect("subject"),
            text: field("text").expect("text"),
            kind: field("kind"),
            link: field("link"),
            encrypted: false,
        });
        StatusCode::OK
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

/// How an [`SmtpSink`] speaks TLS.
pub enum SinkTls {
    /// Plain SMTP, no STARTTLS offered.
    None,
    /// Plain, offering STARTTLS with this certificate.
    StartTls(Arc<rustls::ServerConfig>),
    /// TLS from the first byte (`smtps://`).
    Implicit(Arc<rustls::ServerConfig>),
}

/// A small SMTP server that accepts every mail.
pub struct SmtpSink {
    pub addr: SocketAddr,
    pub mailbox: Mailbox,
    task: tokio::task::JoinHandle<()>,
}

impl SmtpSink {
    pub async fn start(tls: SinkTls) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mailbox, sender) = Mailbox::new();
        let tls = Arc::new(tls);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (sender, tls) = (sender.clone(), tls.clone());
                tokio::spawn(async move {
                    let _ = serve_smtp(stream, &tls, sender).await;
                });
            }
        });
        SmtpSink {
            addr,
            mailbox,
            task,
        }
    }

    /// `smtp://127.0.0.1:PORT` (or `smtps://` for an implicit-TLS sink).
    pub fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{}", self.addr)
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_smtp(
    stream: TcpStream,
    tls: &SinkTls,
    mails: mpsc::UnboundedSender<ReceivedMail>,
) -> std::io::Result<()> {
    match tls {
        SinkTls::None => {
            converse(stream, Session::Plain, &mails).await?;
        }
        SinkTls::Implicit(config) => {
            let stream = TlsAcceptor::from(config.clone()).accept(stream).await?;
            converse(stream, Session::ImplicitTls, &mails).await?;
        }
        SinkTls::StartTls(config) => {
            if let Some(stream) = converse(stream, Session::OfferingStartTls, &mails).await? {
                let stream = TlsAcceptor::from(config.clone()).accept(stream).await?;
                converse(stream, Session::AfterStartTls, &mails).await?;
            }
        }
    }
    Ok(())
}

/// Where an SMTP conversation stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Session {
    Plain,
    OfferingStartTls,
    /// Continued over TLS after STARTTLS: the client speaks first.
    AfterStartTls,
    ImplicitTls,
}

/// One SMTP conversation; hands the stream back when the client asks for
/// STARTTLS (to continue over TLS).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    session: Session,
    mails: &mpsc::UnboundedSender<ReceivedMail>,
) -> std::io::Result<Option<S>> {
    let mut stream = BufReader::new(stream);
    let offer_starttls = session == Session::OfferingStartTls;
    let encrypted = matches!(session, Session::AfterStartTls | Session::ImplicitTls);
    if session != Session::AfterStartTls {
        stream.write_all(b"220 sink ESMTP\r\n").await?;
    }
    let mut recipient = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let command = line.trim_end().to_ascii_uppercase();
        let reply: &[u8] = if command.starts_with("EHLO") {
            if offer_starttls {
                b"250-sink\r\n250-8BITMIME\r\n250 STARTTLS\r\n"
            } else {
                b"250-sink\r\n250 8BITMIME\r\n"
            }
        } else if command.starts_with("HELO") {
            b"250 sink\r\n"
        } else if command == "STARTTLS" && offer_starttls {
            stream.write_all(b"220 go ahead\r\n").await?;
            return Ok(Some(stream.into_inner()));
        } else if command.starts_with("MAIL FROM:") {
            b"250 ok\r\n"
        } else if command.starts_with("RCPT TO:") {
            recipient = line.trim_end()["RCPT TO:".len()..]
                .trim()
                .trim_matches(['<', '>'])
                .to_string();
            b"250 ok\r\n"
        } else if command == "DATA" {
            stream.write_all(b"354 go on\r\n").await?;
            let data = read_data(&mut stream).await?;
            let _ = mails.send(parse_message(&recipient, &data, encrypted));
            b"250 queued\r\n"
        } else if command == "QUIT" {
            stream.write_all(b"221 bye\r\n").await?;
            return Ok(None);
        } else if command == "RSET" || command == "NOOP" {
            b"250 ok\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        stream.write_all(reply).await?;
    }
}

/// The message of a DATA command, up to the lone dot, dot-unstuffed.
async fn read_data<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut BufReader<S>,
) -> std::io::Result<String> {
    let mut data = String::new();
    let mut line = String::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            return Ok(data);
        }
        if line == ".\r\n" {
            return Ok(data);
        }
        data.push_str(line.strip_prefix('.').unwrap_or(&line));
    }
}

/// Headers and the decoded plain-text body of a message.
fn parse_message(recipient: &str, data: &str, encrypted: bool) -> ReceivedMail {
    let (head, body) = data.split_once("\r\n\r\n").unwrap_or((data, ""));
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    let header = |name: &str| {
        unfolded
            .split("\r\n")
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_string())
            })
            .unwrap_or_default()
    };
    let text = match header("Content-Transfer-Encoding")
        .to_ascii_lowercase()
        .as_str()
    {
        "quoted-printable" => decode_quoted_printable(body),
        "base64" => String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(body.split_whitespace().collect::<String>())
                .expect("a base64 body"),
        )
        .expect("a UTF-8 body"),
        _ => body.to_string(),
    };
    assert!(
        header("Content-Type").starts_with("text/plain"),
        "a plain-text mail: {head}"
    );
    assert!(
        header("To").contains(recipient),
        "To names the recipient: {head}"
    );
    ReceivedMail {
        to: recipient.to_string(),
        subject: header("Subject"),
        text: text.replace("\r\n", "\n"),
        kind: None,
        link: None,
        encrypted,
    }
}

fn decode_quoted_printable(body: &str) -> String {
    let joined = body.replace("=\r\n", "");
    let bytes = joined.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'=' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
            decoded.push(u8::from_str_radix(hex, 16).expect("a quoted-printable escape"));
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).expect("a UTF-8 body")
}
