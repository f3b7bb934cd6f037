"""An OpenAI-compatible proxy that records tokens, so agents written for the OpenAI API train unchanged.

    python -m agentrl.proxy                       # the tiny local model on 127.0.0.1:8000
    client = openai.OpenAI(base_url="http://127.0.0.1:8000/s/episode-1/v1", api_key="unused")

Each session (``/s/{session}/...``) is one episode: its calls merge into one token sequence while each prompt
extends the last prompt + completion, else into several samples that share the reward (session.py). For
training, ``env.id=module:function`` runs an agent function as episodes (agent_env.py). See docs/proxy.md.

    protocol    the OpenAI wire format: request models, errors, response bodies
    tool_calls  sampled text -> content + tool_calls (Hermes tags, python fences); malformed is data
    messages    OpenAI messages -> chat-template messages (returned turns render as sampled)
    session     a session's samples, merging and splitting, its Trajectories
    proxy       the service: sessions, one call = render -> place -> generate -> record -> respond
    app         FastAPI routes, and ProxyServer (a server thread)
    agent_env   AgentEnv: an agent function as RolloutManager episodes
"""

from agentrl.proxy.app import ProxyServer, create_app
from agentrl.proxy.proxy import Proxy
from agentrl.proxy.session import SPLIT_REASONS, Session, SessionRules

__all__ = ["SPLIT_REASONS", "Proxy", "ProxyServer", "Session", "SessionRules", "create_app"]
