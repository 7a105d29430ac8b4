//! `/api/containers…`: list, state, lifecycle actions, PIN change, create, config, remove, wipe
//! and console logs.

use actix_web::{
    HttpRequest, HttpResponse,
    http::StatusCode,
    web::{self, Bytes},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Authed, ErrorBody, base64, blocking, container_id, parse_body, require_body};
use crate::web::{
    AppState,
    daemon::{self, Action, ContainerView, Upload},
};

/// The most console lines `logs?tail=` asks the daemon for.
const MAX_TAIL: u32 = 100_000;

/// An optional PIN for start and stop. No `Debug`: a PIN must not end up in a log line.
#[derive(Default, Deserialize, ToSchema)]
pub struct PinRequest {
    /// The token PIN of a SOFT container.
    pub pin: Option<String>,
}

/// `POST /api/containers/{id}/change_pin`. No `Debug`, like [`PinRequest`].
#[derive(Deserialize, ToSchema)]
pub struct ChangePinRequest {
    /// The current token PIN.
    pub pin: String,
    /// The new one.
    pub new_pin: String,
}

/// `GET /api/containers`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ContainerList {
    /// All containers.
    pub containers: Vec<ContainerView>,
}

/// A container config to create a container from or to store for one.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ConfigUpload {
    /// The config, protobuf text (as `control create` reads it from a file).
    pub config: String,
    /// Its signature, base64 (needed where the device requires signed configs).
    pub signature: Option<String>,
    /// The signer's certificate, PEM (used only with a signature).
    pub certificate: Option<String>,
}

impl ConfigUpload {
    fn decode(self) -> Result<Upload, ApiError> {
        Ok(Upload {
            config: self.config.into_bytes(),
            signature: self
                .signature
                .filter(|s| !s.trim().is_empty())
                .map(|s| base64("signature", &s))
                .transpose()?,
            certificate: self
                .certificate
                .filter(|c| !c.trim().is_empty())
                .map(String::into_bytes),
        })
    }
}

const CONFIG_SHAPE: &str = "{\"config\": \"...\", \"signature\"?: \"<base64>\", \"certificate\"?: \"<PEM>\"}";

/// `GET /api/containers/{id}/config`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConfigText {
    /// The stored config as protobuf text (as `control config` prints it).
    pub config: String,
}

/// `?tail=N` of the logs route.
#[derive(Debug, Deserialize)]
struct LogsQuery {
    tail: Option<u32>,
}

/// All containers.
#[utoipa::path(get, path = "/api/containers",
    responses((status = 200, body = ContainerList), (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, _authed: Authed) -> Result<web::Json<ContainerList>, ApiError> {
    let socket = state.socket.clone();
    let containers = blocking(move || daemon::list(&socket)).await?;
    Ok(web::Json(ContainerList { containers }))
}

/// One container by name or UUID.
#[utoipa::path(get, path = "/api/containers/{id}", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 200, body = ContainerView), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn get(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
) -> Result<web::Json<ContainerView>, ApiError> {
    let id = container_id(&id)?.to_owned();
    let socket = state.socket.clone();
    Ok(web::Json(blocking(move || daemon::get(&socket, &id)).await?))
}

async fn act(
    state: &AppState,
    id: &str,
    action: Action,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    let id = container_id(id)?.to_owned();
    let pin = match action {
        Action::Start | Action::Stop => parse_body::<PinRequest>(body)?.unwrap_or_default().pin,
        // No body expected; still refuse junk rather than ignore it.
        Action::Freeze | Action::Unfreeze => parse_body::<serde_json::Value>(body).map(|_| None)?,
    };
    tracing::info!(container = %id, ?action, "container action");
    let socket = state.socket.clone();
    Ok(web::Json(
        blocking(move || daemon::act(&socket, &id, action, pin)).await?,
    ))
}

/// Starts a container; a SOFT container needs `{"pin": "..."}`.
#[utoipa::path(post, path = "/api/containers/{id}/start", params(("id" = String, Path, description = "Name or UUID")),
    request_body(content = PinRequest, description = "The PIN of a SOFT container"),
    responses((status = 200, description = "Started; the status afterwards", body = ContainerView),
              (status = 403, description = "Wrong PIN, token locked, or missing CSRF token", body = ErrorBody),
              (status = 409, description = "Refused by the daemon", body = ErrorBody),
              (status = 422, description = "A PIN is needed", body = ErrorBody)))]
pub async fn start(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    act(&state, &id, Action::Start, body).await
}

/// Stops a container; a SOFT container needs `{"pin": "..."}`.
#[utoipa::path(post, path = "/api/containers/{id}/stop", params(("id" = String, Path, description = "Name or UUID")),
    request_body(content = PinRequest, description = "The PIN of a SOFT container"),
    responses((status = 200, description = "Stopped; the status afterwards", body = ContainerView),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    act(&state, &id, Action::Stop, body).await
}

/// Freezes a running container.
#[utoipa::path(post, path = "/api/containers/{id}/freeze", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 200, body = ContainerView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn freeze(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    act(&state, &id, Action::Freeze, body).await
}

/// Thaws a frozen container.
#[utoipa::path(post, path = "/api/containers/{id}/unfreeze", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 200, body = ContainerView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn unfreeze(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    act(&state, &id, Action::Unfreeze, body).await
}

/// Changes the token PIN (the device's softtoken, shared by every SOFT container).
#[utoipa::path(post, path = "/api/containers/{id}/change_pin", params(("id" = String, Path, description = "Name or UUID")),
    request_body = ChangePinRequest,
    responses((status = 204, description = "Changed"), (status = 400, body = ErrorBody),
              (status = 403, description = "Wrong PIN (the daemon's message), token locked, or missing CSRF token", body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn change_pin(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let id = container_id(&id)?.to_owned();
    let request: ChangePinRequest = require_body(body, "{\"pin\": \"...\", \"new_pin\": \"...\"}")?;
    if request.new_pin.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the new PIN must not be empty",
        ));
    }
    tracing::info!(container = %id, "change PIN");
    let socket = state.socket.clone();
    blocking(move || daemon::change_pin(&socket, &id, request.pin, request.new_pin)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Creates a container from a config (signed where the device requires it).
#[utoipa::path(post, path = "/api/containers", request_body = ConfigUpload,
    responses((status = 201, description = "Created", body = ContainerView), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, description = "Refused by the daemon (invalid config, name taken…)", body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn create(
    state: web::Data<AppState>,
    _authed: Authed,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let upload = require_body::<ConfigUpload>(body, CONFIG_SHAPE)?.decode()?;
    let socket = state.socket.clone();
    let view = blocking(move || daemon::create(&socket, upload)).await?;
    tracing::info!(container = %view.uuid, name = %view.name, "created");
    Ok(HttpResponse::Created().json(view))
}

/// A container's stored config as protobuf text.
#[utoipa::path(get, path = "/api/containers/{id}/config", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 200, body = ConfigText), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn config(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
) -> Result<web::Json<ConfigText>, ApiError> {
    let id = container_id(&id)?.to_owned();
    let socket = state.socket.clone();
    let config = blocking(move || daemon::config(&socket, &id)).await?;
    Ok(web::Json(ConfigText { config }))
}

/// Replaces a container's config (in effect at its next start).
#[utoipa::path(put, path = "/api/containers/{id}/config", params(("id" = String, Path, description = "Name or UUID")),
    request_body = ConfigUpload,
    responses((status = 200, description = "Stored; the status afterwards", body = ContainerView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn update_config(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<ContainerView>, ApiError> {
    let id = container_id(&id)?.to_owned();
    let upload = require_body::<ConfigUpload>(body, CONFIG_SHAPE)?.decode()?;
    tracing::info!(container = %id, "update config");
    let socket = state.socket.clone();
    Ok(web::Json(
        blocking(move || daemon::update_config(&socket, &id, upload)).await?,
    ))
}

/// Removes a container and all its data.
#[utoipa::path(delete, path = "/api/containers/{id}", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn remove(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = container_id(&id)?.to_owned();
    tracing::info!(container = %id, "remove");
    let socket = state.socket.clone();
    blocking(move || daemon::remove(&socket, &id)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Deletes a container's data and key; its config, name and UUID stay.
#[utoipa::path(post, path = "/api/containers/{id}/wipe", params(("id" = String, Path, description = "Name or UUID")),
    responses((status = 200, description = "Wiped; the status afterwards", body = ContainerView),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn wipe(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
) -> Result<web::Json<ContainerView>, ApiError> {
    let id = container_id(&id)?.to_owned();
    tracing::info!(container = %id, "wipe");
    let socket = state.socket.clone();
    Ok(web::Json(blocking(move || daemon::wipe(&socket, &id)).await?))
}

/// What a container's console printed (its last run's when stopped), as `control logs` prints it.
#[utoipa::path(get, path = "/api/containers/{id}/logs",
    params(("id" = String, Path, description = "Name or UUID"),
           ("tail" = Option<u32>, Query, description = "Only the last N lines")),
    responses((status = 200, description = "The captured console output", content_type = "text/plain", body = String),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, description = "No log captured for it, or refused by the daemon", body = ErrorBody)))]
pub async fn logs(
    state: web::Data<AppState>,
    _authed: Authed,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let id = container_id(&id)?.to_owned();
    let query = web::Query::<LogsQuery>::from_query(req.query_string())
        .map_err(|_| ApiError::new(StatusCode::BAD_REQUEST, "tail must be a number of lines"))?;
    let tail = query.tail.map(|n| n.min(MAX_TAIL));
    let socket = state.socket.clone();
    let log = blocking(move || daemon::logs(&socket, &id, tail)).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(log))
}
