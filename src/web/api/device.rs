//! `/api/device…`: provisioning state, what the page may offer, disk and memory figures, the
//! device CSR and certificate, and setting the device provisioned.

use actix_web::{
    HttpResponse,
    http::{StatusCode, header},
    web::{self, Bytes},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiError, Authed, ErrorBody, blocking, guestos::CertificateUpload, parse_body, require_body};
use crate::{
    actors::acceptor::allowed_when_provisioned,
    protocol::pb::controller_to_daemon::Command as WireCommand,
    web::{
        AppState,
        daemon::{self, DeviceStatsView},
    },
};

/// The actions the page offers, each with the wire command it needs. What a provisioned device
/// allows is decided once, by the daemon's own policy ([`allowed_when_provisioned`]).
pub const UI_ACTIONS: [(&str, WireCommand); 20] = [
    ("start", WireCommand::ContainerStart),
    ("stop", WireCommand::ContainerStop),
    ("freeze", WireCommand::ContainerFreeze),
    ("unfreeze", WireCommand::ContainerUnfreeze),
    ("run", WireCommand::ContainerExecCmd),
    ("console", WireCommand::ContainerConsole),
    ("logs", WireCommand::ContainerLogs),
    ("config", WireCommand::GetContainerConfig),
    ("update_config", WireCommand::ContainerUpdateConfig),
    ("change_pin", WireCommand::ContainerChangeTokenPin),
    ("wipe", WireCommand::ContainerWipe),
    ("remove", WireCommand::RemoveContainer),
    ("create", WireCommand::CreateContainer),
    ("guestos_list", WireCommand::ListGuestosConfigs),
    ("guestos_push", WireCommand::PushGuestosConfig),
    ("guestos_remove", WireCommand::RemoveGuestos),
    ("ca_register", WireCommand::RegisterNewca),
    ("csr", WireCommand::PullDeviceCsr),
    ("cert_upload", WireCommand::PushDeviceCert),
    ("set_provisioned", WireCommand::SetProvisioned),
];

/// The page's actions the daemon serves in this provisioning state.
pub fn allowed_actions(provisioned: bool) -> Vec<&'static str> {
    UI_ACTIONS
        .iter()
        .filter(|(_, cmd)| !provisioned || allowed_when_provisioned(*cmd))
        .map(|(name, _)| *name)
        .collect()
}

/// `GET /api/device`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceInfo {
    /// Whether the device is provisioned (most management commands are then refused).
    pub provisioned: bool,
    /// Whether cmld runs in hosted mode (true) or device mode (false); absent when the daemon
    /// does not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hosted: Option<bool>,
    /// The page's actions the daemon serves now (`start`, `guestos_push`, …).
    pub allowed: Vec<&'static str>,
    /// Disk and memory figures; `null` where the daemon does not give them (provisioned).
    pub stats: Option<DeviceStatsView>,
}

/// `POST /api/device/provisioned`: the confirmation that this is meant (it cannot be undone).
#[derive(Debug, Deserialize, ToSchema)]
pub struct Confirm {
    /// Must be `true`.
    pub confirm: Option<bool>,
}

/// A success with a message for the user.
#[derive(Debug, Serialize, ToSchema)]
pub struct Message {
    /// What happened.
    pub message: String,
}

/// The provisioning state, what the page may offer, and the device's figures.
#[utoipa::path(get, path = "/api/device",
    responses((status = 200, body = DeviceInfo), (status = 401, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn get(state: web::Data<AppState>, _authed: Authed) -> Result<web::Json<DeviceInfo>, ApiError> {
    let socket = state.socket.clone();
    let device = blocking(move || daemon::device(&socket)).await?;
    Ok(web::Json(DeviceInfo {
        provisioned: device.provisioned,
        hosted: device.hosted,
        allowed: allowed_actions(device.provisioned),
        stats: device.stats,
    }))
}

/// The device's certificate signing request, as a PEM download.
#[utoipa::path(get, path = "/api/device/csr",
    responses((status = 200, description = "The CSR", content_type = "application/x-pem-file", body = String),
              (status = 401, body = ErrorBody),
              (status = 409, description = "Refused (provisioned, no device key)", body = ErrorBody)))]
pub async fn csr(state: web::Data<AppState>, _authed: Authed) -> Result<HttpResponse, ApiError> {
    let socket = state.socket.clone();
    let pem = blocking(move || daemon::csr(&socket)).await?;
    Ok(HttpResponse::Ok()
        .content_type("application/x-pem-file")
        .insert_header((header::CONTENT_DISPOSITION, "attachment; filename=\"device.csr\""))
        .body(pem))
}

/// Installs the device certificate (issued for the CSR).
#[utoipa::path(post, path = "/api/device/cert", request_body = CertificateUpload,
    responses((status = 200, body = Message), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody),
              (status = 409, description = "Refused (not for the device key, not from a registered CA…)", body = ErrorBody),
              (status = 413, body = ErrorBody)))]
pub async fn cert(
    state: web::Data<AppState>,
    _authed: Authed,
    body: Result<Bytes, actix_web::Error>,
) -> Result<web::Json<Message>, ApiError> {
    let upload: CertificateUpload = require_body(body, "{\"certificate\": \"<PEM>\"}")?;
    tracing::info!("install the device certificate");
    let socket = state.socket.clone();
    blocking(move || daemon::push_cert(&socket, upload.certificate.into_bytes())).await?;
    Ok(web::Json(Message {
        message: "The device certificate is installed.".into(),
    }))
}

/// Puts the device into provisioned mode, for good; needs `{"confirm": true}`.
#[utoipa::path(post, path = "/api/device/provisioned", request_body = Confirm,
    responses((status = 204, description = "Provisioned"),
              (status = 400, description = "No confirmation", body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn provisioned(
    state: web::Data<AppState>,
    _authed: Authed,
    body: Result<Bytes, actix_web::Error>,
) -> Result<HttpResponse, ApiError> {
    let confirmed = parse_body::<Confirm>(body)?.and_then(|c| c.confirm) == Some(true);
    if !confirmed {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "setting the device provisioned cannot be undone: send {\"confirm\": true}",
        ));
    }
    tracing::info!("setting the device provisioned");
    let socket = state.socket.clone();
    blocking(move || daemon::set_provisioned(&socket)).await?;
    Ok(HttpResponse::NoContent().finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provisioned_device_offers_only_what_the_daemon_serves() {
        assert_eq!(allowed_actions(false).len(), UI_ACTIONS.len());
        let allowed = allowed_actions(true);
        for a in ["start", "stop", "create", "update_config", "change_pin"] {
            assert!(allowed.contains(&a), "{a}");
        }
        for a in [
            "guestos_push",
            "guestos_list",
            "csr",
            "set_provisioned",
            "logs",
            "run",
        ] {
            assert!(!allowed.contains(&a), "{a}");
        }
    }
}
