"""The agent's tools: the registry that runs them and the tools themselves."""
