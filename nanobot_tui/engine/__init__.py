"""Everything that works, below any front-end: serving/ (model servers and providers),
llm/ (the clients), voting/ (MAKER), runs/ (durable runs), context/ (volumes and search),
agent/ (the tool loop). engine/work/ and engine/learning/ are declared in the layer
contracts for what comes next.

The engine never imports textual: import-linter's contracts in pyproject.toml say so, and
tests/test_layering.py also checks it in a fresh interpreter.
"""
