"""Deploy targets: one module per kind, each following ``deployer.targets.base.TargetKind``.

Kinds are listed once, in ``deployer.targets.registry``.
"""
