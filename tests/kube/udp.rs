//! UDP Routes in Kubernetes mode: a DNS-like Service with port 53 over TCP and over UDP, its
//! EndpointSlice ports by protocol; a UDP Route's reference by number reaches the UDP port, a
//! UDP Backend's reference by name too, and their status says so.

use std::time::Duration;

use serde_json::json;
use tokio::net::UdpSocket;

use crate::cluster::{self, Ns, Tidegate, client_for, eventually, install_crds, kubeconfig};

/// A UDP echo that answers `tag:` and the datagram.
async fn tagged_udp_echo(tag: &'static str) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = socket.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = [tag.as_bytes(), b":", &buf[..n]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    port
}

/// What comes back through the gateway's UDP `port` for `data` (within 300 ms).
async fn ask(port: u16, data: &[u8]) -> Option<String> {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(data, ("127.0.0.1", port)).await.ok()?;
    let mut buf = [0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_millis(300), client.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
#[ignore = "needs a kube-apiserver: run scripts/test.sh"]
async fn a_udp_route_reaches_the_udp_port_of_a_service_and_reports_status() {
    let kc = kubeconfig();
    let client = client_for(&kc).await;
    install_crds(&client).await;
    let ns = Ns::create(&client, "udp").await;
    let udp_echo = tagged_udp_echo("udp").await;
    // The TCP port's endpoints: a port where no UDP server is (it must not be chosen).
    let tcp_only = cluster::free_port();
    ns.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns"},
        "spec": {"ports": [
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
        ]},
    }))
    .await;
    let api_version = cluster::endpoint_slice_version(&client).await;
    ns.apply(json!({
        "apiVersion": api_version, "kind": "EndpointSlice",
        "metadata": {"name": "dns-a", "labels": {"kubernetes.io/service-name": "dns"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}],
        "ports": [
            {"name": "dns-tcp", "port": tcp_only, "protocol": "TCP"},
            {"name": "dns", "port": udp_echo, "protocol": "UDP"},
        ],
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Backend",
        "metadata": {"name": "dns-by-name"},
        "spec": {"protocol": "UDP", "service": {"name": "dns", "port": "dns"},
                 "loadBalancer": {"algorithm": "IPHash"}},
    }))
    .await;
    let (by_number, by_name) = (cluster::free_port(), cluster::free_port());
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "by-number"},
        "spec": {"protocol": "UDP", "port": by_number,
                 "backendRefs": [{"kind": "Service", "name": "dns", "port": 53}],
                 "udp": {"idleTimeout": "10s"}},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "by-name"},
        "spec": {"protocol": "UDP", "port": by_name,
                 "backendRefs": [{"name": "dns-by-name"}]},
    }))
    .await;
    ns.apply(json!({
        "apiVersion": "tidegate.dev/v1alpha1", "kind": "Route",
        "metadata": {"name": "on-a-tcp-port"},
        "spec": {"protocol": "UDP", "port": 1,
                 "backendRefs": [{"kind": "Service", "name": "dns", "port": 53}]},
    }))
    .await;
    let ports = format!("--l4-ports=127.0.0.1:{by_number}/udp,127.0.0.1:{by_name}/udp");
    let gw = Tidegate::start(&kc, &ns.name, "udp-0", &["--leader-elect=false", &ports]);
    gw.wait_ready().await;

    for port in [by_number, by_name] {
        let got = eventually(Duration::from_secs(10), "the UDP echo", || ask(port, b"q")).await;
        assert_eq!(got, "udp:q");
    }
    for route in ["by-number", "by-name"] {
        for t in ["Accepted", "ResolvedRefs", "Programmed"] {
            ns.wait_condition("Route", route, t, "True").await;
        }
    }
    let (reason, message) = ns
        .wait_condition("Route", "on-a-tcp-port", "Accepted", "False")
        .await;
    assert_eq!(reason, "Invalid");
    assert!(
        message.contains("spec.port: 1 is not one of the gateway's UDP ports"),
        "{message}"
    );
}
