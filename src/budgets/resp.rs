//! The little of the Redis protocol (RESP2) budgets need: commands as arrays of bulk
//! strings, and replies of every RESP2 type, nested. Over one connection, one command at a
//! time; what owns the connection decides timeouts and retries.

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest bulk string or array a reply may carry: budgets' replies are tiny.
const MAX_LEN: usize = 1 << 20;
/// Deepest nesting of arrays accepted.
const MAX_DEPTH: usize = 4;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Vec<u8>),
    Array(Vec<Reply>),
    Nil,
}

/// One connection to Redis.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

#[derive(Debug, thiserror::Error)]
pub enum RespError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the reply is not RESP: {0}")]
    Protocol(&'static str),
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream: BufReader::new(stream),
        }
    }

    /// Send one command and read its reply.
    pub async fn call(&mut self, args: &[&[u8]]) -> Result<Reply, RespError> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for arg in args {
            out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
            out.extend_from_slice(arg);
            out.extend_from_slice(b"\r\n");
        }
        self.stream.get_mut().write_all(&out).await?;
        self.read(0).await
    }

    fn read(
        &mut self,
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, RespError>> + Send + '_>>
    {
        Box::pin(async move {
            let line = self.line().await?;
            let (kind, rest) = line.split_at(1);
            match kind {
                "+" => Ok(Reply::Simple(rest.to_string())),
                "-" => Ok(Reply::Error(rest.to_string())),
                ":" => rest
                    .parse()
                    .map(Reply::Integer)
                    .map_err(|_| RespError::Protocol("a bad integer")),
                "$" => {
                    let Some(len) = length(rest)? else {
                        return Ok(Reply::Nil);
                    };
                    let mut data = vec![0; len + 2];
                    self.stream.read_exact(&mut data).await?;
                    data.truncate(len);
                    Ok(Reply::Bulk(data))
                }
                "*" => {
                    let Some(len) = length(rest)? else {
                        return Ok(Reply::Nil);
                    };
                    if depth >= MAX_DEPTH {
                        return Err(RespError::Protocol("arrays nested too deep"));
                    }
                    let mut items = Vec::with_capacity(len.min(64));
                    for _ in 0..len {
                        items.push(self.read(depth + 1).await?);
                    }
                    Ok(Reply::Array(items))
                }
                _ => Err(RespError::Protocol("an unknown reply type")),
            }
        })
    }

    /// One line, without its CRLF.
    async fn line(&mut self) -> Result<String, RespError> {
        let mut line = Vec::with_capacity(32);
        let n = (&mut self.stream)
            .take(MAX_LEN as u64)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return Err(RespError::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
        if !line.ends_with(b"\r\n") || line.len() < 3 {
            return Err(RespError::Protocol("a line without CRLF"));
        }
        line.truncate(line.len() - 2);
        String::from_utf8(line).map_err(|_| RespError::Protocol("a line that is not UTF-8"))
    }
}

/// A bulk or array length: `None` for -1 (nil).
fn length(text: &str) -> Result<Option<usize>, RespError> {
    if text == "-1" {
        return Ok(None);
    }
    let len: usize = text
        .parse()
        .map_err(|_| RespError::Protocol("a bad length"))?;
    if len > MAX_LEN {
        return Err(RespError::Protocol("a length over the limit"));
    }
    Ok(Some(len))
}
