//! The controller's HTTP side, started by `serve --http ADDR:PORT --api-token-file FILE`: the
//! JSON API under `/api/v1/` (bearer tokens, `auth`), answered by `routes` over the same store
//! functions as the `--db` commands, and the dashboard (`dashboard`: static files built into
//! the binary, no token needed: the page asks the API with the token it is given). `server`
//! carries the requests, every resource bounded.

pub mod auth;
mod dashboard;
pub mod routes;
pub mod server;

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;

use crate::store::{Location, Store};
use auth::Tokens;
use server::{Request, Response};

/// Requests served at once (each worker holds a database connection).
pub const WORKERS: usize = 4;

/// Where the API listens and who may use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpOptions {
    /// `ADDR:PORT` to listen on (port 0: any free one, logged).
    pub listen: String,
    /// The bearer tokens, one a line, in a file only its owner can read.
    pub token_file: PathBuf,
}

/// Reads the tokens, binds `opts.listen` and serves the API and the dashboard on database
/// `db` from threads of their own; returns the address it listens on.
pub fn start(opts: &HttpOptions, db: Location) -> Result<std::net::SocketAddr, String> {
    let tokens = Arc::new(Tokens::load(&opts.token_file)?);
    let listener =
        TcpListener::bind(&opts.listen).map_err(|e| format!("--http {}: {e}", opts.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    server::run(
        listener,
        WORKERS,
        server::REQUEST_DEADLINE,
        move || Store::open(&db),
        move |store: &mut Store, req: &Request| handle(store, &tokens, req),
    )?;
    Ok(addr)
}

/// One request: the dashboard's files to anyone, the API to a token holder.
pub fn handle(store: &mut Store, tokens: &Tokens, req: &Request) -> Response {
    if let Some(path) = req.path.strip_prefix("/api/v1") {
        if !tokens.allows(req.authorization.as_deref()) {
            let mut r = Response::error(
                401,
                "missing or wrong token: send Authorization: Bearer <token>",
            );
            r.headers.push(("WWW-Authenticate", "Bearer".into()));
            return r;
        }
        return routes::api(store, req, path);
    }
    if req.method == "GET" {
        if let Some(r) = dashboard::asset(&req.path) {
            return r;
        }
    }
    Response::error(404, &format!("no such path {}", req.path))
}
