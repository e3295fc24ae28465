//! What a policy set can read from `input`, and whether its answer could change for the same
//! input: the static analysis the decision cache rests on.
//!
//! Every value a policy takes from `input` flows through a reference rooted at `input` (or at
//! an import alias of part of it). For each such reference, the analysis keeps its static
//! prefix: the fields and string keys up to the first variable or computed index
//! (`input.attributes.request.http.method`, `input.parsed_path` for `input.parsed_path[0]`).
//! The whole subtree under each prefix may be read. The modules walked are those the query can
//! reach: its own package's, and those of every `data.` path they refer to, again and again
//! (module by module, not rule by rule: reading too much only makes the key longer).
//!
//! Any doubt disables the cache: `input` used whole (`walk(input, _)`, `x := input`,
//! `f(input)`), a call to a builtin whose answer can change for the same arguments (the clock,
//! randomness, the network), a call the analysis cannot name, or a read of something unique to
//! each request (its id or time, or every header, which include its id).

use std::collections::{BTreeMap, BTreeSet};

use regorus::unstable::{Expr, Literal, Module, Query, Ref, Rule, RuleHead};

/// Builtins whose answer can change between two calls with the same arguments.
const NOT_REPEATABLE: &[&str] = &[
    "http.send",
    "net.lookup_ip_addr",
    "opa.runtime",
    "rand.intn",
    "time.now_ns",
    "uuid.rfc4122",
];

/// Parts of `input` unique to each request: a key holding one never repeats.
const UNIQUE_PER_REQUEST: &[&[&str]] = &[
    &["attributes", "request", "http", "id"],
    &["attributes", "request", "http", "headers", "x-request-id"],
    &["attributes", "request", "time"],
];

/// One step into a document: an object key, or an array index (`input.parsed_path[0]`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// `input.parsed_path[0]`, `input.attributes.request.http.method`.
pub fn display(path: &[Step]) -> String {
    let mut out = String::from("input");
    for step in path {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// What the cache may key on, or why there is no cache for this set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reads {
    /// The answer depends only on these parts of `input` (and on the set itself).
    Paths(Vec<Vec<Step>>),
    /// No cache, and why, for `/status`.
    Uncacheable(String),
}

/// Analyse the modules of a set that `query` (`data.pkg.rule`) can reach.
pub fn reads(modules: &[Ref<Module>], query: &str) -> Reads {
    let functions = user_functions(modules);
    let per_module: Vec<(String, Facts)> = modules
        .iter()
        .map(|module| (package(module), module_facts(module)))
        .collect();
    let facts = reachable(&per_module, query);
    if facts.paths.contains(&Vec::new()) {
        return Reads::Uncacheable("the policy uses `input` whole".into());
    }
    if let Some(name) = facts.replacing.iter().find(|n| {
        NOT_REPEATABLE.contains(&n.as_str())
            || crate::builtins::CLOCK_DEPENDENT.contains(&n.as_str())
    }) {
        return Reads::Uncacheable(format!("the policy calls {name}, whose answer can change"));
    }
    for call in facts.calls.keys() {
        if NOT_REPEATABLE.contains(&call.as_str())
            || crate::builtins::CLOCK_DEPENDENT.contains(&call.as_str())
        {
            return Reads::Uncacheable(format!("the policy calls {call}, whose answer can change"));
        }
        let last = call.rsplit('.').next().unwrap_or(call);
        let known = regorus::unstable::BUILTINS.contains_key(call.as_str())
            || crate::builtins::provides(call)
            || functions.contains(call)
            || functions.contains(last)
            || call == "print";
        if !known {
            return Reads::Uncacheable(format!(
                "the policy calls {call}, which regate cannot judge"
            ));
        }
    }
    for path in &facts.paths {
        let holds = |unique: &&&[&str]| {
            path.len() <= unique.len()
                && path
                    .iter()
                    .zip(unique.iter())
                    .all(|(step, key)| matches!(step, Step::Key(k) if k == key))
        };
        if let Some(unique) = UNIQUE_PER_REQUEST.iter().find(holds) {
            return Reads::Uncacheable(format!(
                "the policy reads {}, which holds input.{}, unique to each request",
                display(path),
                unique.join(".")
            ));
        }
    }
    // A prefix inside another adds nothing to the key.
    let paths: Vec<Vec<Step>> = facts
        .paths
        .iter()
        .filter(|p| {
            !facts
                .paths
                .iter()
                .any(|q| q.len() < p.len() && p.starts_with(q))
        })
        .cloned()
        .collect();
    Reads::Paths(paths)
}

/// What one module reads, calls and refers to.
fn module_facts(module: &Module) -> Facts {
    let mut facts = Facts::default();
    let aliases = aliases(module);
    let mut walker = Walker {
        facts: &mut facts,
        aliases: &aliases,
    };
    for rule in &module.policy {
        walker.rule(rule);
    }
    for import in &module.imports {
        if let Some(path) = rooted(&import.refr, "data", &BTreeMap::new()) {
            facts.data.insert(path);
        }
    }
    facts
}

/// `file:line` of a span, as regate reports a place in a policy.
fn location(span: &regorus::unstable::Span) -> String {
    format!("{}:{}", span.source.file(), span.line)
}

/// Every call, in any module, of a function that is neither a builtin regorus or regate
/// provides nor a function the modules define: `(file:line, name)`, first call of each name.
/// Such a call could only fail when reached, so a set holding one is refused at load.
pub fn unknown_calls(modules: &[Ref<Module>]) -> Vec<(String, String)> {
    let functions = user_functions(modules);
    let mut unknown = BTreeMap::new();
    for module in modules {
        for (name, at) in module_facts(module).calls {
            let last = name.rsplit('.').next().unwrap_or(&name);
            let known = (regorus::unstable::BUILTINS.contains_key(name.as_str())
                && !STUBS.contains(&name.as_str()))
                || crate::builtins::provides(&name)
                || functions.contains(&name)
                || functions.contains(last)
                || name == "print"
                || name == "<computed>";
            if !known {
                unknown.entry(name).or_insert(at);
            }
        }
    }
    let mut out: Vec<(String, String)> = unknown.into_iter().map(|(n, at)| (at, n)).collect();
    out.sort();
    out
}

/// Every function any module calls or names in a `with`, spelt as written.
pub fn called(modules: &[Ref<Module>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for module in modules {
        let facts = module_facts(module);
        names.extend(facts.calls.into_keys());
        names.extend(facts.replacing);
    }
    names
}

/// Builtins regorus registers but does not do: `http.send` answers undefined, always.
const STUBS: &[&str] = &["http.send"];

/// What one rule defines: the static part of its path under `data` (package, then head),
/// whether its head is a plain name (`allow`, `deny contains x`) rather than a
/// reference (`result["allowed"]`, `result.headers`), and whether nothing can lie below it.
pub struct RuleHeadPath {
    pub path: Vec<String>,
    pub plain: bool,
    /// The head is static all along and every value the rule can take is a constant
    /// `true`/`false`, number, string or null (`allow if ...`, `default allow := false`):
    /// no path below `path` is ever defined.
    pub leaf: bool,
}

/// Every rule that defines a document (functions excluded).
pub fn rule_heads(modules: &[Ref<Module>]) -> Vec<RuleHeadPath> {
    let mut out = Vec::new();
    for module in modules {
        let package: Vec<String> = package(module)
            .split('.')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        for rule in &module.policy {
            // The rule's values: a head without one is `true`; each `else` may give another.
            let (refr, values): (_, Vec<Option<&Ref<Expr>>>) = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Compr { refr, assign, .. },
                    bodies,
                    ..
                } => (
                    refr,
                    std::iter::once(assign.as_ref().map(|a| &a.value))
                        .chain(
                            bodies
                                .iter()
                                .filter_map(|b| b.assign.as_ref())
                                .map(|a| Some(&a.value)),
                        )
                        .collect(),
                ),
                // A set can hold anything; it is never a leaf.
                Rule::Spec {
                    head: RuleHead::Set { refr, .. },
                    ..
                } => (refr, Vec::new()),
                Rule::Default {
                    refr, args, value, ..
                } if args.is_empty() => (refr, vec![Some(value)]),
                _ => continue,
            };
            let plain = matches!(refr.as_ref(), Expr::Var { .. });
            let segments = static_segments(refr);
            let leaf = segments.len() == links(refr).len()
                && !values.is_empty()
                && values.iter().all(|v| v.is_none_or(scalar));
            let mut path = package.clone();
            path.extend(segments);
            out.push(RuleHeadPath { path, plain, leaf });
        }
    }
    out
}

/// A constant with nothing below it: `true`, `1`, `"a"`, `null`.
fn scalar(expr: &Ref<Expr>) -> bool {
    matches!(
        expr.as_ref(),
        Expr::Bool { .. }
            | Expr::Number { .. }
            | Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Null { .. }
    )
}

/// A reference's links, root first: `a.b[c]` is `a`, `a.b`, `a.b[c]`.
fn links(expr: &Ref<Expr>) -> Vec<&Ref<Expr>> {
    let mut chain = vec![expr];
    let mut current = expr;
    while let Expr::RefDot { refr, .. } | Expr::RefBrack { refr, .. } = current.as_ref() {
        chain.push(refr);
        current = refr;
    }
    chain.reverse();
    chain
}

/// The leading fields and string keys of a reference: `result.headers` is
/// `["result", "headers"]`; `obj[k]` is `["obj"]`.
fn static_segments(expr: &Ref<Expr>) -> Vec<String> {
    let chain = links(expr);
    let mut out = Vec::new();
    for link in chain {
        match link.as_ref() {
            Expr::Var { span, .. } => out.push(span.text().to_string()),
            Expr::RefDot { field, .. } => out.push(field.0.text().to_string()),
            Expr::RefBrack { index, .. } => match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    match value.as_string() {
                        Ok(k) => out.push(k.to_string()),
                        Err(_) => break,
                    }
                }
                _ => break,
            },
            _ => break,
        }
    }
    out
}

#[derive(Default)]
struct Facts {
    /// Static prefixes of every reference rooted at `input`; `[]` is `input` itself.
    paths: BTreeSet<Vec<Step>>,
    /// Every function called, spelt as written (`net.cidr_contains`, `data.lib.f`, `f`),
    /// with where it is first called (`file:line`).
    calls: BTreeMap<String, String>,
    /// Names in `with` modifiers that are not documents: functions replaced or replacing.
    replacing: BTreeSet<String>,
    /// Static prefixes of every reference rooted at `data` (`[]` is `data` itself).
    data: BTreeSet<Vec<Step>>,
}

/// The names of the functions the modules define, as `name` and as `package.name`.
pub(crate) fn user_functions(modules: &[Ref<Module>]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for module in modules {
        let package = dotted(&module.package.refr).unwrap_or_default();
        for rule in &module.policy {
            let refr = match rule.as_ref() {
                Rule::Spec {
                    head: RuleHead::Func { refr, .. },
                    ..
                } => refr,
                Rule::Default { refr, args, .. } if !args.is_empty() => refr,
                _ => continue,
            };
            if let Some(name) = dotted(refr) {
                names.insert(format!("{package}.{name}"));
                names.insert(format!("data.{package}.{name}"));
                names.insert(name.rsplit('.').next().unwrap_or(&name).to_string());
                names.insert(name);
            }
        }
    }
    names
}

/// `a.b.c` for a reference made of a variable and fields.
pub(crate) fn dotted(expr: &Ref<Expr>) -> Option<String> {
    match expr.as_ref() {
        Expr::Var { span, .. } => Some(span.text().to_string()),
        Expr::RefDot { refr, field, .. } => Some(format!("{}.{}", dotted(refr)?, field.0.text())),
        Expr::RefBrack { refr, index, .. } => match index.as_ref() {
            Expr::String { value, .. } | Expr::RawString { value, .. } => {
                Some(format!("{}.{}", dotted(refr)?, value.as_string().ok()?))
            }
            _ => None,
        },
        _ => None,
    }
}

/// A module's package path without `data.`: `regate.authz`.
fn package(module: &Module) -> String {
    let name = dotted(&module.package.refr).unwrap_or_default();
    name.strip_prefix("data.").unwrap_or(&name).to_string()
}

/// The facts of every module `query` can reach: the modules of its package, then those of
/// every package a reached module names under `data.` (a prefix of it, or a path into it).
fn reachable(per_module: &[(String, Facts)], query: &str) -> Facts {
    let query = query.strip_prefix("data.").unwrap_or(query);
    let mut reached: Vec<bool> = per_module
        .iter()
        .map(|(pkg, _)| query == pkg || query.starts_with(&format!("{pkg}.")))
        .collect();
    loop {
        let mut grown = false;
        for i in 0..per_module.len() {
            if !reached[i] {
                continue;
            }
            for data in &per_module[i].1.data {
                let data = data
                    .iter()
                    .map(|s| match s {
                        Step::Key(k) => k.clone(),
                        Step::Index(i) => i.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(".");
                for (j, (pkg, _)) in per_module.iter().enumerate() {
                    let touches = data.is_empty()
                        || data == *pkg
                        || data.starts_with(&format!("{pkg}."))
                        || pkg.starts_with(&format!("{data}."));
                    if touches && !reached[j] {
                        reached[j] = true;
                        grown = true;
                    }
                }
            }
        }
        if !grown {
            break;
        }
    }
    let mut facts = Facts::default();
    for ((_, module), _) in per_module.iter().zip(&reached).filter(|(_, r)| **r) {
        facts.paths.extend(module.paths.iter().cloned());
        for (name, at) in &module.calls {
            facts
                .calls
                .entry(name.clone())
                .or_insert_with(|| at.clone());
        }
        facts.replacing.extend(module.replacing.iter().cloned());
    }
    facts
}

/// A module's import aliases: `import input.attributes.request.http as http` makes `http`
/// stand for `input.attributes.request.http`, `import data.lib` makes `lib` stand for
/// `data.lib`. Each alias maps to its root (`input` or `data`) and path.
fn aliases(module: &Module) -> BTreeMap<String, (&'static str, Vec<Step>)> {
    let mut aliases = BTreeMap::new();
    for import in &module.imports {
        for root in ["input", "data"] {
            if let Some(path) = rooted(&import.refr, root, &BTreeMap::new()) {
                let alias = match (&import.r#as, path.last()) {
                    (Some(span), _) => span.text().to_string(),
                    (None, Some(Step::Key(last))) => last.clone(),
                    (None, _) => root.to_string(),
                };
                aliases.insert(alias, (root, path));
            }
        }
    }
    aliases
}

/// The static prefix of a reference rooted at `root` (`input` or `data`), directly or through
/// an alias of it, or `None` for any other reference.
fn rooted(
    expr: &Ref<Expr>,
    root: &str,
    aliases: &BTreeMap<String, (&'static str, Vec<Step>)>,
) -> Option<Vec<Step>> {
    let chain = links(expr);
    let mut path = match chain.first()?.as_ref() {
        Expr::Var { span, .. } if span.text() == root => Vec::new(),
        Expr::Var { span, .. } => match aliases.get(span.text()) {
            Some((r, path)) if *r == root => path.clone(),
            _ => return None,
        },
        _ => return None,
    };
    for link in &chain[1..] {
        match link.as_ref() {
            Expr::RefDot { field, .. } => path.push(Step::Key(field.0.text().to_string())),
            Expr::RefBrack { index, .. } => match index.as_ref() {
                Expr::String { value, .. } | Expr::RawString { value, .. } => {
                    match value.as_string() {
                        Ok(key) => path.push(Step::Key(key.to_string())),
                        Err(_) => break,
                    }
                }
                Expr::Number { value, .. } => match value.as_u64() {
                    Ok(i) if i <= u32::MAX as u64 => path.push(Step::Index(i as usize)),
                    _ => break,
                },
                // A variable or anything computed: the whole subtree is read.
                _ => break,
            },
            _ => break,
        }
    }
    Some(path)
}

struct Walker<'a> {
    facts: &'a mut Facts,
    aliases: &'a BTreeMap<String, (&'static str, Vec<Step>)>,
}

impl Walker<'_> {
    fn rule(&mut self, rule: &Ref<Rule>) {
        match rule.as_ref() {
            Rule::Spec { head, bodies, .. } => {
                match head {
                    RuleHead::Compr { refr, assign, .. } => {
                        self.head(refr);
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                    RuleHead::Set { refr, key, .. } => {
                        self.head(refr);
                        if let Some(k) = key {
                            self.expr(k);
                        }
                    }
                    RuleHead::Func {
                        refr, args, assign, ..
                    } => {
                        self.head(refr);
                        args.iter().for_each(|a| self.expr(a));
                        if let Some(a) = assign {
                            self.expr(&a.value);
                        }
                    }
                }
                for body in bodies {
                    if let Some(a) = &body.assign {
                        self.expr(&a.value);
                    }
                    self.query(&body.query);
                }
            }
            Rule::Default {
                refr, args, value, ..
            } => {
                self.head(refr);
                args.iter().for_each(|a| self.expr(a));
                self.expr(value);
            }
        }
    }

    /// A rule head's reference names the rule; only its computed keys are read.
    fn head(&mut self, refr: &Ref<Expr>) {
        self.indexes(refr);
    }

    /// Walk the computed keys along a reference chain; return the chain's root.
    fn indexes<'e>(&mut self, refr: &'e Ref<Expr>) -> &'e Ref<Expr> {
        let mut current = refr;
        loop {
            match current.as_ref() {
                Expr::RefDot { refr, .. } => current = refr,
                Expr::RefBrack { refr, index, .. } => {
                    self.expr(index);
                    current = refr;
                }
                _ => return current,
            }
        }
    }

    fn query(&mut self, query: &Ref<Query>) {
        for stmt in &query.stmts {
            for with in &stmt.with_mods {
                // `with input.x as v` and `with data.x as v` replace documents; `with f as g`
                // makes every call of f a call of g: both names count as calls.
                for name in [dotted(&with.refr), dotted(&with.r#as)]
                    .into_iter()
                    .flatten()
                {
                    if !name.starts_with("data.") && !name.starts_with("input") {
                        self.facts.replacing.insert(name);
                    }
                }
                self.expr(&with.r#as);
            }
            match &stmt.literal {
                Literal::SomeVars { .. } => {}
                Literal::SomeIn {
                    key,
                    value,
                    collection,
                    ..
                } => self.membership(key.as_ref(), value, collection),
                Literal::Expr { expr, .. } | Literal::NotExpr { expr, .. } => self.expr(expr),
                Literal::Every { domain, query, .. } => {
                    self.expr(domain);
                    self.query(query);
                }
            }
        }
    }

    /// `some k, v in c` and `k, v in c`.
    fn membership(&mut self, key: Option<&Ref<Expr>>, value: &Ref<Expr>, collection: &Ref<Expr>) {
        if let Some(k) = key {
            self.expr(k);
        }
        self.expr(value);
        self.expr(collection);
    }

    fn expr(&mut self, expr: &Ref<Expr>) {
        match expr.as_ref() {
            Expr::Var { .. } | Expr::RefDot { .. } | Expr::RefBrack { .. } => {
                if let Some(path) = rooted(expr, "input", self.aliases) {
                    self.facts.paths.insert(path);
                } else if let Some(path) = rooted(expr, "data", self.aliases) {
                    self.facts.data.insert(path);
                }
                // The computed keys along the chain can read input too, and so can a root
                // that is not a variable (a call, a comprehension).
                let root = self.indexes(expr);
                if !matches!(root.as_ref(), Expr::Var { .. }) {
                    self.expr(root);
                }
            }
            Expr::String { .. }
            | Expr::RawString { .. }
            | Expr::Number { .. }
            | Expr::Bool { .. }
            | Expr::Null { .. } => {}
            Expr::Array { items, .. } | Expr::Set { items, .. } => {
                items.iter().for_each(|i| self.expr(i))
            }
            Expr::Object { fields, .. } => fields.iter().for_each(|(_, k, v)| {
                self.expr(k);
                self.expr(v);
            }),
            Expr::ArrayCompr { term, query, .. } | Expr::SetCompr { term, query, .. } => {
                self.expr(term);
                self.query(query);
            }
            Expr::ObjectCompr {
                key, value, query, ..
            } => {
                self.expr(key);
                self.expr(value);
                self.query(query);
            }
            Expr::Call {
                span, fcn, params, ..
            } => {
                // `data.lib.f(x)` or `lib.f(x)` reaches the package that defines f.
                if let Some(path) = rooted(fcn, "data", self.aliases) {
                    self.facts.data.insert(path);
                }
                match dotted(fcn) {
                    Some(name) => {
                        self.facts
                            .calls
                            .entry(name)
                            .or_insert_with(|| location(span));
                    }
                    // A call through something the analysis cannot spell: doubt.
                    None => {
                        self.facts
                            .calls
                            .entry("<computed>".into())
                            .or_insert_with(|| location(span));
                    }
                }
                params.iter().for_each(|p| self.expr(p));
            }
            Expr::UnaryExpr { expr, .. } => self.expr(expr),
            Expr::BinExpr { lhs, rhs, .. }
            | Expr::BoolExpr { lhs, rhs, .. }
            | Expr::ArithExpr { lhs, rhs, .. }
            | Expr::AssignExpr { lhs, rhs, .. } => {
                self.expr(lhs);
                self.expr(rhs);
            }
            Expr::Membership {
                key,
                value,
                collection,
                ..
            } => self.membership(key.as_ref(), value, collection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(policy: &str) -> Reads {
        let mut engine = regorus::Engine::new();
        engine.add_policy("p.rego".into(), policy.into()).unwrap();
        reads(&engine.get_modules().clone(), "data.t.allow")
    }

    /// `"parsed_path.0"`-style paths: a number is an index.
    fn paths(list: &[&[&str]]) -> Reads {
        Reads::Paths(
            list.iter()
                .map(|p| {
                    p.iter()
                        .map(|s| match s.parse::<usize>() {
                            Ok(i) => Step::Index(i),
                            Err(_) => Step::Key(s.to_string()),
                        })
                        .collect()
                })
                .collect(),
        )
    }

    #[test]
    fn reads_are_the_static_prefixes_of_input_references() {
        let policy = r#"package t
import input.attributes.request.http as http
default allow := false
allow if {
	http.method == "GET"
	input.parsed_path[0] == "docs"
	data.grants[input.peer.spiffe_id].ok
	glob.match("/api/*", ["/"], input.attributes.request.http.headers["x-path"])
	helper(input.context.env)
}
helper(env) := env == "prod"
"#;
        assert_eq!(
            analyse(policy),
            paths(&[
                &["attributes", "request", "http", "headers", "x-path"],
                &["attributes", "request", "http", "method"],
                &["context", "env"],
                &["parsed_path", "0"],
                &["peer", "spiffe_id"],
            ])
        );
    }

    #[test]
    fn any_doubt_means_no_cache() {
        for (policy, why) in [
            ("package t\nallow if walk(input, _)", "whole"),
            ("package t\nallow if { x := input; x.a }", "whole"),
            ("package t\nallow if time.now_ns() > 0", "time.now_ns"),
            (
                "package t\nallow if f(1) with f as time.now_ns\nf(x) := x",
                "time.now_ns",
            ),
            (
                "package t\nallow if io.jwt.decode_verify(input.t, {\"secret\": \"s\"})[0]",
                "io.jwt.decode_verify, whose answer can change",
            ),
            (
                "package t\nallow if crypto.x509.parse_and_verify_certificates(input.t)[0]",
                "parse_and_verify_certificates, whose answer can change",
            ),
            (
                "package t\nallow if custom.lookup(input.t)",
                "custom.lookup, which regate cannot judge",
            ),
            (
                "package t\nallow if { some k, _ in input.attributes.request.http.headers; k }",
                "unique",
            ),
            (
                "package t\nallow if input.attributes.request.time",
                "unique",
            ),
        ] {
            match analyse(policy) {
                Reads::Uncacheable(reason) => assert!(reason.contains(why), "{policy}: {reason}"),
                other => panic!("{policy} was found cacheable: {other:?}"),
            }
        }
    }

    #[test]
    fn only_the_packages_the_query_reaches_count() {
        let mut engine = regorus::Engine::new();
        for (name, text) in [
            (
                "a.rego",
                "package a\nimport data.lib\nallow if lib.ok(input.peer.spiffe_id)",
            ),
            ("lib.rego", "package lib\nok(id) if id == \"x\""),
            (
                "b.rego",
                "package b\nallow if input.attributes.request.time",
            ),
            ("c.rego", "package c\nallow if data.b.allow"),
        ] {
            engine.add_policy(name.into(), text.into()).unwrap();
        }
        let modules = engine.get_modules().clone();
        assert_eq!(
            reads(&modules, "data.a.allow"),
            paths(&[&["peer", "spiffe_id"]])
        );
        assert!(matches!(
            reads(&modules, "data.b.allow"),
            Reads::Uncacheable(_)
        ));
        assert!(
            matches!(reads(&modules, "data.c.allow"), Reads::Uncacheable(_)),
            "c reaches b through data.b"
        );
    }
}
