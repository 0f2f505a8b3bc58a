"""Modules imported when first used. numpy costs ~30 ms of start-up, and a run whose
guest loads no graph and passes no tensor never needs it."""
from __future__ import annotations

import importlib


class Deferred:
    """Stands in for a module until one of its attributes is first read; it then takes
    on the module's attributes, so later reads cost what a module's do."""

    def __init__(self, name: str):
        self.__dict__["_deferred_module"] = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self.__dict__["_deferred_module"])
        self.__dict__.update(vars(module))
        return getattr(module, attr)


numpy = Deferred("numpy")
