//! regate as the OAuth 2.1 resource server in front of an MCP server (`oauth_resource:`;
//! RFC 9728, RFC 8707, MCP authorization 2025-11-25): a request step before admission, and
//! what the other steps need of it.
//!
//! - [`ProtectedResource::answer`], before admission: `GET` of
//!   `/.well-known/oauth-protected-resource` (and of the path-suffixed form RFC 9728 §3.1
//!   builds for a resource with a path, `/.well-known/oauth-protected-resource/mcp`) is
//!   answered by regate itself with the metadata document, without the policy, and
//!   recorded.
//! - [`ProtectedResource::challenge`]: what a 401 (and a 403 for more scope) says in
//!   `WWW-Authenticate` beside its error: `resource_metadata` and `scope`, so an MCP client
//!   can find the authorization server. `proxy::error` writes the header.
//! - [`ProtectedResource::strip_token`], right after admission: the client's bearer token
//!   is not passed upstream (the MCP specification forbids token passthrough) unless
//!   `forward_token`. The policy sees the head the upstream will get, so it sees the verified
//!   token as `input.delegation` and never the raw one, which it could otherwise copy into a
//!   header of its own.
//! - [`step_up`], after the decision: a deny with `required_scope` becomes a 403
//!   `insufficient_scope` challenge (MCP's step-up authorization).
//!
//! The audience check (the token's `aud` must hold the resource) is the verifier's
//! (`crate::delegation`), set up from these settings by the config.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response};

use super::error::ProxyError;
use super::record::Noted;
use super::Body;
use crate::policy::Decision;

/// The `oauth_resource:` section, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The canonical URI of the protected resource (the MCP server): what tokens must name
    /// in `aud`, and what the metadata says.
    pub resource: String,
    /// Issuers of tokens for it (delegation issuers).
    pub authorization_servers: Vec<String>,
    pub scopes_supported: Vec<String>,
    /// Pass the client's bearer token upstream (default: strip it).
    pub forward_token: bool,
}

/// Why `uri` cannot name a protected resource: RFC 9728 §1.2 wants an `https` URL without a
/// fragment; a query would make the well-known URL ambiguous, and an upper-case scheme or
/// host would not be the canonical form clients send as `resource` (MCP authorization).
pub fn check_resource(uri: &str) -> Result<(), String> {
    let parsed: http::Uri = uri.parse().map_err(|_| format!("{uri:?} is not a URI"))?;
    let authority = parsed.authority().map(|a| a.as_str()).unwrap_or_default();
    if parsed.scheme_str() != Some("https") || authority.is_empty() {
        return Err(format!("{uri:?} is not an https URL"));
    }
    if uri.contains('#') || parsed.query().is_some() || authority.contains('@') {
        return Err(format!("{uri:?}: no query, fragment or credentials"));
    }
    if !uri.starts_with("https://") || authority != authority.to_ascii_lowercase() {
        return Err(format!("{uri:?}: write the scheme and host in lower case"));
    }
    Ok(())
}

pub use crate::policy::is_scope_token;

/// A request regate answered itself, and what its record says.
pub struct Answer {
    pub response: Response<Body>,
    pub decision: Decision,
}

/// The well-known prefix of RFC 9728 §3.
const WELL_KNOWN: &str = "/.well-known/oauth-protected-resource";

/// What a `WWW-Authenticate: Bearer` challenge says besides its error code.
#[derive(Debug, Clone, Default)]
pub struct Challenge {
    /// The metadata URL (RFC 9728 §5.1).
    pub resource_metadata: Option<Arc<str>>,
    /// Space-separated scopes to ask the authorization server for.
    pub scope: Option<String>,
}

/// The resource server, ready to answer: the metadata document, its paths, the challenge.
pub struct ProtectedResource {
    settings: Settings,
    /// The paths the document is served at: the root form, and the path-suffixed one when
    /// the resource has a path.
    paths: Vec<String>,
    metadata_url: Arc<str>,
    document: Bytes,
    /// Where the token may be besides `Authorization` (`delegation.header`).
    token_header: Option<HeaderName>,
}

impl ProtectedResource {
    /// Build the document once; `token_header` is the delegation header, if one is set.
    pub fn new(settings: Settings, token_header: Option<HeaderName>) -> ProtectedResource {
        let (origin, path) = split_resource(&settings.resource);
        let suffixed = format!("{WELL_KNOWN}{path}");
        let metadata_url: Arc<str> = format!("{origin}{suffixed}").into();
        let mut paths = vec![WELL_KNOWN.to_string()];
        if suffixed != WELL_KNOWN {
            paths.push(suffixed);
        }
        let document = Bytes::from(document(&settings).to_string());
        ProtectedResource {
            settings,
            paths,
            metadata_url,
            document,
            token_header,
        }
    }

    /// The metadata URL that challenges name.
    pub fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The metadata document, for a `GET` or `HEAD` of one of its paths (the query is not
    /// looked at); `None` for any other request, which goes on to admission.
    pub fn answer(&self, method: &Method, path_and_query: &str) -> Option<Answer> {
        let path = path_and_query.split('?').next().unwrap_or_default();
        let served = (method == Method::GET || method == Method::HEAD)
            && self.paths.iter().any(|p| p == path);
        if !served {
            return None;
        }
        let mut response = Response::new(Body::own(self.document.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // It changes only with regate's configuration.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
        Some(Answer {
            response,
            decision: Decision {
                allowed: true,
                ..Decision::deny("resource_metadata")
            },
        })
    }

    /// The challenge of a 401: where the metadata is, and the scopes it lists.
    pub fn challenge(&self) -> Challenge {
        let scopes = &self.settings.scopes_supported;
        Challenge {
            resource_metadata: Some(self.metadata_url.clone()),
            scope: (!scopes.is_empty()).then(|| scopes.join(" ")),
        }
    }

    /// Remove the client's bearer token from what the upstream receives, unless
    /// `forward_token`: `Authorization` values under the `Bearer` scheme (another scheme is
    /// not this resource's to judge), and the delegation header when one is set.
    pub fn strip_token(&self, headers: &mut HeaderMap) {
        if self.settings.forward_token {
            return;
        }
        if let Some(name) = &self.token_header {
            headers.remove(name);
        }
        let bearer = |v: &http::HeaderValue| crate::delegation::is_bearer(v.as_bytes());
        if !headers.get_all(header::AUTHORIZATION).iter().any(bearer) {
            return;
        }
        let kept: Vec<_> = headers
            .get_all(header::AUTHORIZATION)
            .iter()
            .filter(|v| !crate::delegation::is_bearer(v.as_bytes()))
            .cloned()
            .collect();
        headers.remove(header::AUTHORIZATION);
        for value in kept {
            headers.append(header::AUTHORIZATION, value);
        }
    }
}

/// A deny that asks for more scope: a 403 whose challenge names the scopes the token grants
/// and those the policy requires (MCP's recommended approach, so a client asking again does
/// not lose what it had), and the metadata URL when regate is a protected resource.
pub fn step_up(
    decision: Decision,
    noted: &Noted,
    resource: Option<&ProtectedResource>,
) -> ProxyError {
    let mut scopes: Vec<&str> = noted
        .delegation
        .as_ref()
        .map(|d| d.scope.iter().map(String::as_str).collect())
        .unwrap_or_default();
    for scope in &decision.required_scope {
        if !scopes.contains(&scope.as_str()) {
            scopes.push(scope);
        }
    }
    let challenge = Challenge {
        resource_metadata: resource.map(|r| r.metadata_url.clone()),
        scope: Some(scopes.join(" ")),
    };
    ProxyError::InsufficientScope(Box::new(decision), challenge)
}

/// `https://host[:port]` and the path without its trailing slash (`""` for none).
fn split_resource(resource: &str) -> (&str, &str) {
    let after_scheme = resource.find("://").map_or(0, |i| i + 3);
    match resource[after_scheme..].find('/') {
        Some(slash) => {
            let (origin, path) = resource.split_at(after_scheme + slash);
            (origin, path.trim_end_matches('/'))
        }
        None => (resource, ""),
    }
}

/// The RFC 9728 §2 document. regate checks certificate-bound tokens (RFC 8705) whenever a
/// token carries `cnf.x5t#S256`, and reads tokens from the header only.
fn document(settings: &Settings) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "resource": settings.resource,
        "authorization_servers": settings.authorization_servers,
        "bearer_methods_supported": ["header"],
        "tls_client_certificate_bound_access_tokens": true,
    });
    if !settings.scopes_supported.is_empty() {
        doc["scopes_supported"] = serde_json::json!(settings.scopes_supported);
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(uri: &str) -> ProtectedResource {
        ProtectedResource::new(
            Settings {
                resource: uri.into(),
                authorization_servers: vec!["https://idp.example.org".into()],
                scopes_supported: vec!["tools:read".into(), "tools:call".into()],
                forward_token: false,
            },
            None,
        )
    }

    #[test]
    fn the_metadata_is_at_the_root_and_at_the_path_suffixed_url() {
        let r = resource("https://mcp.example.org/mcp");
        assert_eq!(
            r.metadata_url(),
            "https://mcp.example.org/.well-known/oauth-protected-resource/mcp"
        );
        let get = Method::GET;
        assert!(r
            .answer(&get, "/.well-known/oauth-protected-resource")
            .is_some());
        assert!(r
            .answer(&get, "/.well-known/oauth-protected-resource/mcp?x=1")
            .is_some());
        assert!(r
            .answer(&Method::HEAD, "/.well-known/oauth-protected-resource/mcp")
            .is_some());
        assert!(r
            .answer(&Method::POST, "/.well-known/oauth-protected-resource")
            .is_none());
        assert!(r
            .answer(&get, "/.well-known/oauth-protected-resource/other")
            .is_none());
        assert!(r.answer(&get, "/mcp").is_none());
        let root = resource("https://mcp.example.org");
        assert_eq!(
            root.metadata_url(),
            "https://mcp.example.org/.well-known/oauth-protected-resource"
        );
        assert_eq!(root.paths.len(), 1);
    }

    #[test]
    fn only_bearer_authorization_is_stripped() {
        let r = resource("https://mcp.example.org/mcp");
        let mut headers = HeaderMap::new();
        headers.append(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        headers.append(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        headers.append(header::AUTHORIZATION, "bearer   def".parse().unwrap());
        r.strip_token(&mut headers);
        let left: Vec<_> = headers.get_all(header::AUTHORIZATION).iter().collect();
        assert_eq!(left, ["Basic dXNlcjpwdw=="]);
    }

    #[test]
    fn resources_must_be_canonical_https_urls() {
        assert!(check_resource("https://mcp.example.org/mcp").is_ok());
        assert!(check_resource("https://mcp.example.org:8443").is_ok());
        assert!(check_resource("http://mcp.example.org/mcp").is_err());
        assert!(check_resource("https://MCP.example.org/mcp").is_err());
        assert!(check_resource("https://mcp.example.org/mcp#x").is_err());
        assert!(check_resource("https://mcp.example.org/mcp?x=1").is_err());
        assert!(check_resource("mcp.example.org").is_err());
    }

    #[test]
    fn scopes_are_tokens_that_need_no_escaping() {
        assert!(is_scope_token("tools:call"));
        assert!(!is_scope_token(""));
        assert!(!is_scope_token("two words"));
        assert!(!is_scope_token("quote\""));
        assert!(!is_scope_token("back\\slash"));
    }
}
