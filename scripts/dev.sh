#!/usr/bin/env bash
# Install (into .venv) and run the whole development stack: web, worker with scheduler, embedded Redis if needed.
# On its first run it writes .env (DEBUG=1, a generated SECRET_KEY), so that every `.venv/bin/python manage.py`
# command works afterwards too. Arguments go to `manage.py runstack` (try --help).
. "$(dirname "$0")/_venv.sh" requirements.txt
. "$ROOT/scripts/_dotenv.sh"
write_dev_env "$ROOT/.env"
exec python manage.py runstack "$@"
