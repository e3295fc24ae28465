use super::*;

/// Evaluate `x := <expr>` with regate's builtins, strict or not.
fn eval(expr: &str, strict: bool) -> anyhow::Result<Value> {
    let mut engine = Engine::new();
    engine.set_strict_builtin_errors(strict);
    register(&mut engine, strict, |_| true)?;
    engine.add_policy("p.rego".into(), format!("package p\nx := {expr}\n"))?;
    engine.eval_rule("data.p.x".into())
}

#[test]
fn a_failing_builtin_is_undefined_unless_strict() {
    let expr = r#"net.cidr_contains("10.0.0.0/8", "10.0.0.1:80")"#;
    assert_eq!(eval(expr, false).unwrap(), Value::Undefined);
    let err = eval(expr, true).unwrap_err().to_string();
    assert!(err.contains("net.cidr_contains"), "{err}");
}

#[test]
fn regate_replaces_regorus_where_opa_differs() {
    let got = eval(
        r#"net.cidr_contains("10.0.0.0/8", "::ffff:10.1.2.3")"#,
        true,
    )
    .unwrap();
    assert_eq!(got, Value::from(true));
    assert_eq!(eval(r#"to_number(" 1")"#, false).unwrap(), Value::Undefined);
    let got = eval(r#"glob.quote_meta("a?[b]")"#, true).unwrap();
    assert_eq!(got, Value::from("a\\?\\[b\\]"));
}
