"""Live topics: owns topics (contract v2, `/ws/live/`).

A topic is a name that holds its latest value, nothing more: prices, scores,
dashboards, game state. Which names exist and who may read or publish them is
declared in Django (`models.Topic`, the admin); the latest value and its `seq`
live in Redis (`store`), never in PostgreSQL. `services.publish_topic` sets a
value and sends it to every subscribed socket at once; `consumers.LiveConsumer`
serves `/ws/live/`, where each socket gets the newest value of each of its
topics, conflated when it reads slower than they change (`outbox`).
"""
