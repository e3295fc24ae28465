//! `regex.globs_match`, which regorus lacks: whether two patterns in OPA's small glob-like
//! regex syntax both match some non-empty string.
//!
//! The syntax, as OPA documents it: `.` is any character, `[a-z0-9]` a class of characters and
//! ranges, `*` zero or more and `+` one or more of what precedes, `\` quotes the next
//! character; everything else stands for itself. Each pattern is a sequence of such tokens,
//! and the two sequences are walked together: a common string exists when both can reach
//! their ends having read the same characters, at least one of them.

use std::collections::BTreeSet;

use regorus::Value;

use super::{string_arg, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[("regex.globs_match", 2, globs_match)];

/// The characters one token reads.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Class {
    Any,
    /// Inclusive ranges; a single character is a range of one.
    Ranges(Vec<(char, char)>),
}

impl Class {
    fn meets(&self, other: &Class) -> bool {
        match (self, other) {
            (Class::Any, Class::Any) => true,
            (Class::Any, Class::Ranges(r)) | (Class::Ranges(r), Class::Any) => !r.is_empty(),
            (Class::Ranges(a), Class::Ranges(b)) => a
                .iter()
                .any(|(a0, a1)| b.iter().any(|(b0, b1)| a0 <= b1 && b0 <= a1)),
        }
    }
}

/// One token: a class read once, or any number of times.
#[derive(Debug, Clone)]
struct Token {
    class: Class,
    repeat: bool,
}

fn tokens(pattern: &str) -> Result<Vec<Token>, String> {
    let mut out: Vec<Token> = Vec::new();
    let mut chars = pattern.chars();
    let once = |class| Token {
        class,
        repeat: false,
    };
    while let Some(c) = chars.next() {
        match c {
            '.' => out.push(once(Class::Any)),
            '\\' => {
                let quoted = chars
                    .next()
                    .ok_or_else(|| format!("{pattern:?} ends with an unquoted \\"))?;
                out.push(once(Class::Ranges(vec![(quoted, quoted)])));
            }
            '[' => out.push(once(class(&mut chars, pattern)?)),
            '*' | '+' => {
                let last = match out.last_mut() {
                    Some(last) if !last.repeat => last,
                    _ => return Err(format!("{pattern:?}: {c} follows nothing to repeat")),
                };
                if c == '*' {
                    last.repeat = true;
                } else {
                    let again = Token {
                        class: last.class.clone(),
                        repeat: true,
                    };
                    out.push(again);
                }
            }
            other => out.push(once(Class::Ranges(vec![(other, other)]))),
        }
    }
    Ok(out)
}

/// The inside of `[...]`, after the `[`.
fn class(chars: &mut std::str::Chars<'_>, pattern: &str) -> Result<Class, String> {
    let unclosed = || format!("{pattern:?} has an unclosed [");
    let mut ranges = Vec::new();
    let mut pending: Option<char> = None;
    let mut dash = false;
    loop {
        let c = chars.next().ok_or_else(unclosed)?;
        let literal = match c {
            ']' => break,
            '\\' => chars.next().ok_or_else(unclosed)?,
            '-' if pending.is_some() && !dash => {
                dash = true;
                continue;
            }
            other => other,
        };
        match (pending.take(), dash) {
            (Some(from), true) => {
                if from > literal {
                    return Err(format!("{pattern:?}: range {from}-{literal} is backwards"));
                }
                ranges.push((from, literal));
                dash = false;
            }
            (Some(prev), false) => {
                ranges.push((prev, prev));
                pending = Some(literal);
            }
            (None, _) => pending = Some(literal),
        }
    }
    if let Some(last) = pending {
        ranges.push((last, last));
    }
    if dash {
        ranges.push(('-', '-'));
    }
    Ok(Class::Ranges(ranges))
}

/// Whether some non-empty string matches both token sequences.
fn intersect(a: &[Token], b: &[Token]) -> bool {
    // A state is how far each pattern has read, and whether a character was read yet.
    let mut seen = BTreeSet::new();
    let mut todo = vec![(0usize, 0usize, false)];
    while let Some(state) = todo.pop() {
        if !seen.insert(state) {
            continue;
        }
        let (i, j, read) = state;
        if i == a.len() && j == b.len() && read {
            return true;
        }
        // Skip a repeated token without reading.
        if a.get(i).is_some_and(|t| t.repeat) {
            todo.push((i + 1, j, read));
        }
        if b.get(j).is_some_and(|t| t.repeat) {
            todo.push((i, j + 1, read));
        }
        // Read one character both tokens accept.
        if let (Some(ta), Some(tb)) = (a.get(i), b.get(j)) {
            if ta.class.meets(&tb.class) {
                let next_i = if ta.repeat { i } else { i + 1 };
                let next_j = if tb.repeat { j } else { j + 1 };
                todo.push((next_i, next_j, true));
            }
        }
    }
    false
}

/// `regex.globs_match(glob1, glob2)`.
fn globs_match(args: &[Value]) -> Result<Value, String> {
    let a = tokens(string_arg(args, 0)?)?;
    let b = tokens(string_arg(args, 1)?)?;
    Ok(Value::from(intersect(&a, &b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(a: &str, b: &str) -> Result<Value, String> {
        globs_match(&[Value::from(a), Value::from(b)])
    }

    #[test]
    fn globs_meet_where_a_string_matches_both() {
        let yes = Ok(Value::from(true));
        let no = Ok(Value::from(false));
        assert_eq!(matches("a.a.", ".b.b"), yes);
        assert_eq!(matches("[a-z]+", "[0-9]+"), no);
        assert_eq!(matches("/api/.*", "/api/v1/[a-z]+"), yes);
        assert_eq!(matches("/api/v2.*", "/api/v1.*"), no);
        assert_eq!(matches(".*", ".*"), yes);
        assert_eq!(
            matches("a*", "b*"),
            no,
            "only the empty string matches both"
        );
        assert_eq!(matches("a\\.b", "a.b"), yes);
        assert_eq!(matches("a\\.b", "axb"), no);
        assert_eq!(matches("[-a]", "-"), yes);
        assert!(matches("[a-", "a").is_err());
        assert!(matches("*a", "a").is_err());
    }
}
