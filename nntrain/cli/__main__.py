"""``python -m nntrain.cli``: the ``nntrain`` command (how the sweep runner starts its workers)."""

from . import main

if __name__ == "__main__":
    main()
