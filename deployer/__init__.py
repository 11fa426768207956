"""deployer: deploy machine-learning models from one deploy.yaml.

This module stays import-free on purpose: the scoring image ships ``deployer.serving``
without the toolkit's deploy-time dependencies, and it imports this package first.
"""

__version__ = "0.1.0"
