"""The agent: a tool loop over the model slots, with memory, compaction and delegation."""
