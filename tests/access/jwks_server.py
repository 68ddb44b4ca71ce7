"""A small JWKS issuer for tests/access/jwks_uri.rs: serves DIR/jwks.json with the
Cache-Control header in DIR/cache_control (if any), counts the fetches in DIR/hits, and prints
its port. With CERT and KEY it serves HTTPS."""
import os, ssl, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

directory = sys.argv[1]
lock = threading.Lock()
hits = 0


def read(name):
    try:
        with open(os.path.join(directory, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        global hits
        with lock:
            hits += 1
            with open(os.path.join(directory, "hits.tmp"), "w") as f:
                f.write(str(hits))
            os.replace(os.path.join(directory, "hits.tmp"), os.path.join(directory, "hits"))
        body = read("jwks.json") or b""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        cc = read("cache_control")
        if cc:
            self.send_header("Cache-Control", cc.decode().strip())
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 3:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
