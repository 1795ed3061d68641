"""``python -m cnnfilters``: the same as the ``cnnfilters`` command."""

from .cli import main

if __name__ == "__main__":
    main()
