"""The ops, one module each: an op is one class that owns its notation word and its IR behaviour.

Every module of this package is imported here, so that a new op module registers its word
without an edit to this file; code that needs an op imports it from its module.
"""

import pkgutil
from importlib import import_module

for _module in pkgutil.iter_modules(__path__):
    import_module(f"{__name__}.{_module.name}")
