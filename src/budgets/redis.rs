//! Budgets kept in Redis, shared by every replica that points at the same server: one atomic
//! script per request charges all its limits or none, on Redis's own clock, and keys expire
//! by themselves once their budget is whole again.
//!
//! Connections are pooled; every call is bounded by `--budget-timeout`, and a connection that
//! failed or timed out mid-call is dropped. Nothing here retries: an unanswered charge is the
//! caller's `budget_unavailable` to decide.

use std::sync::Mutex;
use std::time::Duration;

use tokio::net::TcpStream;

use super::resp::{Conn, Reply};
use super::{BudgetError, Charge, Verdict};

/// Idle connections kept for reuse.
const MAX_IDLE: usize = 16;
/// Every key regate writes starts with this.
const PREFIX: &str = "regate:";

/// GCRA over every key of one request, all or nothing, on Redis's clock (microseconds).
/// KEYS: the budget keys. ARGV: for each key, the interval and the window (microseconds).
/// Returns, per key: {allowed 0/1, remaining, reset µs, retry-after µs}.
const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out, keep, ok = {}, {}, true
for i = 1, #KEYS do
  local interval, window = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local tat = keep[KEYS[i]] or tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local nxt = tat + interval
  if nxt - now > window then
    ok = false
    out[i] = {0, 0, tat - now, nxt - now - window}
  else
    keep[KEYS[i]] = nxt
    out[i] = {1, math.floor((now + window - nxt) / interval), nxt - now, 0}
  end
end
if ok then
  for key, nxt in pairs(keep) do
    redis.call('SET', key, string.format('%d', nxt), 'PX', math.ceil((nxt - now) / 1000))
  end
end
return out
"#;

/// A Redis server, as `--budget-store redis://[user:password@]host:port[/db]` names it.
pub struct Store {
    addr: String,
    /// AUTH arguments, when the URL carries credentials.
    auth: Option<(Option<String>, String)>,
    db: u32,
    timeout: Duration,
    idle: Mutex<Vec<Conn>>,
    /// SHA-1 of [`SCRIPT`], for EVALSHA.
    sha: String,
}

impl Store {
    /// Parse the URL; nothing is dialled until the first charge.
    pub fn new(url: &str, timeout: Duration) -> Result<Store, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| format!("{url:?} is not a redis:// URL"))?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((cred, rest)) => {
                let (user, password) = match cred.split_once(':') {
                    Some((u, p)) => ((!u.is_empty()).then(|| u.to_string()), p.to_string()),
                    None => (None, cred.to_string()),
                };
                (Some((user, password)), rest)
            }
            None => (None, rest),
        };
        let (addr, db) = match rest.split_once('/') {
            Some((addr, "")) => (addr, 0),
            Some((addr, db)) => (
                addr,
                db.parse()
                    .map_err(|_| format!("{url:?}: {db:?} is not a database number"))?,
            ),
            None => (rest, 0),
        };
        if addr.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let addr = match addr.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => addr.to_string(),
            _ => format!("{addr}:6379"),
        };
        Ok(Store {
            addr,
            auth,
            db,
            timeout,
            idle: Mutex::default(),
            sha: sha1_hex(SCRIPT.as_bytes()),
        })
    }

    /// Charge every limit, or none.
    pub async fn charge(&self, limits: &[Charge<'_>]) -> Result<Vec<Verdict>, BudgetError> {
        let keys: Vec<String> = limits
            .iter()
            .map(|c| format!("{PREFIX}budget:{}", c.key))
            .collect();
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(3 + keys.len() + 2 * limits.len());
        args.push(b"EVALSHA".to_vec());
        args.push(self.sha.clone().into_bytes());
        args.push(keys.len().to_string().into_bytes());
        args.extend(keys.into_iter().map(String::into_bytes));
        for c in limits {
            let interval_us = (super::interval_ns(c.limit, c.per) / 1000).max(1);
            args.push(interval_us.to_string().into_bytes());
            args.push((c.per.as_micros()).to_string().into_bytes());
        }
        let reply = self.run(&args).await?;
        verdicts(&reply, limits.len())
    }

    /// Mark `key` used for `ttl` (SET NX PX); false when it was used already.
    pub async fn use_once(&self, key: &str, ttl: Duration) -> Result<bool, BudgetError> {
        let key = format!("{PREFIX}once:{key}");
        let ms = ttl.as_millis().max(1).to_string();
        let args: Vec<Vec<u8>> = [
            b"SET".as_slice(),
            key.as_bytes(),
            b"1",
            b"NX",
            b"PX",
            ms.as_bytes(),
        ]
        .iter()
        .map(|a| a.to_vec())
        .collect();
        match self.run(&args).await? {
            Reply::Simple(ok) if ok == "OK" => Ok(true),
            Reply::Nil => Ok(false),
            other => Err(unexpected(&other)),
        }
    }

    /// Run one command within the timeout on a pooled connection (once more on a new one when
    /// the pooled one fails: the server may have closed it, restarting, while it was idle).
    async fn run(&self, args: &[Vec<u8>]) -> Result<Reply, BudgetError> {
        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        let call = async {
            let pooled = self.lock().pop();
            if let Some(mut conn) = pooled {
                if let Ok(reply) = exchange(&mut conn, &refs).await {
                    self.give_back(conn);
                    return Ok(reply);
                }
            }
            // A command the closed connection did carry is charged twice at worst: stricter,
            // never looser (and a token marked used is refused as used).
            let mut conn = self.connect().await?;
            let reply = exchange(&mut conn, &refs).await.map_err(down)?;
            self.give_back(conn);
            Ok(reply)
        };
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(Reply::Error(e))) => Err(BudgetError::Unavailable(format!("redis: {e}"))),
            Ok(reply) => reply,
            Err(_) => Err(BudgetError::Unavailable(format!(
                "redis did not answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// A new connection, authenticated, on the database.
    async fn connect(&self) -> Result<Conn, BudgetError> {
        let stream = TcpStream::connect(&self.addr).await.map_err(down)?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn::new(stream);
        if let Some((user, password)) = &self.auth {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = user {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            expect_ok(conn.call(&args).await.map_err(down)?)?;
        }
        if self.db != 0 {
            let db = self.db.to_string();
            expect_ok(conn.call(&[b"SELECT", db.as_bytes()]).await.map_err(down)?)?;
        }
        Ok(conn)
    }

    fn give_back(&self, conn: Conn) {
        let mut idle = self.lock();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Conn>> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One command on `conn`; EVALSHA loads the script first when the server does not know it
/// yet (a new server, or one restarted).
async fn exchange(conn: &mut Conn, args: &[&[u8]]) -> Result<Reply, super::resp::RespError> {
    let reply = conn.call(args).await?;
    if !matches!(&reply, Reply::Error(e) if e.starts_with("NOSCRIPT")) {
        return Ok(reply);
    }
    conn.call(&[b"SCRIPT", b"LOAD", SCRIPT.as_bytes()]).await?;
    conn.call(args).await
}

fn down(e: impl std::fmt::Display) -> BudgetError {
    BudgetError::Unavailable(format!("redis: {e}"))
}

fn unexpected(reply: &Reply) -> BudgetError {
    BudgetError::Unavailable(format!("redis answered {reply:?}"))
}

fn expect_ok(reply: Reply) -> Result<(), BudgetError> {
    match reply {
        Reply::Simple(ok) if ok == "OK" => Ok(()),
        other => Err(unexpected(&other)),
    }
}

/// The script's reply, one verdict per limit.
fn verdicts(reply: &Reply, n: usize) -> Result<Vec<Verdict>, BudgetError> {
    let Reply::Array(items) = reply else {
        return Err(unexpected(reply));
    };
    if items.len() != n {
        return Err(unexpected(reply));
    }
    items
        .iter()
        .map(|item| match item {
            Reply::Array(fields) => match fields.as_slice() {
                [Reply::Integer(allowed), Reply::Integer(remaining), Reply::Integer(reset), Reply::Integer(retry)] => {
                    let us = |v: i64| Duration::from_micros(u64::try_from(v).unwrap_or(0));
                    Ok(Verdict {
                        allowed: *allowed == 1,
                        remaining: u64::try_from(*remaining).unwrap_or(0),
                        reset: us(*reset),
                        retry_after: us(*retry),
                    })
                }
                _ => Err(unexpected(item)),
            },
            _ => Err(unexpected(item)),
        })
        .collect()
}

/// SHA-1, hex: what Redis names a script by (EVALSHA). Not a security use.
fn sha1_hex(data: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, data);
    crate::tls::identity::hex(digest.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_host_port_credentials_and_database() {
        let t = Duration::from_millis(50);
        let s = Store::new("redis://127.0.0.1:6380/2", t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (s.addr.as_str(), s.db, s.auth.is_none()),
            ("127.0.0.1:6380", 2, true)
        );
        let s = Store::new("redis://:secret@localhost", t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.addr, "localhost:6379");
        assert_eq!(s.auth, Some((None, "secret".to_string())));
        let s = Store::new("redis://u:p@h:1/", t).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.auth, Some((Some("u".into()), "p".to_string())));
        for bad in ["http://h", "redis://", "redis://h/x"] {
            assert!(Store::new(bad, t).is_err(), "{bad}");
        }
    }
}
