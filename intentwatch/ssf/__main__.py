"""``python -m intentwatch.ssf``: run the SSF transmitter (see :mod:`intentwatch.ssf`)."""

from intentwatch.ssf.server import run_transmitter
from intentwatch.ssf.settings import SsfSettings

if __name__ == "__main__":
    run_transmitter(SsfSettings.from_env())
