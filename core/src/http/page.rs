//! The live status page at `/`: plain HTML, CSS and JavaScript embedded in the binary (no CDN,
//! no framework). The script polls `/status.json` every second and renders each service's
//! locations with a health badge, a load bar (current / capacity), utilisation, report age
//! and recent hand-outs. Each location's row carries `data-host`, `data-port` and
//! `data-health`, so that tests (and scripts) can read the rendered page.

use axum::http::header;
use axum::response::IntoResponse;

/// An embedded file and its content type.
#[derive(Debug, Clone, Copy)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

pub const INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("page/index.html"),
};

pub const SCRIPT: Asset = Asset {
    content_type: "text/javascript; charset=utf-8",
    body: include_str!("page/page.js"),
};

pub const STYLE: Asset = Asset {
    content_type: "text/css; charset=utf-8",
    body: include_str!("page/page.css"),
};

/// The response serving `asset`.
pub fn asset(asset: Asset) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        asset.body,
    )
}
