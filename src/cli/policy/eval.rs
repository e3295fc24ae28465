//! `regate policy eval`: the decision the proxy would make, printed as JSON.
//!
//! The policy set is loaded with [`PolicySet::load`] and asked with [`PolicySet::decide`], the
//! proxy's own calls. The input is either given whole (`--input`) or built from a request
//! described by flags, through the proxy's own steps: the checks and header hygiene of
//! [`request::prepare`], then [`ConnInput`] and [`RequestInput`]. Only the connection is made up: the caller's identity comes from
//! `--cert` or `--spiffe-id`, its address from `--source`.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Args;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use regorus::Value;
use serde::Serialize;
use serde_json::json;

use super::PolicyFlags;
use crate::cli::out::outln;
use crate::policy::input::{context_value, ConnInput, RequestInput};
use crate::policy::{Decision, Options, PolicySet};
use crate::request;
use crate::tls::identity::{PeerIdentity, SpiffeId};

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The whole input document (JSON), from a file or `-` for stdin, used as is. Without it,
    /// the input is built from the request flags below, as the proxy builds it.
    #[arg(long, value_name = "FILE|-", conflicts_with = "RequestArgs")]
    input: Option<String>,
    /// The policy directory, as given to `regate run --policies`.
    #[arg(long, value_name = "DIR", default_value = "policies")]
    policies: PathBuf,
    #[command(flatten)]
    policy: PolicyFlags,
    /// Evaluate N times and add min, p50, p99 and mean evaluation times.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    repeat: u32,
    /// Add the input document to the output.
    #[arg(long)]
    show_input: bool,
    /// Print only the query's value, as JSON (nothing when it is undefined), as
    /// `opa eval --format raw` does. The exit code is still the decision's.
    #[arg(long, conflicts_with_all = ["show_input", "repeat"])]
    raw: bool,
    /// Do not evaluate the query on a made-up request at load (nor warn when that fails).
    #[arg(long)]
    skip_sample: bool,
    #[command(flatten)]
    request: RequestArgs,
}

/// A request and its connection, described instead of sent.
#[derive(Debug, Args)]
struct RequestArgs {
    /// The request method.
    #[arg(long, default_value = "GET")]
    method: String,
    /// The request target as the client sends it, path and query: '/docs/a?x=1'.
    #[arg(long, value_name = "TARGET", default_value = "/")]
    path: String,
    /// A request header, 'name: value' (repeatable; a repeated name keeps every value).
    #[arg(long = "header", value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// The host the client names (Host in HTTP/1.1, :authority in HTTP/2).
    #[arg(long, default_value = "localhost")]
    host: String,
    /// The protocol the client speaks.
    #[arg(long, default_value = "HTTP/1.1", value_parser = ["HTTP/1.0", "HTTP/1.1", "HTTP/2"])]
    protocol: String,
    /// The caller's SPIFFE ID, as the one URI SAN of its certificate.
    #[arg(long, value_name = "URI", conflicts_with = "cert")]
    spiffe_id: Option<String>,
    /// The caller's certificate serial, lowercase hex.
    #[arg(
        long,
        value_name = "HEX",
        default_value = "01",
        conflicts_with = "cert"
    )]
    serial: String,
    /// How long ago the caller's certificate became valid (input.peer.age_seconds).
    #[arg(long, value_name = "DURATION", default_value = "1h",
          value_parser = super::duration, conflicts_with = "cert")]
    cert_age: Duration,
    /// How long the caller's certificate stays valid (input.peer.expires_in_seconds).
    #[arg(long, value_name = "DURATION", default_value = "23h",
          value_parser = super::duration, conflicts_with = "cert")]
    cert_expires_in: Duration,
    /// The caller's certificate (PEM, leaf first), read as the proxy reads it at the handshake.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// regate's own certificate (PEM), for attributes.destination [default: DNS name localhost].
    #[arg(long, value_name = "FILE")]
    server_cert: Option<PathBuf>,
    /// The caller's address.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:40000")]
    source: SocketAddr,
    /// The address regate accepted the connection on.
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:8443")]
    destination: SocketAddr,
    /// A static label, input.context.KEY, as `regate run --context` (repeatable).
    #[arg(long = "context", value_name = "KEY=VALUE")]
    context: Vec<String>,
    /// As `regate run --trust-domain`: a caller from another trust domain is denied before
    /// the policy is asked (repeatable).
    #[arg(long = "trust-domain", value_name = "TD")]
    trust_domains: Vec<String>,
    /// The time of the request, RFC 3339 [default: now].
    #[arg(long, value_name = "RFC3339")]
    time: Option<String>,
}

/// For scripts: 0 allow, 1 deny, 2 error (nothing to evaluate, or an evaluation that failed
/// or gave a malformed result; the proxy denies those too).
pub fn run(args: EvalArgs) -> ExitCode {
    match eval(&args) {
        Ok((out, decision)) => {
            if !out.is_empty() {
                outln!("{out}");
            }
            // A request regate refuses before the policy (`invalid_path`) is a deny; only the
            // policy's own failures are errors.
            let failed = decision.error.is_some() && decision.reason.starts_with("policy_");
            match (decision.allowed, failed) {
                (true, _) => ExitCode::SUCCESS,
                (false, false) => ExitCode::from(1),
                (false, true) => ExitCode::from(2),
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("regate: policy eval: {e}");
            }
            ExitCode::from(2)
        }
    }
}

/// What the proxy does before it asks the policy: either an input, or its own deny.
enum Prepared {
    Input(Value),
    Refused(Box<Decision>),
}

/// The text to print, and the decision that sets the exit code.
fn eval(args: &EvalArgs) -> Result<(String, Decision), Vec<String>> {
    let prepared = match &args.input {
        Some(source) => Prepared::Input(read_input(source).map_err(|e| vec![e])?),
        None => describe(&args.request).map_err(|e| vec![e])?,
    };
    let options = Options {
        sample: !args.skip_sample,
        ..args.policy.options()
    };
    let set = PolicySet::load(&args.policies, &options)
        .map_err(|es| es.iter().map(|e| e.to_string()).collect::<Vec<_>>())?;
    if let Some(message) = &set.sample_error {
        eprintln!(
            "regate: policy eval: warning: {} fails on a sample request: {message}",
            set.query
        );
    }
    if args.raw {
        return Ok(match prepared {
            Prepared::Refused(decision) => (String::new(), *decision),
            Prepared::Input(input) => {
                let decision = set.decide(input.clone());
                let text = match set.value(input) {
                    Ok(Value::Undefined) | Err(_) => String::new(),
                    Ok(value) => value.to_json_str().map_err(|e| vec![e.to_string()])?,
                };
                (text, decision)
            }
        });
    }
    let (decision, input, timings) = match prepared {
        Prepared::Refused(decision) => (*decision, None, Vec::new()),
        Prepared::Input(input) => {
            let decision = set.decide(input.clone());
            let mut timings = vec![decision.eval_ns];
            for _ in 1..args.repeat {
                timings.push(set.decide(input.clone()).eval_ns);
            }
            (decision, Some(input), timings)
        }
    };
    let out = Output {
        decision: decision_json(&decision),
        policy_revision: &set.revision,
        query: &set.query,
        timing: (args.repeat > 1).then(|| timing(timings)),
        input: match (args.show_input, input) {
            (true, Some(v)) => serde_json::from_str(&v.to_json_str().unwrap_or_default()).ok(),
            _ => None,
        },
    };
    let text = serde_json::to_string_pretty(&out).map_err(|e| vec![e.to_string()])?;
    Ok((text, decision))
}

fn read_input(source: &str) -> Result<Value, String> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| format!("input: cannot read stdin: {e}"))?;
        s
    } else {
        std::fs::read_to_string(source).map_err(|e| format!("input: cannot read {source}: {e}"))?
    };
    Value::from_json_str(&text).map_err(|e| format!("input: {source}: {e}"))
}

/// The request as the proxy's `authorize` sees it, step by step in the same order.
fn describe(req: &RequestArgs) -> Result<Prepared, String> {
    let now = match &req.time {
        Some(t) => parse_time(t)?,
        None => SystemTime::now(),
    };
    let peer = match &req.cert {
        Some(file) => identity_from(file)?,
        None => described_peer(req, now),
    };
    let local = match &req.server_cert {
        Some(file) => identity_from(file)?,
        None => PeerIdentity {
            spiffe_id: None,
            uri_sans: Vec::new(),
            dns_sans: vec!["localhost".into()],
            ..described_peer(req, now)
        },
    };
    let mut headers = HeaderMap::new();
    for h in &req.headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header: {h:?} is not 'name: value'"))?;
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("header: {name:?} is not a header name"))?;
        if name == header::HOST {
            return Err("header: give the host with --host".into());
        }
        let value = HeaderValue::from_str(value.trim())
            .map_err(|_| format!("header: the value of {name} is not a header value"))?;
        headers.append(name, value);
    }

    let version = match req.protocol.as_str() {
        "HTTP/2" => http::Version::HTTP_2,
        "HTTP/1.0" => http::Version::HTTP_10,
        _ => http::Version::HTTP_11,
    };
    let method = http::Method::from_bytes(req.method.as_bytes())
        .map_err(|_| format!("method: {:?} is not an HTTP method", req.method))?;
    if version != http::Version::HTTP_2 {
        headers.insert(
            header::HOST,
            HeaderValue::from_str(&req.host).map_err(|_| format!("host: {:?}", req.host))?,
        );
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let xfcc = HeaderValue::from_str(&crate::request::headers::xfcc(&peer, &local))
        .map_err(|_| "certificate: its names do not fit in a header".to_string())?;
    let xff = HeaderValue::from_str(&req.source.ip().to_canonical().to_string())
        .map_err(|_| "source: not an address".to_string())?;
    let head = request::Head {
        method: &method,
        version,
        scheme: (version == http::Version::HTTP_2).then_some("https"),
        authority: (version == http::Version::HTTP_2).then_some(req.host.as_str()),
        target: &req.path,
    };
    // As the proxy does by default: the client's own well-formed id goes upstream.
    let forwarded_id = request::headers::client_request_id(&headers);
    let forwarded = request::Forwarded {
        xfcc: &xfcc,
        xff: &xff,
        request_id: forwarded_id.as_deref().unwrap_or(&request_id),
        host: &req.host,
    };
    let prepared =
        match request::prepare(&head, &mut headers, &forwarded, &request::Rules::default()) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Prepared::Refused(Box::new(Decision {
                    status: e.status(),
                    error: Some(e.to_string()),
                    ..Decision::deny(e.reason())
                })))
            }
        };

    // The proxy's checks before the policy, in its order.
    let now_unix = unix(now);
    if peer.expired_at(now_unix) {
        return Ok(Prepared::Refused(Box::new(Decision::deny(
            "certificate_expired",
        ))));
    }
    if !peer.in_trust_domains(&req.trust_domains) {
        return Ok(Prepared::Refused(Box::new(Decision::deny(
            "untrusted_trust_domain",
        ))));
    }

    let mut labels = BTreeMap::new();
    for kv in &req.context {
        let (k, v) = kv
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("context: {kv:?} is not KEY=VALUE"))?;
        labels.insert(k.to_string(), v.to_string());
    }
    let conn = ConnInput::new(
        &peer,
        &local,
        req.source,
        req.destination,
        context_value(&labels),
    );
    Ok(Prepared::Input(conn.build(&RequestInput {
        id: &request_id,
        method: &req.method,
        headers: &headers,
        path: &req.path,
        host: &req.host,
        protocol: match version {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        parsed_path: &prepared.target.segments,
        parsed_query: &prepared.target.query,
        upgrade: prepared.upgrade.as_deref(),
        delegation: None,
        approval: None,
        body: None,
        now,
    })))
}

/// A caller known only by the flags: one URI SAN when `--spiffe-id` is given, as an
/// X509-SVID has, and validity from `--cert-age` and `--cert-expires-in`.
fn described_peer(req: &RequestArgs, now: SystemTime) -> PeerIdentity {
    let now = unix(now);
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2);
    PeerIdentity {
        spiffe_id: req.spiffe_id.as_deref().and_then(SpiffeId::parse),
        uri_sans: req.spiffe_id.iter().cloned().collect(),
        dns_sans: Vec::new(),
        subject: "CN=regate policy eval".into(),
        issuer: "CN=regate policy eval CA".into(),
        serial: req.serial.to_ascii_lowercase(),
        fingerprint_sha256: "00".repeat(32),
        not_before: now.saturating_sub(secs(req.cert_age)),
        not_after: now.saturating_add(secs(req.cert_expires_in)),
    }
}

fn identity_from(file: &Path) -> Result<PeerIdentity, String> {
    use rustls_pki_types::pem::PemObject;
    let name = file.display();
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {name}: {e}"))?;
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(&bytes)
        .next()
        .and_then(Result::ok)
        .ok_or_else(|| format!("{name} holds no PEM certificate"))?;
    PeerIdentity::from_der(&leaf).map_err(|e| format!("{name}: {e}"))
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 3339, read by the same builtin a policy uses on `input.attributes.request.time`.
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("time: {s:?} is not an RFC 3339 time like 2026-01-31T09:30:00Z");
    let quoted = serde_json::to_string(s).map_err(|_| bad())?;
    let mut engine = regorus::Engine::new();
    let results = engine
        .eval_query(format!("time.parse_rfc3339_ns({quoted})"), false)
        .map_err(|_| bad())?;
    let ns = results
        .result
        .first()
        .and_then(|r| r.expressions.first())
        .and_then(|e| e.value.as_i64().ok())
        .ok_or_else(bad)?;
    let since = Duration::from_nanos(ns.unsigned_abs());
    match ns >= 0 {
        true => UNIX_EPOCH.checked_add(since),
        false => UNIX_EPOCH.checked_sub(since),
    }
    .ok_or_else(bad)
}

/// What `policy eval` prints, in this order.
#[derive(Serialize)]
struct Output<'a> {
    #[serde(flatten)]
    decision: DecisionJson<'a>,
    policy_revision: &'a str,
    query: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timing: Option<Timing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<serde_json::Value>,
}

/// A [`Decision`], with the field names of the decision contract.
#[derive(Serialize)]
struct DecisionJson<'a> {
    allowed: bool,
    /// On allow the upstream answers; regate sends a status of its own only on deny.
    http_status: Option<u16>,
    reason: &'a str,
    headers: serde_json::Value,
    response_headers_to_add: serde_json::Value,
    request_headers_to_remove: Vec<&'a str>,
    query_parameters_to_set: serde_json::Value,
    query_parameters_to_remove: &'a [String],
    body: Option<String>,
    error: Option<&'a str>,
    eval_ns: u64,
}

fn decision_json(d: &Decision) -> DecisionJson<'_> {
    DecisionJson {
        allowed: d.allowed,
        http_status: (!d.allowed).then_some(d.status.as_u16()),
        reason: &d.reason,
        headers: header_object(&d.headers),
        response_headers_to_add: header_object(&d.response_headers),
        request_headers_to_remove: d.remove_headers.iter().map(|h| h.as_str()).collect(),
        query_parameters_to_set: pair_object(
            d.query_set.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        ),
        query_parameters_to_remove: &d.query_remove,
        body: d
            .body
            .as_ref()
            .map(|b| String::from_utf8_lossy(b).into_owned()),
        error: d.error.as_deref(),
        eval_ns: d.eval_ns,
    }
}

fn header_object(headers: &[(HeaderName, HeaderValue)]) -> serde_json::Value {
    pair_object(
        headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.to_str().unwrap_or_default())),
    )
}

/// `{"name": "value"}`, or `{"name": ["v1", "v2"]}` for a name given more than once.
fn pair_object<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> serde_json::Value {
    let mut map: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in pairs {
        map.entry(k).or_default().push(v);
    }
    map.into_iter()
        .map(|(k, vs)| {
            let v = match vs.as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            (k.to_string(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Evaluation times over `--repeat` runs.
#[derive(Serialize)]
struct Timing {
    runs: usize,
    min_ns: u64,
    p50_ns: u64,
    p99_ns: u64,
    mean_ns: u64,
}

fn timing(mut ns: Vec<u64>) -> Timing {
    ns.sort_unstable();
    let at = |q: f64| {
        let i = ((ns.len() as f64 - 1.0) * q).round() as usize;
        ns.get(i).copied().unwrap_or_default()
    };
    Timing {
        runs: ns.len(),
        min_ns: at(0.0),
        p50_ns: at(0.5),
        p99_ns: at(0.99),
        mean_ns: ns.iter().sum::<u64>() / (ns.len().max(1) as u64),
    }
}
