"""A small auth service for tests/access/ext_auth.rs (what ingress-nginx's auth-url or Envoy's
ext_authz HTTP mode talk to). Decides on the Authorization header: "Bearer good" is allowed
(with X-User and X-Other headers), "Bearer bad" refused with 403 and a body, none redirected
to a login page; a path with /slow answers after 3s; a body holding "forbidden" is refused
(403). Counts requests in DIR/hits and writes the last one (method, path, headers, body) to
DIR/last.json, with the client certificate's subject when there is one. Prints its port.
With `tls CERT KEY [CLIENT_CA]` it speaks HTTPS with that certificate (and requires a client
certificate CLIENT_CA signed). Under /oauth2/ it answers as oauth2-proxy does for ingress-nginx's
auth-url: the cookie "_oauth2_proxy=ok" is 202 with X-Auth-Request-User, "=forbidden" 403,
"=broken" 502, none 401 with a CSRF cookie."""
import json, os, ssl, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

directory = sys.argv[1]
lock = threading.Lock()
hits = 0


def write(name, text):
    tmp = os.path.join(directory, "." + name)
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(directory, name))


def client_subject(conn):
    cert = conn.getpeercert() if isinstance(conn, ssl.SSLSocket) else None
    if not cert:
        return None
    return ",".join(f"{k}={v}" for rdn in cert["subject"] for k, v in rdn)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def decide(self):
        global hits
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        with lock:
            hits += 1
            write("hits", str(hits))
            write("last.json", json.dumps({
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body.decode("utf-8", "replace"),
                "client": client_subject(self.connection),
            }))
        if "/slow" in self.path:
            time.sleep(3)
        if self.path.startswith("/oauth2/"):
            cookie = self.headers.get("Cookie", "")
            if "_oauth2_proxy=ok" in cookie:
                self.answer(202, b"", [("X-Auth-Request-User", "alice"),
                                       ("X-Auth-Request-Email", "alice@example.com"),
                                       ("Set-Cookie", "_oauth2_proxy=refreshed")])
            elif "_oauth2_proxy=forbidden" in cookie:
                self.answer(403, b"no\n", [("Content-Type", "text/plain")])
            elif "_oauth2_proxy=broken" in cookie:
                self.answer(502, b"upstream gone\n", [("Content-Type", "text/plain")])
            else:
                self.answer(401, b"sign in\n", [("Set-Cookie", "_oauth2_proxy_csrf=x"),
                                                ("WWW-Authenticate", "Bearer")])
            return
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer good") and b"forbidden" in body:
            self.answer(403, b"body refused\n", [("Content-Type", "text/plain")])
        elif auth.startswith("Bearer good"):
            self.answer(200, b"", [("X-User", "alice"), ("X-Other", "not copied")])
        elif auth:
            self.answer(403, b"denied by policy\n", [("Content-Type", "text/plain"),
                                                      ("X-Internal", "not passed back")])
        else:
            rd = self.headers.get("X-Original-URI", "")
            self.answer(302, b"", [("Location", "https://login.test/start?rd=" + rd),
                                   ("Set-Cookie", "flow=1")])

    def answer(self, status, body, headers):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = decide

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 2 and sys.argv[2] == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    if len(sys.argv) > 5:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(sys.argv[5])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
