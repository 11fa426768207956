"""``aci``: the scoring image as an Azure Container Instances container group."""
