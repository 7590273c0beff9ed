"""Progressive delivery: metric-gated promotion of endpoints to a service, with rollback.

``strangler promote`` stores a promotion in etcd (:mod:`strangler.promote.records`);
the controller (:mod:`strangler.promote.controller`, started by ``strangler up``)
carries it step by step, judging each step from Traefik's Prometheus metrics
and the comparator's diff rate (:mod:`strangler.promote.metrics`,
:mod:`strangler.promote.analysis`). See docs/promotion.md.
"""
