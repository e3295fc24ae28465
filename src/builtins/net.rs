//! `net.cidr_*` as OPA computes them, with Go's `net` package rules.
//!
//! regorus' `net.cidr_contains` says an IPv4 network does not hold `::ffff:203.0.113.9`; Go
//! (and so OPA) says it does. On a dual-stack listener every IPv4 client arrives in that form,
//! so the difference would let an IPv4 denylist be walked around. Here an IPv4-mapped IPv6
//! address is the IPv4 address, and an IPv4-mapped network (`::ffff:10.0.0.0/104`) is the IPv4
//! network, as Go's `IPNet.Contains` has it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use regorus::Value;

use super::{string_arg, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[
    ("net.cidr_contains", 2, cidr_contains),
    ("net.cidr_intersects", 2, cidr_intersects),
    ("net.cidr_contains_matches", 2, cidr_contains_matches),
    ("net.cidr_merge", 1, cidr_merge),
    ("net.cidr_is_valid", 1, cidr_is_valid),
];

/// `net.cidr_is_valid(x)`: false, never an error, for anything that is not a CIDR string.
fn cidr_is_valid(args: &[Value]) -> Result<Value, String> {
    Ok(Value::from(matches!(
        args.first(),
        Some(Value::String(s)) if Net::parse(s).is_some()
    )))
}

/// An address as Go compares it: IPv4, including IPv4-mapped IPv6, or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addr {
    V4(u32),
    V6(u128),
}

impl Addr {
    fn parse(s: &str) -> Option<Addr> {
        match s.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(Addr::V4(v4.into())),
            IpAddr::V6(v6) => Some(match v6.to_ipv4_mapped() {
                Some(v4) => Addr::V4(v4.into()),
                None => Addr::V6(v6.into()),
            }),
        }
    }
}

/// A network: its first address and its prefix length in that family's bits.
#[derive(Debug, Clone, Copy)]
struct Net {
    first: Addr,
    prefix: u32,
}

impl Net {
    /// Go's `net.ParseCIDR`: the address is masked; the prefix is decimal digits, at most the
    /// family's width. An IPv6 network that stays IPv4-mapped once masked is that IPv4 network.
    fn parse(s: &str) -> Option<Net> {
        let (addr, prefix) = s.split_once('/')?;
        if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) || prefix.len() > 3 {
            return None;
        }
        let prefix: u32 = prefix.parse().ok()?;
        match addr.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => (prefix <= 32).then(|| Net {
                first: Addr::V4(u32::from(v4) & mask32(prefix)),
                prefix,
            }),
            IpAddr::V6(v6) => {
                if prefix > 128 {
                    return None;
                }
                let masked = u128::from(v6) & mask128(prefix);
                let mapped = std::net::Ipv6Addr::from(masked).to_ipv4_mapped();
                Some(match mapped {
                    Some(v4) if prefix >= 96 => Net {
                        first: Addr::V4(v4.into()),
                        prefix: prefix - 96,
                    },
                    _ => Net {
                        first: Addr::V6(masked),
                        prefix,
                    },
                })
            }
        }
    }

    fn contains(&self, addr: Addr) -> bool {
        match (self.first, addr) {
            (Addr::V4(net), Addr::V4(a)) => a & mask32(self.prefix) == net,
            (Addr::V6(net), Addr::V6(a)) => a & mask128(self.prefix) == net,
            _ => false,
        }
    }

    fn last(&self) -> Addr {
        match self.first {
            Addr::V4(a) => Addr::V4(a | !mask32(self.prefix)),
            Addr::V6(a) => Addr::V6(a | !mask128(self.prefix)),
        }
    }
}

fn mask32(prefix: u32) -> u32 {
    u32::MAX.checked_shl(32 - prefix.min(32)).unwrap_or(0)
}

fn mask128(prefix: u32) -> u128 {
    u128::MAX.checked_shl(128 - prefix.min(128)).unwrap_or(0)
}

fn net_arg(args: &[Value], i: usize) -> Result<Net, String> {
    let s = string_arg(args, i)?;
    Net::parse(s).ok_or_else(|| format!("invalid CIDR address: {s}"))
}

/// `net.cidr_contains(cidr, cidr_or_ip)`.
fn cidr_contains(args: &[Value]) -> Result<Value, String> {
    let net = net_arg(args, 0)?;
    contains(&net, string_arg(args, 1)?).map(Value::from)
}

fn contains(net: &Net, other: &str) -> Result<bool, String> {
    if let Some(addr) = Addr::parse(other) {
        return Ok(net.contains(addr));
    }
    let inner = Net::parse(other).ok_or_else(|| {
        format!("not a valid textual representation of an IP address or CIDR: {other}")
    })?;
    Ok(net.contains(inner.first) && net.contains(inner.last()))
}

/// `net.cidr_intersects(a, b)`: either holds the other's first address.
fn cidr_intersects(args: &[Value]) -> Result<Value, String> {
    let a = net_arg(args, 0)?;
    let b = net_arg(args, 1)?;
    Ok(Value::from(a.contains(b.first) || b.contains(a.first)))
}

/// The (CIDR, index) pairs of one operand of `net.cidr_contains_matches`: a string is its own
/// index; an array's elements are indexed by position, a set's by themselves, an object's by
/// key; an element is a CIDR string or an array whose first item is one.
fn match_operand(operand: usize, value: &Value) -> Result<Vec<(Value, Value)>, String> {
    let element = |v: &Value| match v {
        Value::String(_) => Ok(v.clone()),
        Value::Array(items) if !items.is_empty() => Ok(items[0].clone()),
        _ => Err(format!(
            "operand {operand}: element must be string or non-empty array"
        )),
    };
    Ok(match value {
        Value::String(_) => vec![(value.clone(), value.clone())],
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Ok((element(v)?, Value::from(i))))
            .collect::<Result<_, String>>()?,
        Value::Set(items) => items
            .iter()
            .map(|v| Ok((element(v)?, v.clone())))
            .collect::<Result<_, String>>()?,
        Value::Object(fields) => fields
            .iter()
            .map(|(k, v)| Ok((element(v)?, k.clone())))
            .collect::<Result<_, String>>()?,
        // OPA iterates nothing for any other type, and so matches nothing.
        _ => Vec::new(),
    })
}

/// `net.cidr_contains_matches(cidrs, cidrs_or_ips)`: the set of `[index, index]` pairs where
/// the first holds the second.
fn cidr_contains_matches(args: &[Value]) -> Result<Value, String> {
    let (Some(a), Some(b)) = (args.first(), args.get(1)) else {
        return Err("two operands are needed".into());
    };
    let outer = match_operand(1, a)?;
    let inner = match_operand(2, b)?;
    let mut out = BTreeSet::new();
    for (cidr, i) in &outer {
        for (other, j) in &inner {
            let pair = [cidr.clone(), other.clone()];
            let held = cidr_contains(&pair)?;
            if held == Value::from(true) {
                out.insert(Value::from(vec![i.clone(), j.clone()]));
            }
        }
    }
    Ok(Value::from(out))
}

/// One range for `net.cidr_merge`, in the family it was written in (Go does not unmap here),
/// with the text Go prints for it while it stays unmerged.
struct Range {
    v6: bool,
    first: u128,
    last: u128,
    text: Option<String>,
}

/// `net.cidr_merge(addrs)`: the fewest networks covering every address and network given.
/// A bare IPv4 address stands for its classful network, as Go's `IP.DefaultMask` has it.
fn cidr_merge(args: &[Value]) -> Result<Value, String> {
    let items: Vec<&Value> = match args.first() {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(Value::Set(items)) => items.iter().collect(),
        _ => return Err("operand must be an array".into()),
    };
    let mut ranges = Vec::with_capacity(items.len());
    for item in items {
        let Value::String(s) = item else {
            return Err("element must be string".into());
        };
        ranges.push(merge_range(s)?);
    }
    // Go sorts by last address, then first, comparing the bytes (so IPv4 before IPv6).
    ranges.sort_by_key(|r| (r.v6, r.last, r.first));
    let mut i = ranges.len();
    while i > 1 {
        i -= 1;
        let (prev, cur) = (&ranges[i - 1], &ranges[i]);
        if prev.v6 == cur.v6 && cur.first.saturating_sub(1) <= prev.last {
            let merged = Range {
                v6: cur.v6,
                first: prev.first.min(cur.first),
                last: cur.last,
                text: None,
            };
            ranges[i - 1] = merged;
            ranges.remove(i);
        }
    }
    let mut out = BTreeSet::new();
    for r in ranges {
        match r.text {
            Some(text) => {
                out.insert(Value::from(text));
            }
            None => {
                for text in range_to_cidrs(r.v6, r.first, r.last) {
                    out.insert(Value::from(text));
                }
            }
        }
    }
    Ok(Value::from(out))
}

fn merge_range(s: &str) -> Result<Range, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return match ip {
            IpAddr::V4(v4) => {
                let a = u32::from(v4);
                let prefix = match a >> 24 {
                    0..=0x7f => 8,
                    0x80..=0xbf => 16,
                    _ => 24,
                };
                let first = a & mask32(prefix);
                Ok(Range {
                    v6: false,
                    first: first.into(),
                    last: (first | !mask32(prefix)).into(),
                    text: Some(format!("{v4}/{prefix}")),
                })
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => merge_range(&v4.to_string()),
                None => Err("IPv6 invalid: needs prefix length".into()),
            },
        };
    }
    let (addr, _) = s
        .split_once('/')
        .ok_or_else(|| format!("invalid CIDR address: {s}"))?;
    let written_v6 = addr.contains(':');
    let net = Net::parse(s).ok_or_else(|| format!("invalid CIDR address: {s}"))?;
    let text = format!("{}/{}", show(net.first), net.prefix);
    let (v6, first, last) = match (net.first, net.last()) {
        (Addr::V4(first), Addr::V4(last)) if !written_v6 => (false, first.into(), last.into()),
        // An IPv4-mapped network written as IPv6 stays IPv6 in the merge, as in Go.
        (Addr::V4(first), Addr::V4(last)) => (true, mapped(first), mapped(last)),
        (Addr::V6(first), Addr::V6(last)) => (true, first, last),
        _ => return Err(format!("invalid CIDR address: {s}")),
    };
    Ok(Range {
        v6,
        first,
        last,
        text: Some(text),
    })
}

fn mapped(v4: u32) -> u128 {
    0xffff_0000_0000 | u128::from(v4)
}

fn show(addr: Addr) -> String {
    match addr {
        Addr::V4(a) => std::net::Ipv4Addr::from(a).to_string(),
        Addr::V6(a) => std::net::Ipv6Addr::from(a).to_string(),
    }
}

/// The fewest networks that cover `first..=last` exactly.
fn range_to_cidrs(v6: bool, mut first: u128, last: u128) -> Vec<String> {
    let bits: u32 = if v6 { 128 } else { 32 };
    let mut out = Vec::new();
    loop {
        // The largest block aligned at `first` that does not pass `last`.
        let mut size = if first == 0 {
            bits
        } else {
            first.trailing_zeros().min(bits)
        };
        while size > 0 {
            let span = if size >= 128 {
                u128::MAX
            } else {
                (1u128 << size) - 1
            };
            match first.checked_add(span) {
                Some(end) if end <= last => break,
                _ => size -= 1,
            }
        }
        let prefix = bits - size;
        let addr = match v6 {
            true => show(Addr::V6(first)),
            false => show(Addr::V4(first as u32)),
        };
        out.push(format!("{addr}/{prefix}"));
        let span = if size >= 128 {
            u128::MAX
        } else {
            (1u128 << size) - 1
        };
        match first.checked_add(span).and_then(|e| e.checked_add(1)) {
            Some(next) if next <= last => first = next,
            _ => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(f: Builtin, args: &[&str]) -> Result<Value, String> {
        let args: Vec<Value> = args.iter().map(|s| Value::from(*s)).collect();
        f(&args)
    }

    #[test]
    fn mapped_addresses_are_their_ipv4_address() {
        let yes = Value::from(true);
        let no = Value::from(false);
        assert_eq!(
            call(cidr_contains, &["203.0.113.0/24", "::ffff:203.0.113.9"]),
            Ok(yes.clone())
        );
        assert_eq!(
            call(cidr_contains, &["::ffff:203.0.113.0/120", "203.0.113.9"]),
            Ok(yes.clone())
        );
        assert_eq!(
            call(cidr_contains, &["203.0.113.0/24", "::ffff:203.0.114.9"]),
            Ok(no.clone())
        );
        assert_eq!(call(cidr_contains, &["::/0", "10.0.0.1"]), Ok(no));
        assert_eq!(call(cidr_contains, &["10.0.0.0/8", "10.2.0.0/16"]), Ok(yes));
        assert!(call(cidr_contains, &["10.0.0.0/8", "10.0.0.1:80"]).is_err());
    }

    #[test]
    fn merge_covers_exactly() {
        let got = call(cidr_merge, &[]).err();
        assert!(got.is_some());
        let args = [Value::from(vec![
            Value::from("192.0.128.0/24"),
            Value::from("192.0.129.0/24"),
        ])];
        assert_eq!(
            cidr_merge(&args),
            Ok(Value::from(BTreeSet::from([Value::from("192.0.128.0/23")])))
        );
        assert_eq!(
            range_to_cidrs(false, 0x0a00_0001, 0x0a00_0006),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
    }
}
