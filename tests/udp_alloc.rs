//! A UDP Route's datagrams allocate nothing: a gateway, a UDP echo backend and a client on one
//! thread (a current-thread runtime), with an allocator that counts that thread's allocations,
//! and 2,000 round trips through an established session.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use std::time::Duration;

use tokio::net::UdpSocket;

use counting_alloc::allocations;

async fn round_trip(client: &UdpSocket, port: u16, data: &[u8], buf: &mut [u8]) -> bool {
    client.send_to(data, ("127.0.0.1", port)).await.unwrap();
    match tokio::time::timeout(Duration::from_millis(500), client.recv_from(buf)).await {
        Ok(Ok((n, _))) => &buf[..n] == data,
        _ => false,
    }
}

#[tokio::test(flavor = "current_thread")]
async fn datagrams_through_an_established_session_allocate_nothing() {
    let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let echo_addr = echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = echo.recv_from(&mut buf).await {
            let _ = echo.send_to(&buf[..n], from).await;
        }
    });
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("udp.yaml"),
        format!(
            "apiVersion: tidegate.dev/v1alpha1\nkind: Backend\nmetadata: {{ name: echo }}\nspec:\n  protocol: UDP\n  endpoints: [\"{echo_addr}\"]\n---\napiVersion: tidegate.dev/v1alpha1\nkind: Route\nmetadata: {{ name: echo }}\nspec:\n  protocol: UDP\n  port: {port}\n  backendRefs: [{{ name: echo }}]\n  udp: {{ replyTimeout: 5s }}\n"
        ),
    )
    .unwrap();
    let gw = tidegate::Gateway::builder()
        .config_path(dir.path())
        .http_addr("127.0.0.1:0".parse().unwrap())
        .https_addr(None)
        .admin_addr(None)
        .watch(false)
        .l4_ports(vec![format!("127.0.0.1:{port}/udp").parse().unwrap()])
        .start()
        .await
        .expect("gateway starts");
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut buf = [0u8; 2048];
    let data = [42u8; 512];
    // The session starts, the buffers and counters are made.
    let mut warm = 0;
    for _ in 0..200 {
        if round_trip(&client, port, &data, &mut buf).await {
            warm += 1;
        }
        if warm == 100 {
            break;
        }
    }
    assert_eq!(warm, 100, "the echo answers through the gateway");
    let before = allocations();
    const ROUND_TRIPS: u64 = 2000;
    for _ in 0..ROUND_TRIPS {
        assert!(round_trip(&client, port, &data, &mut buf).await);
    }
    let allocated = allocations() - before;
    // 4,000 datagrams through the gateway (each way) and as many through the client and echo:
    // none allocates. A few allocations may come from the gateway's background tasks.
    assert!(
        allocated < 20,
        "{allocated} allocations for {ROUND_TRIPS} round trips"
    );
    drop(gw);
}
