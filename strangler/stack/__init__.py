"""The local stack: start, supervise and stop etcd, Traefik, Redis and the backends.

``lifecycle`` (up/down, the Stack), ``ports``, ``launch`` (what each process
gets), ``data`` (linking the services' data), ``follow`` (the sync
follower), ``status``, ``procs`` (processes and pid files) and ``cli``.
"""
