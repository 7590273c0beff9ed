"""Writing a project's files: ``strangler init`` (the first plan) and ``strangler new service``.

Pure text builders (:mod:`strangler.scaffold.init`, :mod:`strangler.scaffold.service`)
and one CLI module that writes what they return.
"""
