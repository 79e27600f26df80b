#!/usr/bin/env bash
# Install the test requirements (into .venv) and run the whole test suite: the unit suite on fakeredis
# and the integration suite, which starts its own redis-server, web server and workers.
# DATABASE_URL=postgres://... runs everything on PostgreSQL; without it, SQLite. Arguments go to pytest.
. "$(dirname "$0")/_venv.sh" requirements-dev.txt
export TESTING=1
exec python -m pytest "$@"
