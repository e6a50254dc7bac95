//! Delivery by webhook: each mail POSTed as JSON `{to, subject, text, kind,
//! link}`, for a service that sends it on (or a test that reads it). Any 2xx
//! is delivered; 408, 429 and 5xx are tried again, other answers are not.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use super::{Mail, MailKind, SendError};

pub struct Webhook {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
}

#[derive(Serialize)]
struct Payload<'a> {
    to: &'a str,
    subject: &'a str,
    text: &'a str,
    kind: MailKind,
    link: Option<&'a str>,
}

impl Webhook {
    pub fn new(url: Uri) -> anyhow::Result<Webhook> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*crate::tls::client_config()?).clone())
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Webhook {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url,
        })
    }

    pub async fn send(&self, mail: &Mail) -> Result<(), SendError> {
        let payload = Payload {
            to: mail.to.as_str(),
            subject: &mail.subject,
            text: mail.text.expose(),
            kind: mail.kind,
            link: mail.link.as_ref().map(|link| link.expose()),
        };
        let body = serde_json::to_vec(&payload).expect("mail payloads serialize");
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| SendError::permanent(format!("cannot build the request: {error}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|error| SendError::transient(format!("the mail webhook: {error}")))?;
        let status = response.status();
        // Read (and drop) the answer so the connection can be reused; what
        // it says is the webhook's business.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            return Ok(());
        }
        let description = format!("the mail webhook answered {status}");
        let transient = status.is_server_error()
            || matches!(
                status,
                StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS
            );
        Err(if transient {
            SendError::transient(description)
        } else {
            SendError::permanent(description)
        })
    }
}
