//! One GET of an identity provider's document (its metadata, its JWKS), or one POST of a
//! notice (the approvals webhook): HTTPS with the configured roots, or plain HTTP to a
//! loopback address (for tests) and nowhere else; within [`FETCH_TIMEOUT`] for the whole
//! exchange and [`MAX_BODY`] bytes. Redirects are not followed: a provider's key set is where
//! it says it is.
//!
//! Owns the client side of one exchange; what the document means is the caller's.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Uri};
use http_body_util::{BodyExt, Empty, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use thiserror::Error;
use tokio::net::TcpStream;

/// The longest one fetch may take, from the DNS lookup to the last byte.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// The largest document read. Real key sets are a few kilobytes (a dozen keys with their
/// certificate chains is under 64 KiB).
pub const MAX_BODY: usize = 256 * 1024;

#[derive(Debug, Error)]
pub enum FetchError {
    #[error("{0}")]
    Url(String),
    #[error("cannot resolve {0}")]
    Resolve(String, #[source] std::io::Error),
    #[error("cannot connect to {0}")]
    Connect(String, #[source] std::io::Error),
    #[error("TLS with {0} failed")]
    Tls(String, #[source] std::io::Error),
    #[error("HTTP exchange failed")]
    Http(#[source] hyper::Error),
    #[error("answered {0}")]
    Status(u16),
    #[error("the body is over {MAX_BODY} bytes, or broken off")]
    Body,
    #[error("no answer within {FETCH_TIMEOUT:?}")]
    Timeout,
}

impl FetchError {
    /// As `regate_jwks_fetches_total{result}` names it.
    pub fn kind(&self) -> &'static str {
        match self {
            FetchError::Url(_) => "invalid",
            FetchError::Resolve(..) | FetchError::Connect(..) => "unreachable",
            FetchError::Tls(..) => "tls_error",
            FetchError::Http(_) | FetchError::Body => "http_error",
            FetchError::Status(_) => "http_status",
            FetchError::Timeout => "timeout",
        }
    }
}

/// A document as served, with its `Cache-Control: max-age` (zero for `no-store` and
/// `no-cache`).
pub struct Fetched {
    pub body: Bytes,
    pub max_age: Option<Duration>,
}

/// The client one issuer fetches with: its TLS roots.
#[derive(Clone)]
pub struct Client {
    /// `None`: the issuer's documents are on loopback over plain HTTP, and TLS is never used.
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Client {
    /// A client trusting `roots` for HTTPS; `None` when only loopback HTTP is fetched.
    pub fn new(roots: Option<rustls::RootCertStore>) -> Client {
        let tls = roots.and_then(|roots| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(Arc::new(config))
        });
        Client { tls }
    }

    /// GET `url`, accepting `accept`, within the timeout and the size cap.
    pub async fn get(&self, url: &str, accept: &'static str) -> Result<Fetched, FetchError> {
        tokio::time::timeout(FETCH_TIMEOUT, self.exchange(url, accept))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    /// POST `body` (of `content_type`) to `url`, within the timeout: `Ok` on a 2xx.
    pub async fn post(
        &self,
        url: &str,
        content_type: &'static str,
        body: Bytes,
    ) -> Result<(), FetchError> {
        let exchange = async {
            let target = Target::parse(url).map_err(FetchError::Url)?;
            let request = Request::post(target.path_and_query.as_str())
                .header(header::HOST, target.authority.as_str())
                .header(header::CONTENT_TYPE, content_type)
                .header(header::USER_AGENT, USER_AGENT)
                .body(Full::new(body))
                .map_err(|_| FetchError::Url(format!("{url}: not a request target")))?;
            let response = self.send_to(&target, url, request).await?;
            match response.status().is_success() {
                true => Ok(()),
                false => Err(FetchError::Status(response.status().as_u16())),
            }
        };
        tokio::time::timeout(FETCH_TIMEOUT, exchange)
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn exchange(&self, url: &str, accept: &'static str) -> Result<Fetched, FetchError> {
        let target = Target::parse(url).map_err(FetchError::Url)?;
        let request = Request::get(target.path_and_query.as_str())
            .header(header::HOST, target.authority.as_str())
            .header(header::ACCEPT, accept)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|_| FetchError::Url(format!("{url}: not a request target")))?;
        let response = self.send_to(&target, url, request).await?;
        if response.status() != http::StatusCode::OK {
            return Err(FetchError::Status(response.status().as_u16()));
        }
        let max_age = max_age(response.headers());
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?
            .to_bytes();
        Ok(Fetched { body, max_age })
    }

    /// `request` to `target`, over TLS for `https`, on a fresh connection.
    async fn send_to<B>(
        &self,
        target: &Target,
        url: &str,
        request: Request<B>,
    ) -> Result<http::Response<hyper::body::Incoming>, FetchError>
    where
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = target.connect().await?;
        let _ = tcp.set_nodelay(true);
        let response = match (target.https, &self.tls) {
            (false, _) => send(tcp, request).await?,
            (true, Some(tls)) => {
                let name = ServerName::try_from(target.host.clone())
                    .map_err(|_| FetchError::Url(format!("{url}: not a server name")))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| FetchError::Tls(target.authority.clone(), e))?;
                send(stream, request).await?
            }
            (true, None) => {
                return Err(FetchError::Url(format!("{url}: no TLS roots for it")));
            }
        };
        Ok(response)
    }
}

const USER_AGENT: &str = concat!("regate/", env!("CARGO_PKG_VERSION"));

/// Send `request` on a fresh HTTP/1.1 connection over `io`.
async fn send<I, B>(
    io: I,
    request: Request<B>,
) -> Result<http::Response<hyper::body::Incoming>, FetchError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(FetchError::Http)?;
    // Ends with the exchange, or with the fetch's timeout dropping the sender.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    sender.send_request(request).await.map_err(FetchError::Http)
}

/// Where a URL leads, once it is one regate fetches.
struct Target {
    https: bool,
    /// Without brackets: a DNS name or an IP address.
    host: String,
    port: u16,
    authority: String,
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, String> {
        check_url(url)?;
        let uri: Uri = url.parse().map_err(|_| format!("{url} is not a URL"))?;
        let https = uri.scheme_str() == Some("https");
        let authority = uri.authority().ok_or(format!("{url} has no host"))?;
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        Ok(Target {
            https,
            port: authority.port_u16().unwrap_or(if https { 443 } else { 80 }),
            host,
            authority: authority.as_str().to_string(),
            path_and_query: uri
                .path_and_query()
                .map_or("/".to_string(), |p| p.as_str().to_string()),
        })
    }

    /// A TCP connection to the first of the host's addresses that answers; over plain HTTP,
    /// to loopback addresses only.
    async fn connect(&self) -> Result<TcpStream, FetchError> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((self.host.as_str(), self.port))
            .await
            .map_err(|e| FetchError::Resolve(self.host.clone(), e))?
            .filter(|a| self.https || a.ip().is_loopback())
            .collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(tcp) => return Ok(tcp),
                Err(e) => last = e,
            }
        }
        Err(FetchError::Connect(self.authority.clone(), last))
    }
}

/// Whether regate fetches from `url`: `https://` anywhere, `http://` only on loopback
/// (`localhost`, `127.0.0.0/8`, `::1`), never with credentials or a fragment.
pub fn check_url(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|_| format!("{url:?} is not a URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| format!("{url:?} is not an absolute URL"))?;
    if authority.as_str().contains('@') || url.contains('#') {
        return Err(format!("{url:?}: no credentials or fragment in a key URL"));
    }
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback(authority.host()) => Ok(()),
        Some("http") => Err(format!(
            "{url:?}: keys are fetched over HTTPS (plain http is allowed on loopback only)"
        )),
        _ => Err(format!("{url:?} is not an https URL")),
    }
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `Cache-Control: max-age=N`; `no-store`, `no-cache` and a malformed value are zero (the
/// caller's floor applies); none at all is `None` (the caller's default applies).
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let mut age = None;
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            return Some(Duration::ZERO);
        };
        for directive in value.split(',').map(str::trim) {
            let lower = directive.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(Duration::ZERO);
            }
            if let Some(n) = lower.strip_prefix("max-age=") {
                let n = n.trim_matches('"').parse::<u64>().unwrap_or(0);
                age = Some(Duration::from_secs(n));
            }
        }
    }
    age
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_fetched_from_loopback_only() {
        assert!(check_url("https://idp.example.org/keys").is_ok());
        assert!(check_url("http://127.0.0.1:8080/keys").is_ok());
        assert!(check_url("http://[::1]:8080/keys").is_ok());
        assert!(check_url("http://localhost/keys").is_ok());
        assert!(check_url("http://idp.example.org/keys").is_err());
        assert!(check_url("http://10.0.0.1/keys").is_err());
        assert!(check_url("ftp://idp.example.org/keys").is_err());
        assert!(check_url("https://user:pw@idp.example.org/keys").is_err());
        assert!(check_url("/keys").is_err());
    }

    #[test]
    fn max_age_is_read_from_cache_control() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, v.parse().unwrap());
            max_age(&h)
        };
        assert_eq!(with("public, max-age=600"), Some(Duration::from_secs(600)));
        assert_eq!(with("no-store"), Some(Duration::ZERO));
        assert_eq!(with("max-age=3600, no-cache"), Some(Duration::ZERO));
        assert_eq!(with("max-age=lots"), Some(Duration::ZERO));
        assert_eq!(with("public"), None);
        assert_eq!(max_age(&HeaderMap::new()), None);
    }
}
