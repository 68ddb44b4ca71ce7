//! Gateways on either codec, and request bodies to send through them.

use super::*;

/// A gateway routing everything to one upstream (the configuration directory lives with it).
pub(crate) struct Gw {
    pub(crate) gw: tidegate::Gateway,
    pub(crate) _cfg: ConfigDir,
}

impl Gw {
    pub(crate) fn addr(&self) -> SocketAddr {
        self.gw.http_addr()
    }
}

/// YAML routing every request to a backend `up` with this endpoint; `backend_extra` adds
/// lines to the Backend's spec.
pub(crate) fn config_yaml(upstream: SocketAddr, backend_extra: &str) -> String {
    format!(
        "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: up }}\nspec:\n  endpoints: [\"{upstream}\"]\n{backend_extra}---\n\
apiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: r }}\nspec:\n  rules:\n    - backendRefs: [{{ name: up }}]\n"
    )
}

pub(crate) async fn gateway_with(yaml: &str, config: ProxyConfig) -> Gw {
    let cfg = ConfigDir::new();
    cfg.write("all.yaml", yaml);
    let gw = tidegate::Gateway::builder()
        .config_path(cfg.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .admin_addr(None)
        .proxy_config(config)
        .start()
        .await
        .expect("gateway starts");
    Gw { gw, _cfg: cfg }
}

pub(crate) async fn gateway(upstream: SocketAddr, codec: Http1Codec) -> Gw {
    let config = ProxyConfig {
        http1_codec: codec,
        ..Default::default()
    };
    gateway_with(&config_yaml(upstream, ""), config).await
}

/// `n` bytes of a repeating, non-text pattern.
pub(crate) fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// `data` as a chunked body in chunks of `size` bytes.
pub(crate) fn chunked(data: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in data.chunks(size) {
        out.extend(format!("{:x}\r\n", c.len()).bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

pub(crate) fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

pub(crate) async fn native_gateway() -> (Gw, Recorder) {
    let up = Recorder::start().await;
    (gateway(up.addr, Http1Codec::Native).await, up)
}
