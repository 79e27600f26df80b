"""A pytest plugin loaded before Django's settings (`-p tests.testing_mode` in pyproject.toml).

The suite runs in testing mode whatever the shell says: TESTING=1 swaps Redis for in-process
fakeredis and keeps the settings from reading a developer's .env. ENV_FILE=/dev/null does the
same for every process the tests start (they inherit this environment without TESTING).
"""

import os

os.environ["TESTING"] = "1"
os.environ["ENV_FILE"] = os.devnull
