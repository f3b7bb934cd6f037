"""An agent written for the OpenAI API, trained unchanged through the agentrl proxy (see agent.py)."""
