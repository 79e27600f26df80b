from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import send_mail
from rest_framework import serializers

from . import JobContext, job_type

MAX_RECIPIENTS = 100


class RecipientsField(serializers.ListField):
    """`to` may be one address or a list of them."""

    child = serializers.EmailField()

    def to_internal_value(self, data: Any) -> list[str]:
        return super().to_internal_value([data] if isinstance(data, str) else data)


class EmailPayload(serializers.Serializer[Any]):
    to = RecipientsField(allow_empty=False, max_length=MAX_RECIPIENTS)
    subject = serializers.CharField(required=False, default="", allow_blank=True, max_length=998)
    body = serializers.CharField(required=False, default="", allow_blank=True, max_length=1_000_000)

    def validate_subject(self, value: str) -> str:
        if "\n" in value or "\r" in value:
            raise serializers.ValidationError("The subject must be one line.")
        return value


@job_type("email", payload_serializer=EmailPayload, secret_fields=["body"])
def email(payload: dict[str, Any], context: JobContext) -> dict[str, Any]:
    """Send one message through Django's configured email backend (EMAIL_BACKEND)."""
    sent = send_mail(
        subject=payload["subject"],
        message=payload["body"],
        from_email=settings.DEFAULT_FROM_EMAIL,
        recipient_list=payload["to"],
        fail_silently=False,
    )
    return {"sent": sent, "to": payload["to"]}
