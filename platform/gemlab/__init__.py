"""gemlab: mixture-of-experts routing experiments on many datasets at once.

The import name is ``gemlab``; its source root is ``platform/`` (a src layout).
There is deliberately no ``platform`` package: it would shadow Python's
standard-library module of that name, which Ray, torch and pip import.
"""

__version__ = "0.1.0"
