"""Crash test: a writer process with sync="always" is SIGKILLed at random moments.

The writer prints a line after each acknowledged operation.  After every kill the store is
reopened: each key must hold its last acknowledged value (or the effect of the one operation
that was in flight), and nothing that was never written may appear.
"""
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from fastdyn.storage import Store

WRITER = r"""
import sys
from fastdyn.storage import Store

path, i = sys.argv[1], int(sys.argv[2])
s = Store(path, sync="always", segment_bytes=32 << 10, compress_threshold=200)
out = sys.stdout
while True:
    key = b"k%d" % (i % 97)
    if i % 11 == 5:
        s.delete(key)
    elif i % 7 == 3:
        with s.batch():                    # group commit: both acknowledged together
            s[key] = b"%d:" % i * (1 + i % 60)
            s[b"pair%d" % (i % 13)] = b"%d" % i
    else:
        s[key] = b"%d:" % i * (1 + i % 60)
    out.write("%d\n" % i)
    out.flush()
    if i % 400 == 399:
        s.merge()
    i += 1
"""


def effects(i):
    """The (key, value-or-None) pairs operation i writes."""
    key = b"k%d" % (i % 97)
    if i % 11 == 5:
        return [(key, None)]
    if i % 7 == 3:
        return [(key, b"%d:" % i * (1 + i % 60)), (b"pair%d" % (i % 13), b"%d" % i)]
    return [(key, b"%d:" % i * (1 + i % 60))]


def run_rounds(tmp_path, budget_s, rng):
    path = str(tmp_path / "db")
    model = {}
    next_i = 0
    rounds = 0
    deadline = time.monotonic() + budget_s
    while time.monotonic() < deadline:
        proc = subprocess.Popen([sys.executable, "-c", WRITER, path, str(next_i)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        first = proc.stdout.readline()          # wait until it is writing
        assert first, proc.stderr.read().decode()
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        rest = proc.stdout.read()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        text = (first + rest).decode()
        lines = text.split("\n")
        acked = [int(x) for x in lines[:-1]]    # the last piece is "" or a partial line
        assert acked == list(range(next_i, next_i + len(acked)))
        for i in acked:
            for k, v in effects(i):
                model[k] = v
        in_flight = next_i + len(acked)
        maybe = dict(effects(in_flight))
        with Store(path) as s:
            got = {k: s[k] for k in s}
        for k in set(model) | set(got) | set(maybe):
            options = [model.get(k)]
            if k in maybe:
                options.append(maybe[k])
            assert got.get(k) in options, (k, got.get(k), options, rounds)
        for k in maybe:                          # what of the in-flight operation landed
            model[k] = got.get(k)
        next_i = in_flight + 1
        rounds += 1
    return rounds


def test_sigkill_loses_no_acknowledged_write(tmp_path):
    assert run_rounds(tmp_path, 15, random.Random(1)) >= 5


@pytest.mark.slow
def test_sigkill_many_rounds(tmp_path):
    assert run_rounds(tmp_path, 150, random.Random(os.getpid())) >= 50
