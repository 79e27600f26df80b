import os
import sys

from django.core.exceptions import ImproperlyConfigured
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")

try:
    application = get_wsgi_application()
except ImproperlyConfigured as error:
    sys.stderr.write(f"sentinelflow: configuration error: {error}\n")
    raise SystemExit(2) from None
