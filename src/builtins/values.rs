//! Builtins that read or build plain values, where regorus is missing one or is more lenient
//! than OPA. A policy that relies on a parse failing (`not time.parse_rfc3339_ns(x)`) is only
//! as strong as the parser, so these refuse exactly what OPA refuses.

use regorus::Value;

use super::{string_arg, type_name, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[
    ("array.flatten", 1, array_flatten),
    ("urlquery.decode", 1, urlquery_decode),
    ("glob.quote_meta", 1, glob_quote_meta),
    ("time.parse_rfc3339_ns", 1, parse_rfc3339_ns),
    ("to_number", 1, to_number),
];

/// `array.flatten(arr)`: the arrays directly inside spliced in place, one level deep as in
/// OPA (`[1, [2, [3]]]` is `[1, 2, [3]]`).
fn array_flatten(args: &[Value]) -> Result<Value, String> {
    match args.first() {
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items.iter() {
                match item {
                    Value::Array(inner) => out.extend(inner.iter().cloned()),
                    other => out.push(other.clone()),
                }
            }
            Ok(Value::from(out))
        }
        Some(other) => Err(format!(
            "operand 1 must be array but got {}",
            type_name(other)
        )),
        None => Err("operand 1 is missing".into()),
    }
}

/// `urlquery.decode(s)`: `+` is a space and every `%` starts two hex digits, as Go's
/// `url.QueryUnescape` has it (regorus passes `%zz` through). Bytes that are not UTF-8 are an
/// error: a Rego string here cannot hold them.
fn urlquery_decode(args: &[Value]) -> Result<Value, String> {
    let s = string_arg(args, 0)?;
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .filter(|_| {
                        bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit()
                    })
                    .ok_or_else(|| "invalid URL escape".to_string())?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out)
        .map(Value::from)
        .map_err(|_| "the decoded text is not UTF-8".to_string())
}

/// `glob.quote_meta(s)`: every glob metacharacter escaped, as OPA's glob library does
/// (regorus escapes only `*`, so a quoted `?` or `[` still matched as a pattern).
fn glob_quote_meta(args: &[Value]) -> Result<Value, String> {
    let s = string_arg(args, 0)?;
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\' | '[' | ']' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    Ok(Value::from(out))
}

/// `to_number(x)`: a string must be a number as Go's `strconv.ParseFloat` reads one (no
/// spaces around it, no `inf` or `nan`); its value is kept exactly.
fn to_number(args: &[Value]) -> Result<Value, String> {
    let s = match args.first() {
        Some(Value::Null) => return Ok(Value::from(0u64)),
        Some(Value::Bool(b)) => return Ok(Value::from(u64::from(*b))),
        Some(n @ Value::Number(_)) => return Ok(n.clone()),
        Some(Value::String(s)) => s,
        Some(other) => {
            return Err(format!(
                "operand 1 must be one of {{boolean, null, number, string}} but got {}",
                type_name(other)
            ))
        }
        None => return Err("operand 1 is missing".into()),
    };
    let invalid = || format!("strconv.ParseFloat: parsing {s:?}: invalid syntax");
    let json = decimal_as_json(s).ok_or_else(invalid)?;
    match Value::from_json_str(&json) {
        Ok(n @ Value::Number(_)) => Ok(n),
        _ => Err(invalid()),
    }
}

/// A decimal float in Go's syntax (`+1`, `.5`, `1.`, `1e3`), rewritten as a JSON number, or
/// `None` for anything else.
fn decimal_as_json(s: &str) -> Option<String> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => ("", &s[1..]),
        b'-' => ("-", &s[1..]),
        _ => ("", s),
    };
    let (mantissa, exponent) = match rest.find(['e', 'E']) {
        Some(at) => (&rest[..at], Some(&rest[at + 1..])),
        None => (rest, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    if !digits(int)
        || !frac.is_none_or(digits)
        || (int.is_empty() && frac.is_none_or(str::is_empty))
    {
        return None;
    }
    let mut json = format!("{sign}{}", if int.is_empty() { "0" } else { int });
    if let Some(f) = frac.filter(|f| !f.is_empty()) {
        json.push('.');
        json.push_str(f);
    }
    if let Some(e) = exponent {
        let e_digits = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e_digits.is_empty() || !digits(e_digits) {
            return None;
        }
        json.push('e');
        json.push_str(e);
    }
    // JSON forbids leading zeros that Go allows (`007`): drop them.
    let (sign, body) = json.split_at(usize::from(json.starts_with('-')));
    let trimmed = body.trim_start_matches('0');
    let body = if trimmed.is_empty() || !trimmed.as_bytes()[0].is_ascii_digit() {
        format!("0{trimmed}")
    } else {
        trimmed.to_string()
    };
    Some(format!("{sign}{body}"))
}

/// `time.parse_rfc3339_ns(s)`: nanoseconds since the epoch, for exactly the RFC 3339 that Go's
/// `time.Parse(time.RFC3339, s)` takes: `T` and `Z` upper case, two-digit fields in range,
/// an optional fraction, `Z` or `±hh:mm`.
fn parse_rfc3339_ns(args: &[Value]) -> Result<Value, String> {
    let s = string_arg(args, 0)?;
    rfc3339_ns(s)
        .map(Value::from)
        .ok_or_else(|| format!("parsing time {s:?} as \"2006-01-02T15:04:05Z07:00\": cannot parse"))
}

fn rfc3339_ns(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || !s.is_ascii() {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        let part = &s[from..to];
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = i32::try_from(num(0, 4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(5, 7)?).ok()?).ok()?;
    let day = u8::try_from(num(8, 10)?).ok()?;
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let date = time::Date::from_calendar_date(year, month, day).ok()?;
    let mut rest = &s[19..];
    let mut nanos: i128 = 0;
    if rest.len() >= 2 && rest.starts_with('.') && rest.as_bytes()[1].is_ascii_digit() {
        let n = rest[1..].bytes().take_while(u8::is_ascii_digit).count();
        let digits = &rest[1..1 + n];
        // Nine digits of nanoseconds; Go ignores any further digits.
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
        rest = &rest[1 + n..];
    }
    let offset_secs: i64 = match rest {
        "Z" => 0,
        _ if rest.len() == 6 => {
            let r = rest.as_bytes();
            if !(r[0] == b'+' || r[0] == b'-') || r[3] != b':' {
                return None;
            }
            let part = |from: usize| -> Option<i64> {
                let p = &rest[from..from + 2];
                p.bytes()
                    .all(|c| c.is_ascii_digit())
                    .then(|| p.parse().ok())
                    .flatten()
            };
            let (h, m) = (part(1)?, part(4)?);
            if h > 23 || m > 59 {
                return None;
            }
            let secs = (h * 60 + m) * 60;
            if r[0] == b'-' {
                -secs
            } else {
                secs
            }
        }
        _ => return None,
    };
    let days = i64::from(
        date.to_julian_day()
            - time::Date::from_calendar_date(1970, time::Month::January, 1)
                .ok()?
                .to_julian_day(),
    );
    let secs = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    // OPA refuses a time whose nanoseconds do not fit in 64 bits (before 1677, after 2262):
    // a far-future expiry must not compare as later than any real time.
    let ns = i128::from(secs) * 1_000_000_000 + nanos;
    i64::try_from(ns).ok().map(i128::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(s: &str) -> Result<Value, String> {
        to_number(&[Value::from(s)])
    }

    #[test]
    fn to_number_reads_what_go_reads() {
        assert_eq!(num("1"), Ok(Value::from(1u64)));
        assert_eq!(
            num("+1.5"),
            Value::from_json_str("1.5").map_err(|e| e.to_string())
        );
        assert_eq!(
            num(".5"),
            Value::from_json_str("0.5").map_err(|e| e.to_string())
        );
        assert_eq!(num("-007"), Ok(Value::from(-7i64)));
        assert!(num(" 1").is_err());
        assert!(num("1 ").is_err());
        assert!(num("inf").is_err());
        assert!(num("lots").is_err());
        assert!(num("").is_err());
        assert!(num(".").is_err());
        assert!(num("1e").is_err());
    }

    #[test]
    fn rfc3339_is_strict() {
        assert_eq!(rfc3339_ns("1970-01-01T00:00:01Z"), Some(1_000_000_000));
        assert_eq!(rfc3339_ns("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(rfc3339_ns("1970-01-01T00:00:00.5Z"), Some(500_000_000));
        assert_eq!(rfc3339_ns("1969-12-31T23:59:59Z"), Some(-1_000_000_000));
        assert_eq!(rfc3339_ns("1970-01-01 00:00:01Z"), None);
        assert_eq!(rfc3339_ns("1970-01-01t00:00:01Z"), None);
        assert_eq!(rfc3339_ns("1970-01-01T00:00:01z"), None);
        assert_eq!(rfc3339_ns("1970-02-30T00:00:01Z"), None);
        assert_eq!(rfc3339_ns("1970-01-01T24:00:00Z"), None);
        assert_eq!(rfc3339_ns("9999-12-31T23:59:59Z"), None);
        assert_eq!(rfc3339_ns("1600-01-01T00:00:00Z"), None);
    }

    #[test]
    fn urlquery_decode_refuses_what_go_refuses() {
        let decode = |s: &str| urlquery_decode(&[Value::from(s)]);
        assert_eq!(decode("a+b%2Fc"), Ok(Value::from("a b/c")));
        assert!(decode("%zz").is_err());
        assert!(decode("%+f").is_err());
        assert!(decode("%é").is_err());
        assert!(decode("%2").is_err());
        assert!(decode("%ff").is_err(), "not UTF-8");
    }

    #[test]
    fn flatten_is_one_level_deep() {
        let v = Value::from_json_str("[1, [2, [3, [4]]], []]").map_err(|e| e.to_string());
        let want = Value::from_json_str("[1, 2, [3, [4]]]").map_err(|e| e.to_string());
        assert_eq!(array_flatten(&[v.unwrap_or(Value::Null)]), want);
    }

    #[test]
    fn quote_meta_escapes_every_metacharacter() {
        assert_eq!(
            glob_quote_meta(&[Value::from("a*b?[c]{d}\\")]),
            Ok(Value::from("a\\*b\\?\\[c\\]\\{d\\}\\\\"))
        );
    }
}
