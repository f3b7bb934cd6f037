"""pytest plugin for agentrl users (registered through the ``pytest11`` entry point).

Fixtures are added by the environments work (issue 5); this module must stay importable at all times
because pytest loads it whenever agentrl is installed.
"""
