"""fastdyn: a Dynamo-style replicated key-value store with Cython hot paths."""

__version__ = "0.1.0"


def _unbuilt_checkout():
    """The checkout's root when this package is a source tree whose extensions were never
    built in place, else None. Python started in a checkout imports its fastdyn/ before any
    installed copy, and would otherwise fail later on a bare `No module named fastdyn._...`."""
    import importlib.machinery
    import os

    package = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(package)
    if not (os.path.isfile(os.path.join(root, "setup.py"))
            and os.path.isdir(os.path.join(root, "ext"))):
        return None
    if any(os.path.exists(os.path.join(package, "_logstore" + suffix))
           for suffix in importlib.machinery.EXTENSION_SUFFIXES):
        return None
    return root


_checkout = _unbuilt_checkout()
if _checkout is not None:
    raise ImportError(
        f"fastdyn is imported from the source checkout {_checkout}, which has no compiled "
        "extensions (fastdyn._logstore and the others). Build them in place with "
        "`pip install -e .` in the checkout, or run Python from another directory to use an "
        "installed fastdyn.", name="fastdyn", path=__file__)
del _checkout, _unbuilt_checkout


def open(path, sync="interval", **options):
    """Open (or create) an embedded store in directory `path`; see fastdyn.storage.Store."""
    from fastdyn.storage import Store

    return Store(path, sync=sync, **options)
