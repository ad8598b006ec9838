#!/usr/bin/env python3
"""One fault-injection run against a real mxraft cluster, checked Jepsen-style.

Each node is an mxraftd process in its own network namespace, on a bridge with the recording
primary (recorder.py, in a namespace of its own) and the load generator (load.py, in the
bridge's namespace). Each node's data directory is a chaosfs mount (tests/chaos/chaosfs),
which keeps unsynced data in memory and drops it on a simulated power cut.

Phases: quiet load -> faults under load -> heal, crash and restart every node -> the primary
up -> drain until every node's queue is empty -> check (check.py) and compare every node's
state digest. The seed picks the fault schedule; a failing run prints the command that
reruns it.

    chaos.py --scenario NAME --seed N [--duration S] [--unsafe ack|fsync] [--expect-loss]
             [--json FILE] [--keep]

Needs root (namespaces, mounts) and the release binaries (mxraftd, mxraftctl, chaosfs).
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
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from check import check, verdict  # noqa: E402
from netlab import BIN, ChaosFs, Lab, LabError, Recorder, kill_strays, log, run  # noqa: E402

NET = "10.78.0"
PRIMARY = f"{NET}.100"
CLAIM_LEASE = 15
MAX_SKEW = 5
FAKETIME_LIB = next((p for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
                                 "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1")
                     if os.path.exists(p)), None)

# Fault kinds, and the scenarios that draw from them. "primary" says whether the primary is up
# while the load runs (deliveries in flight during the faults) or down (mail must queue).
SCENARIOS = {
    "kill": {"faults": ["kill-leader", "kill-follower", "kill-claimer"], "primary": "up"},
    "pause": {"faults": ["pause-leader", "pause-follower", "pause-claimer"], "primary": "up"},
    "partition": {"faults": ["isolate-leader", "minority", "bridge", "isolate-primary"],
                  "primary": "up"},
    "isolate-leader": {"faults": ["isolate-leader"], "primary": "down"},
    "primary-flap": {"faults": ["primary-flap", "kill-claimer"], "primary": "up"},
    "power-one": {"faults": ["power-leader", "power-follower"], "primary": "down"},
    "power-all": {"faults": ["power-all"], "primary": "down"},
    "power": {"faults": ["power-leader", "power-follower", "power-all"], "primary": "down"},
    "skew": {"faults": ["skew-leader", "skew-follower"], "primary": "up", "faketime": True},
    "disk": {"faults": ["disk-full"], "primary": "down"},
    "wipe": {"faults": ["wipe"], "primary": "down"},
    "pause-kill": {"faults": ["pause-kill"], "primary": "up"},
    "part-kill": {"faults": ["part-kill"], "primary": "up"},
    "mixed": {"faults": ["kill-leader", "kill-claimer", "pause-follower", "isolate-leader",
                         "bridge", "isolate-primary", "primary-flap", "power-follower",
                         "power-all", "skew-leader", "disk-full", "wipe"],
              "primary": "up", "faketime": True, "combine": 0.3},
}


# Faults that involve every node, or whose network rules another fault's heal would lift:
# never combined with a second fault.
SOLO = {"power-all", "pause-kill", "part-kill", "wipe", "isolate-leader", "minority", "bridge",
        "isolate-primary"}
HarnessError = LabError


class Node:
    def __init__(self, slot, node_id):
        self.slot = slot
        self.id = node_id
        self.proc = None
        self.fs = None
        self.paused = False


class Harness:
    def __init__(self, args):
        self.args = args
        self.scenario = SCENARIOS[args.scenario]
        self.rng = random.Random(args.seed)
        self.tag = f"cx{os.getpid() % 100000}"
        self.work = tempfile.mkdtemp(prefix="mxraft-chaos.")
        self.n = args.nodes
        self.nodes = {s: Node(s, s) for s in range(1, self.n + 1)}
        self.next_id = self.n + 1
        self.faults = []
        self.lab = None
        self.recorder = None
        self.faketime = bool(self.scenario.get("faketime")) and FAKETIME_LIB is not None
        # Nodes a fault in progress has stopped or will restart; a second fault leaves them be.
        self.busy = set()
        self.busy_lock = threading.Lock()

    # --- plumbing -------------------------------------------------------------------------

    def ns(self, slot):
        return f"{self.tag}n{slot}"

    def ip(self, slot):
        return f"{NET}.{slot}"

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def in_hub(self, *cmd, **kw):
        return self.lab.in_hub(*cmd, **kw)

    def ctl(self, slot, *cmd, timeout=20):
        r = self.in_hub(os.path.join(BIN, "mxraftctl"), "--endpoint", f"{self.ip(slot)}:7001",
                        "--ca-file", self.path("ca", "ca.pem"),
                        "--token-file", self.path("admin.token"), *cmd, "-o", "json",
                        check_rc=False, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"mxraftctl on node {slot}: {r.stderr.strip()}")
        try:
            whole = json.loads(r.stdout)
            return whole if isinstance(whole, list) else [whole]
        except json.JSONDecodeError:
            return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def alive(self, slot):
        p = self.nodes[slot].proc
        return p is not None and p.poll() is None

    def fs_ctl(self, slot, command):
        return self.nodes[slot].fs.ctl(command)

    # --- setup ----------------------------------------------------------------------------

    def setup(self):
        self.lab = Lab(self.tag, NET)
        for slot in self.nodes:
            ns = self.lab.add_host(f"n{slot}", self.ip(slot))
            run("ip", "netns", "exec", ns, "nft", "add table inet chaos")
            for hook in ("input", "output"):
                run("ip", "netns", "exec", ns, "nft",
                    f"add chain inet chaos {hook} {{ type filter hook {hook} priority 0 ; }}")
        ns = self.lab.add_host("p", PRIMARY)
        self.recorder = Recorder(self.lab, ns, PRIMARY, self.path("deliveries.jsonl"),
                                 self.path("recorder.log"))
        ctl = os.path.join(BIN, "mxraftctl")
        run(ctl, "cert", "create-ca", "--out-dir", self.path("ca"))
        run(ctl, "token", "create", self.path("admin.token"))
        for slot in self.nodes:
            os.makedirs(self.path(f"n{slot}", "data"))
            self.make_cert(slot)
            self.start_fs(slot)
            self.write_config(slot)
        for slot in self.nodes:
            self.start_node(slot)
        self.wait_voters(set(self.nodes), 90)
        if self.scenario["primary"] == "up":
            self.start_primary()

    def make_cert(self, slot):
        node = self.nodes[slot]
        run(os.path.join(BIN, "mxraftctl"), "cert", "create-node", "--id", str(node.id),
            "--ip", self.ip(slot), "--ca-dir", self.path("ca"),
            "--out-dir", self.path(f"n{slot}"), "--replace")

    def start_fs(self, slot):
        d = self.path(f"n{slot}")
        self.nodes[slot].fs = ChaosFs(os.path.join(d, "data"), os.path.join(d, "fs.sock"),
                                      os.path.join(d, "chaosfs.log"))

    def write_config(self, slot):
        node = self.nodes[slot]
        peers = ", ".join(f'"{self.ip(s)}:7100"' for s in self.nodes if s != slot)
        d = self.path(f"n{slot}")
        testing = ""
        if self.args.unsafe == "ack":
            testing = "[testing]\nack_before_commit = true\n"
        elif self.args.unsafe == "fsync":
            testing = "[testing]\nskip_log_fsync = true\n"
        with open(os.path.join(d, "mxraftd.toml"), "w") as f:
            f.write(f"""[node]
id = {node.id}
data_dir = "{d}/data/node"

[smtp]
listen = "{self.ip(slot)}:25"
hostname = "n{slot}.chaos.test"

[tls]
ca_file = "{self.path('ca', 'ca.pem')}"
cert_file = "{d}/node{node.id}.pem"
key_file = "{d}/node{node.id}-key.pem"

[admin]
listen = "{self.ip(slot)}:7001"
token_files = [{{ path = "{self.path('admin.token')}", role = "admin" }}]

[cluster]
listen = "{self.ip(slot)}:7100"
bootstrap = {"true" if slot == 1 else "false"}
peers = [{peers}]

[[domains]]
name = "chaos.test"
primary = "{PRIMARY}:25"
recipients = "any"

[delivery]
claim_lease = "{CLAIM_LEASE}s"
probe_interval = "2s"

[queue]
min_free_disk = 1048576

{testing}""")

    def start_node(self, slot):
        node = self.nodes[slot]
        d = self.path(f"n{slot}")
        env = dict(os.environ, RUST_LOG="info")
        if self.faketime:
            clock = os.path.join(d, "clock")
            if not os.path.exists(clock):
                with open(clock, "w") as f:
                    f.write("+0s\n")
            env.update(LD_PRELOAD=FAKETIME_LIB, FAKETIME_TIMESTAMP_FILE=clock,
                       FAKETIME_CACHE_DURATION="1", FAKETIME_DONT_FAKE_MONOTONIC="1")
        cmd = ["nsenter", f"--net=/run/netns/{self.ns(slot)}", "--",
               os.path.join(BIN, "mxraftd"), "--config", os.path.join(d, "mxraftd.toml")]
        if self.args.unsafe:
            cmd.append("--unsafe-testing")
        out = open(os.path.join(d, "log"), "a")
        out.write(f"=== start node id {node.id} at {time.time():.3f}\n")
        out.flush()
        node.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        node.paused = False

    def kill_node(self, slot):
        node = self.nodes[slot]
        if node.proc is None:
            return
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGKILL)
        node.proc.wait()
        node.proc = None
        node.paused = False

    def start_primary(self):
        self.recorder.start()

    def stop_primary(self):
        if self.recorder is not None:
            self.recorder.stop()

    # --- cluster state --------------------------------------------------------------------

    def status(self, slot):
        return self.ctl(slot, "cluster", "status", timeout=5)[0]

    def leader(self):
        """The slot of the leader, as the first live node that knows one says."""
        for slot in self.rng_order():
            if not self.alive(slot) or self.nodes[slot].paused:
                continue
            try:
                leader_id = self.status(slot).get("leader_id")
            except (HarnessError, subprocess.TimeoutExpired):
                continue
            for s, node in self.nodes.items():
                if node.id == leader_id:
                    return s
        return None

    def rng_order(self):
        slots = list(self.nodes)
        self.rng.shuffle(slots)
        return slots

    def claimer(self):
        """The slot whose node holds the most delivery claims, if any."""
        for slot in self.rng_order():
            if not self.alive(slot) or self.nodes[slot].paused:
                continue
            try:
                messages = self.ctl(slot, "queue", "list", timeout=10)
            except (HarnessError, subprocess.TimeoutExpired):
                continue
            counts = {}
            for m in messages:
                if m.get("claim_node"):
                    counts[m["claim_node"]] = counts.get(m["claim_node"], 0) + 1
            if counts:
                best = max(counts, key=counts.get)
                for s, node in self.nodes.items():
                    if node.id == best:
                        return s
            return None
        return None

    def voters(self, slot):
        s = self.status(slot)
        return {m["id"] for m in s["members"] if m["role"] != "learner"}, s.get("leader_id")

    def wait_voters(self, slots, timeout):
        want = {self.nodes[s].id for s in slots}
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            for slot in slots:
                if not self.alive(slot):
                    raise HarnessError(f"node {slot} exited: {self.tail(slot)}")
            try:
                views = [self.voters(s) for s in slots]
                if all(v == want and leader for v, leader in views):
                    return
                last = views
            except (HarnessError, subprocess.TimeoutExpired) as e:
                last = str(e)
            time.sleep(0.5)
        raise HarnessError(f"no leader with voters {sorted(want)} within {timeout} s: {last}")

    def tail(self, slot, lines=15):
        try:
            with open(self.path(f"n{slot}", "log")) as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    # --- faults ---------------------------------------------------------------------------

    def others(self, slot):
        return [s for s in self.nodes if s != slot]

    def block(self, slot, addresses):
        for a in addresses:
            run("ip", "netns", "exec", self.ns(slot), "nft", f"add rule inet chaos input ip saddr {a} drop")
            run("ip", "netns", "exec", self.ns(slot), "nft", f"add rule inet chaos output ip daddr {a} drop")

    def heal_network(self):
        for slot in self.nodes:
            for hook in ("input", "output"):
                run("ip", "netns", "exec", self.ns(slot), "nft", f"flush chain inet chaos {hook}")

    def partition(self, groups):
        """Cuts every node off from the nodes outside its group."""
        for group in groups:
            outside = [self.ip(s) for s in self.nodes if s not in group]
            for slot in group:
                self.block(slot, outside)

    def target(self, role):
        """A node in `role` that no other fault is working on, marked busy until the fault
        that asked for it is healed."""
        with self.busy_lock:
            free = [s for s in self.nodes if s not in self.busy]
            if role == "leader":
                slot = self.leader()
            elif role == "claimer":
                slot = self.claimer() or self.leader()
            else:
                leader = self.leader()
                slot = self.rng.choice([s for s in free if s != leader] or free)
            if slot is None or slot in self.busy:
                slot = self.rng.choice(free)
            self.busy.add(slot)
            return slot

    def take(self, slots):
        with self.busy_lock:
            self.busy.update(slots)
        return slots

    def inject(self, kind, hold):
        """Applies one fault, waits `hold` seconds, heals it. Returns the fault record."""
        fault = {"kind": kind.split("-")[0] if kind.split("-")[0] in
                 ("kill", "pause", "power", "skew") else kind, "name": kind, "nodes": [],
                 "t": time.time()}
        role = kind.split("-", 1)[1] if "-" in kind else None
        if kind.startswith("kill-"):
            slot = self.target(role)
            fault["nodes"] = [slot]
            self.kill_node(slot)
            self.sleep(hold)
            self.start_node(slot)
        elif kind.startswith("pause-") and kind != "pause-kill":
            slot = self.target(role)
            fault["nodes"] = [slot]
            self.pause(slot)
            self.sleep(hold)
            self.resume(slot)
        elif kind.startswith("power-"):
            slots = self.take(list(self.nodes)) if role == "all" else [self.target(role)]
            fault["nodes"] = slots
            for s in slots:
                self.kill_node(s)
            fault["dropped"] = [self.fs_ctl(s, "cut") for s in slots]
            self.sleep(hold)
            for s in slots:
                self.start_node(s)
        elif kind == "isolate-leader":
            slot = self.target("leader")
            fault.update(kind="partition", nodes=list(self.nodes), isolated=[slot])
            self.partition([[slot], self.others(slot)])
            self.sleep(hold)
            self.heal_network()
        elif kind == "minority":
            slots = self.rng_order()
            small = slots[: (self.n - 1) // 2]
            fault.update(kind="partition", nodes=list(self.nodes), isolated=small)
            self.partition([small, slots[len(small):]])
            self.sleep(hold)
            self.heal_network()
        elif kind == "bridge":
            slots = self.rng_order()
            bridge, left, right = slots[0], slots[1::2], slots[2::2]
            fault.update(kind="partition", nodes=list(self.nodes), bridge=bridge)
            for a in left:
                self.block(a, [self.ip(b) for b in right])
            for b in right:
                self.block(b, [self.ip(a) for a in left])
            self.sleep(hold)
            self.heal_network()
        elif kind == "isolate-primary":
            slots = self.rng_order()[: self.rng.randint(1, self.n - 1)]
            fault.update(nodes=slots)
            for s in slots:
                self.block(s, [PRIMARY])
            self.sleep(hold)
            self.heal_network()
        elif kind == "primary-flap":
            fault.update(kind="primary")
            self.stop_primary()
            self.sleep(hold)
            self.start_primary()
        elif kind.startswith("skew-"):
            slot = self.target(role)
            offset = self.rng.choice([-40, -20, 20, 40])
            fault.update(nodes=[slot], offset=offset)
            self.set_clock(slot, offset)
            self.sleep(hold)
            self.set_clock(slot, 0)
        elif kind == "disk-full":
            slot = self.target("any")
            fault.update(nodes=[slot])
            self.fs_ctl(slot, "capacity full")
            self.sleep(hold)
            self.fs_ctl(slot, f"capacity {64 << 30}")
            if not self.alive(slot):
                fault["exited"] = True
                self.nodes[slot].proc.wait()
                self.start_node(slot)
        elif kind == "wipe":
            slot = self.take([self.rng.choice(list(self.nodes))])[0]
            fault.update(nodes=[slot], old_id=self.nodes[slot].id)
            self.replace(slot)
        elif kind in ("pause-kill", "part-kill"):
            # The sequence that lost NATS writes: a minority paused (or cut off), one other
            # node crashes, the minority comes back while the crashed one is down, then all.
            slots = self.take(self.rng_order())
            minority, crasher = slots[: (self.n - 1) // 2], slots[-1]
            fault.update(nodes=list(self.nodes), minority=minority, crasher=crasher)
            if kind == "pause-kill":
                for s in minority:
                    self.pause(s)
            else:
                self.partition([minority, slots[len(minority):]])
            self.sleep(hold / 3)
            self.kill_node(crasher)
            self.sleep(hold / 3)
            if kind == "pause-kill":
                for s in minority:
                    self.resume(s)
            else:
                self.heal_network()
            self.sleep(hold / 3)
            self.start_node(crasher)
        else:
            raise HarnessError(f"unknown fault {kind}")
        fault["until"] = time.time()
        with self.busy_lock:
            self.busy.difference_update(fault["nodes"])
        return fault

    def pause(self, slot):
        self.nodes[slot].proc.send_signal(signal.SIGSTOP)
        self.nodes[slot].paused = True

    def resume(self, slot):
        if self.alive(slot):
            self.nodes[slot].proc.send_signal(signal.SIGCONT)
        self.nodes[slot].paused = False

    def set_clock(self, slot, offset):
        with open(self.path(f"n{slot}", "clock"), "w") as f:
            f.write(f"{offset:+d}s\n")

    def replace(self, slot):
        """The documented replacement of a node that lost its disk: stop it, remove its id,
        start a pristine node under a new id with its own certificate."""
        old = self.nodes[slot].id
        self.kill_node(slot)
        for s in self.others(slot):
            try:
                self.ctl(s, "cluster", "remove", str(old), timeout=30)
                break
            except (HarnessError, subprocess.TimeoutExpired):
                continue
        else:
            raise HarnessError(f"no node removed node {old}")
        shutil.rmtree(self.path(f"n{slot}", "data", "node"), ignore_errors=True)
        self.nodes[slot].id = self.next_id
        self.next_id += 1
        self.make_cert(slot)
        self.write_config(slot)
        self.start_node(slot)
        # One replacement at a time, as an operator would: the new node is a voter before
        # anything else happens.
        self.wait_voters(set(self.nodes), 60)

    def sleep(self, seconds):
        end = time.time() + seconds
        while time.time() < end:
            time.sleep(min(0.2, max(0, end - time.time())))

    def nemesis(self, duration):
        end = time.time() + duration
        faults = self.scenario["faults"]
        if not self.faketime:
            faults = [f for f in faults if not f.startswith("skew")]
        while time.time() < end - 3:
            self.sleep(self.rng.uniform(1, 4))
            hold = min(self.rng.uniform(4, 10), max(1.0, end - time.time()))
            kind = self.rng.choice(faults)
            combine = self.scenario.get("combine", 0)
            pairable = [f for f in faults if f != kind and f not in SOLO]
            if combine and kind not in SOLO and pairable and self.rng.random() < combine:
                # Two faults at once, on different nodes: the second starts while the first
                # holds.
                second = self.rng.choice(pairable)
                log(f"fault: {kind} + {second} for {hold:.1f} s")
                result = {}
                t = threading.Thread(target=lambda: result.update(f=self.inject(second, hold)))
                t.start()
                self.faults.append(self.inject(kind, hold))
                t.join()
                if "f" in result:
                    self.faults.append(result["f"])
            else:
                log(f"fault: {kind} for {hold:.1f} s")
                self.faults.append(self.inject(kind, hold))
            f = self.faults[-1]
            extra = {k: v for k, v in f.items() if k not in ("kind", "name", "nodes", "t", "until")}
            log(f"  on nodes {f['nodes']} {extra if extra else ''}")

    # --- the run --------------------------------------------------------------------------

    def load(self, duration):
        nodes = ",".join(self.ip(s) for s in self.nodes)
        return subprocess.Popen(
            ["ip", "netns", "exec", self.lab.hub, sys.executable, os.path.join(HERE, "load.py"),
             "--nodes", nodes, "--history", self.path("history.jsonl"),
             "--seed", str(self.args.seed), "--duration", str(duration),
             "--rate", str(self.args.rate)])

    def heal_all(self):
        self.heal_network()
        for slot, node in self.nodes.items():
            if node.paused:
                self.resume(slot)
            if self.faketime:
                self.set_clock(slot, 0)
            self.fs_ctl(slot, f"capacity {64 << 30}")
        # Every node crashes and comes back: recovery from what is on disk.
        for slot in self.nodes:
            self.kill_node(slot)
        for slot in self.nodes:
            self.start_node(slot)
        self.wait_voters(set(self.nodes), 120)

    def queued(self, slot):
        return self.ctl(slot, "queue", "stats", "--local", timeout=10)[0]["messages"]

    def drain(self, timeout):
        healed = time.time()
        if not self.recorder.up:
            self.start_primary()
        # From the primary's return, or from the heal when it was up all along.
        up = max(self.recorder.up_at, healed)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                counts = {s: self.queued(s) for s in self.nodes}
            except (HarnessError, subprocess.TimeoutExpired):
                counts = None
            if counts and all(c == 0 for c in counts.values()):
                return time.time() - up
            time.sleep(0.5)
        raise HarnessError(f"queues not empty {timeout} s after the primary came up: {counts}")

    def divergence(self, timeout=30):
        """Every node's state digest at one applied index; differences as sentences."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            digests = {}
            for slot in self.nodes:
                try:
                    digests[slot] = self.ctl(slot, "cluster", "digest", timeout=10)[0]
                except (HarnessError, subprocess.TimeoutExpired):
                    pass
            last = digests
            indexes = {d["applied_index"] for d in digests.values()}
            if len(digests) == self.n and len(indexes) == 1:
                shas = {d["sha256"] for d in digests.values()}
                if len(shas) == 1:
                    return [], digests
                return [f"nodes differ at index {indexes.pop()}: " + ", ".join(
                    f"node {s}: {d['sha256'][:12]}" for s, d in sorted(digests.items()))], digests
            time.sleep(0.3)
        return [f"no common applied index within {timeout} s: {last}"], last

    def read_jsonl(self, name):
        path = self.path(name)
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def execute(self):
        a = self.args
        log(f"scenario {a.scenario}, seed {a.seed}, {self.n} nodes, faults for {a.duration} s"
            + (f", UNSAFE {a.unsafe}" if a.unsafe else ""))
        self.setup()
        log("cluster ready; quiet load")
        # The load goes on for a while after the last fault, so that mail taken after it
        # counts too.
        load = self.load(a.quiet + a.duration + 5)
        self.sleep(a.quiet)
        self.nemesis(a.duration)
        load.wait()
        log(f"load done; {len(self.faults)} faults; heal, crash and restart every node")
        try:
            self.heal_all()
        except HarnessError as e:
            if not a.expect_loss:
                raise
            log(f"the unsafe cluster did not come back whole: {e}")
        log("primary up; drain")
        recovered = True
        try:
            drain_s = self.drain(a.drain_timeout)
            problems, digests = self.divergence()
        except HarnessError as e:
            if not a.expect_loss:
                raise
            # An unsafe build may not recover at all; what reached the primary still counts.
            log(f"the unsafe cluster did not recover ({e}); checking what was delivered")
            recovered, drain_s, problems = False, None, [str(e)]
        history = self.read_jsonl("history.jsonl")
        deliveries = self.read_jsonl("deliveries.jsonl")
        peers = {self.ip(s): s for s in self.nodes}
        figures = check(history, deliveries, self.faults, peers, CLAIM_LEASE + MAX_SKEW + 5)
        figures.update(scenario=a.scenario, seed=a.seed, nodes=self.n, unsafe=a.unsafe,
                       faults=len(self.faults),
                       fault_kinds=sorted({f["name"] for f in self.faults}),
                       drain_seconds=None if drain_s is None else round(drain_s, 1),
                       digests_equal=not problems, cluster_recovered=recovered,
                       power_cuts=sum(1 for f in self.faults if f["kind"] == "power"),
                       duration=a.duration)
        return figures, verdict(figures, problems)

    def cleanup(self):
        for slot, node in self.nodes.items():
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)
                node.proc.kill()
                node.proc.wait()
        self.stop_primary()
        # Anything else started with a file of this run (a node restarted twice by mistake
        # would otherwise outlive the run).
        kill_strays(self.work)
        for node in self.nodes.values():
            if node.fs is not None:
                node.fs.stop()
        if self.lab is not None:
            self.lab.close()
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def table(figures):
    keys = ["attempts", "acknowledged", "refused", "unknown", "delivered", "deliveries", "lost",
            "unexpected", "duplicates", "duplicates_unexplained", "recovered",
            "refused_then_delivered", "concurrent", "faults", "power_cuts", "drain_seconds",
            "digests_equal"]
    return "\n".join(f"  {k:24} {figures[k]}" for k in keys)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--nodes", type=int, default=3)
    p.add_argument("--duration", type=float, default=40, help="seconds of faults under load")
    p.add_argument("--quiet", type=float, default=3, help="seconds of load before the faults")
    p.add_argument("--rate", type=float, default=30, help="messages per second offered")
    p.add_argument("--drain-timeout", type=float, default=180)
    p.add_argument("--unsafe", choices=["ack", "fsync"],
                   help="negative control: acknowledge before the commit, or never fsync")
    p.add_argument("--expect-loss", action="store_true",
                   help="pass only if the checker reports lost acknowledged mail")
    p.add_argument("--json", help="append the figures to this file as one JSON line")
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.randrange(1, 1 << 30)
    if os.geteuid() != 0:
        sys.exit("chaos: needs root (network namespaces, FUSE mounts)")
    rerun = (f"tests/chaos/run.sh --scenario {args.scenario} --seed {args.seed} "
             f"--duration {args.duration:g}" + (f" --unsafe {args.unsafe}" if args.unsafe else "")
             + (" --expect-loss" if args.expect_loss else ""))
    h = Harness(args)
    try:
        figures, problems = h.execute()
    except Exception as e:  # noqa: BLE001 - any harness failure fails the run, with its seed
        log(f"FAIL: {type(e).__name__}: {e}")
        for slot in h.nodes:
            print(f"== node {slot} log\n{h.tail(slot, 25)}", file=sys.stderr)
        print(f"rerun: {rerun}", file=sys.stderr)
        args.keep = True
        h.cleanup()
        sys.exit(1)
    h.cleanup()
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(figures) + "\n")
    print(f"{args.scenario} seed {args.seed}:\n{table(figures)}")
    if args.expect_loss:
        if figures["lost"] == 0:
            print(f"FAIL: the negative control ({args.unsafe}) lost nothing: the checker or the "
                  f"faults cannot show a loss\nrerun: {rerun}", file=sys.stderr)
            sys.exit(1)
        print(f"negative control ({args.unsafe}): {figures['lost']} acknowledged messages lost,"
              " as it must")
        return
    if problems:
        for problem in problems:
            print(f"FAIL: {problem}", file=sys.stderr)
        print(f"rerun: {rerun}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
