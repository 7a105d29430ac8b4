//! The HTTP routes, their errors and the OpenAPI document (derived with utoipa from the handlers
//! and types here and in the submodules: [`containers`], [`guestos`], [`device`], [`metrics`]).
//!
//! Errors are always JSON `{"error": "..."}`. Statuses: 400 bad input (JSON, base64, a container
//! id or GuestOS name, a missing confirmation), 401 no or expired session or wrong password,
//! 403 missing or wrong CSRF token and a wrong PIN (`*_PASSWD_WRONG`, a failed PIN change: the
//! daemon's message) or a token locked till reboot, 404 unknown container or route, 409 any other
//! refusal by the daemon (e.g. starting a running container, any command a provisioned device
//! does not serve), 413 body over [`BODY_LIMIT`] ([`UPLOAD_LIMIT`] for config and certificate
//! uploads), 422 a SOFT container started or stopped without a PIN, 502 cmld unreachable or
//! speaking nonsense.

pub mod containers;
pub mod device;
pub mod guestos;
pub mod metrics;

use std::time::Duration;

use actix_web::{
    FromRequest, HttpRequest, HttpResponse, ResponseError,
    dev::Payload,
    http::{Method, StatusCode, header},
    web::{self, Bytes},
};
use futures::future::{Ready, ready};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{OpenApi, ToSchema};

use super::{AppState, auth, daemon::ContainerView, events};
use crate::client::ClientError;

/// Request bodies larger than this are refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The limit for uploads (container and GuestOS configs with signature and certificate, CA and
/// device certificates). Images are never uploaded: cmld fetches them itself.
pub const UPLOAD_LIMIT: usize = 1024 * 1024;
/// How long a failed login waits before it answers (and holds off the next attempt).
const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// The longest container id or GuestOS name accepted.
const MAX_ID_LEN: usize = 128;

/// The routes (and the body limits) for an `App`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let upload = || web::PayloadConfig::new(UPLOAD_LIMIT);
    cfg.app_data(web::PayloadConfig::new(BODY_LIMIT))
        .route("/api/openapi.json", web::get().to(openapi))
        .route("/api/login", web::post().to(login))
        .route("/api/logout", web::post().to(logout))
        .route("/api/session", web::get().to(session))
        .service(
            web::resource("/api/containers")
                .app_data(upload())
                .route(web::get().to(containers::list))
                .route(web::post().to(containers::create)),
        )
        .route("/api/containers/{id}", web::get().to(containers::get))
        .route("/api/containers/{id}", web::delete().to(containers::remove))
        .route("/api/containers/{id}/start", web::post().to(containers::start))
        .route("/api/containers/{id}/stop", web::post().to(containers::stop))
        .route("/api/containers/{id}/freeze", web::post().to(containers::freeze))
        .route(
            "/api/containers/{id}/unfreeze",
            web::post().to(containers::unfreeze),
        )
        .route(
            "/api/containers/{id}/change_pin",
            web::post().to(containers::change_pin),
        )
        .route("/api/containers/{id}/wipe", web::post().to(containers::wipe))
        .route("/api/containers/{id}/logs", web::get().to(containers::logs))
        .service(
            web::resource("/api/containers/{id}/config")
                .app_data(upload())
                .route(web::get().to(containers::config))
                .route(web::put().to(containers::update_config)),
        )
        .service(
            web::resource("/api/guestos")
                .app_data(upload())
                .route(web::get().to(guestos::list))
                .route(web::post().to(guestos::push)),
        )
        .route("/api/guestos/{name}", web::delete().to(guestos::remove))
        .service(
            web::resource("/api/cas")
                .app_data(upload())
                .route(web::post().to(guestos::ca_register)),
        )
        .route("/api/device", web::get().to(device::get))
        .route("/api/device/csr", web::get().to(device::csr))
        .service(
            web::resource("/api/device/cert")
                .app_data(upload())
                .route(web::post().to(device::cert)),
        )
        .route("/api/device/provisioned", web::post().to(device::provisioned))
        .route("/api/events", web::get().to(events))
        .route("/metrics", web::get().to(metrics::metrics))
        .default_service(web::to(|| async {
            Err::<HttpResponse, _>(ApiError::new(StatusCode::NOT_FOUND, "no such route"))
        }));
}

/// An error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong (the daemon's own message where it gave one).
    pub error: String,
}

/// An error with its HTTP status.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(ErrorBody {
            error: self.message.clone(),
        })
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> Self {
        let status = match &e {
            ClientError::Daemon { reply, message }
                if reply.ends_with("_PASSWD_WRONG")
                    || reply.contains("LOCKED")
                    || (reply == "CONTAINER_CHANGE_PIN_FAILED"
                        && message.as_deref().is_some_and(|m| m.contains("wrong pin"))) =>
            {
                StatusCode::FORBIDDEN
            }
            ClientError::Daemon { .. } => StatusCode::CONFLICT,
            ClientError::NoSuchContainer(_) => StatusCode::NOT_FOUND,
            ClientError::ReadPin(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ClientError::Connect { .. }
            | ClientError::Send(_)
            | ClientError::Receive(_)
            | ClientError::Closed
            | ClientError::Decode(_)
            | ClientError::UnexpectedReply { .. } => StatusCode::BAD_GATEWAY,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        if status.is_server_error() {
            tracing::warn!(error = %e.report(), "request to cmld failed");
        }
        let message = match &e {
            // The daemon's message as it is; the other errors with their causes.
            ClientError::Daemon { .. } => e.to_string(),
            other => other.report(),
        };
        Self::new(status, message)
    }
}

/// A JSON body (bounded by the route's limit); an empty body is `None`.
fn parse_body<T: DeserializeOwned>(body: Result<Bytes, actix_web::Error>) -> Result<Option<T>, ApiError> {
    let body = body.map_err(|e| {
        let status = e.as_response_error().status_code();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                status,
                format!(
                    "request body too large (the limit is {BODY_LIMIT} bytes, {UPLOAD_LIMIT} for uploads)"
                ),
            )
        } else {
            ApiError::new(status, format!("cannot read the request body: {e}"))
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// A JSON body that must be there; `shape` tells the client what is expected.
fn require_body<T: DeserializeOwned>(
    body: Result<Bytes, actix_web::Error>,
    shape: &str,
) -> Result<T, ApiError> {
    parse_body(body)?
        .ok_or_else(|| ApiError::new(StatusCode::BAD_REQUEST, format!("the body must be {shape}")))
}

/// Checks a name from the path (a container name or UUID, a GuestOS name): letters, digits,
/// `_`, `-`, `.`, not starting with `.`, so nothing like `..` or `a/b` reaches the daemon or a log
/// line.
fn path_name<'a>(what: &str, id: &'a str) -> Result<&'a str, ApiError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "invalid {what}: letters, digits, '_', '-', '.' (not starting with '.'), at most {MAX_ID_LEN}"
            ),
        ))
    }
}

/// Checks a container id (name or UUID) from the path (see [`path_name`]).
pub(super) fn container_id(id: &str) -> Result<&str, ApiError> {
    path_name("container id (a name or UUID)", id)
}

/// Decodes a base64 field (standard alphabet, padded; whitespace is ignored).
fn base64(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Ok(Vec::new());
    }
    openssl::base64::decode_block(&compact)
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, format!("{field} is not valid base64")))
}

/// Runs a blocking daemon call off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ClientError> + Send + 'static,
) -> Result<T, ApiError> {
    web::block(f)
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "the worker thread failed"))?
        .map_err(ApiError::from)
}

fn session_cookie(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == auth::COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// A request with a live session; for methods other than GET/HEAD also with the right CSRF
/// token. As an extractor it answers 401 (no session) or 403 (CSRF) itself.
#[derive(Debug)]
pub struct Authed {
    pub(super) token: String,
    pub(super) csrf: String,
}

impl FromRequest for Authed {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(authenticate(req))
    }
}

fn authenticate(req: &HttpRequest) -> Result<Authed, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no state"))?;
    let unauthorized = || ApiError::new(StatusCode::UNAUTHORIZED, "not logged in");
    let token = session_cookie(req).ok_or_else(unauthorized)?;
    let csrf = state.auth.touch(&token).ok_or_else(unauthorized)?;
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let sent = req
            .headers()
            .get(auth::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::tokens_equal(sent, &csrf) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("missing or wrong {} header", auth::CSRF_HEADER),
            ));
        }
    }
    Ok(Authed { token, csrf })
}

/// `POST /api/login`. No `Debug`: the password must not end up in a log line by accident.
#[derive(Deserialize, ToSchema)]
pub struct LoginRequest {
    /// The operator password.
    pub password: String,
}

/// The session's CSRF token, to be sent in `X-CSRF-Token` on POST/PUT/DELETE.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionInfo {
    /// The CSRF token.
    pub csrf_token: String,
}

/// Checks the password and opens a session (sets the `cml_session` cookie).
#[utoipa::path(post, path = "/api/login", request_body = LoginRequest,
    responses((status = 200, description = "Logged in; the cookie is set", body = SessionInfo),
              (status = 400, body = ErrorBody), (status = 401, description = "Wrong password", body = ErrorBody)))]
async fn login(
    state: web::Data<AppState>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let request: LoginRequest = parse_body(body)?.ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "the body must be {\"password\": \"...\"}",
        )
    })?;
    let hash = state.auth.hash().to_owned();
    let ok = web::block(move || auth::verify_password(&hash, &request.password))
        .await
        .unwrap_or(false);
    if !ok {
        // One failure at a time, each held for a second: slows guessing without locking out.
        let _guard = state.auth.failed_login.lock().await;
        tracing::warn!("failed login");
        actix_web::rt::time::sleep(FAILED_LOGIN_DELAY).await;
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "wrong password"));
    }
    let new = state
        .auth
        .open()
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "no randomness for a session"))?;
    tracing::info!("login");
    Ok(HttpResponse::Ok()
        .insert_header((header::SET_COOKIE, state.auth.cookie(&new.token)))
        .json(SessionInfo { csrf_token: new.csrf }))
}

/// Ends the session.
#[utoipa::path(post, path = "/api/logout",
    responses((status = 204, description = "Logged out"), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn logout(state: web::Data<AppState>, authed: Authed) -> HttpResponse {
    state.auth.close(&authed.token);
    HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, state.auth.removal_cookie()))
        .finish()
}

/// The session's CSRF token (for a page loaded after login).
#[utoipa::path(get, path = "/api/session",
    responses((status = 200, body = SessionInfo), (status = 401, body = ErrorBody)))]
async fn session(authed: Authed) -> web::Json<SessionInfo> {
    web::Json(SessionInfo {
        csrf_token: authed.csrf,
    })
}

/// Container state changes as Server-Sent Events: one `data:` JSON object
/// (`{"time","name","uuid","state"}`) per event.
#[utoipa::path(get, path = "/api/events",
    responses((status = 200, description = "An event stream", content_type = "text/event-stream", body = String),
              (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn events(state: web::Data<AppState>, authed: Authed) -> Result<HttpResponse, ApiError> {
    let stream = events::subscribe(state.into_inner(), authed.token).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .streaming(stream))
}

/// The OpenAPI document of this API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cml-web",
        description = "JSON API of the cml container manager (a client of cmld's control socket)"
    ),
    paths(
        login,
        logout,
        session,
        events,
        containers::list,
        containers::get,
        containers::create,
        containers::remove,
        containers::start,
        containers::stop,
        containers::freeze,
        containers::unfreeze,
        containers::change_pin,
        containers::wipe,
        containers::logs,
        containers::config,
        containers::update_config,
        guestos::list,
        guestos::push,
        guestos::remove,
        guestos::ca_register,
        device::get,
        device::csr,
        device::cert,
        device::provisioned,
        metrics::metrics
    ),
    components(schemas(
        ErrorBody,
        LoginRequest,
        SessionInfo,
        ContainerView,
        containers::PinRequest,
        containers::ChangePinRequest,
        containers::ContainerList,
        containers::ConfigUpload,
        containers::ConfigText,
        guestos::GuestOsList,
        guestos::GuestOsUpload,
        guestos::CertificateUpload,
        crate::web::daemon::GuestOsView,
        device::DeviceInfo,
        device::Confirm,
        device::Message,
        crate::web::daemon::DeviceStatsView
    ))
)]
pub struct ApiDoc;

/// `GET /api/openapi.json` (no session needed).
async fn openapi() -> HttpResponse {
    HttpResponse::Ok().content_type("application/json").body(
        ApiDoc::openapi()
            .merge_from(super::terminal::TerminalDoc::openapi())
            .to_json()
            .unwrap_or_else(|_| "{}".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_refuse_path_tricks() {
        for good in ["web", "a.b", "x_1-2", "6f1b2c8e-3a4d-4e5f-8a9b-0c1d2e3f4a5b"] {
            assert!(container_id(good).is_ok(), "{good}");
        }
        for bad in [
            "", ".", "..", "../etc", "a/b", "..%2Fetc", ".hidden", "a b", "a\nb",
        ] {
            assert!(container_id(bad).is_err(), "{bad:?}");
        }
        assert!(container_id(&"a".repeat(MAX_ID_LEN + 1)).is_err());
    }

    #[test]
    fn the_openapi_document_lists_the_routes() {
        let doc = ApiDoc::openapi().to_json().unwrap_or_default();
        for path in [
            "/api/login",
            "/api/containers/{id}/start",
            "/api/events",
            "/api/device",
            "/api/guestos/{name}",
            "/metrics",
        ] {
            assert!(doc.contains(path), "{path}");
        }
    }
}
