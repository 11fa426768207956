"""Deploy targets: one package per kind (``schema.py``, ``render.py``, ``driver.py``; see
``deployer.targets.base``), listed once in ``deployer.targets.kinds``. The driver contract
is ``deployer.targets.contract``."""
