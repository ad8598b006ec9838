#!/usr/bin/env python3
"""Per-message acceptance latency over one SMTP session (prints figures; not a test).

    latency.py HOST PORT MESSAGES SIZE [dot]

Sends MESSAGES messages of SIZE bytes, one after another on one connection, and prints
`p50 p90 p99 max` in milliseconds: the time from MAIL FROM to the 250 after the final dot, or
with `dot` from the final dot (the message already sent) to its 250.
"""

import smtplib
import socket
import sys
import time


def time_from_dot(smtp, body):
    """One transaction; the seconds from sending the final dot to reading its reply."""
    for command, want in (("MAIL FROM:<bench@client.test>", 250),
                          ("RCPT TO:<user1@example.test>", 250), ("DATA", 354)):
        code, text = smtp.docmd(command)
        if code != want:
            sys.exit("%s: %d %r" % (command, code, text))
    smtp.send(body.encode())  # ends with CRLF
    start = time.perf_counter()
    smtp.send(b".\r\n")
    code, text = smtp.getreply()
    elapsed = time.perf_counter() - start
    if code != 250:
        sys.exit("end of data: %d %r" % (code, text))
    return elapsed


def main():
    host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    from_dot = len(sys.argv) > 5 and sys.argv[5] == "dot"
    line = "x" * 76 + "\r\n"
    body = "Subject: latency\r\n\r\n" + line * max(1, size // len(line))
    times = []
    with smtplib.SMTP(host, port, timeout=60) as smtp:
        # The final dot goes out as its own small segment: without TCP_NODELAY it would wait
        # for the server's delayed ACK of the body (Nagle), adding some 40 ms to every reply.
        smtp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        smtp.ehlo("latency.test")
        for _ in range(count):
            if from_dot:
                times.append(time_from_dot(smtp, body))
                continue
            start = time.perf_counter()
            refused = smtp.sendmail("bench@client.test", ["user1@example.test"], body)
            times.append(time.perf_counter() - start)
            if refused:
                sys.exit("refused: %r" % refused)
    times.sort()

    def pct(p):
        return times[min(len(times) - 1, int(p / 100 * len(times)))] * 1000

    print("%.1f %.1f %.1f %.1f" % (pct(50), pct(90), pct(99), times[-1] * 1000))


if __name__ == "__main__":
    main()
