"""Everything that works: servers, the LLM client, context, voting, processes, learning.

The engine never imports textual; tests/test_layering.py checks it in a fresh interpreter.
"""
