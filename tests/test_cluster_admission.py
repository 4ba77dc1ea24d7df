"""Admission control on real nodes: INFO shows its state, the budget of background work falls
while the event loop's lag is above the bound (and not when it is switched off), and a handoff
paced through the lowered budget still completes."""
import threading

from conftest import Cluster, info_fields, wait_until
from resp_client import RawClient
from test_cluster_handoff import FAST, pipeline_set, start_alone, wait_settled

FIELDS = ("admission_enabled", "admission_factor", "admission_p99_ms", "admission_bound_ms",
          "admission_decreases", "admission_compaction_bytes",
          "admission_compaction_wait_ms") + tuple(
    f"admission_{kind}_{what}" for kind in ("hints", "handoff")
    for what in ("bytes", "waits", "wait_ms"))
# no loaded node keeps its loop's lag p99 under 0.1 ms: the budget must fall
TIGHT = ("--admission-p99-ms", "0.1")


class Load(threading.Thread):
    """Pipelined SETs through one node until stopped."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.client = RawClient(port, timeout=30)
        self.stop = threading.Event()

    def run(self):
        n = 0
        while not self.stop.is_set():
            pipeline_set(self.client, [(b"load:%d" % ((n + j) % 2000), b"x" * 100)
                                       for j in range(100)])
            n += 100

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(10)
        self.client.close()


def admission(port) -> dict:
    fields = info_fields(port, "cluster")
    return {k: fields[k] for k in FIELDS}


def test_budget_falls_above_the_bound_and_a_paced_handoff_completes(tmp_path):
    cluster = Cluster(tmp_path, 3, *FAST, *TIGHT).start()
    joiner = None
    try:
        port = cluster.ports[0]
        state = admission(port)
        assert state["admission_enabled"] == "1"
        assert float(state["admission_bound_ms"]) == 0.1
        with Load(port):
            wait_until(lambda: (lambda s: float(s["admission_factor"]) < 1
                                and int(s["admission_decreases"]) > 0
                                and float(s["admission_p99_ms"]) > 0.1)(admission(port)),
                       30, "the budget did not fall under load")
            # a 4th node joins while the budget is low: the streams and the drop wait for
            # it, and the change still ends
            joiner = start_alone(tmp_path, "node3", *TIGHT)
            with RawClient(joiner.port) as c:
                assert c.call("DYN.JOIN", cluster.peer_addresses[0]) == ("simple", b"OK")
            wait_settled(cluster.ports + [joiner.port], 4)
        states = [admission(p) for p in cluster.ports]
        assert sum(int(s["admission_handoff_bytes"]) for s in states) > 0
        assert sum(int(s["admission_handoff_waits"]) for s in states) > 0
    finally:
        if joiner is not None:
            joiner.kill()
        cluster.kill_all()


def test_switched_off_the_budget_stays_full(tmp_path):
    node = start_alone(tmp_path, "solo", "--admission-control", "no", *TIGHT)
    try:
        with Load(node.port):
            # the lag is measured and above the bound, yet nothing is slowed
            wait_until(lambda: float(admission(node.port)["admission_p99_ms"]) > 0.1, 30,
                       "no lag measured")
            state = admission(node.port)
        assert state["admission_enabled"] == "0"
        assert float(state["admission_factor"]) == 1.0
        assert state["admission_decreases"] == "0"
    finally:
        node.kill()


def test_hints_are_delivered_through_a_lowered_budget(start_cluster):
    cluster = start_cluster(3, *TIGHT)
    cluster.kill(2)
    keys = [b"h:%d" % i for i in range(300)]
    with cluster.client(0) as c:
        assert c.pipeline([("SET", key, b"v") for key in keys]) == [("simple", b"OK")] * 300
    wait_until(lambda: cluster.hints_pending(0) == 300, 30, "no hints kept for the down node")
    with Load(cluster.ports[0]):
        wait_until(lambda: float(admission(cluster.ports[0])["admission_factor"]) < 1, 30,
                   "the budget did not fall under load")
        cluster.restart(2)
        cluster.wait_hints_delivered(60)
    assert int(admission(cluster.ports[0])["admission_hints_bytes"]) > 0
    assert cluster.stop_all() == [0, 0, 0]
    assert cluster.misplaced(dict.fromkeys(keys, b"v")) == {}
