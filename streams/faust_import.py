"""faust without aiohttp: 0.1 s less of Python on a worker's start, on its critical path.

faust imports aiohttp (its web server's and HTTP client's library, 0.10-0.12 s of imports here) for
two things a fusionrec worker never uses: a type alias (`faust.types.web.HttpClientT`, read from
`aiohttp.client` when faust is imported) and the default of its `HttpClient` setting (a class path,
resolved when an app is made). The worker's faust web server is off and it makes no HTTP calls.

`import_faust` imports faust with a stand-in `aiohttp.client` that offers only that one name, and
takes the stand-in away again, so that anything that imports aiohttp later gets the real one. A faust
that reads more of aiohttp when imported (a newer release) is imported again the plain way: slower,
never broken. `NoHttpClient` is what the worker's app gets as its `HttpClient`.
"""

from __future__ import annotations

import importlib
import logging
import sys
from types import ModuleType
from typing import Any

__all__ = ["FAUST_MODULES", "NoHttpClient", "import_faust"]

log = logging.getLogger("fusionrec.worker")

#: what the worker imports from faust (streams.faust_worker)
FAUST_MODULES = ("faust", "faust.tables", "faust.transport.consumer", "faust.transport.drivers.aiokafka", "faust.types")


class NoHttpClient:
    """faust's `HttpClient` in a worker's app: the worker makes no HTTP calls through faust, so its
    app has no client; asking for one (`app.http_client`) is a bug, said so."""

    def __init__(self, *_: Any, **__: Any) -> None:
        raise RuntimeError("the fusionrec worker's faust app has no HTTP client (its web server is off)")


def _stand_ins() -> dict[str, ModuleType]:
    """An `aiohttp` package and its `client` module holding only `ClientSession` (faust's type alias)."""
    package = ModuleType("aiohttp", "stand-in while faust is imported (streams.faust_import)")
    client = ModuleType("aiohttp.client", package.__doc__)
    client.ClientSession = NoHttpClient  # type: ignore[attr-defined]
    package.client = client  # type: ignore[attr-defined]
    return {"aiohttp": package, "aiohttp.client": client}


def _import(names: tuple[str, ...]) -> None:
    for name in names:
        importlib.import_module(name)


def _stale(new: set[str], stand_ins: dict[str, ModuleType]) -> list[str]:
    """Of the modules a failed import left, those to import again: faust's, and any holding a stand-in.
    The rest stay (an extension module such as numpy's may not be loaded twice in one process)."""
    fakes = [id(m) for m in stand_ins.values()] + [id(NoHttpClient)]
    return [
        name
        for name in new
        if name.partition(".")[0] in ("faust", "aiohttp")
        or any(id(v) in fakes for v in list(vars(sys.modules[name]).values()))
    ]


def import_faust(names: tuple[str, ...] = FAUST_MODULES) -> bool:
    """Import `names` with aiohttp stood in for; True when that worked, False when they were imported
    the plain way (aiohttp already imported, or a faust that needed more of it). Either way the
    modules are in `sys.modules` after, and aiohttp, when imported after, is the real one."""
    if "aiohttp" in sys.modules:  # imported already (a test process, a web server): nothing to save
        _import(names)
        return False
    stand_ins = _stand_ins()
    before = set(sys.modules)
    sys.modules.update(stand_ins)
    try:
        _import(names)
    except (ImportError, AttributeError) as exc:  # it reads more of aiohttp: forget the half import
        for name in _stale(set(sys.modules) - before, stand_ins):
            del sys.modules[name]
        log.info("faust_import_plain reason=%s", exc)
        _import(names)
        return False
    finally:
        for name, module in stand_ins.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
    return True
