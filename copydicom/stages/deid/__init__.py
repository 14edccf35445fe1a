"""De-identification stage (DICOM PS3.15 Annex E), deterministic keyed pseudonyms, audit trail.

Public API
----------
- :class:`DeidProfile` (``from_mapping``, ``default``) and :func:`profiles_from_config`:
  named profiles from the ``profiles:`` section of the configuration.
- :class:`DeidStage`: ``process(instance)`` and ``transform_identity(identity)``.
- :func:`load_key`: the owner-only project key.
- :class:`MappingStore`: old -> new UIDs and PatientIDs, exported as CSV.
- :func:`scan_dataset` / :func:`scan_file`: what in a file could still identify a person.

Configuration (YAML)::

    profiles:
      research:
        options: [retain_long_modified_dates, clean_structured_content]
        key_file: /etc/copydicom/deid.key     # chmod 600; at least 16 bytes
        patient_map: {csv: /etc/copydicom/patients.csv, missing: quarantine}
        accept_pixel_risk: false
        free_text: replace                    # or scrub
        date_shift_days: [-3650, -1]

``options`` are the option columns of PS3.15 Table E.1-1: retain_safe_private,
retain_uids, retain_device_identity, retain_institution_identity,
retain_patient_characteristics, retain_long_full_dates,
retain_long_modified_dates, clean_descriptors, clean_structured_content,
clean_graphics.  The default profile (:meth:`DeidProfile.default`) is the
Basic Profile + Retain Longitudinal Temporal Information with Modified Dates +
Clean Structured Content, keyed pseudonyms, risky pixels quarantined.
Other keys: ``patient_map`` (``csv``, ``id_column``, ``research_id_column``,
``name_column``, ``missing: quarantine|pseudonym``), ``pixel_risk_modalities``,
``pixel_risk_sop_classes``, ``pseudonym_prefix``.
"""

from copydicom.stages.deid._keyed import is_valid_uid, keyed_pseudonym, keyed_uid
from copydicom.stages.deid._mapping import MappingStore
from copydicom.stages.deid._profile import DeidProfile, PatientMap, load_key, profiles_from_config
from copydicom.stages.deid._scan import Finding, scan_bytes, scan_dataset, scan_file
from copydicom.stages.deid._stage import DeidStage, quiet_pydicom_values
from copydicom.stages.deid._tables import EDITION, OPTIONS

__all__ = [
    "EDITION",
    "OPTIONS",
    "DeidProfile",
    "DeidStage",
    "Finding",
    "MappingStore",
    "PatientMap",
    "is_valid_uid",
    "keyed_pseudonym",
    "keyed_uid",
    "load_key",
    "profiles_from_config",
    "quiet_pydicom_values",
    "scan_bytes",
    "scan_dataset",
    "scan_file",
]
