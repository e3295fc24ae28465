//! A `text/event-stream` body (server-sent events, WHATWG HTML §9.2) split event by event,
//! for a step that rewrites some events of a stream and passes the rest on as they come.
//!
//! [`Splitter`] takes the body's bytes as they arrive and gives back [`Piece`]s in order:
//! bytes that belong to no event (comment lines, which servers send as keep-alives, blank
//! lines, a byte order mark) at once, and each event once its closing blank line is in, with
//! its `data` joined as a client joins it. Lines end in CRLF, LF or CR, a CRLF possibly split
//! between two reads. Nothing is held longer than its event: an event longer than the limit
//! is an error, so memory stays bounded however the stream goes. An event the stream ends
//! in the middle of is dropped, as a client drops it.
//!
//! What it does not do: decide which events to rewrite, or rewrite them
//! (`super::tools_list`).

/// A part of the stream, in the order it came.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// Bytes to pass on as they are.
    Pass(Vec<u8>),
    /// A whole event.
    Event(Event),
}

/// One event of the stream.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// Its lines as sent, the blank line that ends it included.
    pub raw: Vec<u8>,
    /// Its lines other than `data` (`event`, `id`, `retry`, ...) as sent.
    pub other: Vec<u8>,
    /// Its data as a client reads it: the `data` lines' values joined by newlines; `None`
    /// when it has no `data` line.
    pub data: Option<Vec<u8>>,
}

/// An event longer than the limit: it cannot be read within bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event is longer than {0} bytes")]
pub struct TooLong(pub usize);

/// Where the LF of a CRLF split between two reads belongs: the line the CR ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterCr {
    No,
    /// To the event being read (and to its other fields, when the line was one).
    Event {
        other: bool,
    },
    /// To the bytes passed on.
    Pass,
}

/// Splits a stream into [`Piece`]s, holding at most `limit` bytes of one event.
pub struct Splitter {
    limit: usize,
    line: Vec<u8>,
    event: Event,
    after_cr: AfterCr,
    started: bool,
}

const BOM: &[u8] = b"\xef\xbb\xbf";

impl Splitter {
    pub fn new(limit: usize) -> Splitter {
        Splitter {
            limit,
            line: Vec::new(),
            event: Event::default(),
            after_cr: AfterCr::No,
            started: false,
        }
    }

    /// Bytes held now for the event being read.
    pub fn held(&self) -> usize {
        self.line.len()
            + self.event.raw.len()
            + self.event.other.len()
            + self.event.data.as_ref().map_or(0, Vec::len)
    }

    /// Add to `out` the pieces `chunk` completes, in order: those before an event over the
    /// limit too, so that what came before it is still passed on.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<Piece>) -> Result<(), TooLong> {
        let mut pass = Vec::new();
        for &b in chunk {
            match std::mem::replace(&mut self.after_cr, AfterCr::No) {
                AfterCr::Event { other } if b == b'\n' => {
                    self.event.raw.push(b);
                    if other {
                        self.event.other.push(b);
                    }
                    continue;
                }
                AfterCr::Pass if b == b'\n' => {
                    pass.push(b);
                    continue;
                }
                _ => {}
            }
            match b {
                b'\n' | b'\r' => self.end_line(b, &mut pass, out),
                _ => {
                    self.line.push(b);
                    if self.line.len() + self.event.raw.len() > self.limit {
                        if !pass.is_empty() {
                            out.push(Piece::Pass(pass));
                        }
                        return Err(TooLong(self.limit));
                    }
                }
            }
        }
        if !pass.is_empty() {
            out.push(Piece::Pass(pass));
        }
        Ok(())
    }

    fn end_line(&mut self, end: u8, pass: &mut Vec<u8>, out: &mut Vec<Piece>) {
        let mut line = std::mem::take(&mut self.line);
        let cr = end == b'\r';
        if !self.started {
            // A byte order mark may open the stream, and is no part of its first line.
            self.started = true;
            if line.starts_with(BOM) {
                pass.extend_from_slice(BOM);
                line.drain(..BOM.len());
            }
        }
        if line.is_empty() {
            if self.event.raw.is_empty() {
                pass.push(end);
            } else {
                // The blank line dispatches the event: what was passed before it goes first.
                if !pass.is_empty() {
                    out.push(Piece::Pass(std::mem::take(pass)));
                }
                let mut event = std::mem::take(&mut self.event);
                event.raw.push(end);
                out.push(Piece::Event(event));
            }
            if cr {
                self.after_cr = AfterCr::Pass;
            }
            return;
        }
        if line[0] == b':' {
            // A comment carries nothing: passed on at once, keep-alives stay keep-alives.
            pass.extend_from_slice(&line);
            pass.push(end);
            if cr {
                self.after_cr = AfterCr::Pass;
            }
            return;
        }
        self.event.raw.extend_from_slice(&line);
        self.event.raw.push(end);
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (&line[..], &b""[..]),
        };
        let other = name != b"data";
        if other {
            self.event.other.extend_from_slice(&line);
            self.event.other.push(end);
        } else {
            // A client joins the values with newlines, an empty first value included.
            match &mut self.event.data {
                Some(data) => {
                    data.push(b'\n');
                    data.extend_from_slice(value);
                }
                None => self.event.data = Some(value.to_vec()),
            }
        }
        if cr {
            self.after_cr = AfterCr::Event { other };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(stream: &[u8], chunk: usize) -> Vec<Piece> {
        let mut s = Splitter::new(1 << 16);
        let mut out = Vec::new();
        for part in stream.chunks(chunk) {
            s.push(part, &mut out).unwrap();
        }
        out
    }

    /// The pieces' bytes, in order: the stream as passed on.
    fn joined(pieces: &[Piece]) -> Vec<u8> {
        let mut all = Vec::new();
        for p in pieces {
            match p {
                Piece::Pass(b) => all.extend_from_slice(b),
                Piece::Event(e) => all.extend_from_slice(&e.raw),
            }
        }
        all
    }

    fn datas(pieces: &[Piece]) -> Vec<Option<String>> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Event(e) => Some(e.data.as_ref().map(|d| String::from_utf8_lossy(d).into())),
                Piece::Pass(_) => None,
            })
            .collect()
    }

    #[test]
    fn events_come_whole_in_any_line_ending_and_any_chunking() {
        let stream: &[u8] =
            b"\xef\xbb\xbf: hello\r\nevent: message\r\ndata: {\"a\":\r\ndata:1}\r\n\r\n\
                              data: two\n\nid: 3\rdata\rdata: x\r\r: bye\n";
        for chunk in [1, 2, 3, 7, 1000] {
            let pieces = split_all(stream, chunk);
            assert_eq!(joined(&pieces), stream, "chunk {chunk}");
            assert_eq!(
                datas(&pieces),
                vec![
                    Some("{\"a\":\n1}".into()),
                    Some("two".into()),
                    Some("\nx".into())
                ],
                "chunk {chunk}"
            );
            let Some(Piece::Event(first)) = pieces.iter().find(|p| matches!(p, Piece::Event(_)))
            else {
                panic!("no event");
            };
            assert_eq!(first.other, b"event: message\r\n");
        }
    }

    #[test]
    fn comments_pass_at_once_and_an_unfinished_event_is_held() {
        let mut s = Splitter::new(100);
        let mut out = Vec::new();
        s.push(b":keep-alive\n", &mut out).unwrap();
        assert_eq!(out, vec![Piece::Pass(b":keep-alive\n".to_vec())]);
        out.clear();
        s.push(b"data: half", &mut out).unwrap();
        assert!(out.is_empty() && s.held() > 0);
        s.push(b"\n", &mut out).unwrap();
        assert!(out.is_empty());
        s.push(b"\n", &mut out).unwrap();
        assert!(matches!(&out[..], [Piece::Event(e)] if e.data.as_deref() == Some(&b"half"[..])));
        assert_eq!(s.held(), 0);
    }

    #[test]
    fn an_event_over_the_limit_is_an_error_after_what_came_before_it() {
        let mut s = Splitter::new(16);
        let mut out = Vec::new();
        assert_eq!(s.push(b"data: 0123456789\n", &mut out), Ok(()));
        assert_eq!(s.push(b"data: 0123456789\n", &mut out), Err(TooLong(16)));
        let mut s = Splitter::new(16);
        let mut out = Vec::new();
        let long = b"data: 1\n\n: c\ndata: 0123456789abcdef\n";
        assert_eq!(s.push(long, &mut out), Err(TooLong(16)));
        assert_eq!(out.len(), 2, "{out:?}");
        // Comments and whole events never add up.
        let mut s = Splitter::new(16);
        for _ in 0..100 {
            assert!(s
                .push(b"data: 01234\n\n: comment\n", &mut Vec::new())
                .is_ok());
        }
    }
}
