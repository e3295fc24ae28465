//! What any client can make happen at will does not flood stderr: rustls's per-handshake
//! warnings (an IP address as SNI, a renegotiation attempt) are kept out unless `RUST_LOG`
//! names rustls; failed accepts (out of file descriptors) are logged at most once a second,
//! with a count of the lines held back; and connections beyond `--max-connections` are
//! closed at once and counted, while the ones already open are served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::io::{BufRead, Read, Write};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// Allows /ok; fails to evaluate for /boom, which logs an error line: a marker that
/// everything the process wrote before it has been read from its stderr.
const OK_AND_BOOM: &str = r#"package regate.authz

default allow := false

allow if input.parsed_path[0] == "ok"

# Two values for one complete rule: an evaluation error even with non-strict builtins.
boom := 1 if input.parsed_path[0] == "boom"

boom := 2 if input.parsed_path[0] == "boom"

allow if boom == 1
"#;

/// The value of one sample line in an OpenMetrics text.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Whether `program` is on PATH.
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// The files `openssl s_client` needs: a client SVID, its key, and the CA regate's
/// certificate chains to.
struct OpensslFiles {
    cert: String,
    key: String,
    ca: String,
}

impl OpensslFiles {
    fn write(setup: &Setup) -> OpensslFiles {
        let client = setup.ca.client(SUMMARIZER);
        let path = |name: &str| setup.path(name).display().to_string();
        std::fs::write(setup.path("client.pem"), &client.chain_pem).unwrap();
        std::fs::write(setup.path("client.key"), &client.key_pem).unwrap();
        OpensslFiles {
            cert: path("client.pem"),
            key: path("client.key"),
            ca: path("ca.pem"),
        }
    }

    fn s_client(&self, addr: SocketAddr) -> Command {
        let mut cmd = Command::new("openssl");
        cmd.args(["s_client", "-connect", &addr.to_string()])
            .args(["-cert", &self.cert, "-key", &self.key, "-CAfile", &self.ca]);
        cmd
    }
}

/// One handshake that names `127.0.0.1` as SNI (rustls clients never send an IP address
/// there; openssl does), then `GET path`: the response's status line.
fn get_with_ip_sni(files: &OpensslFiles, addr: SocketAddr, path: &str) -> String {
    // -quiet implies -ign_eof: s_client reads until regate closes after its answer.
    let mut child = files
        .s_client(addr)
        .args(["-servername", "127.0.0.1", "-quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    write!(
        child.stdin.take().unwrap(),
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let (stdout, _) = wait_bounded(child);
    stdout.lines().next().unwrap_or_default().to_string()
}

/// A TLS 1.2 session that asks to renegotiate (`R` on s_client's stdin), with stdin held
/// open: rustls answers with a warning alert and s_client waits on, until regate closes the
/// idle connection (`--idle-timeout`). So when this returns, regate has read the attempt and
/// logged whatever it logs for it.
fn attempt_renegotiation(files: &OpensslFiles, addr: SocketAddr) {
    let mut child = files
        .s_client(addr)
        .arg("-tls1_2")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"R\n").unwrap();
    let (stdout, stderr) = wait_bounded(child);
    drop(stdin);
    assert!(
        stdout.contains("TLSv1.2") && stderr.contains("RENEGOTIATING"),
        "s_client did not ask to renegotiate a TLS 1.2 session:\n{stdout}\n{stderr}"
    );
}

/// Wait (bounded) for `child` to exit; its stdout and stderr.
fn wait_bounded(mut child: std::process::Child) -> (String, String) {
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut out = String::new();
            let _ = pipe.read_to_string(&mut out);
            out
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("openssl s_client did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    (stdout.join().unwrap(), stderr.join().unwrap())
}

/// Run the openssl clients against `process`: `handshakes` connections with an IP address
/// as SNI, each answered, and one renegotiation attempt. Returns once every line regate
/// wrote for them is in `process.stderr()`.
async fn noisy_clients(setup: &Setup, process: &Process, handshakes: usize) {
    let files = Arc::new(OpensslFiles::write(setup));
    let addr = process.addr;
    let run = files.clone();
    let statuses = tokio::task::spawn_blocking(move || {
        (0..handshakes)
            .map(|_| get_with_ip_sni(&run, addr, "/ok"))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for status in &statuses {
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "a handshake with an IP address as SNI was not served: {statuses:?}\n{}",
            process.stderr()
        );
    }
    tokio::task::spawn_blocking(move || attempt_renegotiation(&files, addr))
        .await
        .unwrap();
    // A line logged after all of that: once it has been read, so has everything before it.
    let mut client = process.http1(setup, &setup.ca.client(SUMMARIZER)).await;
    assert_eq!(get(&mut client, "/boom").await.0, 403);
    let marked = eventually(WAIT, || {
        let stderr = process.stderr();
        async move { stderr.contains("policy evaluation failed") }
    })
    .await;
    assert!(marked, "no marker line:\n{}", process.stderr());
}

#[tokio::test(flavor = "multi_thread")]
async fn ip_address_sni_and_renegotiation_log_no_rustls_warning_by_default() {
    // Every rustls client leaves an IP address out of SNI and never renegotiates: only
    // openssl s_client makes these handshakes. .ci/run installs it.
    assert!(
        installed("openssl"),
        "openssl s_client is needed (apt-get install openssl)"
    );
    let setup = Setup::new(&[("authz.rego", OK_AND_BOOM)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    // Closes the renegotiating connection, which s_client itself never does.
    args.extend(["--idle-timeout", "1s"].map(String::from));

    let quiet = Process::start(&args, &[]);
    noisy_clients(&setup, &quiet, 20).await;
    let stderr = quiet.stderr();
    assert!(
        !stderr.lines().any(|l| l.contains("Illegal SNI")),
        "rustls's SNI warning reached stderr:\n{stderr}"
    );
    assert!(
        !stderr.lines().any(|l| l.contains("NoRenegotiation")),
        "rustls's renegotiation warning reached stderr:\n{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains("rustls")),
        "a rustls warning reached stderr:\n{stderr}"
    );
    drop(quiet);

    // The same clients against a regate whose RUST_LOG names rustls: the warnings are there,
    // so the run above did provoke them.
    let verbose = Process::start(&args, &[("RUST_LOG", "info,rustls=warn")]);
    noisy_clients(&setup, &verbose, 1).await;
    let stderr = verbose.stderr();
    assert!(
        stderr.lines().any(|l| l.contains("Illegal SNI")),
        "the SNI warning is not shown when asked for:\n{stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("NoRenegotiation")),
        "the renegotiation warning is not shown when asked for:\n{stderr}"
    );
}

/// A `regate run` under `prlimit`, killed when dropped.
struct Limited {
    child: std::process::Child,
    stderr: Arc<Mutex<String>>,
}

impl Limited {
    /// Start `prlimit --nofile=N:N regate run ARGS` and wait (bounded) until it serves.
    fn start(open_files: u32, args: &[String]) -> (Limited, SocketAddr) {
        let mut child = Command::new("prlimit")
            .arg(format!("--nofile={open_files}:{open_files}"))
            .arg(env!("CARGO_BIN_EXE_regate"))
            .arg("run")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(addr) = line.split("listen=").nth(1) {
                    let _ = tx.send(addr.trim().to_string());
                }
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let limited = Limited { child, stderr };
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("regate did not start:\n{}", limited.stderr()));
        (limited, addr.parse().unwrap())
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Limited {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `held_back=N` of a log line.
fn held_back(line: &str) -> Option<u64> {
    line.split("held_back=")
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn accept_failures_are_logged_at_most_once_a_second() {
    // prlimit gives regate a small open-files limit of its own. .ci/run installs it.
    assert!(
        installed("prlimit"),
        "prlimit is needed (apt-get install util-linux)"
    );
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let mut args = setup.args(&upstream.url());
    // The connection limit is far above the descriptors, so accept() itself fails; the
    // handshake timeout keeps the silent connections (and their descriptors) held.
    args.extend(["--max-connections", "1000", "--handshake-timeout", "60s"].map(String::from));
    let (regate, addr) = Limited::start(48, &args);

    let started = std::time::Instant::now();
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // Failures come every 50 ms while the backlog waits: the second line written carries
    // the count of those held back since the first.
    let failing = || {
        regate
            .stderr()
            .lines()
            .filter(|l| l.contains("accept failed"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let rate_limited = eventually(WAIT, || {
        let lines = failing();
        async move { lines.iter().filter_map(|l| held_back(l)).any(|n| n > 0) }
    })
    .await;
    let lines = failing();
    let elapsed = started.elapsed();
    let stderr = regate.stderr();
    assert!(rate_limited, "no accept failure was held back:\n{stderr}");
    assert!(
        lines.iter().all(|l| held_back(l).is_some()),
        "an accept failure line without held_back:\n{stderr}"
    );
    // At most one line a second, and more failures held back than written.
    assert!(
        lines.len() as u64 <= elapsed.as_secs() + 1,
        "{} lines in {elapsed:?}:\n{stderr}",
        lines.len()
    );
    let held_back_total: u64 = lines.iter().filter_map(|l| held_back(l)).sum();
    assert!(
        held_back_total > lines.len() as u64,
        "{held_back_total} held back, {} written:\n{stderr}",
        lines.len()
    );
    drop(held);
}

#[tokio::test]
async fn connections_beyond_max_connections_are_refused_and_counted() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let upstream = Upstream::start().await;
    let regate = setup
        .start(&upstream.url(), &["--max-connections", "3"])
        .await;
    let config = setup.client_config(Some(&setup.ca.client(SUMMARIZER)), &[b"http/1.1"]);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(regate.connect(config.clone()).await.unwrap());
    }

    // The fourth is closed at once: the handshake fails, or the connection ends unanswered.
    match regate.connect(config.clone()).await {
        Err(_) => {}
        Ok(tls) => {
            let mut client = http1_over(tls).await;
            let answered = client.send_request(request("GET", "/docs/a", b"")).await;
            assert!(answered.is_err(), "a fourth connection was served");
        }
    }
    let (_, metrics) = admin_get(regate.admin, "/metrics").await;
    let refused = sample(
        &metrics,
        r#"regate_connections_refused_total{reason="max_connections"}"#,
    );
    assert!(refused.is_some_and(|n| n >= 1.0), "{metrics}");

    // The three that were open still are: one of them is served.
    let mut first = http1_over(open.remove(0)).await;
    assert_eq!(get(&mut first, "/docs/a").await.0, 200);

    // Closing one gives its place to the next client.
    drop(first);
    let served = eventually(WAIT, || {
        let config = config.clone();
        let regate = &regate;
        async move {
            let Ok(tls) = regate.connect(config).await else {
                return false;
            };
            let mut client = http1_over(tls).await;
            match client.send_request(request("GET", "/docs/a", b"")).await {
                Ok(resp) => resp.status() == 200,
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(served, "no connection was served after one closed");
    drop(open);
    regate.stop().await;
}
