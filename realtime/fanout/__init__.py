"""Fan-out: an event from Django code to every socket that should see it, on every worker.

`push` sends events after commit, `events` is how they travel (envelopes, and
the `LocalEvent` a hub hands its sockets), `hub` delivers one channel-layer
message per worker to its sockets, `echo` checks the live feed, `layer` is the
pub/sub channel layer with our fixes.
"""
