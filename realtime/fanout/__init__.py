"""Fan-out: an event from Django code to every socket that should see it, on every worker.

`push` sends events after commit, `hub` delivers one channel-layer message per
worker to its sockets, `echo` checks the live feed, `layer` is the pub/sub
channel layer with our fixes.
"""
