"""Compare two backends' answers: the diff engine (:mod:`.diff`), one-off requests and their output.

``strangler compare`` (:mod:`strangler.compare.cli`) and the live shadow
comparator both build on :func:`strangler.compare.diff.diff`.
"""
