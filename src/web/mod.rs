//! `cml-web`: a JSON HTTP API over cmld's control socket (issue #16).
//!
//! cml-web is only a *client* of the daemon: it holds no container state and needs no privileges
//! beyond access to the control socket. Every request that touches containers opens its own
//! connection with the `control` client code ([`crate::client`]) on a blocking thread
//! ([`daemon`]); the event stream keeps one connection per subscriber ([`events`]).
//!
//! Access control ([`auth`]): one operator password, stored as an argon2id PHC hash
//! (`cml-web passwd`); `POST /api/login` opens an in-memory session (cookie `cml_session`), and
//! every state-changing request must carry the session's CSRF token in `X-CSRF-Token`.
//! The HTTP routes and the OpenAPI document are in [`api`]; the terminal WebSockets (`run`,
//! `console`) in [`terminal`]; the page and its embedded assets in [`ui`].

pub mod api;
pub mod auth;
pub mod daemon;
pub mod events;
pub mod metrics;
pub mod terminal;
pub mod ui;

use std::{
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use actix_web::{App, HttpServer, web};

/// Why cml-web failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The `--listen` value is neither `HOST:PORT` nor `unix:/path`.
    #[error("invalid listen address {0:?} (expected IP:PORT or unix:/path)")]
    Listen(String),
    /// The password file cannot be read.
    #[error("cannot read the password file {}", path.display())]
    ReadPasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The password file does not hold an argon2 PHC hash.
    #[error("the password file {} does not hold a password hash (create it with `cml-web passwd`)", path.display())]
    BadPasswordFile {
        /// The file.
        path: PathBuf,
    },
    /// The password file cannot be written.
    #[error("cannot write the password file {}", path.display())]
    WritePasswordFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The password cannot be read from stdin.
    #[error("cannot read the password")]
    ReadPassword(#[source] crate::client::ClientError),
    /// The two entries of a new password differ.
    #[error("the passwords do not match")]
    PasswordMismatch,
    /// An empty password was given.
    #[error("the password must not be empty")]
    EmptyPassword,
    /// Hashing failed (no randomness, bad parameters).
    #[error("cannot hash the password: {0}")]
    Hash(String),
    /// The metrics token file cannot be read.
    #[error("cannot read the metrics token file {}", path.display())]
    ReadTokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The metrics token file holds no token.
    #[error("the metrics token file {} is empty", path.display())]
    EmptyTokenFile {
        /// The file.
        path: PathBuf,
    },
    /// The HTTP server cannot bind or failed.
    #[error("http server on {addr}")]
    Serve {
        /// The listen address.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Where the HTTP server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A UNIX socket path.
    Unix(PathBuf),
}

impl Listen {
    /// Parses `IP:PORT` or `unix:/path`.
    pub fn parse(s: &str) -> Result<Self, WebError> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(WebError::Listen(s.to_owned()));
            }
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        s.parse()
            .map(Self::Tcp)
            .map_err(|_| WebError::Listen(s.to_owned()))
    }

    /// Whether the session cookie gets the `Secure` attribute. cml-web itself speaks plain HTTP;
    /// on loopback or a UNIX socket the browser (or a local proxy) talks to it directly, and a
    /// `Secure` cookie would not be sent back over `http://127.0.0.1`. On any other address the
    /// operator must put a TLS proxy in front, so the cookie is `Secure`.
    pub fn secure_cookie(&self) -> bool {
        match self {
            Self::Tcp(addr) => !addr.ip().is_loopback(),
            Self::Unix(_) => false,
        }
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// What the server needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// cmld's control socket.
    pub socket: PathBuf,
    /// The listen address.
    pub listen: Listen,
    /// The password file (argon2id PHC hash).
    pub password_file: PathBuf,
    /// A file holding the bearer token that may scrape `/metrics` without a session.
    pub metrics_token_file: Option<PathBuf>,
}

/// Shared state of the handlers.
#[derive(Debug)]
pub struct AppState {
    /// cmld's control socket.
    pub socket: PathBuf,
    /// The password hash and the sessions.
    pub auth: auth::Auth,
    /// The bearer token for `/metrics`, if one was configured.
    pub metrics_token: Option<String>,
}

/// Reads the metrics token (the file's content without surrounding whitespace).
fn read_token_file(path: &Path) -> Result<String, WebError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebError::ReadTokenFile {
        path: path.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(WebError::EmptyTokenFile {
            path: path.to_owned(),
        });
    }
    Ok(token.to_owned())
}

/// Runs the server until it is stopped (SIGINT/SIGTERM).
pub fn serve(config: &Config) -> Result<(), WebError> {
    let hash = auth::read_password_file(&config.password_file)?;
    let metrics_token = config
        .metrics_token_file
        .as_deref()
        .map(read_token_file)
        .transpose()?;
    let state = web::Data::from(Arc::new(AppState {
        socket: config.socket.clone(),
        auth: auth::Auth::new(hash, config.listen.secure_cookie()),
        metrics_token,
    }));
    let listen = config.listen.clone();
    let serve_err = |source| WebError::Serve {
        addr: listen.to_string(),
        source,
    };
    actix_web::rt::System::new().block_on(async {
        let server = HttpServer::new(move || {
            App::new()
                .wrap(ui::security_headers())
                .wrap(actix_web::middleware::from_fn(count_http_request))
                .app_data(state.clone())
                .configure(ui::routes)
                .configure(terminal::routes)
                .configure(api::routes)
        });
        let server = match &listen {
            Listen::Tcp(addr) => server.bind(addr),
            Listen::Unix(path) => {
                remove_stale_socket(path);
                server.bind_uds(path)
            }
        }
        .map_err(serve_err)?;
        tracing::info!(listen = %listen, socket = %config.socket.display(), "cml-web serving");
        server.run().await.map_err(serve_err)
    })
}

/// Counts every answered request in the metrics (method and status).
async fn count_http_request(
    req: actix_web::dev::ServiceRequest,
    next: actix_web::middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    let method = req.method().clone();
    let res = next.call(req).await?;
    metrics::global().http_request(method.as_str(), res.status().as_u16());
    Ok(res)
}

/// Removes a socket file left by an earlier run (binding would fail with EADDRINUSE).
fn remove_stale_socket(path: &Path) {
    use std::os::unix::fs::FileTypeExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        let _ = std::fs::remove_file(path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_decide_the_secure_flag() {
        assert_eq!(
            Listen::parse("unix:/run/w.sock").ok(),
            Some(Listen::Unix("/run/w.sock".into()))
        );
        assert!(Listen::parse("unix:").is_err());
        assert!(Listen::parse("localhost").is_err());
        assert!(Listen::parse("127.0.0.1:8086").is_ok_and(|l| !l.secure_cookie()));
        assert!(Listen::parse("[::1]:1").is_ok_and(|l| !l.secure_cookie()));
        assert!(Listen::parse("0.0.0.0:8086").is_ok_and(|l| l.secure_cookie()));
    }
}
