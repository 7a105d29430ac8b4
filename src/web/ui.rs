//! The page: `GET /` and its assets under `/ui/`, embedded in the binary at build time. Our own
//! files are `src/web/ui/{index.html,app.js,app.css}`; the libraries (xterm.js and its fit addon)
//! come from the npm registry, pinned by `src/web/ui/package-lock.json`, installed by `npm ci` and
//! copied by `build.rs` — nothing is fetched at run time, so the page works on an offline device.
//! Every response of cml-web carries the security headers of [`security_headers`].

use actix_web::{HttpResponse, http::header, middleware::DefaultHeaders, web};

/// One embedded file: the path it is served at, its media type, its bytes.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! vendor {
    ($name:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/ui-vendor/", $name))
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

static ASSETS: [Asset; 6] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("ui/index.html"),
    },
    Asset {
        path: "/ui/app.js",
        content_type: JS,
        body: include_bytes!("ui/app.js"),
    },
    Asset {
        path: "/ui/app.css",
        content_type: CSS,
        body: include_bytes!("ui/app.css"),
    },
    Asset {
        path: "/ui/vendor/xterm.js",
        content_type: JS,
        body: vendor!("xterm.js"),
    },
    Asset {
        path: "/ui/vendor/xterm.css",
        content_type: CSS,
        body: vendor!("xterm.css"),
    },
    Asset {
        path: "/ui/vendor/addon-fit.js",
        content_type: JS,
        body: vendor!("addon-fit.js"),
    },
];

/// The page's routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    for asset in &ASSETS {
        cfg.route(
            asset.path,
            web::get().to(move || async move {
                HttpResponse::Ok()
                    .content_type(asset.content_type)
                    // Revalidated on each load: a new cml-web build serves new files at once.
                    .insert_header((header::CACHE_CONTROL, "no-cache"))
                    .body(asset.body)
            }),
        );
    }
}

/// The Content-Security-Policy: only our own scripts, styles and connections (the API, its event
/// stream and the terminal's WebSocket). `style-src 'unsafe-inline'` because xterm.js's DOM
/// renderer writes a `<style>` element for its theme; no inline script is allowed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                       connect-src 'self'; img-src 'self' data:; font-src 'self'; base-uri 'none'; \
                       form-action 'self'; frame-ancestors 'none'";

/// Headers on every response: the CSP, no MIME sniffing, no framing, no referrer.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add((header::CONTENT_SECURITY_POLICY, CSP))
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
}
