"""Batches for identifiers an operator named (``--ids``, ``--study``, API ``ids=``), counting those that matched nothing.

An operator who names instances the source does not hold has made a mistake (a typo, the wrong
source): the run must not end as "done" (exit 0, ``ok``). Each identifier is resolved alone
through the source's :meth:`~copydicom.model.SelectableSource.selected` (every source resolves
them one by one anyway), so this works for any selectable source without its help.

What is reported names Orthanc IDs (44 hex characters in five groups: digests, not PHI) and
only the position of anything else: a DICOM UID before de-identification is PHI.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from copydicom.model import InstanceRef, SelectableSource

_ORTHANC_ID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{8}){4}")


@dataclass
class Selection:
    """The identifiers asked for and, once :meth:`batches` is consumed, those that matched nothing."""

    wanted: list[str]
    #: 1-based positions in :attr:`wanted` of the identifiers that matched no instance.
    not_found: list[int] = field(default_factory=list)

    def batches(self, source: SelectableSource) -> Iterator[list[InstanceRef]]:
        """The source's batches for every identifier, in order; records those with no instance."""
        for number, ident in enumerate(self.wanted, 1):
            found = False
            for batch in source.selected([ident]):
                found = found or bool(batch)
                yield batch
            if not found:
                self.not_found.append(number)

    def report(self, source_name: str) -> str:
        """One line for the operator: how many matched nothing, naming Orthanc IDs and positions only."""
        ids = [self.wanted[n - 1].strip() for n in self.not_found if _ORTHANC_ID.fullmatch(self.wanted[n - 1].strip())]
        others = [str(n) for n in self.not_found if not _ORTHANC_ID.fullmatch(self.wanted[n - 1].strip())]
        named = []
        if ids:
            named.append("Orthanc ID(s) " + ", ".join(ids[:20]) + (" ..." if len(ids) > 20 else ""))
        if others:
            named.append("identifier(s) number " + ", ".join(others[:20]) + (" ..." if len(others) > 20 else ""))
        return (f"not found: {len(self.not_found)} of {len(self.wanted)} identifier(s) matched nothing on "
                f"{source_name}: {'; '.join(named)}")
