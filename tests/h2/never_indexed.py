"""Sends GET / three times over one h2c connection (prior knowledge) to 127.0.0.1:PORT and prints,
for each response, its status and how its x-request-id came: `never-indexed VALUE`, or
`indexed VALUE` (a literal the decoder may index, or a reference to the table). With python-hyper's
h2 and hpack packages (scripts/test.sh installs them).

usage: never_indexed.py PORT
"""

import socket
import sys

import h2.config
import h2.connection
import h2.events
from hpack import NeverIndexedHeaderTuple


def main():
    port = int(sys.argv[1])
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    sock.sendall(conn.data_to_send())
    for _ in range(3):
        stream = conn.get_next_available_stream_id()
        conn.send_headers(
            stream,
            [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/")],
            end_stream=True,
        )
        sock.sendall(conn.data_to_send())
        status, how, done = None, "absent", False
        while not done:
            data = sock.recv(65536)
            if not data:
                sys.exit("the gateway closed the connection")
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                    for header in event.headers:
                        name, value = header[0], header[1]
                        if name == b":status":
                            status = value.decode()
                        elif name == b"x-request-id":
                            kind = (
                                "never-indexed"
                                if isinstance(header, NeverIndexedHeaderTuple)
                                else "indexed"
                            )
                            how = f"{kind} {value.decode()}"
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                    done = True
            sock.sendall(conn.data_to_send())
        print(status, how)
    sock.close()


if __name__ == "__main__":
    main()
