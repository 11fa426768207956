"""The scoring server the deployer images run: ``python -m deployer.serving``.

Serves an Azure ML style entry script (``init()``/``run()``) over HTTP, compatible
with azureml-inference-server-http. Imports only the standard library and
``requirements.txt`` beside this file: the image ships this package without the rest
of the toolkit. Start at cli.py; worker.py, protocol.py and app.py are the request path.
"""
