//! TLS for the gateway's outgoing connections (https upstreams, the probe,
//! mail): rustls with the aws-lc-rs provider, trusting the public web roots
//! plus the system's trust store (which honours `SSL_CERT_FILE`), so that a
//! private CA installed on the machine counts too.

use std::sync::Arc;

use anyhow::Context;

/// A client configuration that verifies servers against the roots above.
pub fn client_config() -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // An unreadable system store only leaves the public roots.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .context("cannot set up TLS")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}
