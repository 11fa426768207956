"""``local``: the scoring image run by the local Docker engine on the host network."""
