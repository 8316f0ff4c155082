"""The PACS datastore on a real Orthanc: what it lists, retrieves, checks and stores beside the PACS."""

import numpy as np
import pytest
from fastapi import HTTPException

from lib.data.imageio import read_image_file, read_mask, write_png
from lib.server.pacs_datastore import DEFAULT_FILTER, PacsDatastore, make_client
from lib.server.upload_checks import UploadLimits
from tests.pacs.conftest import PIXEL_LIMIT


def open_store(pacs, folder, search_filter=DEFAULT_FILTER):
    return PacsDatastore(make_client(pacs.orthanc.dicomweb), folder, search_filter,
                         limits=UploadLimits(max_pixels=PIXEL_LIMIT), cache_seconds=0, auto_reload=False)


def test_the_ultrasound_instances_are_listed_and_the_ct_is_not(orthanc_pacs, tmp_path):
    store = open_store(orthanc_pacs, tmp_path / "store")
    assert set(store.list_images()) == orthanc_pacs.ultrasound
    assert orthanc_pacs.ct not in store.list_images() and not store.has_image(orthanc_pacs.ct)
    assert set(open_store(orthanc_pacs, tmp_path / "ct", {"Modality": "CT"}).list_images()) == {orthanc_pacs.ct}
    status = store.status()
    assert status["total"] == len(orthanc_pacs.ultrasound) and status["completed"] == 0
    assert status["pacs"]["filter"] == {"Modality": "US"}
    assert not list((tmp_path / "store").glob("*.dcm"))  # listing retrieves nothing


def test_an_image_is_retrieved_once_with_its_calibration_and_pacs_identity(orthanc_pacs, tmp_path):
    store = open_store(orthanc_pacs, tmp_path / "store")
    uid, record = next(iter(orthanc_pacs.records.items()))
    info = store.get_image_info(uid)
    assert info["retrieved"] is False and info["patient_id"] == record.patient_id
    path = store.get_image_uri(uid)
    assert path.endswith(f"{uid}.dcm") and store.get_image_uri(uid) == path
    image = read_image_file(path)
    assert image.pixel_spacing_mm == pytest.approx((orthanc_pacs.spacing[uid],) * 2)
    assert np.array_equal(image.frames[0], read_image_file(record.image_path).frames[0])  # pixels as sent
    info = store.get_image_info(uid)
    assert info["source"] == "dicomweb" and info["SOPInstanceUID"] == uid and info["patient_id"] == record.patient_id
    assert info["pixel_spacing_mm"] == pytest.approx([orthanc_pacs.spacing[uid]] * 2) and info["frame_count"] == 1


def test_an_image_over_the_limits_is_refused_before_it_is_retrieved(orthanc_pacs, tmp_path):
    store = open_store(orthanc_pacs, tmp_path / "store")
    with pytest.raises(HTTPException) as refused:
        store.get_image_uri(orthanc_pacs.large)
    assert refused.value.status_code == 413 and "320x240 pixels is over the limit" in refused.value.detail
    assert not list((tmp_path / "store").rglob("*.dcm"))


def test_labels_live_in_the_local_store_and_survive_reopening_it(orthanc_pacs, tmp_path):
    uid, record = next((u, r) for u, r in orthanc_pacs.records.items() if r.label == "distended")
    store = open_store(orthanc_pacs, tmp_path / "store")
    label = tmp_path / "label.png"
    write_png(label, read_mask(record.mask_path))
    store.save_label(uid, str(label), "final", {"label": "distended", "box": list(record.box)})
    reopened = open_store(orthanc_pacs, tmp_path / "store")
    assert reopened.get_labeled_images() == [uid] and uid not in reopened.get_unlabeled_images()
    assert reopened.get_label_info(uid, "final")["box"] == list(record.box)
    assert [p["image"].endswith(f"{uid}.dcm") for p in reopened.datalist()] == [True]


def test_a_pacs_that_does_not_answer_is_a_503_naming_it(tmp_path):
    from tests.pacs.orthanc import free_port

    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    store = PacsDatastore(make_client(url), tmp_path / "store", DEFAULT_FILTER, cache_seconds=0, auto_reload=False)
    with pytest.raises(HTTPException) as down:
        store.pacs_images()
    assert down.value.status_code == 503 and url in down.value.detail
    assert store.list_images() == [] and store.status()["total"] == 0  # /info still answers
    assert store.get_image_info("1.2.3") == {} and not store.has_image("1.2.3")
