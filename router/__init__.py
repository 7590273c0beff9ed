"""The routing layer: etcd client, route table, Traefik keys, service registry, health."""
