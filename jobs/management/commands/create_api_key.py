"""`manage.py create_api_key NAME --scope write`: make an API key and print it once."""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import IntegrityError

from jobs import services
from jobs.models import ApiScope


class Command(BaseCommand):
    help = "Create an API key and print it. Only a hash is stored: copy the key now, it is not shown again."

    def add_arguments(self, parser):
        parser.add_argument("name", help="A unique name for the key (who or what uses it).")
        parser.add_argument(
            "--scope", choices=ApiScope.values, default=ApiScope.WRITE, help="read, write (default) or admin."
        )

    def handle(self, *args, name: str, scope: str, **options):
        try:
            key, full_key = services.api_key_create(name=name, scope=scope)
        except IntegrityError:
            raise CommandError(f"an API key named {name!r} already exists") from None
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from None
        self.stdout.write(full_key)
        self.stderr.write(f"Created API key {key.name!r} with scope {scope}; send it as X-API-Key. It is shown once.")
        self.stderr.write(f"Its signing secret for completion callbacks (shown once): {key.signing_secret}")
