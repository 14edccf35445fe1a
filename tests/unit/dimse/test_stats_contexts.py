"""Listener counters shared between processes, and the acceptor contexts shared between associations."""

from __future__ import annotations

import copy
import mmap
import os

import pytest

from copydicom.endpoints.dimse.listener import ListenerStats, SharedContexts


def test_counters_written_through_one_mapping_are_read_through_another() -> None:
    fd = os.memfd_create("test-stats")
    try:
        os.ftruncate(fd, ListenerStats.SIZE)
        child = ListenerStats(mmap.mmap(fd, ListenerStats.SIZE))  # what the receiving process writes
        parent = ListenerStats(mmap.mmap(fd, ListenerStats.SIZE))  # what status and metrics read
        child.bump("instances_received")
        child.bump("instances_received")
        child.bump("store_failures")
        assert parent.instances_received == 2 and parent.store_failures == 1
        assert parent.as_dict() == {"associations": 0, "rejected_associations": 0, "refused_addresses": 0,
                                    "aborted_associations": 0, "instances_received": 2, "store_failures": 1}
    finally:
        os.close(fd)
    with pytest.raises(AttributeError):
        ListenerStats().not_a_counter  # noqa: B018


def test_associations_share_the_contexts_instead_of_copying_them() -> None:
    from pynetdicom import ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
    from pynetdicom.presentation import build_context, negotiate_as_acceptor

    contexts = SharedContexts(build_context(c.abstract_syntax, ALL_TRANSFER_SYNTAXES)
                              for c in AllStoragePresentationContexts)
    assert copy.deepcopy(contexts) is contexts
    before = [(c.abstract_syntax, list(c.transfer_syntax)) for c in contexts]
    request = build_context(AllStoragePresentationContexts[0].abstract_syntax, ALL_TRANSFER_SYNTAXES[-1])
    request.context_id = 1
    result, _ = negotiate_as_acceptor([request], contexts)
    assert result[0].result == 0 and result[0].transfer_syntax == [ALL_TRANSFER_SYNTAXES[-1]]
    assert [(c.abstract_syntax, list(c.transfer_syntax)) for c in contexts] == before  # negotiation only reads them
