//! `RUST_BACKTRACE=1` in a pod's environment must not change what a decision costs: regorus
//! makes `anyhow` errors during ordinary evaluation, and each would capture a backtrace.
//! regate turns error backtraces off first thing (unless `RUST_LIB_BACKTRACE` says
//! otherwise); this file is its own process, so the environment here is the one `main` sees.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[test]
fn with_rust_backtrace_set_errors_made_during_evaluation_capture_no_backtrace() {
    std::env::set_var("RUST_BACKTRACE", "1");
    // An operator who asks for error backtraces keeps them.
    std::env::set_var("RUST_LIB_BACKTRACE", "1");
    regate::policy::keep_error_backtraces_off();
    assert_eq!(std::env::var("RUST_LIB_BACKTRACE").unwrap(), "1");
    // Otherwise they are off, whatever RUST_BACKTRACE says.
    std::env::remove_var("RUST_LIB_BACKTRACE");
    regate::policy::keep_error_backtraces_off();
    // An error regorus makes while evaluating: a builtin's failure.
    let mut engine = regorus::Engine::new();
    engine
        .add_policy(
            "p.rego".into(),
            "package p\nimport rego.v1\nx := to_number(input.n)\n".into(),
        )
        .unwrap();
    engine.set_strict_builtin_errors(true);
    engine.set_input(regorus::Value::from_json_str(r#"{"n": "lots"}"#).unwrap());
    let err = engine.eval_rule("data.p.x".into()).unwrap_err();
    assert_eq!(
        err.backtrace().status(),
        std::backtrace::BacktraceStatus::Disabled,
        "{err}"
    );
    // A panic's backtrace is still the operator's choice.
    assert_eq!(std::env::var("RUST_BACKTRACE").unwrap(), "1");
}
