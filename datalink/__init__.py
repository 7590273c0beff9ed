"""What runs inside the apps to keep a linked table whole in two databases.

The layer below the apps (``monolith/``, ``extracted/``) and the toolkit
(``strangler/``), beside ``router/``: table shapes and the one rule for
"the same row" (:mod:`datalink.tables`), the upsert both write-through and
the followers apply (:mod:`datalink.upsert`), id lanes (:mod:`datalink.ids`),
collisions kept aside (:mod:`datalink.collisions`), the write-through itself
(:mod:`datalink.writethrough`) and private files (:mod:`datalink.files`).
It imports nothing of ours but itself.
"""
