//! Finding an issuer's JWKS URL in its metadata: OpenID Connect Discovery
//! (`{issuer}/.well-known/openid-configuration`), else RFC 8414's
//! `/.well-known/oauth-authorization-server` (inserted before the issuer's path, if it has
//! one). The document must name the issuer it was asked for (OpenID Connect Discovery §4.3,
//! RFC 8414 §3.3), or its `jwks_uri` is not taken: a provider's metadata could otherwise
//! point regate at another provider's keys.
//!
//! Owns reading the metadata; fetching it is [`super::fetch`]'s.

use super::fetch::{self, Client, FetchError};

/// Where the issuer's metadata may be, in the order they are asked.
pub fn metadata_urls(issuer: &str) -> Vec<String> {
    let trimmed = issuer.trim_end_matches('/');
    let openid = format!("{trimmed}/.well-known/openid-configuration");
    // RFC 8414 §3.1: the well-known segment goes between the host and the issuer's path.
    let after_scheme = trimmed.find("://").map_or(0, |i| i + 3);
    let oauth = match trimmed[after_scheme..].find('/') {
        Some(slash) => {
            let (origin, path) = trimmed.split_at(after_scheme + slash);
            format!("{origin}/.well-known/oauth-authorization-server{path}")
        }
        None => format!("{trimmed}/.well-known/oauth-authorization-server"),
    };
    vec![openid, oauth]
}

/// The JWKS URL the issuer's metadata names, from the first metadata URL that serves a
/// usable document; every failure is in the error.
pub async fn jwks_uri(client: &Client, issuer: &str) -> Result<String, String> {
    let mut failures = Vec::new();
    for url in metadata_urls(issuer) {
        match read(client, &url, issuer).await {
            Ok(uri) => return Ok(uri),
            Err(e) => failures.push(format!("{url}: {e}")),
        }
    }
    Err(failures.join("; "))
}

async fn read(client: &Client, url: &str, issuer: &str) -> Result<String, String> {
    let fetched = client
        .get(url, "application/json")
        .await
        .map_err(|e: FetchError| crate::error::chain(&e))?;
    jwks_uri_of(&fetched.body, issuer)
}

/// The `jwks_uri` of a metadata document, once it names `issuer` and the URL is one regate
/// fetches from.
pub fn jwks_uri_of(document: &[u8], issuer: &str) -> Result<String, String> {
    let doc: serde_json::Value =
        serde_json::from_slice(document).map_err(|_| "the metadata is not JSON".to_string())?;
    match doc["issuer"].as_str() {
        Some(named) if named == issuer => {}
        Some(named) => {
            return Err(format!(
                "the metadata names issuer {named:?}, not {issuer:?}"
            ))
        }
        None => return Err("the metadata names no issuer".into()),
    }
    let uri = doc["jwks_uri"]
        .as_str()
        .ok_or("the metadata has no jwks_uri")?;
    fetch::check_url(uri)?;
    Ok(uri.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_looked_for_where_both_specifications_put_it() {
        assert_eq!(
            metadata_urls("https://idp.example.org"),
            [
                "https://idp.example.org/.well-known/openid-configuration",
                "https://idp.example.org/.well-known/oauth-authorization-server",
            ]
        );
        assert_eq!(
            metadata_urls("https://idp.example.org/tenant1/"),
            [
                "https://idp.example.org/tenant1/.well-known/openid-configuration",
                "https://idp.example.org/.well-known/oauth-authorization-server/tenant1",
            ]
        );
    }

    #[test]
    fn metadata_for_another_issuer_is_not_taken() {
        let doc = |iss: &str, jwks: &str| {
            serde_json::json!({"issuer": iss, "jwks_uri": jwks})
                .to_string()
                .into_bytes()
        };
        let issuer = "https://idp.example.org";
        assert_eq!(
            jwks_uri_of(&doc(issuer, "https://idp.example.org/keys"), issuer).unwrap(),
            "https://idp.example.org/keys"
        );
        assert!(jwks_uri_of(
            &doc("https://evil.example", "https://evil.example/k"),
            issuer
        )
        .is_err());
        assert!(jwks_uri_of(&doc(issuer, "http://idp.example.org/keys"), issuer).is_err());
        assert!(jwks_uri_of(b"{\"issuer\": \"https://idp.example.org\"}", issuer).is_err());
        assert!(jwks_uri_of(b"<html>", issuer).is_err());
    }
}
