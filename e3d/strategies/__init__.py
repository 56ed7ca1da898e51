"""The built-in search strategies: every module of this package registers one (:mod:`e3d.strategy`)."""
import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
