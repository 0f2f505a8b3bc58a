"""Testing components with hypothesis: strategies for tensors and WIT values
(strategies.py), a state machine base for a component's exports (machine.py), the
engine of `wasinn fuzz` (fuzz.py) and a pytest plugin (plugin.py, loaded by pytest
through the `pytest11` entry point).

Needs hypothesis: `pip install 'wasinn[testing]'`.
"""
try:
    import hypothesis  # noqa: F401
except ModuleNotFoundError:
    raise ModuleNotFoundError("wasinn.testing needs hypothesis: pip install 'wasinn[testing]'",
                              name="hypothesis") from None

from .machine import ComponentMachine, export_names
from .strategies import EDGES, THRESHOLDS, TYPES, Unsupported, dims, inputs_for, tensor_types, tensors, values_for

__all__ = ["ComponentMachine", "EDGES", "THRESHOLDS", "TYPES", "Unsupported", "dims", "export_names", "inputs_for",
           "tensor_types", "tensors", "values_for"]
