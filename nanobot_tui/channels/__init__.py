"""Channels: front-ends beside the CLI and the app that reach nanobot from elsewhere
(Telegram, email), and the gateway that runs them over one message bus.

    base.py           what a channel is (Channel), its messages (Inbound, Outbound)
    bus.py            inbound and outbound queues; the outbound dispatcher (retries, backoff,
                      a rate limit per chat) and its counters
    gateway.py        runs the enabled channels, restarts a failed one, keeps their state
    commands.py       what a chat may ask: /status, /runs, /pause RUN, /watch RUN, ...
    ask.py            /ask: the agent, in a session of the chat's own
    pairing.py        pairing codes for unknown senders, confirmed by the owner
    subscriptions.py  which chats watch which runs (`/watch`, `nanobot run --notify`)
    milestones.py     a watched run's milestones, read from its store
    loopback.py       an in-process channel (two queues), for tests and benchmarks
    telegram.py       the Telegram channel
    email.py          the email channel

Channels call the engine, never the CLI; import what you need from the submodules.
"""
