//! The ingress-nginx corpus against Debian's nginx, configured as ingress-nginx's template
//! renders the same annotations (`location ~* "^PATH"` with `rewrite … break`, `return CODE
//! URL`, `server_name` aliases, `proxy_set_header`, `limit_req` (with a `geo` whitelist),
//! `limit_conn`, `proxy_read_timeout`, `grpc_pass`, `proxy_next_upstream`, `auth_request` with
//! its `@signin`, `client_max_body_size`, `error_page CODE = @custom_…` with
//! `proxy_intercept_errors`;
//! and `proxy_connect_timeout`, whose 504 Tidegate answers 502): the answers the corpus says
//! ingress-nginx gives are
//! nginx's. Cases whose nginx configuration ingress-nginx builds from Lua or several blocks
//! (CORS, basic auth, source ranges, HTTPS redirects, canaries: its balancer decides in Lua) are left
//! to the corpus.

mod common;

#[path = "ingress_nginx/corpus.rs"]
mod corpus;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{HttpClient, Upstream, eventually};

/// What ingress-nginx writes for each case, in a `server` block (`UP`: the upstream).
const SERVERS: &[(&str, &str)] = &[
    (
        "rewrite",
        r#"server_name rewrite.bar.com;
           location ~* "^/something" { rewrite "(?i)/something" / break; proxy_pass http://UP; }"#,
    ),
    (
        "rewrite-captures",
        r#"server_name captures.bar.com;
           location ~* "^/something(/|$)(.*)" { rewrite "(?i)/something(/|$)(.*)" /$2 break;
                                                proxy_pass http://UP; }"#,
    ),
    (
        "rewrite-query",
        r#"server_name query.bar.com;
           location ~* "^/find(/|$)(.*)" { rewrite "(?i)/find(/|$)(.*)" /search?q=$2 break;
                                           proxy_pass http://UP; }"#,
    ),
    (
        "use-regex",
        r#"server_name regex.bar.com;
           location ~* "^/foo/bar/bar" { proxy_pass http://UP; }
           location ~* "^/foo/bar/[A-Z0-9]{3}" { proxy_pass http://UP; }"#,
    ),
    (
        "app-root",
        r#"server_name approot.bar.com;
           if ($uri = /) { return 302 $scheme://$http_host/app1; }
           location / { proxy_pass http://UP; }"#,
    ),
    (
        "temporal-redirect",
        r#"server_name temporal.bar.com;
           location / { return 307 https://status.example.com/down; }"#,
    ),
    (
        "vhost-and-prefix",
        r#"server_name vhost.bar.com;
           location /v1 { proxy_set_header Host internal.svc.example;
                          proxy_set_header X-Forwarded-Prefix "/api"; proxy_pass http://UP; }"#,
    ),
    (
        "server-alias",
        r#"server_name main.bar.com alias.bar.com;
           location / { proxy_pass http://UP; }"#,
    ),
    (
        "read-timeout",
        r#"server_name timeout.bar.com;
           location / { proxy_read_timeout 1s; proxy_pass http://UP; }"#,
    ),
    (
        "grpc-backend",
        r#"server_name grpc.bar.com;
           location / { grpc_pass grpc://UP; }"#,
    ),
    (
        "next-upstream",
        r#"server_name retry.bar.com;
           location / { proxy_next_upstream error timeout http_503;
                        proxy_next_upstream_tries 2; proxy_pass http://flaky; }"#,
    ),
    (
        "hash-by-header",
        r#"server_name hash.bar.com;
           location / { proxy_pass http://pair; }"#,
    ),
    (
        "auth-url",
        r#"server_name oauth.bar.com;
           location = /_external-auth { internal;
               proxy_pass_request_body off; proxy_set_header Content-Length "";
               proxy_set_header Host AUTH_HOST;
               proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
               proxy_set_header X-Original-Method $request_method;
               proxy_set_header X-Sent-From "nginx-ingress-controller";
               proxy_set_header X-Real-IP $remote_addr;
               proxy_set_header X-Forwarded-For $remote_addr;
               proxy_set_header X-Auth-Request-Redirect $request_uri;
               proxy_pass_request_headers on;
               proxy_pass http://UP/oauth2/auth; }
           location @signin { internal;
               return 302 https://login.bar.com/start?rd=$scheme://$host$request_uri; }
           location / { proxy_set_header Host $host;
               auth_request /_external-auth;
               auth_request_set $authHeader0 $upstream_http_x_upstream;
               proxy_set_header 'X-Upstream' $authHeader0;
               error_page 401 = @signin;
               proxy_pass http://UP; }"#,
    ),
    (
        "proxy-body-size",
        r#"server_name bodysize.bar.com;
           location / { client_max_body_size 1k; proxy_pass http://UP; }"#,
    ),
    (
        "custom-http-errors",
        r#"server_name errors.bar.com;
           location @custom_canary_404 { internal; proxy_intercept_errors off;
               proxy_set_header X-Code 404; proxy_set_header X-Format $http_accept;
               proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Service-Name web;
               proxy_set_header Host $host; rewrite (.*) / break; proxy_pass http://CANARY; }
           location @custom_canary_503 { internal; proxy_intercept_errors off;
               proxy_set_header X-Code 503; proxy_set_header X-Format $http_accept;
               proxy_set_header X-Original-URI $request_uri; proxy_set_header X-Service-Name web;
               proxy_set_header Host $host; rewrite (.*) / break; proxy_pass http://CANARY; }
           location / { proxy_intercept_errors on;
               error_page 404 = @custom_canary_404; error_page 503 = @custom_canary_503;
               proxy_pass http://UP; }"#,
    ),
    (
        "rate-limit",
        r#"server_name ratelimit.bar.com;
           location / { limit_req zone=rate-limit burst=2 nodelay; limit_req_status 503;
                        proxy_pass http://UP; }"#,
    ),
    (
        "limit-whitelist",
        r#"server_name limit-whitelist.bar.com;
           location / { limit_req zone=whitelist-rpm burst=1 nodelay; limit_req_status 503;
                        proxy_pass http://UP; }"#,
    ),
    (
        "limit-connections",
        r#"server_name connections.bar.com;
           location / { limit_conn connections 1; limit_conn_status 503;
                        proxy_pass http://UP; }"#,
    ),
];

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx and its directory, killed and removed on drop.
struct Nginx(Child, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
#[ignore = "needs nginx (scripts/test.sh installs it)"]
async fn nginx_configured_as_ingress_nginx_answers_the_corpus_as_it_says() {
    let up = Upstream::start("web").await;
    // The default-backend Service of custom-http-errors.
    let canary = Upstream::start("canary").await;
    // The Service `flaky` of the corpus: two endpoints, one answering 503.
    let (bad, good) = (
        Upstream::start("flaky-bad").await,
        Upstream::start("flaky-good").await,
    );
    bad.faults.set_status(503);
    // `pair`: two endpoints, hashed on x-user (ingress-nginx's chash is Lua; nginx's `hash …
    // consistent` is the same idea).
    let pair = (
        Upstream::start("pair-a").await,
        Upstream::start("pair-b").await,
    );
    // proxy-connect-timeout, which Tidegate answers 502 (tests/kube/ingress_nginx.rs): nginx
    // answers 504.
    let stuck = common::Unaccepting::start();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let mut servers: String = SERVERS
        .iter()
        .map(|(_, s)| {
            format!(
                "  server {{ listen 127.0.0.1:{port}; proxy_set_header Host $host;\n    {}\n  }}\n",
                s.replace("AUTH_HOST", &up.addr.ip().to_string())
                    .replace("UP", &up.addr.to_string())
                    .replace("CANARY", &canary.addr.to_string())
            )
        })
        .collect();
    servers.push_str(&format!(
        "  server {{ listen 127.0.0.1:{port}; server_name connect.bar.com;\n    \
         location / {{ proxy_connect_timeout 1s; proxy_pass http://{}; }}\n  }}\n",
        stuck.addr
    ));
    let conf = format!(
        "worker_processes 1;\ndaemon off;\nmaster_process off;\npid {d}/nginx.pid;\n\
         error_log stderr;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log off;\n\
         client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n\
         scgi_temp_path {d}/scgi;\n  port_in_redirect off;\n\
         limit_req_zone $binary_remote_addr zone=rate-limit:1m rate=2r/m;\n\
         geo $whitelisted {{ default 0; 10.0.0.0/8 1; 127.0.0.0/8 1; }}\n\
         map $whitelisted $limit_key {{ 0 $binary_remote_addr; 1 \"\"; }}\n\
         limit_req_zone $limit_key zone=whitelist-rpm:1m rate=1r/m;\n\
         limit_conn_zone $binary_remote_addr zone=connections:1m;\n\
         upstream flaky {{ server {}; server {}; }}\n\
         upstream pair {{ hash $http_x_user consistent; server {}; server {}; }}\n{servers}}}\n",
        bad.addr, good.addr, pair.0.addr, pair.1.addr
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(dir.path().join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("nginx runs (scripts/test.sh installs it)");
    let _nginx = Nginx(child, dir);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    eventually(Duration::from_secs(10), "nginx listens", || async {
        HttpClient::http1()
            .send(
                http::Request::get(format!("http://{addr}/"))
                    .header("host", "main.bar.com")
                    .body(http_body_util::Full::new(bytes::Bytes::new()))
                    .unwrap(),
            )
            .await
            .ok()
    })
    .await;
    let cases: Vec<corpus::Case> = corpus::corpus()
        .into_iter()
        .filter(|c| SERVERS.iter().any(|(name, _)| *name == c.name))
        .collect();
    assert_eq!(cases.len(), SERVERS.len());
    // As on the apiserver, each host is looked at once before the corpus is sent.
    let http = HttpClient::http1();
    for case in &cases {
        let r = &case.requests[0];
        let host = r.host.as_deref().unwrap_or(&case.rules[0].host);
        http.get(addr, host, &r.path, &[]).await;
    }
    let wrong = corpus::mismatches(addr, &cases).await;
    assert!(
        wrong.is_empty(),
        "nginx does not answer as the corpus says: {wrong:#?}"
    );
    let started = std::time::Instant::now();
    let r = http.get(addr, "connect.bar.com", "/", &[]).await;
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(started.elapsed() < Duration::from_secs(3));
}
