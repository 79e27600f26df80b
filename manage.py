#!/usr/bin/env python
"""Django's command-line utility for sentinelflow."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
    if sys.argv[1:2] == ["runstack"]:
        # The development stack runs on embedded defaults: DEBUG=1 (dev API key, per-run SECRET_KEY).
        os.environ.setdefault("DEBUG", "1")
    if sys.argv[1:2] == ["test"]:
        # The suite runs in testing mode (fakeredis in-process, no .env): set before the settings load.
        os.environ["TESTING"] = "1"
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as error:
        # Bad configuration: one clear line naming the variable, not a traceback.
        sys.stderr.write(f"sentinelflow: configuration error: {error}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
