//! The hash chain over the decision log: what `seq` and `chain` are, how a line's canonical
//! bytes are cut from it, and where a restarted regate picks the chain up again.
//!
//! Every line (decision and event records alike) ends with `,"seq":N,"chain":"<hex>"}`. Its
//! canonical bytes are the line as written, without the newline and without its last member
//! `,"chain":"<64 hex>"`, so `seq` is inside them. `chain` is the hex SHA-256 of the previous
//! line's `chain` (its 64 ASCII hex characters) followed by the canonical bytes; the first line
//! of a new chain hashes its canonical bytes alone. The writer thread links the lines in file
//! order ([`Chain::append`]); `regate audit verify` (`crate::cli::audit`) checks them. Nothing here sees a request.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The last member of every chained line, up to its value.
const CHAIN_MEMBER: &[u8] = b",\"chain\":\"";
/// `,"chain":"` + 64 hex digits + `"}`.
const CHAIN_SUFFIX_LEN: usize = CHAIN_MEMBER.len() + 64 + 2;

/// The link from one line to the next: `seq` and `chain` of the last line written.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    seq: u64,
    head: Option<String>,
}

impl Chain {
    /// A chain that goes on from `last` (the last line of the file appended to), or starts
    /// afresh.
    pub fn after(last: Option<&Link>) -> Chain {
        match last {
            Some(link) => Chain {
                seq: link.seq,
                head: Some(link.chain.clone()),
            },
            None => Chain::default(),
        }
    }

    /// The last line's `seq` (0 before any) and `chain`.
    pub fn head(&self) -> (u64, Option<&str>) {
        (self.seq, self.head.as_deref())
    }

    /// Append `record` (one serialized JSON object, without its newline) to `out` as a chained
    /// line: `seq` and `chain` added as its last members, then a newline. A record that is not
    /// an object is left out; it cannot be linked.
    pub fn append(&mut self, record: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(body) = record
            .strip_suffix(b"}")
            .filter(|b| b.len() > 1 && b.starts_with(b"{"))
        else {
            return false;
        };
        self.seq += 1;
        let start = out.len();
        out.extend_from_slice(body);
        out.extend_from_slice(b",\"seq\":");
        out.extend_from_slice(self.seq.to_string().as_bytes());
        out.push(b'}');
        let chain = link(self.head.as_deref(), &out[start..]);
        out.pop();
        out.extend_from_slice(CHAIN_MEMBER);
        out.extend_from_slice(chain.as_bytes());
        out.extend_from_slice(b"\"}\n");
        self.head = Some(chain);
        true
    }
}

/// `chain` for a line whose canonical bytes are `canonical`, after a line whose chain is
/// `previous` (none: the first line of a chain).
pub fn link(previous: Option<&str>, canonical: &[u8]) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    if let Some(previous) = previous {
        hasher.update(previous.as_bytes());
    }
    hasher.update(canonical);
    crate::tls::identity::hex(hasher.finish().as_ref())
}

/// A chained line cut in two: its canonical bytes and its `chain`. `None` when the line does
/// not end with a `chain` member of 64 lowercase hex digits.
pub fn split(line: &[u8]) -> Option<(Vec<u8>, &str)> {
    let at = line.len().checked_sub(CHAIN_SUFFIX_LEN)?;
    let (head, tail) = line.split_at(at);
    let hex = tail.strip_prefix(CHAIN_MEMBER)?.strip_suffix(b"\"}")?;
    if hex.len() != 64 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut canonical = Vec::with_capacity(head.len() + 1);
    canonical.extend_from_slice(head);
    canonical.push(b'}');
    Some((canonical, std::str::from_utf8(hex).ok()?))
}

/// One line's place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub seq: u64,
    pub chain: String,
}

/// What the end of a decision log file says, for a regate about to append to it.
#[derive(Debug, Default)]
pub struct Tail {
    /// The last complete line's place in the chain, when it has one.
    pub last: Option<Link>,
    /// The file ends inside a line (a regate killed while writing): the next write must
    /// start on a line of its own.
    pub incomplete: bool,
}

/// How far back the last complete line is looked for. A record is a few kilobytes at most,
/// headers of a recorded input included.
const MAX_TAIL: u64 = 16 << 20;

/// Read the end of `path`: its last complete line's `seq` and `chain`. A file that does not
/// exist yet, or whose last line carries no chain (written by an older regate), has none.
pub fn read_tail(path: &Path) -> io::Result<Tail> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let mut tail = Tail::default();
    if len == 0 {
        return Ok(tail);
    }
    // Read backwards, a block at a time, until the last complete line is whole in `data`.
    let mut data: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let block = pos.min(64 << 10);
        pos -= block;
        let mut chunk = vec![0; block as usize];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&data);
        data = chunk;
        if data.len() as u64 == block {
            tail.incomplete = data.last() != Some(&b'\n');
        }
        // The end of the last complete line, and its start.
        let end = data.iter().rposition(|b| *b == b'\n');
        let start = end.and_then(|e| data[..e].iter().rposition(|b| *b == b'\n'));
        match (end, start) {
            (Some(end), Some(start)) => {
                tail.last = parse_link(&data[start + 1..end]);
                return Ok(tail);
            }
            (Some(end), None) if pos == 0 => {
                tail.last = parse_link(&data[..end]);
                return Ok(tail);
            }
            (None, _) if pos == 0 => return Ok(tail),
            _ if len - pos >= MAX_TAIL => return Ok(tail),
            _ => {}
        }
    }
}

/// `seq` and `chain` of a chained line.
pub fn parse_link(line: &[u8]) -> Option<Link> {
    let (_, chain) = split(line)?;
    let record: serde_json::Value = serde_json::from_slice(line).ok()?;
    Some(Link {
        seq: record["seq"].as_u64()?,
        chain: chain.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chained_line_splits_back_into_what_was_hashed() {
        let mut chain = Chain::default();
        let mut out = Vec::new();
        assert!(chain.append(br#"{"a":1}"#, &mut out));
        assert!(chain.append(br#"{"b":"x"}"#, &mut out));
        let text = String::from_utf8(out).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with(r#"{"a":1,"seq":1,"chain":""#));
        let (canonical, first) = split(lines[0].as_bytes()).unwrap_or_default();
        assert_eq!(canonical, br#"{"a":1,"seq":1}"#);
        assert_eq!(first, link(None, &canonical));
        let (canonical, second) = split(lines[1].as_bytes()).unwrap_or_default();
        assert_eq!(second, link(Some(first), &canonical));
        assert_eq!(chain.head(), (2, Some(second)));
        assert!(!chain.append(b"[1]", &mut Vec::new()));
    }

    #[test]
    fn the_tail_of_a_log_is_its_last_complete_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|_| unreachable!());
        let path = dir.path().join("log");
        let mut chain = Chain::default();
        let mut out = Vec::new();
        for i in 0..3 {
            chain.append(format!(r#"{{"i":{i}}}"#).as_bytes(), &mut out);
        }
        std::fs::write(&path, &out).unwrap_or_default();
        let tail = read_tail(&path).unwrap_or_default();
        assert!(!tail.incomplete);
        assert_eq!(tail.last.as_ref().map(|l| l.seq), Some(3));
        assert_eq!(
            tail.last.map(|l| l.chain),
            chain.head().1.map(str::to_string)
        );
        out.extend_from_slice(br#"{"cut":"#);
        std::fs::write(&path, &out).unwrap_or_default();
        let tail = read_tail(&path).unwrap_or_default();
        assert!(tail.incomplete);
        assert_eq!(tail.last.map(|l| l.seq), Some(3));
        assert!(read_tail(&dir.path().join("none"))
            .unwrap_or_default()
            .last
            .is_none());
    }
}
