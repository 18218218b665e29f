#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Opens N keep-alive connections to an HTTP server, sends one check-in on
each, waits for every answer, then, with all connections still open and
idle, reads the server's resident memory (VmRSS of the given PIDs) from
/proc. Prints one JSON object. Used by bench/run for the "RSS with 5,000 open
connections" figure; everything runs on 127.0.0.1."""

import argparse
import json
import resource
import selectors
import socket
import struct
import sys
import time
import urllib.request


def rss_kb(pids):
    """Sum of VmRSS (kB) over pids."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def gauge(url, name):
    """The value of an unlabelled Prometheus metric at url, or None."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        for line in resp.read().decode("utf-8", "replace").splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == name:
                return float(parts[1])
    return None


def request(host, port, path, i):
    body = ('{"device_id":"hold-%08d","sku_region":"DE","region":"DE",'
            '"model":"Pixel 8","fw":"1.4.2-rc1","seq":1,"ts":1764000000000}'
            % i).encode()
    head = (f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", default="/v1/checkin")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--pid", type=int, action="append", required=True,
                    help="server PID whose VmRSS is summed (repeatable)")
    ap.add_argument("--timeout", type=float, default=60.0,
                    help="seconds to wait for every answer")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds idle before reading VmRSS")
    ap.add_argument("--metrics", help="Prometheus URL read while holding")
    ap.add_argument("--gauge", default="fleetgate_http_connections",
                    help="metric of --metrics reported as server_conns")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.conns + 64
    if soft < need:
        if hard != resource.RLIM_INFINITY and hard < need:
            sys.exit(f"conn_hold: RLIMIT_NOFILE hard limit {hard} < {need}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    rss_before = rss_kb(args.pid)
    sel = selectors.DefaultSelector()
    socks = []
    pending = {}
    try:
        for i in range(args.conns):
            s = socket.create_connection((args.host, args.port), timeout=10)
            s.sendall(request(args.host, args.port, args.path, i))
            s.setblocking(False)
            socks.append(s)
            pending[s] = b""
            sel.register(s, selectors.EVENT_READ)
        statuses = {}
        closed = 0
        deadline = time.monotonic() + args.timeout
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(timeout=0.5):
                s = key.fileobj
                data = s.recv(65536)
                if not data:
                    closed += 1
                    sel.unregister(s)
                    del pending[s]
                    continue
                buf = pending[s] + data
                head, sep, _ = buf.partition(b"\r\n\r\n")
                if not sep:
                    pending[s] = buf
                    continue
                # One answer per connection: the status line is enough.
                code = head.split(b" ", 2)[1].decode("ascii", "replace")
                statuses[code] = statuses.get(code, 0) + 1
                sel.unregister(s)
                del pending[s]
        time.sleep(args.settle)
        # Every connection that answered must still be open and idle now.
        rss_after = rss_kb(args.pid)
        server_conns = gauge(args.metrics, args.gauge) if args.metrics else None
        still_open = 0
        for s in socks:
            try:
                still_open += s.recv(1) != b""
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
        print(json.dumps({
            "conns": args.conns,
            "answered": sum(statuses.values()),
            "statuses": statuses,
            "unanswered": len(pending),
            "closed_by_server": closed,
            "open_at_rss": still_open,
            "server_conns": server_conns,
            "rss_before_kb": rss_before,
            "rss_kb": rss_after,
        }))
    finally:
        # Abortive close (RST): no TIME-WAIT sockets left behind on the
        # ephemeral ports, where bench/run's servers listen.
        linger = struct.pack("ii", 1, 0)
        for s in socks:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            except OSError:
                pass
            s.close()


if __name__ == "__main__":
    main()
