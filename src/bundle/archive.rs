//! An OPA bundle's bytes turned into policy sources: the gzipped tarball unpacked (within a
//! size limit, regular files only), the signature checked when one is required, the
//! `.manifest` read, and the files OPA loads from a snapshot bundle (`.rego` files;
//! `data.json`, `data.yaml` and `data.yml` at their directories) handed to
//! [`Sources::from_files`], the entry a directory and a git checkout load through too.
//!
//! Refused, as OPA refuses them or as regate cannot honour them: a file outside the
//! manifest's `roots` (a package or a data path), overlapping roots, a delta bundle
//! (`patch.json`), and Wasm or plan modules (regate evaluates Rego only). Compiling the
//! sources is the policy module's; fetching the bytes is `super`'s.

use std::io::Read as _;

use serde::Deserialize;

use super::verify::Verification;
use super::BundleError;
use crate::policy::Sources;

/// A bundle's whole unpacked size may not pass this (OPA's own limit is 1 GiB per file; a
/// policy bundle is kilobytes to a few megabytes, and this keeps a gzip bomb small).
pub const MAX_UNPACKED: u64 = 256 << 20;

/// `.manifest`, as far as regate reads it.
#[derive(Debug, Default, Deserialize)]
pub struct Manifest {
    #[serde(default)]
    pub revision: String,
    /// `None`: the whole of `data` (`[""]`).
    #[serde(default)]
    pub roots: Option<Vec<String>>,
    #[serde(default)]
    pub rego_version: Option<i64>,
    #[serde(default)]
    wasm: Vec<serde_json::Value>,
}

/// A bundle read and checked, ready to compile.
pub struct Bundle {
    pub sources: Sources,
    pub manifest: Manifest,
}

/// Unpack, verify (when `verification` is set) and read `bytes` as a bundle.
pub fn read(bytes: &[u8], verification: Option<&Verification>) -> Result<Bundle, BundleError> {
    let (files, signatures) = unpack(bytes)?;
    if let Some(verification) = verification {
        verification.check(signatures.as_deref(), &files)?;
    }
    let manifest = match files.iter().find(|(p, _)| p == ".manifest") {
        Some((_, bytes)) => serde_json::from_slice::<Manifest>(bytes)
            .map_err(|e| BundleError::Format(format!(".manifest: {e}")))?,
        None => Manifest::default(),
    };
    if !manifest.wasm.is_empty() {
        return Err(BundleError::Format(
            "the manifest names Wasm modules; regate evaluates Rego only".into(),
        ));
    }
    if let Some(version) = manifest.rego_version.filter(|v| !matches!(v, 0 | 1)) {
        return Err(BundleError::Format(format!(
            ".manifest: rego_version {version} is neither 0 nor 1"
        )));
    }
    let roots = roots(&manifest)?;
    let mut loaded = Vec::new();
    for (path, bytes) in files {
        let base = path.rsplit('/').next().unwrap_or(&path);
        match base {
            "patch.json" => {
                return Err(BundleError::Format(
                    "a delta bundle (patch.json); regate loads snapshot bundles".into(),
                ))
            }
            "policy.wasm" | "plan.json" => {
                return Err(BundleError::Format(format!(
                    "{path}: Wasm and plan modules are not supported; regate evaluates Rego only"
                )))
            }
            "data.json" | "data.yaml" | "data.yml" => {
                check_data_roots(&path, &bytes, &roots)?;
                loaded.push((path, bytes));
            }
            _ if path.ends_with(".rego") => {
                check_package_root(&path, &bytes, &roots)?;
                loaded.push((path, bytes));
            }
            // Anything else rides along unread, as in OPA (but it was verified above).
            _ => {}
        }
    }
    let revision = manifest.revision.clone();
    let sources = Sources::from_files(loaded, |hash| {
        Some(match revision.is_empty() {
            true => format!("bundle:{hash}"),
            false => format!("bundle:{revision}"),
        })
    })
    .map_err(BundleError::Policy)?;
    Ok(Bundle { sources, manifest })
}

/// The bytes of the file at `path` (no leading `/`) in a bundle, if it holds one; nothing
/// is verified (a revocations feed read from a bundle).
pub fn file(bytes: &[u8], path: &str) -> Result<Option<Vec<u8>>, BundleError> {
    let (files, _) = unpack(bytes)?;
    Ok(files.into_iter().find(|(p, _)| p == path).map(|(_, b)| b))
}

/// Every regular file in the tarball, by its path without a leading `/` or `./`, and the
/// bytes of `.signatures.json` apart.
type Unpacked = (Vec<(String, Vec<u8>)>, Option<Vec<u8>>);

fn unpack(bytes: &[u8]) -> Result<Unpacked, BundleError> {
    let gz = flate2::read::GzDecoder::new(bytes);
    // One byte past the limit tells a bundle at the limit from one over it.
    let mut archive = tar::Archive::new(gz.take(MAX_UNPACKED + 1));
    let tar_error = |e: std::io::Error| BundleError::Format(format!("not a gzipped tarball: {e}"));
    let mut files = Vec::new();
    let mut signatures = None;
    let mut total: u64 = 0;
    for entry in archive.entries().map_err(tar_error)? {
        let mut entry = entry.map_err(tar_error)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let raw = entry
            .path()
            .map_err(tar_error)?
            .to_string_lossy()
            .into_owned();
        let path = clean(&raw)?;
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).map_err(tar_error)?;
        total = total.saturating_add(contents.len() as u64);
        if total > MAX_UNPACKED {
            return Err(BundleError::Format(format!(
                "the bundle unpacks to more than {MAX_UNPACKED} bytes"
            )));
        }
        if path == ".signatures.json" {
            signatures = Some(contents);
        } else if files.iter().any(|(p, _)| *p == path) {
            return Err(BundleError::Format(format!(
                "{path} is in the bundle twice"
            )));
        } else {
            files.push((path, contents));
        }
    }
    Ok((files, signatures))
}

/// `/authz/policy.rego` and `./authz/policy.rego` as `authz/policy.rego`; a path that climbs
/// (`..`) is refused.
fn clean(raw: &str) -> Result<String, BundleError> {
    let parts: Vec<&str> = raw
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        return Err(BundleError::Format(format!(
            "{raw:?} is not a path in a bundle"
        )));
    }
    Ok(parts.join("/"))
}

/// The manifest's roots as path segments (`[[]]`: all of data), refused if two overlap.
fn roots(manifest: &Manifest) -> Result<Vec<Vec<String>>, BundleError> {
    let listed = manifest
        .roots
        .clone()
        .unwrap_or_else(|| vec![String::new()]);
    let roots: Vec<Vec<String>> = listed
        .iter()
        .map(|r| {
            r.trim_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect();
    for (i, a) in roots.iter().enumerate() {
        for b in &roots[i + 1..] {
            if a.starts_with(b) || b.starts_with(a) {
                return Err(BundleError::Format(format!(
                    ".manifest: overlapping roots {:?} and {:?}",
                    a.join("/"),
                    b.join("/")
                )));
            }
        }
    }
    Ok(roots)
}

fn within(roots: &[Vec<String>], path: &[String]) -> bool {
    roots.iter().any(|r| path.starts_with(r))
}

/// A data file's values must all lie under a root: at its directory, or, where the directory
/// is above every root, key by key below it (OPA's walk).
fn check_data_roots(path: &str, bytes: &[u8], roots: &[Vec<String>]) -> Result<(), BundleError> {
    let mut at: Vec<String> = path.split('/').map(str::to_string).collect();
    at.pop();
    if within(roots, &at) {
        return Ok(());
    }
    let value: serde_json::Value = if path.ends_with(".json") {
        serde_json::from_slice(bytes)
    } else {
        yaml_serde::from_slice(bytes).map_err(|e| serde_json::Error::io(std::io::Error::other(e)))
    }
    .map_err(|e| BundleError::Format(format!("{path}: {e}")))?;
    walk_data(path, &value, &mut at, roots)
}

fn walk_data(
    file: &str,
    value: &serde_json::Value,
    at: &mut Vec<String>,
    roots: &[Vec<String>],
) -> Result<(), BundleError> {
    if within(roots, at) {
        return Ok(());
    }
    match value {
        serde_json::Value::Object(map) if roots.iter().any(|r| r.starts_with(at)) => {
            for (key, child) in map {
                at.push(key.clone());
                walk_data(file, child, at, roots)?;
                at.pop();
            }
            Ok(())
        }
        _ => Err(BundleError::Format(format!(
            "{file}: the manifest's roots do not permit data at /{}",
            at.join("/")
        ))),
    }
}

/// A Rego file's package must lie under a root.
fn check_package_root(path: &str, bytes: &[u8], roots: &[Vec<String>]) -> Result<(), BundleError> {
    if roots.iter().any(Vec::is_empty) {
        return Ok(());
    }
    let text = String::from_utf8_lossy(bytes);
    let package = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| {
            p.trim()
                .trim_start_matches("data.")
                .split('.')
                .map(|s| {
                    s.trim_matches(|c| c == '[' || c == ']' || c == '"')
                        .to_string()
                })
                .collect::<Vec<_>>()
        });
    match package {
        Some(package) if within(roots, &package) => Ok(()),
        Some(package) => Err(BundleError::Format(format!(
            "{path}: the manifest's roots do not permit package {}",
            package.join(".")
        ))),
        // Without a package line it does not parse; compiling says so by line.
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A gzipped tarball as `opa build` lays one out: entries with a leading `/`.
    fn tarball(files: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        for (path, bytes) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path.trim_start_matches('/'), *bytes)
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn a_bundle_names_its_revision_and_loads_rego_and_data_at_their_paths() {
        let bytes = tarball(&[
            (
                "/authz/policy.rego",
                b"package authz\nallow if data.authz.ok\n",
            ),
            ("/authz/data.json", br#"{"ok": true}"#),
            ("/README.md", b"ignored"),
            (
                "/.manifest",
                br#"{"revision":"r7","roots":["authz"],"rego_version":1}"#,
            ),
        ]);
        let bundle = read(&bytes, None).unwrap();
        assert_eq!(&*bundle.sources.revision, "bundle:r7");
        assert_eq!(bundle.manifest.roots, Some(vec!["authz".to_string()]));
    }

    #[test]
    fn bundles_outside_their_roots_deltas_and_wasm_are_refused() {
        for files in [
            vec![
                ("/other/policy.rego", &b"package other\nallow := true\n"[..]),
                ("/.manifest", br#"{"roots":["authz"]}"#),
            ],
            vec![
                ("/authz/policy.rego", b"package authz\nallow := true\n"),
                ("/data.json", br#"{"other": 1}"#),
                ("/.manifest", br#"{"roots":["authz"]}"#),
            ],
            vec![
                ("/authz/policy.rego", b"package authz\nallow := true\n"),
                ("/.manifest", br#"{"roots":["authz", "authz/x"]}"#),
            ],
            vec![("/patch.json", br#"{"data": []}"#)],
            vec![("/policy.wasm", b"\0asm")],
        ] {
            assert!(read(&tarball(&files), None).is_err());
        }
        assert!(read(b"not gzip", None).is_err());
    }
}
