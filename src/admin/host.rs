//! Which `Host` values the admin listener answers: against DNS rebinding.
//!
//! A web page on `attacker.example` whose name the attacker then points at 127.0.0.1 reads
//! the admin listener as its own origin: the browser sees the same name, so the same-origin
//! policy allows it. The request still says `Host: attacker.example`, which no operator's tool
//! sends, so the admin listener answers only names that mean it: its own address, the local
//! address the connection reached (for a listener on 0.0.0.0 with `--admin-allow-remote`),
//! `localhost`, and the `--admin-host` names. Anything else, or no `Host` on HTTP/1.1, is 421.
//!
//! The port is not compared: a `kubectl port-forward` or a NAT changes it, and rebinding
//! changes the name, not the port. An IP literal cannot be rebound, but only the listener's
//! own addresses are accepted, so a request naming another host is still refused.
//!
//! The read-only health listener (`--health-listen`) does not check: kubelet and Prometheus
//! name the pod IP, a Service name or whatever a probe's `host` says, a listener on 0.0.0.0
//! cannot know all of them, and a wrong 421 on `/healthz` restarts the pod. What it serves is
//! meant to be read by anything that reaches it and changes nothing.

use std::net::{IpAddr, SocketAddr};

use http::{header, Request, Version};

/// The names besides its addresses (`--admin-host`), lowercase, and IPs as `IpAddr` shows
/// them.
#[derive(Debug, Clone, Default)]
pub struct AdminHosts(Vec<String>);

impl AdminHosts {
    pub fn new(names: Vec<String>) -> AdminHosts {
        AdminHosts(names)
    }

    /// Whether `req` names this listener: bound to `listener`, reached at `local`. An
    /// absolute-form target (`GET http://host/…`) names its host too, and wins over `Host`
    /// (RFC 9112 §3.2.2), so it must pass as well.
    pub fn named_by<B>(&self, req: &Request<B>, listener: SocketAddr, local: SocketAddr) -> bool {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            (Some(host), None) => host.to_str().ok(),
            // HTTP/1.0 may leave it out; every browser sends one.
            (None, _) if req.version() < Version::HTTP_11 => None,
            _ => return false,
        };
        let names = |value: &str| self.names(value, listener, local);
        host.is_none_or(names) && req.uri().authority().is_none_or(|a| names(a.as_str()))
    }

    /// Whether one `host[:port]` value names the listener.
    fn names(&self, value: &str, listener: SocketAddr, local: SocketAddr) -> bool {
        let Some(host) = host_of(value) else {
            return false;
        };
        let ours = |ip: IpAddr| {
            let ip = ip.to_canonical();
            ip == listener.ip().to_canonical() || ip == local.ip().to_canonical()
        };
        match host {
            Host::Ip(ip) => ours(ip) || self.0.contains(&ip.to_string()),
            Host::Name(name) => {
                name.eq_ignore_ascii_case("localhost")
                    || self.0.iter().any(|n| n.eq_ignore_ascii_case(name))
            }
        }
    }
}

enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// The host of a `Host` value: `name`, `1.2.3.4` or `[v6]`, each with an optional decimal
/// port; `None` for anything else (user info, an IPv6 address without brackets, an empty
/// name).
fn host_of(value: &str) -> Option<Host<'_>> {
    if let Some(rest) = value.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        if !valid_port(port) {
            return None;
        }
        return v6.parse().ok().map(|ip| Host::Ip(IpAddr::V6(ip)));
    }
    let (host, port) = match value.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (value, None),
    };
    if !valid_port(port) || host.is_empty() {
        return None;
    }
    if let Ok(v4) = host.parse() {
        return Some(Host::Ip(IpAddr::V4(v4)));
    }
    host.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        .then_some(Host::Name(host))
}

fn valid_port(port: Option<&str>) -> bool {
    port.is_none_or(|p| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[&str], listener: &str, local: &str, host: Option<&str>) -> bool {
        let mut req = Request::builder().uri("/status");
        if let Some(host) = host {
            req = req.header(header::HOST, host);
        }
        AdminHosts::new(hosts.iter().map(|h| h.to_string()).collect()).named_by(
            &req.body(()).unwrap(),
            listener.parse().unwrap(),
            local.parse().unwrap(),
        )
    }

    #[test]
    fn only_the_listeners_own_names_are_answered() {
        let lo = "127.0.0.1:9901";
        for host in [
            "localhost",
            "LocalHost:9901",
            "127.0.0.1",
            "127.0.0.1:9901",
            "127.0.0.1:8080",
        ] {
            assert!(names(&[], lo, lo, Some(host)), "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:9901",
            "localhost.attacker.example",
            "127.0.0.2:9901",
            "[::1]:9901",
            "user@localhost",
            "localhost:99999",
            "localhost:",
            "localhost:+80",
            "",
            ":9901",
            "::1",
        ] {
            assert!(!names(&[], lo, lo, Some(host)), "{host}");
        }
        assert!(!names(&[], lo, lo, None), "HTTP/1.1 without Host");

        // IPv6, bracketed, and a mapped IPv4 listener.
        let v6 = "[::1]:9901";
        assert!(names(&[], v6, v6, Some("[::1]:9901")));
        assert!(names(&[], v6, v6, Some("[::1]")));
        assert!(!names(&[], v6, v6, Some("[::1")));
        let mapped = "[::ffff:127.0.0.1]:9901";
        assert!(names(&[], mapped, mapped, Some("127.0.0.1:9901")));

        // On 0.0.0.0, the address the connection reached names it.
        assert!(names(
            &[],
            "0.0.0.0:9901",
            "10.1.2.3:9901",
            Some("10.1.2.3:9901")
        ));
        assert!(!names(
            &[],
            "0.0.0.0:9901",
            "10.1.2.3:9901",
            Some("10.1.2.4:9901")
        ));

        // --admin-host names, without regard to case.
        let hosts = ["regate-admin.internal", "10.9.9.9"];
        assert!(names(&hosts, lo, lo, Some("Regate-Admin.internal:9901")));
        assert!(names(&hosts, lo, lo, Some("10.9.9.9")));
        assert!(!names(&hosts, lo, lo, Some("admin.internal")));
    }

    #[test]
    fn an_absolute_target_must_name_the_listener_too() {
        let lo: SocketAddr = "127.0.0.1:9901".parse().unwrap();
        let req = |uri: &str| {
            Request::builder()
                .uri(uri)
                .header(header::HOST, "localhost")
                .body(())
                .unwrap()
        };
        let hosts = AdminHosts::default();
        assert!(hosts.named_by(&req("http://localhost:9901/status"), lo, lo));
        assert!(!hosts.named_by(&req("http://attacker.example/status"), lo, lo));
        let two = Request::builder()
            .uri("/status")
            .header(header::HOST, "localhost")
            .header(header::HOST, "attacker.example")
            .body(())
            .unwrap();
        assert!(!hosts.named_by(&two, lo, lo), "two Host headers");
        let old = Request::builder()
            .uri("/status")
            .version(Version::HTTP_10)
            .body(())
            .unwrap();
        assert!(hosts.named_by(&old, lo, lo), "HTTP/1.0 may leave Host out");
    }
}
