"""Scale-out: planners and workers on many hosts through Celery on RabbitMQ, state in PostgreSQL.

- :mod:`~copydicom.cluster.election`: one planner per route at a time (a PostgreSQL advisory lock on a
  dedicated connection) with a fencing token checked on every checkpoint write.
- :mod:`~copydicom.cluster.slots`: a destination's ``max_concurrency`` enforced across the cluster.

Nothing here is imported unless ``cluster:`` is configured (celery and psycopg are the ``cluster`` extra).
"""
