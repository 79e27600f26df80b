"""Found at start because this app is installed (jobs.handlers.load_handlers autodiscovers `job_types`)."""

from rest_framework import serializers

from jobs.handlers import job_type


class ShoutPayload(serializers.Serializer):
    text = serializers.CharField(max_length=100)


@job_type("shout", payload_serializer=ShoutPayload)
def shout(payload, context):
    return {"text": payload["text"].upper()}
