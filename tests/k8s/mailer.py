"""Sends test messages over SMTP and records which were acknowledged, for the real-cluster test.

    mailer.py HOST PORT OUT --prefix P (--count N | --until FILE) [--retries R]

Each message has a unique Message-ID <P-i@mxraft.test>. A message is retried (a new connection
each time) on a refused connection, a timeout or a 4xx reply, up to R times, a second apart;
its id goes to OUT (one per line) once it got a 250 after the data, and every attempt's id to
OUT.attempts (an attempt cut off after the data may have been queued without its 250). --until sends until FILE
exists. Prints "sent N acknowledged A attempts T max_gap_ms G" where G is the longest time
between two acknowledgements, and exits 1 if a message was never acknowledged.
"""

import argparse
import os
import smtplib
import sys
import time


def send(host, port, prefix, i):
    msg = (
        f"From: <sender@outside.test>\r\nTo: <user@example.com>\r\n"
        f"Subject: {prefix} {i}\r\nMessage-ID: <{prefix}-{i}@mxraft.test>\r\n\r\n"
        f"message {i} of {prefix}\r\n"
    )
    with smtplib.SMTP(host, port, timeout=20) as s:
        s.ehlo("client.outside.test")
        s.sendmail("sender@outside.test", ["user@example.com"], msg)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--prefix", required=True)
    p.add_argument("--count", type=int)
    p.add_argument("--until")
    p.add_argument("--retries", type=int, default=60)
    a = p.parse_args()
    acked = attempts = 0
    last = time.monotonic()
    max_gap = 0.0
    i = 0
    with open(a.out, "a") as out, open(a.out + ".attempts", "a") as tried:
        while (a.count is not None and i < a.count) or (a.until and not os.path.exists(a.until)):
            for attempt in range(a.retries + 1):
                attempts += 1
                tried.write(f"{a.prefix}-{i}\n")
                tried.flush()
                try:
                    send(a.host, a.port, a.prefix, i)
                except (OSError, smtplib.SMTPException) as e:
                    if isinstance(e, smtplib.SMTPRecipientsRefused):
                        permanent = all(code >= 500 for code, _ in e.recipients.values())
                    else:
                        permanent = isinstance(e, smtplib.SMTPResponseException) and e.smtp_code >= 500
                    if permanent or attempt == a.retries:
                        print(f"mailer: {a.prefix}-{i} not acknowledged: {e}", file=sys.stderr)
                        return 1
                    time.sleep(1)
                    continue
                now = time.monotonic()
                max_gap = max(max_gap, now - last)
                last = now
                acked += 1
                out.write(f"{a.prefix}-{i}\n")
                out.flush()
                break
            i += 1
    print(f"sent {i} acknowledged {acked} attempts {attempts} max_gap_ms {int(max_gap * 1000)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
