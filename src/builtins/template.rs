//! `strings.render_template`, which regorus lacks, for the templates policies write: text
//! with `{{.name}}` or `{{ .a.b }}` fields, and `{{-`/`-}}` trimming, printed as Go's
//! `text/template` prints them. Any other action (`range`, `if`, pipelines, functions) is
//! not rendered: it is a builtin error, so the expression is undefined, never a wrong string.

use regorus::Value;

use super::{string_arg, type_name, Builtin};

pub const BUILTINS: &[(&str, u8, Builtin)] = &[("strings.render_template", 2, render_template)];

fn render_template(args: &[Value]) -> Result<Value, String> {
    let template = string_arg(args, 0)?;
    let vars = match args.get(1) {
        Some(v @ Value::Object(_)) => v,
        Some(other) => {
            return Err(format!(
                "operand 2 must be object but got {}",
                type_name(other)
            ))
        }
        None => return Err("operand 2 is missing".into()),
    };
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(open) = rest.find("{{") {
        let mut text = &rest[..open];
        let after = &rest[open + 2..];
        let close = after
            .find("}}")
            .ok_or_else(|| "template: unclosed action".to_string())?;
        let mut action = &after[..close];
        if let Some(trimmed) = action.strip_prefix("- ") {
            text = text.trim_end();
            action = trimmed;
        }
        let mut trim_after = false;
        if let Some(trimmed) = action.strip_suffix(" -") {
            trim_after = true;
            action = trimmed;
        }
        out.push_str(text);
        out.push_str(&field(vars, action.trim())?);
        rest = &after[close + 2..];
        if trim_after {
            rest = rest.trim_start();
        }
    }
    out.push_str(rest);
    Ok(Value::from(out))
}

/// The text of `.a.b` in `vars`, or an error for any action that is not a field.
fn field(vars: &Value, action: &str) -> Result<String, String> {
    let path = action.strip_prefix('.').ok_or_else(|| {
        format!("template: {action:?} is not a field; only {{{{.name}}}} is rendered")
    })?;
    if path.is_empty() {
        return Ok(go_text(vars));
    }
    let mut at = vars;
    for key in path.split('.') {
        let ident = key.chars().all(|c| c.is_alphanumeric() || c == '_') && !key.is_empty();
        if !ident {
            return Err(format!("template: {action:?} is not a field"));
        }
        at = match at {
            Value::Object(_) => match &at[key] {
                // What OPA renders for a missing key.
                Value::Undefined => return Ok("<undefined>".into()),
                v => v,
            },
            _ => return Err(format!("template: can't evaluate field {key}")),
        };
    }
    Ok(go_text(at))
}

/// A value as Go's `fmt.Sprint` prints what OPA hands the template.
fn go_text(value: &Value) -> String {
    match value {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::String(s) => s.to_string(),
        Value::Number(_) => value.to_json_str().unwrap_or_default(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(go_text).collect::<Vec<_>>().join(" ")
        ),
        Value::Set(items) => format!(
            "[{}]",
            items.iter().map(go_text).collect::<Vec<_>>().join(" ")
        ),
        Value::Object(fields) => format!(
            "map[{}]",
            fields
                .iter()
                .map(|(k, v)| format!("{}:{}", go_text(k), go_text(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Value::Undefined => "<undefined>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, vars: &str) -> Result<Value, String> {
        let vars = Value::from_json_str(vars).map_err(|e| e.to_string())?;
        render_template(&[Value::from(template), vars])
    }

    #[test]
    fn fields_are_rendered_as_go_prints_them() {
        assert_eq!(
            render(
                "{{.m}} on {{ .p.path }} for {{.who}}",
                r#"{"m": "POST", "p": {"path": "/x"}, "who": 1}"#
            ),
            Ok(Value::from("POST on /x for 1"))
        );
        assert_eq!(
            render("a {{- .x -}} b", r#"{"x": true}"#),
            Ok(Value::from("atrueb"))
        );
        assert_eq!(render("{{.nope}}", "{}"), Ok(Value::from("<undefined>")));
        assert_eq!(
            render("{{.l}}", r#"{"l": ["a", 2]}"#),
            Ok(Value::from("[a 2]"))
        );
        assert!(render("{{range .l}}x{{end}}", r#"{"l": []}"#).is_err());
        assert!(render("{{.a", "{}").is_err());
    }
}
