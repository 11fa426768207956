"""An image endpoint as Azure ML samples write one: a multipart upload in, bytes out.

The upload is the form field "image"; the answer is its bytes reversed (a stand-in for
a transformed image), as application/octet-stream, with the upload's name and size in
headers. A raw image body (Content-Type image/*) is taken too. Anything else is a 415.
"""

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request: AMLRequest):
    if "image" in request.files:
        upload = request.files["image"]
        data, name = upload.read(), upload.filename
        kind = upload.mimetype
    elif (request.headers.get("Content-Type") or "").startswith("image/"):
        data, name, kind = request.get_data(), "", request.headers.get("Content-Type")
    else:
        return AMLResponse("send an image: a form field 'image' or an image/* body", 415)
    headers = {
        "Content-Type": "application/octet-stream",
        "X-Upload-Name": name,
        "X-Upload-Type": kind,
        "X-Upload-Bytes": str(len(data)),
        "X-Caption": request.form.get("caption", ""),
    }
    return AMLResponse(data[::-1], 200, headers)
