#!/usr/bin/env python3
"""The baseline mxraft is measured against: one Postfix backup MX, under the same faults.

A throwaway Postfix instance (Debian's, started with `postfix -c`) relays chaos.test to the
same recording primary, with its queue directory on chaosfs, in a network namespace of its own.
The same load (load.py) runs against it with the primary down, so mail must queue, while the
box is killed (every Postfix process, SIGKILL), loses power (killed, then everything not
fsynced dropped) or dies for good (its disk lost: a replacement box starts with an empty
queue). Then the primary comes up, the queue is flushed and the same checker counts.

    postfix_baseline.py --seed N [--duration S] [--json FILE] [--only KIND]

Needs root and Debian's postfix (scripts/install-deps.sh --test installs it).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from chaos import table  # noqa: E402
from check import check  # noqa: E402
from netlab import ChaosFs, Lab, LabError, Recorder, kill_strays, log, run  # noqa: E402

NET = "10.79.0"
BOX = f"{NET}.1"
PRIMARY = f"{NET}.100"
MAIN_CF = "/etc/postfix/main.cf"
KINDS = ("kill", "power", "disk-lost")


class Box:
    def __init__(self, args, kind):
        self.args = args
        self.kind = kind
        self.rng = random.Random(f"{args.seed}-{kind}")
        self.tag = f"pb{os.getpid() % 100000}"
        self.work = tempfile.mkdtemp(prefix="mxraft-pfbase.")
        self.lab = None
        self.fs = None
        self.recorder = None
        self.faults = []
        self.main_cf_saved = None
        self.main_cf_created = False

    def path(self, *p):
        return os.path.join(self.work, *p)

    @property
    def etc(self):
        return self.path("etc")

    @property
    def queue(self):
        return self.path("queue")

    def setup(self):
        self.lab = Lab(self.tag, NET)
        self.lab.add_host("b", BOX)
        pri = self.lab.add_host("p", PRIMARY)
        self.recorder = Recorder(self.lab, pri, PRIMARY, self.path("deliveries.jsonl"),
                                 self.path("recorder.log"))
        os.chmod(self.work, 0o711)  # Postfix's daemons (user postfix) reach data/ through it
        os.makedirs(self.etc)
        os.makedirs(self.queue)
        os.makedirs(self.path("data"))
        shutil.chown(self.path("data"), "postfix")
        self.fs = ChaosFs(self.queue, self.path("fs.sock"), self.path("chaosfs.log"))
        with open(os.path.join(self.etc, "main.cf"), "w") as f:
            f.write(f"""compatibility_level = 3.6
queue_directory = {self.queue}
data_directory = {self.path('data')}
maillog_file = {self.path('maillog')}
maillog_file_prefixes = {self.work}
myhostname = backup.chaos.test
mydestination =
inet_interfaces = {BOX}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = chaos.test
transport_maps = inline:{{ chaos.test=smtp:[{PRIMARY}]:25 }}
smtpd_relay_restrictions = permit_mynetworks reject_unauth_destination
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
smtp_connect_timeout = 5s
alias_maps =
alias_database =
""")
        with open("/etc/postfix/master.cf") as src, \
                open(os.path.join(self.etc, "master.cf"), "w") as dst:
            for line in src:
                parts = line.split()
                if len(parts) > 4 and parts[1] in ("unix", "fifo", "pass", "inet", "unix-dgram") \
                        and parts[4] == "y":
                    parts[4] = "n"  # no chroot: the queue is where it is
                    line = " ".join(parts) + "\n"
                if line.startswith("smtp ") and " inet " in line:
                    line = line.replace("smtp ", f"{BOX}:25 ", 1)
                dst.write(line)
        if os.path.exists(MAIN_CF):
            with open(MAIN_CF) as f:
                self.main_cf_saved = f.read()
        else:
            self.main_cf_created = True
        with open(MAIN_CF, "a") as f:
            f.write(f"\nalternate_config_directories = {self.etc}\n")
        self.in_ns("b", "postfix", "-c", self.etc, "check")
        self.start_postfix()

    def in_ns(self, ns, *cmd, **kw):
        return run("nsenter", f"--net=/run/netns/{self.tag}{ns}", "--", *cmd, **kw)

    def start_postfix(self):
        self.in_ns("b", "postfix", "-c", self.etc, "start")
        self.lab.wait_port(BOX)

    def kill_postfix(self):
        """SIGKILL to every process of the box (everything in its network namespace)."""
        for _ in range(20):
            pids = run("ip", "netns", "pids", f"{self.tag}b", check_rc=False).stdout.split()
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise LabError("the box's processes did not die")

    def queued(self):
        # Postfix's commands check inet_interfaces: they run where the box's address is.
        r = self.in_ns("b", "postqueue", "-c", self.etc, "-j")
        return len([line for line in r.stdout.splitlines() if line.strip()])

    def sleep(self, seconds):
        time.sleep(max(0, seconds))

    def execute(self):
        a = self.args
        self.setup()
        load = subprocess.Popen(
            ["ip", "netns", "exec", f"{self.tag}h", sys.executable, os.path.join(HERE, "load.py"),
             "--nodes", BOX, "--history", self.path("history.jsonl"),
             "--seed", str(a.seed), "--duration", str(a.duration + 8), "--rate", str(a.rate)])
        self.sleep(3)
        end = time.time() + a.duration
        while time.time() < end - 3:
            self.sleep(self.rng.uniform(1, 4))
            hold = min(self.rng.uniform(4, 10), max(1.0, end - time.time()))
            fault = {"kind": "kill" if self.kind == "kill" else "power", "name": self.kind,
                     "nodes": [1], "t": time.time()}
            log(f"postfix: {self.kind} for {hold:.1f} s")
            self.kill_postfix()
            if self.kind == "power":
                fault["dropped"] = self.fs.ctl("cut")
            elif self.kind == "disk-lost":
                # The box is gone; its replacement starts with an empty disk.
                for name in os.listdir(self.queue):
                    shutil.rmtree(os.path.join(self.queue, name), ignore_errors=True)
            self.sleep(hold)
            self.start_postfix()
            fault["until"] = time.time()
            self.faults.append(fault)
        load.wait()
        self.recorder.start()
        up = time.time()
        self.in_ns("b", "postqueue", "-c", self.etc, "-f")
        deadline = time.time() + a.drain_timeout
        while self.queued() and time.time() < deadline:
            time.sleep(0.5)
        left = self.queued()
        drain = time.time() - up
        history = [json.loads(x) for x in open(self.path("history.jsonl")) if x.strip()]
        deliveries = []
        if os.path.exists(self.path("deliveries.jsonl")):
            deliveries = [json.loads(x) for x in open(self.path("deliveries.jsonl")) if x.strip()]
        figures = check(history, deliveries, self.faults, {BOX: 1}, 30)
        figures.update(scenario=f"postfix-{self.kind}", seed=a.seed, nodes=1, unsafe=None,
                       faults=len(self.faults), fault_kinds=[self.kind],
                       power_cuts=sum(1 for f in self.faults if f["kind"] == "power"),
                       drain_seconds=round(drain, 1), digests_equal=None,
                       left_in_queue=left, duration=a.duration, system="postfix")
        return figures

    def cleanup(self):
        try:
            self.kill_postfix()
        except LabError:
            pass
        if self.recorder is not None:
            self.recorder.stop()
        kill_strays(self.work)
        if self.fs is not None:
            self.fs.stop()
        if self.lab is not None:
            self.lab.close()
        if self.main_cf_created:
            os.remove(MAIN_CF)
        elif self.main_cf_saved is not None:
            with open(MAIN_CF, "w") as f:
                f.write(self.main_cf_saved)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--duration", type=float, default=60)
    p.add_argument("--rate", type=float, default=30)
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--only", choices=KINDS)
    p.add_argument("--json")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    for kind in [args.only] if args.only else KINDS:
        box = Box(args, kind)
        try:
            figures = box.execute()
        finally:
            box.cleanup()
        print(f"postfix {kind} seed {args.seed}:\n{table(figures)}\n  left_in_queue            "
              f"{figures['left_in_queue']}")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(figures) + "\n")


if __name__ == "__main__":
    main()
