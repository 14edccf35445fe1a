"""C-STORE status codes mapped to the error tree (PS3.4 Table B.2-1, PS3.7 Annex C)."""

from __future__ import annotations

import pytest

from copydicom.endpoints.dimse.scu import classify_store_status
from copydicom.errors import DestinationUnavailable, RejectedByDestination


@pytest.mark.parametrize("status", [0xB000, 0xB006, 0xB007])
def test_warnings_are_deliveries(status: int) -> None:
    assert classify_store_status(status, what="p") == "warning"


@pytest.mark.parametrize("status", [0xA700, 0xA7FF, 0x0110, 0x0213])
def test_out_of_resources_is_retryable(status: int) -> None:
    assert isinstance(classify_store_status(status, what="p"), DestinationUnavailable)


@pytest.mark.parametrize("status", [0xA900, 0xA9FF, 0xC000, 0xCFFF, 0x0122, 0x0124, 0x0117])
def test_permanent_failures_quarantine(status: int) -> None:
    error = classify_store_status(status, what="peer")
    assert isinstance(error, RejectedByDestination)
    assert f"0x{status:04X}" in str(error)


def test_success() -> None:
    assert classify_store_status(0x0000, what="p") == "success"
