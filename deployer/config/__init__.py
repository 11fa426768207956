"""deploy.yaml: its schema (``model``, ``fields``), its loader (``loader.load_config``) and its
errors (``deployer.errors.ConfigError``).

Kept free of imports: each target kind's ``schema.py`` imports ``deployer.config.fields``,
while ``deployer.config.model`` imports those schema modules (``deployer.targets.kinds``).
"""
