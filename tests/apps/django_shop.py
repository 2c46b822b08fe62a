"""A one-file Django shop for the process-model tests (gunicorn --preload, sync workers)."""

from __future__ import annotations

import os

import django
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

settings.configure(
    DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="test",
    MIDDLEWARE=["voyado_tracking.contrib.django.VoyadoMiddleware"],
    VOYADO_TRACKING={
        "base_url": os.environ["VOYADO_URL"], "api_key": os.environ["VOYADO_API_KEY"],
        "client_options": {"max_requests_per_second": None},
    },
)
django.setup()

import voyado_tracking as vt  # noqa: E402
from voyado_tracking.contrib.django import tracker  # noqa: E402

tracker()  # built at import time, before gunicorn forks its workers


def view(request: HttpRequest, sku: str) -> HttpResponse:
    identity = request.voyado  # type: ignore[attr-defined]
    tracker().enqueue(vt.ProductView(sku, identity.contact_id))
    return HttpResponse("ok")


urlpatterns = [path("view/<str:sku>", view)]

from django.core.wsgi import get_wsgi_application  # noqa: E402

app = get_wsgi_application()
