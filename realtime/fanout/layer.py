"""The channel layer `CHANNEL_LAYER_BACKEND=pubsub` names: channels_redis's pub/sub layer with our fixes.

The fixes reach into channels_redis and redis-py, so they live in the adapter
(`realtime/adapter/pubsub_layer.py`, which says what they are); this module
keeps the path settings and deployments name.
"""

from realtime.adapter.pubsub_layer import RECEIVE_RETRY_SECONDS, RelayPubSubChannelLayer

__all__ = ["RECEIVE_RETRY_SECONDS", "RelayPubSubChannelLayer"]
