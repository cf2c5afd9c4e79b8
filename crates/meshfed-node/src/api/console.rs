//! The web console: a page and its scripts and style, embedded in the binary and served on the
//! API's address at `/` (no build step, nothing fetched from elsewhere). It is the router's
//! fallback, outside `/v1` and outside the API document: every path the API does not route is
//! looked up here, and anything but a console asset is a 404 with an empty body, as before.
//!
//! The console holds no authority of its own: the page asks for a token (the admin token, or a
//! component token with the admin role), keeps it in the tab's `sessionStorage` and sends it as
//! a bearer token on each `/v1` call, which the API's guard checks as for any client. Every
//! answer here carries a strict Content-Security-Policy (only this origin's scripts, styles and
//! API; no inline code, no frames, no forms posted anywhere), and the scripts build the page
//! with `textContent` and `createElement` only, so that no string a peer chose (a mesh id, a
//! refusal reason) is ever read as HTML.

use axum::http::{HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

/// The policy every console answer carries.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
     form-action 'none'";

/// One embedded file: where it is served, its media type, its bytes.
struct Asset {
    path: &'static str,
    media_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $media_type:expr) => {
        Asset {
            path: $path,
            media_type: $media_type,
            body: include_bytes!(concat!("../../console/", $file)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of the console.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/console/style.css", "style.css", "text/css; charset=utf-8"),
    asset!("/console/favicon.svg", "favicon.svg", "image/svg+xml"),
    asset!("/console/app.js", "app.js", JS),
    asset!("/console/api.js", "api.js", JS),
    asset!("/console/dom.js", "dom.js", JS),
    asset!("/console/overview.js", "overview.js", JS),
    asset!("/console/topology.js", "topology.js", JS),
    asset!("/console/plot.js", "plot.js", JS),
    asset!("/console/live.js", "live.js", JS),
    asset!("/console/federation.js", "federation.js", JS),
    asset!("/console/invitations.js", "invitations.js", JS),
    asset!("/console/policy.js", "policy.js", JS),
    asset!("/console/audit.js", "audit.js", JS),
];

/// The router's fallback: a console asset for `GET` or `HEAD` of its path, 405 for another
/// method on it, and an empty 404 for any other path.
pub(super) async fn fallback(method: Method, uri: Uri) -> Response {
    let path = match uri.path() {
        "/index.html" => "/",
        p => p,
    };
    let Some(asset) = ASSETS.iter().find(|a| a.path == path) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = StatusCode::METHOD_NOT_ALLOWED.into_response();
        let headers = response.headers_mut();
        headers.insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        secure(headers);
        return response;
    }
    let mut response = asset.body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.media_type),
    );
    // Always asked again: a console is never older than the node serving it.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    secure(headers);
    response
}

/// The headers every console answer carries.
fn secure(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(method: Method, path: &str) -> Response {
        fallback(method, path.parse().expect("a path")).await
    }

    #[tokio::test]
    async fn every_asset_is_served_with_its_type_and_the_security_headers() {
        for asset in ASSETS {
            let response = get(Method::GET, asset.path).await;
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.path);
            let h = response.headers();
            assert_eq!(h[header::CONTENT_TYPE], asset.media_type);
            assert_eq!(h[header::CONTENT_SECURITY_POLICY], CONTENT_SECURITY_POLICY);
            assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
            assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
        }
    }

    #[tokio::test]
    async fn other_paths_are_an_empty_404_and_other_methods_a_405() {
        let response = get(Method::GET, "/console/missing.js").await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let response = get(Method::POST, "/").await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
    }

    /// The policy forbids inline code: no page may carry any, nor build HTML from strings.
    #[test]
    fn no_asset_has_inline_code_or_builds_html_from_strings() {
        for asset in ASSETS {
            let text = String::from_utf8_lossy(asset.body);
            for banned in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                "new Function",
                "setAttribute(\"style",
            ] {
                assert!(!text.contains(banned), "{} contains {banned}", asset.path);
            }
            if asset.path == "/" {
                for banned in ["<script>", "<style", " style=", "onclick=", "onload="] {
                    assert!(!text.contains(banned), "the page contains {banned}");
                }
            }
        }
    }

    /// Every script the console imports is one it serves.
    #[test]
    fn every_imported_module_is_embedded() {
        for asset in ASSETS.iter().filter(|a| a.media_type == JS) {
            let text = String::from_utf8_lossy(asset.body);
            for line in text.lines().filter(|l| l.starts_with("import ")) {
                let Some((_, rest)) = line.split_once("from \"./") else {
                    panic!("{}: an import not from this folder: {line}", asset.path);
                };
                let file = rest.split('"').next().unwrap_or_default();
                let path = format!("/console/{file}");
                assert!(
                    ASSETS.iter().any(|a| a.path == path),
                    "{} imports {path}, which is not embedded",
                    asset.path
                );
            }
        }
    }
}
