"""Stand-in for the get-pip.py bootstrap that `ansible-test --venv` downloads.

ansible-test fetches get-pip from ci-files.testing.ansible.com, which this bench cannot
reach (only PyPI is). It runs the script inside a fresh virtualenv with pip options and
requirement specifiers as arguments, like pypa's get-pip.py. This shim does the same job
from standard parts: ensurepip (bundled with Python) bootstraps a pip, which then installs
the requested packages (the pinned pip first of all) from PyPI.
"""

import ensurepip
import os
import subprocess
import sys

# get-pip.py options that are not pip options.
OWN_OPTIONS = {"--no-setuptools", "--no-wheel"}

args = [a for a in sys.argv[1:] if a not in OWN_OPTIONS]
ensurepip.bootstrap(upgrade=True)
# ensurepip leaves PIP_CONFIG_FILE=/dev/null behind; the real install must honour the
# machine's pip configuration (index, certificates).
env = {k: v for k, v in os.environ.items() if k not in ("PIP_CONFIG_FILE", "ENSUREPIP_OPTIONS")}
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *args], env=env))
