//! `/api/guestos…` and `/api/cas`: the installed GuestOS versions, installing one from its signed
//! config (cmld fetches the images itself from its update server), removing one, and registering
//! a CA for GuestOS signatures.

use actix_web::{
    HttpResponse,
    web::{self, Bytes},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Authed, ErrorBody, base64, blocking, path_name, require_body};
use crate::web::{
    AppState,
    daemon::{self, GuestOsView},
};

/// `GET /api/guestos`.
#[derive(Debug, Serialize, ToSchema)]
pub struct GuestOsList {
    /// Every installed version.
    pub guestos: Vec<GuestOsView>,
}

/// `POST /api/guestos`: a signed GuestOS config (not its images).
#[derive(Debug, Deserialize, ToSchema)]
pub struct GuestOsUpload {
    /// The GuestOS config, protobuf text.
    pub config: String,
    /// Its signature, base64.
    pub signature: String,
    /// The signer's certificate, PEM.
    pub certificate: String,
}

/// A certificate upload (`POST /api/cas`, `POST /api/device/cert`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CertificateUpload {
    /// The certificate, PEM.
    pub certificate: String,
}

/// The installed GuestOS versions.
#[utoipa::path(get, path = "/api/guestos",
    responses((status = 200, body = GuestOsList), (status = 401, body = ErrorBody),
              (status = 409, description = "Refused (a provisioned device does not list them)", body = ErrorBody)))]
pub async fn list(state: web::Data<AppState>, _authed: Authed) -> Result<web::Json<GuestOsList>, ApiError> {
    let socket = state.socket.clone();
    let guestos = blocking(move || daemon::guestos_list(&socket)).await?;
    Ok(web::Json(GuestOsList { guestos }))
}

/// Installs a GuestOS from its signed config; cmld downloads and checks the images from its
/// update server before this answers.
#[utoipa::path(post, path = "/api/guestos", request_body = GuestOsUpload,
    responses((status = 204, description = "Installed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 409, description = "Refused by the daemon (signature, version, download; provisioned)", body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn push(
    state: web::Data<AppState>,
    _authed: Authed,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let upload: GuestOsUpload = require_body(
        body,
        "{\"config\": \"...\", \"signature\": \"<base64>\", \"certificate\": \"<PEM>\"}",
    )?;
    let signature = base64("signature", &upload.signature)?;
    tracing::info!("install GuestOS");
    let socket = state.socket.clone();
    blocking(move || {
        daemon::guestos_push(
            &socket,
            upload.config.into_bytes(),
            signature,
            upload.certificate.into_bytes(),
        )
    })
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Removes a GuestOS (all its versions).
#[utoipa::path(delete, path = "/api/guestos/{name}", params(("name" = String, Path, description = "GuestOS name")),
    responses((status = 204, description = "Removed"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, description = "Refused (in use, provisioned…)", body = ErrorBody)))]
pub async fn remove(
    state: web::Data<AppState>,
    _authed: Authed,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let name = path_name("GuestOS name", &name)?.to_owned();
    tracing::info!(guestos = %name, "remove GuestOS");
    let socket = state.socket.clone();
    blocking(move || daemon::guestos_remove(&socket, &name)).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Registers a CA certificate for GuestOS signatures.
#[utoipa::path(post, path = "/api/cas", request_body = CertificateUpload,
    responses((status = 204, description = "Registered"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, description = "Refused (not a CA certificate…)", body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn ca_register(
    state: web::Data<AppState>,
    _authed: Authed,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let upload: CertificateUpload = require_body(body, "{\"certificate\": \"<PEM>\"}")?;
    tracing::info!("register CA");
    let socket = state.socket.clone();
    blocking(move || daemon::ca_register(&socket, upload.certificate.into_bytes())).await?;
    Ok(HttpResponse::NoContent().finish())
}
