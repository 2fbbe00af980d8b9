"""Learning loops: what nanobot keeps from its own verified work, so that the same model
grows faster and more accurate with use.

Everything learned lives in NANOBOT_HOME (`learned.db` for results, examples, history
and anomalies; `skills/` for crystallised agent skills), is listed by `nanobot learned`
and can be forgotten. This layer sits above runs, agent, voting and context and is
imported by none of them: they take what it learned through narrow seams.
"""
