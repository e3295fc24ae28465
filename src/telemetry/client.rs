//! The HTTP client the OTLP exporter posts with: hyper's HTTP/1.1 client connection on
//! regate's runtime, TLS by rustls with ring (the listener's stack, so no second one comes
//! in), one connection kept and opened again when it closes. Exports are one at a time, so
//! one connection is all they need.
//!
//! Owns reaching the collector: address, TLS, time limits, the response's size. Not what
//! is posted, nor retries: those are the exporter's (`opentelemetry-otlp`).

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use opentelemetry_http::{HttpClient, HttpError};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::TelemetryError;

/// The most of a collector's answer that is read: OTLP answers with a few bytes (a partial
/// success at most).
const MAX_RESPONSE: usize = 64 * 1024;

/// A plain or TLS connection to the collector.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Posts to one collector.
pub struct CollectorClient {
    host: String,
    port: u16,
    /// `Host`, as the endpoint names it.
    authority: HeaderValue,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// One exchange, connecting included.
    timeout: Duration,
    connection: tokio::sync::Mutex<Option<SendRequest<Full<Bytes>>>>,
}

impl fmt::Debug for CollectorClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorClient")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl CollectorClient {
    /// A client for `endpoint` (`http` or `https`; an `https` one is verified against the
    /// roots in `ca`).
    pub fn new(
        endpoint: &Uri,
        ca: Option<&Path>,
        timeout: Duration,
    ) -> Result<CollectorClient, TelemetryError> {
        let authority = endpoint
            .authority()
            .ok_or(TelemetryError::Endpoint("it names no host"))?;
        let https = endpoint.scheme_str() == Some("https");
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        // An IPv6 literal is written in brackets in a URL, and without them everywhere else.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let tls = match (https, ca) {
            (false, _) => None,
            (true, None) => return Err(TelemetryError::Endpoint("https needs otlp-ca")),
            (true, Some(ca)) => {
                let name = ServerName::try_from(host.clone())
                    .map_err(|_| TelemetryError::Endpoint("its host is no TLS server name"))?;
                Some((TlsConnector::from(tls_config(ca)?), name))
            }
        };
        Ok(CollectorClient {
            host,
            port,
            authority: HeaderValue::from_str(authority.as_str())
                .map_err(|_| TelemetryError::Endpoint("its host is no header value"))?,
            tls,
            timeout,
            connection: tokio::sync::Mutex::new(None),
        })
    }

    /// One request and its whole answer, on the kept connection or a new one.
    async fn exchange(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let mut kept = self.connection.lock().await;
        let mut sender = match kept.take() {
            Some(sender) if !sender.is_closed() => sender,
            _ => self.connect().await?,
        };
        sender.ready().await?;
        let (mut head, body) = request.into_parts();
        // A client connection sends the target as it is given: origin form, as servers expect.
        head.uri = head
            .uri
            .path_and_query()
            .map_or_else(|| Uri::from_static("/"), |p| Uri::from(p.clone()));
        head.headers.insert(header::HOST, self.authority.clone());
        let response = sender
            .send_request(Request::from_parts(head, Full::new(body)))
            .await?;
        let (head, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE).collect().await?.to_bytes();
        *kept = Some(sender);
        Ok(Response::from_parts(head, body))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, HttpError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Stream> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
        tokio::spawn(async move {
            // Its end is seen by the next export, as a closed sender.
            let _ = connection.await;
        });
        Ok(sender)
    }
}

#[async_trait]
impl HttpClient for CollectorClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(answer) => answer,
            Err(_) => Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the collector did not answer in time",
            ))),
        }
    }
}

/// rustls with ring, trusting the roots in `ca` alone.
fn tls_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>, TelemetryError> {
    let unreadable = |source: rustls::pki_types::pem::Error| TelemetryError::Ca {
        path: ca.to_path_buf(),
        source,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(unreadable)? {
        roots.add(cert.map_err(unreadable)?)?;
    }
    if roots.is_empty() {
        return Err(TelemetryError::NoCa(ca.to_path_buf()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
