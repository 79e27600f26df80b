"""POST /jobs: parse the JSON body, `Queue('bench').enqueue(noop)`, answer 201 with the job id."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from redis import Redis
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView
from rq import Queue

from .tasks import noop


@cache
def queue() -> Queue:
    # One connection pool per gunicorn worker process (the app is not preloaded, so this runs after fork).
    return Queue(settings.RAW_QUEUE, connection=Redis.from_url(settings.REDIS_URL))


class EnqueueView(APIView):
    def post(self, request):
        if not isinstance(request.data, dict):
            return Response({"detail": "Expected a JSON object."}, status=status.HTTP_400_BAD_REQUEST)
        job = queue().enqueue(noop)
        return Response({"job_id": job.id, "status": "queued"}, status=status.HTTP_201_CREATED)
