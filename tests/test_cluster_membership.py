"""Membership between real processes: gossip joins groups started from different seeds, the
failure detector notices a silent member without any client traffic, and a node configured
with another partition count is refused."""
import time

from conftest import Cluster, cluster_view, info_fields, members_of, wait_until

FAST = ("--gossip-interval-ms", "200")


def test_groups_started_from_different_seeds_become_one_ring(tmp_path):
    # {0, 1} and {2, 3} know only each other; node 4 is given one seed of each group
    cluster = Cluster(tmp_path, 5, *FAST, seeds=[[0, 1], [0, 1], [2, 3], [2, 3], [1, 2]])
    try:
        for node in cluster.nodes[:4]:
            node.spawn()
        for node in cluster.nodes[:4]:
            node.wait_listening()
        for i in range(4):
            wait_until(lambda: cluster_view(cluster.ports[i])["members"] == 2, 20,
                       f"node {i} does not see its group")
        time.sleep(1.0)                 # gossip goes on: the groups stay apart
        assert [cluster_view(p)["members"] for p in cluster.ports[:4]] == [2, 2, 2, 2]

        cluster.nodes[4].start()
        cluster.wait_joined(30)
        rings = {repr(cluster.call(i, "DYN.RING")) for i in range(5)}
        assert len(rings) == 1
        assert members_of(cluster, 0) == {name: "up" for name in cluster.names}
    finally:
        cluster.kill_all()
    assert not cluster.log_problems()


def test_a_silent_member_is_suspected_without_traffic_and_comes_back(start_cluster):
    cluster = start_cluster(3, *FAST)
    cluster.pause(2)                    # SIGSTOP: its sockets stay open, it says nothing
    started = time.monotonic()
    for i in (0, 1):
        wait_until(lambda: members_of(cluster, i)[cluster.names[2]] == "down", 30,
                   f"node {i} still believes the paused node up")
    detected = time.monotonic() - started
    assert info_fields(cluster.ports[0], "cluster")["cluster_unreachable"] == cluster.names[2]
    # no client request was needed to notice, and writes go on with W=2 (a hint for node 2)
    for n in range(20):
        assert cluster.call(n % 2, "SET", b"k%d" % n, b"v") == ("simple", b"OK")
    cluster.resume(2)
    cluster.wait_joined(30)
    cluster.wait_hints_delivered()
    assert members_of(cluster, 0)[cluster.names[2]] == "up"
    assert detected < 30


def test_a_node_of_another_partition_count_is_refused(tmp_path):
    cluster = Cluster(tmp_path, 2, *FAST, seeds=[[0], [0, 1]])
    cluster.nodes[1].argv += ["--partitions", "128"]
    try:
        for node in cluster.nodes:
            node.start()
        wait_until(lambda: "128 partitions" in info_fields(
            cluster.ports[1], "cluster")["cluster_join_error"], 20, "no join error")
        assert "this cluster has 256" in info_fields(cluster.ports[1],
                                                     "cluster")["cluster_join_error"]
        assert [cluster_view(p)["members"] for p in cluster.ports] == [1, 1]
    finally:
        cluster.kill_all()
