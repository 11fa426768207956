"""``functions``: an Azure Functions app (container) that calls the entry script per event."""
