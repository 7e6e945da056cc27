"""Real-time plumbing shared by the notifications and chat apps.

`protocol` is the one place that defines frames, error codes, close codes
and group names; `middleware` authenticates sockets; `consumers` holds the
base consumer that validates every frame; `push` sends events after commit.
"""
