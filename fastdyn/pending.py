"""The one deferred-result type: a result that a quorum (or any callback) completes later.

No asyncio Task or Future is made per request: a `Pending` is a small object whose callbacks
run once, in order, when `complete` is called (a C class, ext/_pending.pyx: every quorum
operation makes one). `then` chains a step after a result that may or may not be pending,
`gather` waits for several; a failure (an exception instance as the result) passes through
both unchanged. `each` waits for several too, keeping every failure in its own place.
"""
from fastdyn._pending import Pending


def then(result, fn):
    """fn(result) now, or once a Pending completes (a failure passes through unchanged); fn
    may itself return a Pending. Chains the steps of an operation that needs two."""
    if result.__class__ is not Pending:
        return fn(result)
    return _chain(result, fn, True)


def after(tail: Pending, fn):
    """fn() once `tail` has completed, whatever its outcome: a Pending of fn's result."""
    return _chain(tail, lambda _: fn(), False)


def _chain(first: Pending, fn, pass_failures: bool) -> Pending:
    chained = Pending()

    def done(value):
        if pass_failures and isinstance(value, Exception):
            chained.complete(value)
            return
        try:
            nxt = fn(value)
        except Exception as exc:
            chained.complete(exc)
            return
        if nxt.__class__ is Pending:
            nxt.add_done_callback(chained.complete)
        else:
            chained.complete(nxt)

    first.add_done_callback(done)
    return chained


def gather(results):
    """The list of several results (some maybe Pending), or the first failure."""
    items = list(results)
    waiting = [i for i, x in enumerate(items) if x.__class__ is Pending]
    if not waiting:
        return items
    out = Pending()
    left = [len(waiting)]

    def done(i, value):
        if out.done:
            return
        if isinstance(value, Exception):
            out.complete(value)
            return
        items[i] = value
        left[0] -= 1
        if not left[0]:
            out.complete(items)

    for i in waiting:
        items[i].add_done_callback(lambda value, i=i: done(i, value))
    return out


def each(results):
    """The list of several results once every Pending among them has completed, each
    failure in its own place (unlike gather, which stops at the first)."""
    waiting = [r for r in results if r.__class__ is Pending]
    if not waiting:
        return results
    out = Pending()
    left = [len(waiting)]

    def one_done(_):
        left[0] -= 1
        if not left[0]:
            out.complete([r.result if r.__class__ is Pending else r for r in results])

    for r in waiting:
        r.add_done_callback(one_done)
    return out
