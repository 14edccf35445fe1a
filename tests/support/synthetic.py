"""Generate synthetic DICOM instances (fake patients, fake values) for tests, demo and benchmarks.

Nothing here comes from a real patient.  UIDs are derived from a seed so a
run is reproducible.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian

_ROOT = "1.2.826.0.1.3680043.10.1381"  # test root; never used for real data


def make_uid(*parts: object) -> str:
    """A deterministic UID under the test root, from any parts."""
    digest = int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:24], 16)
    return f"{_ROOT}.{digest}"


_PIXELS: dict[tuple[int, int], bytes] = {}


def _pixels(rows: int, cols: int) -> bytes:
    key = (rows, cols)
    if key not in _PIXELS:
        rng = np.random.default_rng(1381)
        yy, xx = np.mgrid[0:rows, 0:cols]
        phantom = ((xx - cols / 2) ** 2 + (yy - rows / 2) ** 2 < (min(rows, cols) / 2.5) ** 2) * 1000
        noise = rng.integers(0, 40, size=(rows, cols))
        _PIXELS[key] = (phantom + noise).astype(np.uint16).tobytes()
    return _PIXELS[key]


def ct_dataset(
    patient: int = 0,
    study: int = 0,
    series: int = 0,
    instance: int = 0,
    *,
    rows: int = 512,
    cols: int = 512,
    seed: str = "copydicom",
) -> Dataset:
    """One synthetic CT image (16-bit, ``rows`` x ``cols``), with plausible header values."""
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = make_uid(seed, patient, study, series, instance)
    ds.StudyInstanceUID = make_uid(seed, patient, study)
    ds.SeriesInstanceUID = make_uid(seed, patient, study, series)
    ds.FrameOfReferenceUID = make_uid(seed, patient, study, "for")
    ds.PatientName = f"DOE^SYNTHETIC{patient:04d}"
    ds.PatientID = f"SYN{patient:06d}"
    ds.PatientBirthDate = f"19{50 + patient % 50:02d}0{1 + patient % 9}15"
    ds.PatientSex = "FM"[patient % 2]
    ds.StudyDate = f"2025{1 + study % 12:02d}{1 + study % 28:02d}"
    ds.StudyTime = "101500"
    ds.SeriesDate = ds.StudyDate
    ds.AcquisitionDate = ds.StudyDate
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = f"1015{instance % 60:02d}"
    ds.AccessionNumber = f"ACC{patient:04d}{study:03d}"
    ds.StudyID = str(study + 1)
    ds.StudyDescription = "CT CHEST WITH CONTRAST"
    ds.SeriesDescription = f"AXIAL {series + 1}"
    ds.Modality = "CT"
    ds.Manufacturer = "SYNTHETIC"
    ds.ManufacturerModelName = "PHANTOM-CT"
    ds.StationName = "CTSTATION1"
    ds.InstitutionName = "EXAMPLE HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^DOCTOR"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = instance + 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-250.0, -250.0, float(-instance * 1.25)]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceThickness = 1.25
    ds.KVP = 120
    ds.PixelSpacing = [0.9765625, 0.9765625]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.BurnedInAnnotation = "NO"
    ds.PixelData = _pixels(rows, cols)
    return ds


def to_bytes(ds: Dataset) -> bytes:
    """Write a dataset as a DICOM Part 10 file (explicit VR little endian) and return the bytes."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_study_files(
    n_instances: int,
    *,
    patients: int = 1,
    series_per_study: int = 4,
    rows: int = 512,
    cols: int = 512,
    seed: str = "copydicom",
) -> Iterator[bytes]:
    """Yield ``n_instances`` CT files spread over patients (one study each) and series."""
    per_patient = max(1, -(-n_instances // patients))
    for i in range(n_instances):
        patient, k = divmod(i, per_patient)
        series = k % series_per_study
        yield to_bytes(ct_dataset(patient, 0, series, k, rows=rows, cols=cols, seed=seed))


def upload_all(upload: Callable[[bytes], Any], files: Iterable[bytes], *, threads: int = 4) -> int:
    """Upload files with a few threads (Orthanc ingests fastest with 2+ uploaders).

    At most ``2 * threads`` files are in memory at once (``Executor.map`` would
    read the whole iterable first: a gigabyte for 2,000 CT files).
    """
    count = 0
    with ThreadPoolExecutor(threads) as pool:
        pending: set[Future[Any]] = set()
        for data in files:
            if len(pending) >= 2 * threads:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    future.result()
                    count += 1
            pending.add(pool.submit(upload, data))
        for future in pending:
            future.result()
            count += 1
    return count
