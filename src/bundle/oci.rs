//! A bundle (or a revocations document) pulled from an OCI registry as OPA lays bundles
//! out there: the image manifest the tag names, and in it the first layer of media type
//! `application/vnd.oci.image.layer.v1.tar+gzip`, the bundle's tarball. The layer's digest is
//! its ETag: an unchanged digest is not downloaded again, and a downloaded blob must hash to
//! its digest.
//!
//! Speaks the distribution API (`/v2/<name>/manifests/<reference>`,
//! `/v2/<name>/blobs/<digest>`) through [`super::http::Client`], anonymously or with the
//! configured bearer token; a blob redirect (object storage behind the registry) is followed
//! once, without credentials.

use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;

use super::http::{Client, Credentials};
use super::BundleError;

/// The layer media type OPA reads a bundle from.
pub const BUNDLE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Manifest media types asked for.
const MANIFESTS: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json";

/// `oci://registry[:port]/name:tag` (or `@sha256:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `https://registry[:port]`; plain HTTP for a loopback registry, as docker does.
    pub registry: String,
    pub name: String,
    pub reference: String,
}

impl Reference {
    pub fn parse(url: &str) -> Result<Reference, String> {
        let rest = url
            .strip_prefix("oci://")
            .ok_or_else(|| format!("{url:?} is not oci://registry/name:tag"))?;
        let (registry, path) = rest
            .split_once('/')
            .ok_or_else(|| format!("{url:?} names no repository"))?;
        let (name, reference) = match path.split_once('@') {
            Some((name, digest)) => (name, digest),
            None => match path.rsplit_once(':') {
                Some((name, tag)) if !tag.contains('/') => (name, tag),
                _ => (path, "latest"),
            },
        };
        if registry.is_empty() || name.is_empty() || reference.is_empty() {
            return Err(format!("{url:?} is not oci://registry/name:tag"));
        }
        let host = registry.rsplit_once(':').map_or(registry, |(h, _)| h);
        let loopback = host == "localhost"
            || host
                .trim_matches(|c| c == '[' || c == ']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let scheme = if loopback { "http" } else { "https" };
        Ok(Reference {
            registry: format!("{scheme}://{registry}"),
            name: name.to_string(),
            reference: reference.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct Manifest {
    #[serde(default)]
    layers: Vec<Descriptor>,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
}

/// What a pull found.
pub enum Pulled {
    /// The layer is the one held (`last` digest).
    Unchanged,
    /// A new layer: its digest and bytes.
    New { digest: String, bytes: Vec<u8> },
}

/// Pull the bundle layer of `reference` unless its digest is `last`. `any_layer` takes the
/// first layer whatever its media type (a revocations document pushed as a plain file).
pub async fn pull(
    client: &mut Client,
    reference: &Reference,
    last: Option<&str>,
    any_layer: bool,
    credentials: &Credentials,
    (timeout, max): (Duration, usize),
) -> Result<Pulled, BundleError> {
    let manifest_path = format!("/v2/{}/manifests/{}", reference.name, reference.reference);
    let accept = [(http::header::ACCEPT, MANIFESTS.to_string())];
    let response = client
        .get(&manifest_path, &accept, timeout, 4 << 20)
        .await?;
    if !response.status.is_success() {
        return Err(BundleError::Fetch(format!(
            "{}{manifest_path}: {}",
            reference.registry, response.status
        )));
    }
    let manifest: Manifest = serde_json::from_slice(&response.body)
        .map_err(|e| BundleError::Format(format!("the image manifest: {e}")))?;
    let layer = manifest
        .layers
        .iter()
        .find(|l| any_layer || l.media_type == BUNDLE_LAYER)
        .ok_or_else(|| {
            BundleError::Format(format!(
                "the image has no layer of media type {BUNDLE_LAYER}"
            ))
        })?;
    if last == Some(layer.digest.as_str()) {
        return Ok(Pulled::Unchanged);
    }
    let hex = layer
        .digest
        .strip_prefix("sha256:")
        .ok_or_else(|| BundleError::Format(format!("layer digest {} is not sha256", layer.digest)))?
        .to_ascii_lowercase();
    let blob_path = format!("/v2/{}/blobs/{}", reference.name, layer.digest);
    let no_headers: [(HeaderName, String); 0] = [];
    let mut blob = client.get(&blob_path, &no_headers, timeout, max).await?;
    if blob.status.is_redirection() {
        let location = blob
            .header("location")
            .and_then(|l| l.parse::<Uri>().ok())
            .filter(|l| l.scheme().is_some())
            .ok_or_else(|| BundleError::Fetch("a blob redirect without an absolute URL".into()))?;
        // Object storage is reached with a signed URL, never with the registry's token.
        let plain = Credentials {
            ca_cert: credentials.ca_cert.clone(),
            ..Credentials::default()
        };
        let mut elsewhere = Client::new(&location, &plain)?;
        let path = location
            .path_and_query()
            .map_or("/".to_string(), |p| p.as_str().to_string());
        blob = elsewhere.get(&path, &no_headers, timeout, max).await?;
    }
    if !blob.status.is_success() {
        return Err(BundleError::Fetch(format!(
            "{}{blob_path}: {}",
            reference.registry, blob.status
        )));
    }
    let got =
        crate::tls::identity::hex(ring::digest::digest(&ring::digest::SHA256, &blob.body).as_ref());
    if got != hex {
        return Err(BundleError::Format(format!(
            "the layer does not hash to its digest {}",
            layer.digest
        )));
    }
    Ok(Pulled::New {
        digest: layer.digest.clone(),
        bytes: blob.body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_name_registry_repository_and_tag() {
        let r = Reference::parse("oci://127.0.0.1:5000/policies/authz:v2").unwrap();
        assert_eq!(r.registry, "http://127.0.0.1:5000");
        assert_eq!(
            (r.name.as_str(), r.reference.as_str()),
            ("policies/authz", "v2")
        );
        let r = Reference::parse("oci://ghcr.io/acme/bundle").unwrap();
        assert_eq!(r.registry, "https://ghcr.io");
        assert_eq!(r.reference, "latest");
        let r = Reference::parse("oci://ghcr.io/acme/bundle@sha256:ab").unwrap();
        assert_eq!(r.reference, "sha256:ab");
        assert!(Reference::parse("https://ghcr.io/acme").is_err());
    }
}
