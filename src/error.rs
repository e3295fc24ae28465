//! How regate writes an error for a person: [`chain`], an error and its causes on one line.
//!
//! A ground-floor helper every room may use (startup, reload, admin, revocations, the
//! Workload API, the commands). It owns no error types: each module keeps its own
//! `thiserror` enum, and the proxy's one error-to-response map stays in `proxy::error`.

/// An error and its causes on one line: `outer: cause: root cause`.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}
