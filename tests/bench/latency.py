#!/usr/bin/env python3
"""Per-message acceptance latency over one SMTP session (prints figures; not a test).

    latency.py HOST PORT MESSAGES SIZE

Sends MESSAGES messages of SIZE bytes, one after another on one connection, and prints
`p50 p90 p99 max` in milliseconds: the time from MAIL FROM to the 250 after the final dot.
"""

import smtplib
import sys
import time


def main():
    host, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    line = "x" * 76 + "\r\n"
    body = "Subject: latency\r\n\r\n" + line * max(1, size // len(line))
    times = []
    with smtplib.SMTP(host, port, timeout=60) as smtp:
        smtp.ehlo("latency.test")
        for _ in range(count):
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
