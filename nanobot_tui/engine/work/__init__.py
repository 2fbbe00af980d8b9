"""Real-work processes: recipes that decompose a task over a codebase or a volume.

MAKER's maximal decomposition applied to a user's own work: a codebase is cut by
structure into files and functions (`codebase`), a recipe (`recipes`) says what one
micro-step does to one function and red-flags what it may not do, and the code domain
(`domain`) turns that into the independent, voted steps of a durable run (registered as
"code" in the voting registry, which imports this layer lazily by name); `extract` does
the same for reading a volume chunk by chunk. Edits go to a working copy, are verified
there and applied only on request (`workcopy`, `verify`). This layer sits above runs,
agent, voting and context and is imported by none of them.
"""
