#!/usr/bin/env bash
# Install (into .venv) and run the whole development stack: web, worker with scheduler, embedded Redis if needed.
# Arguments go to `manage.py runstack` (try --help).
. "$(dirname "$0")/_venv.sh" requirements.txt
exec python manage.py runstack "$@"
