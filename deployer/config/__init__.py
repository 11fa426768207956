"""deploy.yaml: its schema (``model``, ``fields``), its loader (``loader.load_config``) and its
errors (``deployer.errors.ConfigError``).

Kept free of imports: target modules import ``deployer.config.fields`` while the schema in
``deployer.config.model`` imports the target registry.
"""
