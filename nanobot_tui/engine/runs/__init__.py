"""Durable runs: a voted run's tree of steps persisted as it goes, resumable from any crash.

    spec.py        what a run is: domain, sampler, votes, budgets, retry policy (RunSpec)
    tree.py        the shape of its process tree: steps in blocks, level by level
    store/         its SQLite store: the writer thread, the read API, trace lines
    durable.py     the runner: resumes from the last durable step, votes the rest
    session.py     one runner session: its state, and how it settles a step
    scheduling.py  going through the steps: in order, or concurrently
    control.py     the lock, pause/cancel requests, detached runners, and run control
                   (pause_run, cancel_run, resume_detached, start_detached)
    worker.py      the detached runner's program
    traces.py      trace files: reading them back (plain or compacted)
    prune.py       removing runs (rm, prune) and what the data folders cost
    compact.py     compacting finished runs' trace files (gzip)
    recover.py     rebuilding a damaged store from the rows it still holds

The engine never imports textual; import what you need from the submodules.
"""
