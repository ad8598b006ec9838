"""The checker must catch what it claims to: each test feeds it a history with one flaw."""
import unittest

from check import check, verdict

PEERS = {"10.78.0.1": 1, "10.78.0.2": 2, "10.78.0.3": 3}


def sent(i, outcome="ok", stage="dot"):
    return {"id": i, "outcome": outcome, "stage": stage, "node": 1}


def got(i, peer="10.78.0.1", t=100.0, started=None, acked=True):
    events = [{"ev": "got", "id": i, "peer": peer, "t": t,
               "started": t - 0.1 if started is None else started}]
    if acked:
        events.append({"ev": "acked", "id": i, "peer": peer, "t": t + 0.01})
    return events


class CheckerTest(unittest.TestCase):
    def test_a_clean_run_passes(self):
        figures = check([sent("a"), sent("b")], got("a") + got("b"), [], PEERS, 20)
        self.assertEqual(figures["lost"], 0)
        self.assertEqual(figures["duplicates"], 0)
        self.assertEqual(verdict(figures, []), [])

    def test_an_acknowledged_message_never_delivered_is_lost(self):
        figures = check([sent("a"), sent("b")], got("a"), [], PEERS, 20)
        self.assertEqual(figures["lost"], 1)
        self.assertEqual(figures["lost_ids"], ["b"])
        self.assertTrue(verdict(figures, []))

    def test_refused_and_unknown_messages_are_not_lost(self):
        history = [sent("a", "fail", "rcpt"), sent("b", "info"), sent("c", "fail")]
        figures = check(history, got("b") + got("c"), [], PEERS, 20)
        self.assertEqual(figures["lost"], 0)
        self.assertEqual(figures["recovered"], 1)
        self.assertEqual(figures["refused_then_delivered"], 1)
        self.assertEqual(verdict(figures, []), [])

    def test_a_delivery_never_sent_is_unexpected(self):
        figures = check([sent("a")], got("a") + got("zzz"), [], PEERS, 20)
        self.assertEqual(figures["unexpected"], 1)
        self.assertTrue(verdict(figures, []))

    def test_a_duplicate_without_a_fault_fails(self):
        deliveries = got("a", t=100) + got("a", peer="10.78.0.2", t=150)
        figures = check([sent("a")], deliveries, [], PEERS, 20)
        self.assertEqual(figures["duplicates"], 1)
        self.assertEqual(figures["duplicates_unexplained"], 1)
        self.assertTrue(verdict(figures, []))

    def test_a_duplicate_after_its_sender_was_killed_is_explained(self):
        deliveries = got("a", t=100) + got("a", peer="10.78.0.2", t=150)
        faults = [{"kind": "kill", "nodes": [1], "t": 101, "until": 110}]
        figures = check([sent("a")], deliveries, faults, PEERS, 20)
        self.assertEqual(figures["duplicates_unexplained"], 0)
        # A fault on another node, or long after, explains nothing.
        for fault in ({"kind": "kill", "nodes": [3], "t": 101},
                      {"kind": "kill", "nodes": [1], "t": 140}):
            figures = check([sent("a")], deliveries, [fault], PEERS, 20)
            self.assertEqual(figures["duplicates_unexplained"], 1, fault)

    def test_a_duplicate_after_the_primary_died_before_its_reply_is_explained(self):
        deliveries = got("a", t=100, acked=False) + got("a", peer="10.78.0.2", t=150)
        figures = check([sent("a")], deliveries, [], PEERS, 20)
        self.assertEqual(figures["duplicates_unexplained"], 0)

    def test_overlapping_deliveries_from_two_nodes_are_concurrent(self):
        deliveries = got("a", t=100, started=99) + got("a", peer="10.78.0.2", t=101, started=99.5)
        faults = [{"kind": "pause", "nodes": [1], "t": 98, "until": 120}]
        figures = check([sent("a")], deliveries, faults, PEERS, 20)
        self.assertEqual(figures["concurrent"], 1)

    def test_divergence_fails_the_run(self):
        figures = check([sent("a")], got("a"), [], PEERS, 20)
        self.assertTrue(verdict(figures, ["node 2 differs"]))


if __name__ == "__main__":
    unittest.main()
