//! The dashboard: one page, its script and its style, built into the binary (no file to
//! install, nothing fetched from elsewhere). They hold no data: the script reads the token
//! from the URL fragment (`/#token=...`, which browsers never send) or a login field, keeps it
//! in sessionStorage, and asks the API. The policy headers let the page load only its own
//! files and talk only to this server.

use super::server::Response;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// The file at `path`, if it is one of the dashboard's.
pub fn asset(path: &str) -> Option<Response> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Some(Response {
        status: 200,
        content_type,
        headers: vec![
            (
                "Content-Security-Policy",
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                 img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
                    .into(),
            ),
            ("X-Frame-Options", "DENY".into()),
            ("Cache-Control", "no-cache".into()),
        ],
        body: body.as_bytes().to_vec(),
    })
}
