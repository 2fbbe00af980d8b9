"""The context store: million-token volumes read by index and slice.

A volume is files ingested under NANOBOT_HOME/volumes/<name>/: their text in one
memory-mapped file, a line-offset index, per-file metadata, and a chunk index for search.
The micro-tools (ctx_length, ctx_slice, ctx_grep, ctx_search, ctx_summarize, mem_store,
mem_recall) in `store` are what the CLI, the volume browser and the agent call.
"""
