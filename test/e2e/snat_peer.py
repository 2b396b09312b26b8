#!/usr/bin/env python3
"""Echo peers for the SNAT tests (stdlib only).

server PORT          TCP and UDP on PORT: every line (TCP) or datagram (UDP)
                     is answered with "<peer ip> <peer port>\\n", the source
                     address the server sees. Runs until killed.
client HOST PORT     keeps TCP connections to HOST:PORT and takes commands on
                     stdin, one per line, answering one line each on stdout:
                       open            -> "<i> <server's view>" or "<i> ERR <why>"
                       ask I           -> "<server's view>" or "ERR <why>"
                       udp             -> one UDP round trip: "<view>" or "ERR <why>"
                       quit
                     (connect timeout: $SNAT_PEER_TIMEOUT seconds, default 8)
once tcp|udp HOST PORT [SPORT]
                     one round trip (from source port SPORT if given), prints
                     the server's view, exit 1 on error
"""
import os
import socket
import socketserver
import sys
import threading

TIMEOUT = float(os.environ.get("SNAT_PEER_TIMEOUT", "8"))


def peer_text(addr):
    # Dual-stack sockets show IPv4 peers as ::ffff:a.b.c.d.
    host = addr[0][7:] if addr[0].startswith("::ffff:") else addr[0]
    return f"{host} {addr[1]}\n".encode()


class TcpHandler(socketserver.StreamRequestHandler):
    def handle(self):
        peer = peer_text(self.client_address)
        for _ in self.rfile:
            self.wfile.write(peer)
            self.wfile.flush()


class UdpHandler(socketserver.BaseRequestHandler):
    def handle(self):
        _, sock = self.request
        sock.sendto(peer_text(self.client_address), self.client_address)


class DualStack:
    """IPv6 sockets that take IPv4 too (IPV6_V6ONLY off)."""
    address_family = socket.AF_INET6

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class ThreadingTcp(DualStack, socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class ThreadingUdp(DualStack, socketserver.ThreadingUDPServer):
    pass


def serve(port):
    tcp = ThreadingTcp(("::", port), TcpHandler)
    udp = ThreadingUdp(("::", port), UdpHandler)
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    print("ready", flush=True)
    tcp.serve_forever()


def ask(conn):
    conn.sendall(b"?\n")
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(256)
        if not chunk:
            raise OSError("connection closed")
        data += chunk
    return data.decode().strip()


def any_addr(host, sport):
    return ("::" if ":" in host else "0.0.0.0", sport)


def udp_round_trip(host, port, sport=0):
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        if sport:
            s.bind(any_addr(host, sport))
        s.sendto(b"?", (host, port))
        return s.recvfrom(256)[0].decode().strip()
    finally:
        s.close()


def client(host, port):
    conns = []
    for line in sys.stdin:
        cmd = line.split()
        if not cmd:
            continue
        try:
            if cmd[0] == "open":
                c = socket.create_connection((host, port), timeout=TIMEOUT)
                c.settimeout(TIMEOUT)
                conns.append(c)
                out = f"{len(conns) - 1} {ask(c)}"
            elif cmd[0] == "ask":
                out = ask(conns[int(cmd[1])])
            elif cmd[0] == "udp":
                out = udp_round_trip(host, port)
            elif cmd[0] == "quit":
                break
            else:
                out = "ERR unknown command"
        except (OSError, IndexError, ValueError) as e:
            out = f"ERR {type(e).__name__}: {e}" if cmd[0] != "open" else f"-1 ERR {type(e).__name__}: {e}"
        print(out, flush=True)
    for c in conns:
        c.close()


def once(proto, host, port, sport=0):
    try:
        if proto == "udp":
            print(udp_round_trip(host, port, sport))
        else:
            with socket.create_connection((host, port), timeout=TIMEOUT,
                                          source_address=any_addr(host, sport) if sport else None) as c:
                c.settimeout(TIMEOUT)
                print(ask(c))
    except OSError as e:
        print(f"ERR {e}")
        sys.exit(1)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        serve(int(sys.argv[2]))
    elif sys.argv[1] == "client":
        client(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "once":
        once(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else 0)
