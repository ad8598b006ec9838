#!/usr/bin/env python3
"""The load of the fault tests: SMTP transactions with unique ids, every outcome recorded.

Each message carries its id in X-Chaos-Id (and its Message-ID). One JSON line per attempt goes
to the history: "ok" is a 2xx after the final dot (acknowledged), "fail" a refusal or an error
before the dot was sent (never queued, or refused after it), "info" no answer after the dot
(a timeout or a dropped connection: it may or may not be queued).

    load.py --nodes 10.78.0.1,10.78.0.2 --history H --seed S --duration SECONDS [--rate R]
            [--workers W] [--stop FILE]
"""
import argparse
import json
import os
import random
import socket
import threading
import time

CONNECT_TIMEOUT = 3
COMMAND_TIMEOUT = 10
# commit_timeout (15 s) plus room: a node that cannot commit answers 451 before this.
DOT_TIMEOUT = 30


class Refused(Exception):
    pass


def transaction(address, chaos_id, body_size, rng):
    """Sends one message; returns (outcome, stage, reply)."""
    stage = "connect"
    sent_dot = False
    try:
        with socket.create_connection((address, 25), timeout=CONNECT_TIMEOUT) as s:
            s.settimeout(COMMAND_TIMEOUT)
            f = s.makefile("rb")

            def reply():
                lines = []
                while True:
                    line = f.readline()
                    if not line:
                        raise ConnectionError("connection closed")
                    lines.append(line.decode(errors="replace").rstrip())
                    if len(line) < 4 or line[3:4] != b"-":
                        return lines[-1]

            def expect(command, ok):
                nonlocal stage
                stage = command.split(" ")[0].lower() if command else "greeting"
                if command:
                    s.sendall(command.encode() + b"\r\n")
                r = reply()
                if not r.startswith(ok):
                    raise Refused(r)
                return r

            expect("", "220")
            expect("EHLO load.chaos.test", "250")
            expect("MAIL FROM:<sender@client.test>", "250")
            expect(f"RCPT TO:<user{rng.randrange(20)}@chaos.test>", "250")
            expect("DATA", "354")
            stage = "data"
            filler = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz ") for _ in range(76))
            lines = [
                f"Message-ID: <{chaos_id}@chaos.test>",
                f"X-Chaos-Id: {chaos_id}",
                "From: sender@client.test",
                "Subject: chaos",
                "",
            ]
            size = 0
            while size < body_size:
                lines.append(filler)
                size += len(filler) + 2
            s.sendall(("\r\n".join(lines) + "\r\n.\r\n").encode())
            sent_dot = True
            stage = "dot"
            s.settimeout(DOT_TIMEOUT)
            r = reply()
            try:
                s.sendall(b"QUIT\r\n")
            except OSError:
                pass
            return ("ok" if r.startswith("2") else "fail"), stage, r
    except Refused as e:
        return ("fail", stage, str(e))
    except (OSError, ConnectionError) as e:
        return ("info" if sent_dot else "fail"), stage, f"{type(e).__name__}: {e}"


def worker(n, args, nodes, out, lock, deadline):
    rng = random.Random(f"{args.seed}-{n}")
    interval = args.workers / args.rate
    seq = 0
    next_at = time.monotonic()
    while time.monotonic() < deadline and not (args.stop and os.path.exists(args.stop)):
        seq += 1
        chaos_id = f"s{args.seed}w{n}m{seq}"
        node = rng.randrange(len(nodes))
        size = rng.randint(500, 4000) if rng.random() > 0.05 else rng.randint(80_000, 200_000)
        t0 = time.time()
        outcome, stage, reply_text = transaction(nodes[node], chaos_id, size, rng)
        record = {"id": chaos_id, "node": node + 1, "t0": t0, "t1": time.time(),
                  "outcome": outcome, "stage": stage, "reply": reply_text, "size": size}
        with lock:
            out.write(json.dumps(record) + "\n")
            out.flush()
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.monotonic()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", required=True)
    p.add_argument("--history", required=True)
    p.add_argument("--seed", required=True)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--rate", type=float, default=30.0)
    p.add_argument("--workers", type=int, default=6)
    p.add_argument("--stop")
    args = p.parse_args()
    nodes = args.nodes.split(",")
    deadline = time.monotonic() + args.duration
    lock = threading.Lock()
    with open(args.history, "a") as out:
        threads = [threading.Thread(target=worker, args=(n, args, nodes, out, lock, deadline))
                   for n in range(args.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


if __name__ == "__main__":
    main()
