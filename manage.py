#!/usr/bin/env python
"""Django's command-line utility for sentinelflow."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sentinelflow_site.settings")
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
