//! Step 4: the response's hop-by-hop headers go, and a switched connection is handed to a
//! tunnel when both sides agreed on the upgrade.

use http::{Response, StatusCode, header};
use hyper::upgrade::OnUpgrade;

use crate::proxy::request::error::ProxyError;
use crate::proxy::request::headers;
use crate::proxy::request::service::Service;
use crate::proxy::transport::ProxyBody;

pub(super) fn finish(
    service: &Service,
    resp: &mut Response<ProxyBody>,
    client_upgrade: Option<OnUpgrade>,
    upstream_upgrade: Option<OnUpgrade>,
) -> Result<(), ProxyError> {
    let switching = resp.status() == StatusCode::SWITCHING_PROTOCOLS;
    // Only a 101 is looked at for the protocol it switched to (a lookup of the name per
    // response otherwise).
    let upstream_proto = if switching {
        headers::response_headers(resp)
            .get(header::UPGRADE)
            .cloned()
    } else {
        None
    };
    headers::strip_response_hop_by_hop(resp);
    match (switching, client_upgrade, upstream_proto, upstream_upgrade) {
        (true, Some(client_upgrade), Some(proto), Some(upstream_upgrade)) => {
            headers::set_upgrade(headers::response_headers(resp), proto);
            service.tunnels.spawn(client_upgrade, upstream_upgrade);
        }
        (true, ..) => {
            return Err(ProxyError::UpgradeUnsupported(
                "the upstream switched protocols unasked",
            ));
        }
        _ => {}
    }
    Ok(())
}
