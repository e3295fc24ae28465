//! An IPv4 loopback address written IPv6-mapped (`[::ffff:127.0.0.1]`) is loopback for
//! `--admin`: it needs no `--admin-allow-remote`. A remote address still does.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[derive(clap::Parser)]
struct RunCli {
    #[command(flatten)]
    run: regate::config::RunArgs,
}

/// This setup's `regate run` flags with `--admin admin` (and `extra`), parsed and checked
/// as `regate run` parses and checks them.
fn check(setup: &Setup, admin: &str, extra: &[&str]) -> regate::config::Checked {
    use clap::Parser;
    let mut args = setup.args("http://127.0.0.1:8080");
    let at = args.iter().position(|a| a == "--admin").unwrap();
    args[at + 1] = admin.to_string();
    args.extend(extra.iter().map(|s| s.to_string()));
    let cli = RunCli::try_parse_from(std::iter::once("regate".to_string()).chain(args)).unwrap();
    regate::config::Config::check(cli.run)
}

#[test]
fn a_mapped_loopback_admin_address_needs_no_allow_remote_but_a_remote_one_does() {
    let setup = Setup::new(&[("authz.rego", ALLOW_DOCS)]);
    let checked = check(&setup, "[::ffff:127.0.0.1]:9901", &[]);
    assert!(checked.errors.is_empty(), "{:?}", checked.errors);
    assert_eq!(
        checked.config.admin,
        Some("[::ffff:127.0.0.1]:9901".parse().unwrap())
    );

    // Unwrapping the mapping must not open the way for remote addresses, mapped or not.
    for remote in ["10.0.0.1:9901", "[::ffff:10.0.0.1]:9901"] {
        let errors = check(&setup, remote, &[]).errors;
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with("admin:") && e.contains("--admin-allow-remote")),
            "{remote}: {errors:?}"
        );
        let allowed = check(&setup, remote, &["--admin-allow-remote"]).errors;
        assert!(allowed.is_empty(), "{remote}: {allowed:?}");
    }
}
