"""``python -m noether.explorer``: the noether-explorer command line."""

from noether.explorer.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
