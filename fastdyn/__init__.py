"""fastdyn: a Dynamo-style replicated key-value store with Cython hot paths."""

__version__ = "0.1.0"


def open(path, sync="interval", **options):
    """Open (or create) an embedded store in directory `path`; see fastdyn.storage.Store."""
    from fastdyn.storage import Store

    return Store(path, sync=sync, **options)
