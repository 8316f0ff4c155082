"""Routes that replace MONAI Label's for uploads, JSON form fields, unknown names and path-bearing answers.

Same paths, parameters and answers as MONAI Label 0.8.5 (its clients and the Slicer
module work unchanged), with these differences:

* uploads are held in the datastore's ``.uploads`` folder only for the request
  (:mod:`.uploads`), checked against the size and pixel limits from the header before
  any decoding, and always deleted;
* JSON form fields (``params``, ``info``) are parsed strictly (:func:`lib.infers.params.parse_params`):
  400 instead of 500 for anything but a JSON object of finite numbers;
* ``POST /infer/<model>`` takes an image id (never a path) or an uploaded ``file``,
  refuses the params that would make MONAI Label save the result as a label
  (``save_label``, ``label_tag``) or redirect its inputs, runs one inference at a time
  off the event loop (so ``/info/`` and the datastore answer meanwhile), and deletes the
  result file once the answer is built;
* unknown image ids, labels, models, trainers and scoring methods are 404;
* ``GET /datastore/?output=train`` lists paths relative to the datastore;
* ``PUT /model/<name>`` accepts only a ``model.pt`` that loads as that model, and
  installs it as a whole model directory;
* ``/auth/`` answers MONAI Label's login protocol with the app's own token (:mod:`.auth`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Optional

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, Response, StreamingResponse
from monailabel.config import settings
from monailabel.endpoints.datastore import ResultType as DatastoreOutput
from monailabel.endpoints.infer import ResultType as InferOutput
from monailabel.endpoints.scoring import run_method as run_scoring
from monailabel.endpoints.train import run_model as run_training
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import file_checksum, get_mime_type
from requests_toolbelt import MultipartEncoder

from lib.data.imageio import IMAGE_EXTENSIONS
from lib.server.upload_checks import LABEL_EXTENSIONS, OverLimit, check_name, check_upload
from lib.errors import DataError
from lib.server.http.uploads import received
from lib.infers.http_errors import BAD_REQUEST, NOT_FOUND, PAYLOAD_TOO_LARGE, UNAUTHORIZED, client_error
from lib.infers.params import parse_params

logger = logging.getLogger(__name__)

ADMIN = RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)
ANNOTATOR = RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)
USER = RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)

RESERVED_INFER_PARAMS = {
    "image": "send the image id as the query parameter 'image', or the image itself as the form file 'file'",
    "model": "the model is the last part of the URL",
    "save_label": "inference never writes labels; save a reviewed label with PUT /datastore/label",
    "label_tag": "inference never writes labels; save a reviewed label with PUT /datastore/label",
    "skip_writer": "set by the server only",
    "session": "sessions are not supported by this server",
    "image_path": "set by the server only",
    "label": "inference takes no label",
    "result_write_to_file": "set by the server only",
}
"""Params a client may not send to ``POST /infer/<model>``, with the reason given in the 400."""

_INFER_LOCK = threading.Lock()
"""One inference at a time, as MONAI Label serves them, but off the event loop."""


def _json_field(text, field: str) -> dict:
    try:
        return parse_params(text, field)
    except DataError as exc:
        raise client_error(BAD_REQUEST, str(exc)) from None


def _app():
    return app_instance()


def _store():
    return _app().datastore()


# ---------------------------------------------------------------------------------------------- datastore

datastore_router = APIRouter(prefix="/datastore", tags=["Datastore"])


@datastore_router.get("/", summary="Get All Images/Labels from datastore")
def datastore_listing(output: Optional[DatastoreOutput] = None, user: User = Depends(USER)):
    store = _store()
    if output == DatastoreOutput.all:
        return store.json()
    if output == DatastoreOutput.train:
        return store.datalist(full_path=False)
    return store.status()


def _add_image(image: Optional[str], params: str, file: UploadFile, user: User) -> dict:
    instance, store = _app(), _store()
    info = _json_field(params, "params")
    with received(file, store.uploads_dir, "file", IMAGE_EXTENSIONS, instance.app_config.limits.max_bytes) as path:
        image_id = image
        if not image_id:
            name = Path(file.filename or "").name
            image_id = name[: len(name) - len(path.suffix)] if path.suffix else name
        check_name(image_id, "image id")
        info["user"] = user.username
        return {"image": store.add_image(image_id, str(path), info)}


@datastore_router.put("/image", summary="Upload new Image")
def add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
              user: User = Depends(ANNOTATOR)):
    return _add_image(image, params, file, user)


@datastore_router.put("/", summary="Upload new Image", include_in_schema=False, deprecated=True)
def add_image_deprecated(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...),
                         user: User = Depends(ANNOTATOR)):
    return _add_image(image, params, file, user)


@datastore_router.put("/label", summary="Save Finished Label")
def save_label(image: str, params: str = Form("{}"), tag: str = DefaultLabelTag.FINAL.value,
               label: UploadFile = File(...), user: User = Depends(ANNOTATOR)):
    instance, store = _app(), _store()
    info = _json_field(params, "params")
    check_name(image, "image id")
    tag = tag or DefaultLabelTag.FINAL.value
    check_name(tag, "label tag")
    if not store.has_image(image):
        raise client_error(NOT_FOUND, f"image {image!r} not found in the datastore")
    info["user"] = user.username
    # the label's own byte limit is checked by the datastore; the copy stops at the upload limit
    with received(label, store.uploads_dir, "label", LABEL_EXTENSIONS, instance.app_config.limits.max_bytes) as path:
        label_id = store.save_label(image, str(path), tag, info)
    result = instance.on_save_label(image, label_id) or {}
    result.update({"image": image, "label": label_id})
    return result


@datastore_router.get("/image/info", summary="Get Image Info")
def get_image_info(image: str, user: User = Depends(USER)):
    store = _store()
    if not store.has_image(image):
        raise client_error(NOT_FOUND, f"image {image!r} not found in the datastore")
    return store.get_image_info(image)


@datastore_router.put("/image/info", summary="Update Image Info")
def put_image_info(image: str, info: str = Form("{}"), user: User = Depends(ANNOTATOR)):
    values = _json_field(info, "info")
    values["user"] = user.username
    return _store().update_image_info(image, values)


@datastore_router.get("/label/info", summary="Get Label Info")
def get_label_info(label: str, tag: str, user: User = Depends(USER)):
    store = _store()
    if not store.get_label_uri(label, tag):
        raise client_error(NOT_FOUND, f"no {tag!r} label for image {label!r}")
    return store.get_label_info(label, tag)


@datastore_router.put("/label/info", summary="Update Label Info")
def put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = Depends(ANNOTATOR)):
    values = _json_field(info, "info")
    values["user"] = user.username
    return _store().update_label_info(label, tag, values)


@datastore_router.put("/updatelabelinfo", summary="Update label info", include_in_schema=False, deprecated=True)
def put_label_info_deprecated(label: str, tag: str, params: str = Form("{}"), user: User = Depends(ANNOTATOR)):
    values = _json_field(params, "params")
    values["user"] = user.username
    return _store().update_label_info(label, tag, values)


@datastore_router.get("/dataset", summary="Download full dataset as ZIP archive")
def download_dataset(limit_cases: Optional[int] = None, user: User = Depends(ANNOTATOR)):
    path = _store().get_dataset_archive(limit_cases)
    archive = open(path, "rb")
    os.unlink(path)  # served from the open file: nothing stays on disk, even if the client goes away
    size = os.fstat(archive.fileno()).st_size

    def chunks():
        with archive:
            while data := archive.read(1024 * 1024):
                yield data

    return StreamingResponse(chunks(), media_type="application/zip",
                             headers={"content-disposition": 'attachment; filename="dataset.zip"',
                                      "content-length": str(size)})


# ---------------------------------------------------------------------------------------------- infer

infer_router = APIRouter(prefix="/infer", tags=["Infer"])


def _infer_request(model: str, image: str, session_id: str, params: str, label: Optional[UploadFile]) -> dict:
    instance = _app()
    if model not in instance.infer_names():
        raise client_error(NOT_FOUND, f"unknown model {model!r}; the models are {', '.join(instance.infer_names())}")
    if session_id:
        raise client_error(BAD_REQUEST, "session_id: sessions are not supported by this server; send the image id, "
                                        "or the image itself as the form file 'file'")
    if label is not None:
        raise client_error(BAD_REQUEST, "label: inference takes no label file")
    request = _json_field(params, "params")
    for key, reason in RESERVED_INFER_PARAMS.items():
        if key in request:
            raise client_error(BAD_REQUEST, f"params.{key}: not accepted here ({reason})")
    instance.check_infer_params(request)
    request["model"] = model
    return request


def _infer_answer(result: dict, output: Optional[InferOutput]):
    path = result.get("file") or ""
    params = result.get("params") or {}
    try:
        if output == InferOutput.json:
            return JSONResponse(params)
        if output == InferOutput.dicom_seg:
            raise client_error(BAD_REQUEST, "output=dicom_seg: needs a DICOMweb datastore; this server has none")
        if not path or not os.path.isfile(path):
            return JSONResponse(params)
        data = Path(path).read_bytes()
        name, mime = os.path.basename(path), get_mime_type(path)
        if output == InferOutput.image:
            return Response(data, media_type=mime, headers={"content-disposition": f'attachment; filename="{name}"'})
        body = MultipartEncoder(fields={"params": (None, json.dumps(params), "application/json"),
                                        "image": (name, data, mime)})
        return Response(content=body.to_string(), media_type=body.content_type)
    finally:
        if path:
            Path(path).unlink(missing_ok=True)


def _run_infer(request: dict) -> dict:
    with _INFER_LOCK:
        return _app().infer(request)


@infer_router.post("/{model}", summary="Run Inference for supported model")
def run_inference(model: str, image: str = "", session_id: str = "", params: str = Form("{}"),
                  file: UploadFile = File(None), label: UploadFile = File(None), output: Optional[InferOutput] = None,
                  user: User = Depends(USER)):
    instance, store = _app(), _store()
    request = _infer_request(model, image, session_id, params, label)
    if file is not None:
        with received(file, store.uploads_dir, "file", IMAGE_EXTENSIONS, instance.app_config.limits.max_bytes) as path:
            try:
                check_upload(path, instance.app_config.limits, "file")
            except DataError as exc:
                raise client_error(PAYLOAD_TOO_LARGE if isinstance(exc, OverLimit) else BAD_REQUEST, str(exc)) from None
            request["image"] = str(path)
            return _infer_answer(_run_infer(request), output)
    if not image:
        raise client_error(BAD_REQUEST, "image: send an image id (query parameter 'image') or an image file ('file')")
    check_name(image, "image id")
    if not store.has_image(image):
        raise client_error(NOT_FOUND, f"image {image!r} not found in the datastore")
    request["image"] = image
    return _infer_answer(_run_infer(request), output)


# ---------------------------------------------------------------------------------------------- tasks

tasks_router = APIRouter()


def _train_params(instance, params: Optional[dict], model: str) -> dict:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise client_error(BAD_REQUEST, f"params for {model}: expected a JSON object")
    instance.check_train_params(model, params)
    return params


@tasks_router.post("/train/{model}", summary="Run Training Task for specific model", tags=["Train"])
def train_model(model: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
                enqueue: Optional[bool] = False, user: User = Depends(ADMIN)):
    instance = _app()
    if model not in instance.trainer_names():
        raise client_error(NOT_FOUND, f"unknown trainer {model!r}; the trainers are {', '.join(instance.trainer_names())}")
    return run_training(model, _train_params(instance, params, model), run_sync, enqueue)


@tasks_router.post("/train/", summary="Run All Training Tasks", tags=["Train"], include_in_schema=False,
                   deprecated=True)
def train_all(params: Optional[dict] = None, run_sync: Optional[bool] = False, user: User = Depends(ADMIN)):
    instance = _app()
    params = params or {}
    unknown = sorted(set(params) - set(instance.trainer_names()))
    if unknown:
        raise client_error(BAD_REQUEST, f"params: unknown trainers {unknown}; the trainers are "
                                        f"{', '.join(instance.trainer_names())}")
    return {m: run_training(m, _train_params(instance, params.get(m), m), run_sync, True)
            for m in instance.trainer_names()}


@tasks_router.post("/scoring/{method}", summary="Run Scoring Task for specific method", tags=["Scoring"])
def score(method: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
          user: User = Depends(ANNOTATOR)):
    instance = _app()
    if method not in instance.scoring_names():
        raise client_error(NOT_FOUND, f"unknown scoring method {method!r}; the methods are "
                                      f"{', '.join(instance.scoring_names())}")
    return run_scoring(method, params, run_sync)


@tasks_router.put("/model/{model}", summary="Upload/Update Model File", tags=["Model"])
def upload_model(model: str, file: UploadFile, user: User = Depends(ANNOTATOR)):
    instance, store = _app(), _store()
    if model not in instance.trainer_names():
        raise client_error(NOT_FOUND, f"unknown model {model!r}; the models are {', '.join(instance.trainer_names())}")
    with received(file, store.uploads_dir, "file", (".pt",), instance.app_config.max_model_bytes) as path:
        installed = instance.install_model(model, path)
    return {"checksum": file_checksum(str(installed)), "modified_time": int(os.stat(installed).st_mtime)}


@tasks_router.get("/logs/gpu", summary="Get GPU Info (nvidia-smi)", tags=["Others"])
def gpu_info(user: User = Depends(ADMIN)):
    import shutil
    import subprocess

    if shutil.which("nvidia-smi") is None:
        raise client_error(NOT_FOUND, "nvidia-smi is not installed on the server (no NVIDIA GPU driver)")
    output = subprocess.run(["nvidia-smi"], stdout=subprocess.PIPE, timeout=30).stdout.decode("utf-8", "replace")
    return Response(content=output, media_type="text/plain")


# ---------------------------------------------------------------------------------------------- login

auth_router = APIRouter(prefix="/auth", tags=["Auth"])


@auth_router.get("/", summary="Check If Auth is Enabled")
def auth_enabled():
    return {"enabled": _app().app_config.auth_token is not None, "client_id": "loris", "realm": ""}


@auth_router.post("/token", summary="Exchange the access token (as the password) for a bearer token")
def auth_token(username: str = Form(""), password: str = Form("")):
    token = _app().app_config.auth_token
    if token is None:
        return {"access_token": None, "token_type": None}
    if not hmac.compare_digest(password.encode("utf-8"), token.encode("utf-8")):
        time.sleep(0.5)  # slows guessing down
        return JSONResponse({"detail": "wrong password: use the server's access token"}, status_code=UNAUTHORIZED,
                            headers={"www-authenticate": 'Bearer realm="LoRIS"'})
    return {"access_token": token, "token_type": "Bearer"}


@auth_router.get("/token/valid", summary="Check If current token is Valid")
def auth_token_valid(request: Request):
    from lib.server.http.auth import bearer_token

    token = _app().app_config.auth_token
    presented = bearer_token(request.headers.get("authorization"))
    if token is not None and (presented is None or not hmac.compare_digest(presented.encode(), token.encode())):
        return JSONResponse({"detail": "the access token is missing or not valid"}, status_code=UNAUTHORIZED,
                            headers={"www-authenticate": 'Bearer realm="LoRIS"'})
    return {"username": "loris", "roles": []}


# ---------------------------------------------------------------------------------------------- not served

gone_router = APIRouter(include_in_schema=False)


@gone_router.api_route("/infer/wsi/{rest:path}", methods=["POST"])
@gone_router.api_route("/infer/wsi_v2/{rest:path}", methods=["POST"])
@gone_router.api_route("/proxy/{rest:path}", methods=["GET", "POST"])
@gone_router.api_route("/ohif/{rest:path}", methods=["GET"])
def not_served(rest: str = ""):
    raise client_error(NOT_FOUND, "not served by this app: it has no whole-slide models and no DICOMweb datastore")


ROUTERS = (gone_router, datastore_router, infer_router, tasks_router, auth_router)
